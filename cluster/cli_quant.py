"""`superweights quantize-eval`: the quantization study of one model (scanner.study.quant_study), with the super
weights to keep taken from the catalog's latest validated scan of the model, or from a scan in the same load."""
from __future__ import annotations

import argparse
import json
import logging
import os

log = logging.getLogger("superweights")


def _ints(text: str, allow_tensor: bool = False) -> tuple:
    out = []
    for part in text.split(","):
        part = part.strip()
        if allow_tensor and part in ("tensor", "none"):
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a whole number"
                                             + (" or 'tensor'" if allow_tensor else "")) from None
    return tuple(out)


def add_commands(sub) -> None:
    from catalog.cli import catalog_option
    from scanner.options import add_scan_options
    from scanner.config import (QUANT_BITS as BITS, QUANT_BLOCKS as BLOCKS, QUANT_TOLERANCE,
                                QUANT_VARIANTS as VARIANTS, RTN_FORMS)
    from scanner.load.shipped import DEFAULT_MODEL

    p = sub.add_parser(
        "quantize-eval", help="perplexity under RTN quantization, with and without the super weights kept",
        description="Load MODEL once and measure its perplexity (with 95% intervals across evaluation windows, "
                    "against the unquantized model) under simulated round-to-nearest quantization: every decoder "
                    "Linear per block (plain; super weights kept; other outliers clipped with them kept; clipped "
                    "without keeping them), the down projections' inputs per tensor (plain; super activations held "
                    "out: the super activation's channel, then with each partner's), and the super weights zeroed "
                    "with their activations restored. The finding gives, per variant, the largest block size whose "
                    "perplexity stays within --tolerance of the unquantized model's by its interval. The super "
                    "weights are the catastrophic ones of the catalog's latest validated scan of MODEL (--catalog), "
                    "or of a scan run first in the same load.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    catalog_option(p, help="take the super weights from this catalog's latest validated scan of MODEL")
    p.add_argument("--bits", type=_ints, default=BITS,
                   help=f"weight bits, comma-separated (default {','.join(map(str, BITS))})")
    p.add_argument("--blocks", type=lambda t: _ints(t, True), default=BLOCKS,
                   help="block sizes in elements, 'tensor' for per tensor (default: 64,4096,...,1048576,tensor)")
    p.add_argument("--variants", type=lambda t: tuple(v.strip() for v in t.split(",")), default=VARIANTS,
                   help=f"weight variants (default: {','.join(VARIANTS)})")
    p.add_argument("--act-bits", type=_ints, default=(8,), help="activation bits, comma-separated (default 8)")
    p.add_argument("--rtn", choices=RTN_FORMS, default="paper",
                   help="RTN form of the weights: paper (each block offset by its minimum, its extremes kept; "
                        "default) or zero-point (an integer zero point, as integer kernels store it)")
    p.add_argument("--act-rtn", choices=RTN_FORMS, default="zero-point",
                   help="RTN form of the activations (default zero-point: it keeps exact zeros; the paper form "
                        "moves them by up to half a step, on every channel)")
    p.add_argument("--tolerance", type=float, default=QUANT_TOLERANCE,
                   help=f"a setting is usable when its perplexity ratio's 95%% interval lies wholly below this "
                        f"(default {QUANT_TOLERANCE:g}): the finding gives the largest usable block size per variant")
    p.add_argument("--clip-z", type=float, default=None, help="clip weights beyond this z-score (default 4)")
    p.add_argument("--clip-top", type=float, default=None,
                   help="instead of --clip-z: clip the largest fraction of magnitudes, e.g. 0.0001")
    p.add_argument("--windows", type=int, default=16, help="evaluation windows per setting (default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the catalog already holds a study of MODEL's latest validated scan")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_scan_options(p, brief=True, leave_out=("--no-validate",))
    p.set_defaults(func=run)

    q = sub.add_parser(
        "protect", help="the entries to keep in full precision when quantizing a model (from the catalog)",
        description="The protect list of MODEL from the catalog's latest validated scan of it: its catastrophic "
                    "weights (super_weight and super_set) with the tensor name and index as transformers and "
                    "GGUF store them, value and verdict, and the down projections' input channels to hold out "
                    "of activation quantization. Versioned JSON with --format json (schema in the README).")
    q.add_argument("model", metavar="MODEL")
    catalog_option(q)
    q.add_argument("--format", choices=("table", "json", "llama-quantize", "transformers"), default="table",
                   help="table; json (the list); llama-quantize (--tensor-type overrides keeping the tensors that "
                        "hold catastrophic weights at --type, for llama-quantize's command line); transformers "
                        "(a JSON list of the modules holding them, for a quantization config's "
                        "modules_to_not_convert)")
    q.add_argument("--type", default="Q8_0", type=str.upper,
                   help="with --format llama-quantize: the GGUF type of the protected tensors (default Q8_0)")
    q.set_defaults(func=run_protect)


def _catalog_keep(catalog, model: str):
    """(the catastrophic weights of the model's latest validated scan, its scan id), or (None, None) when the
    catalog holds no validated scan of it."""
    from scanner.adapters import Coord

    from .protect import catastrophic, latest_validated

    scan = latest_validated(catalog, model) if catalog is not None and catalog.exists() else None
    if scan is None:
        return None, None  # never scanned with validation: scan first
    return [Coord(w["layer"], w["module"], w["row"], w["col"], w["expert"])
            for w in catastrophic(catalog, scan["scan_id"])], scan["scan_id"]


def run(args) -> int:
    import datetime
    import uuid

    from scanner import __version__
    from scanner.errors import BadInput
    from scanner.cpus import set_threads
    from scanner.options import scan_config
    from scanner.study.quant_finding import finding, render
    from scanner.study.quant_study import StudyConfig, study_source
    from scanner.study.quantize import Clip
    from scanner.load.sources import resolve

    cfg = scan_config(args)
    if args.clip_z is not None and args.clip_top is not None:
        raise BadInput("--clip-z and --clip-top choose the same thing: give one")
    try:
        clip = Clip(z=None, top=args.clip_top) if args.clip_top is not None else \
            Clip(z=4.0 if args.clip_z is None else args.clip_z)
    except ValueError as e:
        raise BadInput(str(e)) from None
    study = StudyConfig(bits=args.bits, blocks=args.blocks, variants=args.variants, act_bits=args.act_bits,
                        clip=clip, windows=args.windows, rtn=args.rtn, act_rtn=args.act_rtn,
                        tolerance=args.tolerance)
    catalog = None
    if args.catalog or os.environ.get("SUPERWEIGHTS_CATALOG"):
        from catalog.store import Catalog

        catalog = Catalog(args.catalog)
    keep, scan_id = _catalog_keep(catalog, args.model)
    if args.if_missing and scan_id is not None:
        from catalog import query

        _, done = query.run(catalog, "SELECT count(*) FROM quant_results WHERE scan_id = $1", [scan_id])
        if done[0][0]:
            log.info("%s: its latest scan is already studied in %s (--if-missing)", args.model, catalog.location)
            return 0
    if catalog is not None:
        catalog.ensure_writable()  # before a long study, not after
    set_threads()
    source = resolve(args.model, args.revision)
    started = datetime.datetime.now(datetime.timezone.utc)
    res = study_source(source, cfg, study, keep, progress=not args.quiet)
    model = args.model
    if res.scan is not None:
        from catalog.rows import ok_row

        row = ok_row(res.scan.to_dict())
        model = row["model"]
        if catalog is not None:
            scan_id = catalog.write_scan(row)
    labels, study_id, line = [c.label() for c in res.keep], uuid.uuid4().hex, finding(res.rows, study.tolerance)
    rows = [{"study_id": study_id, "scan_id": scan_id, "model": model, "revision": source.revision,
             "scanner_version": __version__, "dtype": res.dtype, "started": started, "clip": res.clip,
             "tolerance": study.tolerance,
             "kept": labels, "ppl_base": res.ppl_base, "eval_text_sha256": res.eval_text_sha256, "finding": line, **r.to_dict()}
            for r in res.rows]
    if catalog is not None:
        catalog.write("quant_results", rows)
        log.info("wrote %d quantization rows of %s to %s", len(rows), model, catalog.location)
    out = {"model": model, "revision": source.revision, "keep": labels, "rtn": study.rtn, "act_rtn": study.act_rtn,
           "tolerance": study.tolerance,
           "coordinates_from": "catalog" if res.scan is None else "scan", "scan_id": scan_id,
           "ppl_base": res.ppl_base, "finding": line, "rows": [r.to_dict() for r in res.rows]}
    print(json.dumps(out, indent=1) if args.json else
          f"{model}: keeping {', '.join(labels) or 'nothing'} ({out['coordinates_from']}); RTN form: weights {study.rtn}, "
          f"activations {study.act_rtn}\n\n"
          + render(res.rows, study.tolerance))
    return 0


def run_protect(args) -> int:
    from catalog.store import Catalog

    from .errors import NotInCatalog
    from .protect import llama_quantize, protect_list, render, transformers_modules

    catalog = Catalog(args.catalog)
    if not catalog.exists():
        raise NotInCatalog(f"no catalog at {catalog.location}: scan {args.model} into one first")
    data = protect_list(catalog, args.model)
    if args.format == "llama-quantize":
        import gguf

        from scanner.errors import BadInput

        if args.type not in gguf.GGMLQuantizationType.__members__:
            raise BadInput(f"unknown GGUF type {args.type!r}; e.g. Q8_0, Q6_K, F16")
        lines = llama_quantize(data, args.type)
    elif args.format == "transformers":
        lines = [json.dumps(transformers_modules(data))]
    else:
        lines = [json.dumps(data, indent=1) if args.format == "json" else render(data)]
    if not data["weights"]:
        log.info("%s: no catastrophic weight in its latest validated scan: nothing to protect", args.model)
    if lines:
        print("\n".join(lines))
    return 0
