"""The `superweights` command: one parser assembled from the commands each package owns (`scan` and the
batch commands here, `catalog.cli`'s query, publish and import-reference), and `main`, the one place where
library errors become exit codes and one-line messages.

Results go to stdout, progress to stderr; a user mistake is one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from catalog.errors import CatalogError
from scanner.errors import ScanError

from .errors import ClusterError

log = logging.getLogger("superweights")


def _scan_parser(sub) -> None:
    from catalog.cli import catalog_option
    from scanner.options import add_scan_options
    from scanner.load.shipped import DEFAULT_MODEL, DERIVED, PACKAGED

    p = sub.add_parser(
        "scan", help="find, validate and report the super weights of one model",
        description="Find, validate and report the super weights of one model. MODEL is a local folder "
                    "(safetensors), a .gguf file, a hub id org/name[@revision], or a packaged model: "
                    + ", ".join("pkg:" + k for k in sorted({**PACKAGED, **DERIVED})) + ", or a tiny model with a planted super weight at "
                    f"layer 1 [10, 20]: planted:ARCH (e.g. planted:llama). Default: {DEFAULT_MODEL}.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL")
    p.add_argument("--revision", help="hub revision (branch, tag or commit); same as MODEL@REV")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    catalog_option(p, help="also write the result (or the failure) to this catalog: a folder or a URI such as "
                           "s3://bucket/path (default: $SUPERWEIGHTS_CATALOG if set, else not written)")
    p.add_argument("--base", metavar="MODEL", help="the model this one was made from (a hub id, path or pkg:name), "
                                                   "recorded in the catalog in place of what its files declare")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_scan_options(p)
    p.set_defaults(func=_run_scan)


def _run_scan(args) -> int:
    from catalog.cli import catalog_to_write
    from scanner.cpus import set_threads
    from scanner.options import scan_config

    from .service import scan_to_row

    cfg = scan_config(args)  # every option checked before anything is loaded
    check_base(args.model, args.base)
    catalog = catalog_to_write(args.catalog)  # and the catalog checked writable before a long scan
    set_threads()  # before torch starts: a model that is not there fails before torch's seconds of import
    row, result, error = scan_to_row(args.model, args.revision, cfg, progress=not args.quiet, base=args.base)
    if catalog is not None:
        path = catalog.write_scan(row)
        log.info("wrote the %sscan of %s to %s", "failed " if error else "", args.model, path)
    if error is not None:
        raise error
    out = result.to_dict()
    if args.base:
        out.update(base_model=row["base_model"], base_model_from=row["base_model_from"])
    print(json.dumps(out, indent=1) if args.json else result.render())
    log.info("scanned %s in %.1f s", args.model, result.timings["total_s"])
    return 0


def check_base(model: str, base: str | None) -> None:
    """A base model must be another model."""
    from scanner.errors import BadInput
    from scanner.load.sources import model_name

    if base is not None and (not base.strip() or model_name(base) == model_name(model)):
        raise BadInput(f"--base {base!r}: a model's base must name another model")


def _canonical(file: str | None):
    from .service import canonical

    return canonical(file)


def build_parser() -> argparse.ArgumentParser:
    from catalog.cli import add_commands as catalog_commands
    from scanner import __version__

    from .cli_batch import add_commands as batch_commands
    from .cli_lineage import add_commands as lineage_commands
    from .cli_quant import add_commands as quant_commands

    parser = argparse.ArgumentParser(prog="superweights",
                                     description="Map the super weights of large language models.")
    parser.add_argument("--version", action="version", version=f"superweights {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _scan_parser(sub)
    catalog_commands(sub, canonical=_canonical)
    batch_commands(sub)
    quant_commands(sub)
    lineage_commands(sub)
    return parser


def _quiet_libraries(quiet: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if quiet:  # libraries' own bars too (transformers' GGUF conversion uses plain tqdm)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # this program's messages at INFO; libraries' only from WARNING (httpx announces every request at INFO)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("superweights").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
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
