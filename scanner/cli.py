"""The `superweights` command. The one place where library errors become exit codes.

Results go to stdout, progress to stderr; a user mistake is one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from catalog.errors import CatalogError
from cluster.errors import ClusterError

from .errors import BadInput, ScanError

log = logging.getLogger("superweights")


def _scan_parser(sub) -> None:
    from .sources import DEFAULT_MODEL, PACKAGED

    p = sub.add_parser(
        "scan", help="find, validate and report the super weights of one model",
        description="Find, validate and report the super weights of one model. MODEL is a local folder "
                    "(safetensors), a .gguf file, a hub id org/name[@revision], or a packaged model: "
                    + ", ".join("pkg:" + k for k in sorted(PACKAGED)) + ", or a tiny model with a planted super weight at "
                    f"layer 1 [10, 20]: planted:ARCH (e.g. planted:llama). Default: {DEFAULT_MODEL}.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL")
    p.add_argument("--revision", help="hub revision (branch, tag or commit); same as MODEL@REV")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="calibration prompt (repeatable; default: the paper's)")
    p.add_argument("--prompts-file", type=Path, help="more calibration prompts, one per line")
    p.add_argument("--eval-text", type=Path, help="evaluation text for perplexity (default: shipped text)")
    p.add_argument("--eval-tokens", type=int, default=1024, help="evaluation tokens used (default 1024)")
    p.add_argument("--no-validate", action="store_true", help="detect only; skip ablation")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on cuda, float32 on cpu), float32, "
                                                   "bfloat16, float16")
    p.add_argument("--max-memory", help="memory budget on the device, e.g. 2GiB: a model that does not fit is streamed layer "
                        "by layer (CPU), or offloaded by accelerate (GPU, --offload-folder, or a checkpoint "
                        "that cannot be streamed)")
    p.add_argument("--offload-folder", help="where to offload to disk (default: a temporary folder)")
    p.add_argument("--stream", action="store_true",
                   help="read decoder layers from the safetensors shards or GGUF file one at a time (peak memory "
                        "about two layers); chosen by itself when the model does not fit the free memory")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own Python code to run (only for models you trust)")
    p.add_argument("--spike-ratio", type=float, default=10.0,
                   help="a spike is this many times the model's median layer maximum (default 10)")
    p.add_argument("--max-rounds", type=int, default=3, help="detection rounds (default 3)")
    p.add_argument("--max-candidates", type=int, default=16, help="candidates validated (default 16)")
    p.add_argument("--min-ppl-ratio", type=float, default=1.5,
                   help="perplexity ratio that makes an ablation significant (default 1.5)")
    p.add_argument("--catalog", metavar="LOCATION",
                   help="also write the result (or the failure) to this catalog: a folder or a URI such as "
                        "s3://bucket/path (default: $SUPERWEIGHTS_CATALOG if set, else not written)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_run_scan)


def _positive(name: str, value, minimum) -> None:
    if value < minimum:
        raise BadInput(f"{name} must be at least {minimum}, got {value}")


def _run_scan(args) -> int:
    from .detect import DetectConfig
    from .loading import LoadOptions, set_threads
    from .scan import PAPER_PROMPT, ScanConfig
    from .validate import ValidateConfig

    _positive("--eval-tokens", args.eval_tokens, 2)
    _positive("--max-rounds", args.max_rounds, 1)
    _positive("--max-candidates", args.max_candidates, 1)
    _positive("--spike-ratio", args.spike_ratio, 1.0)
    _positive("--min-ppl-ratio", args.min_ppl_ratio, 1.0)
    prompts = list(args.prompts or [])
    if args.prompts_file:
        prompts += [ln for ln in _read(args.prompts_file).splitlines() if ln.strip()]
    eval_text = _read(args.eval_text) if args.eval_text else None
    cfg = ScanConfig(prompts=prompts or [PAPER_PROMPT],
                     detect=DetectConfig(spike_ratio=args.spike_ratio, max_rounds=args.max_rounds,
                                         max_candidates=args.max_candidates),
                     validate=ValidateConfig(min_ppl_ratio=args.min_ppl_ratio, eval_tokens=args.eval_tokens),
                     eval_text=eval_text, run_validation=not args.no_validate)
    opts = LoadOptions(device=args.device, dtype=args.dtype, max_memory=args.max_memory,
                       offload_folder=args.offload_folder, trust_remote_code=args.trust_remote_code,
                       stream=args.stream)
    catalog = None
    if args.catalog or os.environ.get("SUPERWEIGHTS_CATALOG"):
        from catalog.store import Catalog

        catalog = Catalog(args.catalog)
        catalog.ensure_writable()  # before a long scan, not after
    set_threads()
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    result = _scan_into(catalog, args, opts, cfg)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(result.render())
    log.info("scanned %s in %.1f s", args.model, result.timings["total_s"])
    return 0


def _scan_into(catalog, args, opts, cfg):
    """Scan; with a catalog, write the result, or a `failed` row naming the error, then re-raise it."""
    from .scan import scan_to_row

    row, result, error = scan_to_row(args.model, args.revision, opts, cfg)
    if catalog is not None:
        path = catalog.write_scan(row)
        log.info("wrote the %sscan of %s to %s", "failed " if error else "", args.model, path)
    if error is not None:
        raise error
    return result


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e.strerror if isinstance(e, OSError) else e}") from None


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="superweights",
                                     description="Map the super weights of large language models.")
    parser.add_argument("--version", action="version", version=f"superweights {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _scan_parser(sub)
    from .cli_catalog import add_catalog_commands

    add_catalog_commands(sub)
    from .cli_cluster import add_cluster_commands

    add_cluster_commands(sub)
    return parser


def _quiet_libraries(quiet: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    _quiet_libraries(getattr(args, "quiet", False))
    try:
        return args.func(args)
    except (ScanError, CatalogError, ClusterError) as e:
        print(f"superweights: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("superweights: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
