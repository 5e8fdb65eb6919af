"""`superweights diff A B`: where A's super weights are in B and B's in A, and whether each model's set still
matters in the other (cluster.lineage)."""
from __future__ import annotations

import json
import logging

log = logging.getLogger("superweights")


def add_commands(sub) -> None:
    from catalog.cli import catalog_option
    from scanner.options import add_scan_options

    d = sub.add_parser(
        "diff", help="compare the super weights of two models of a family, with cross-ablations",
        description="Compare A (say, a base model) and B (a fine-tune or quantization of it): for every weight "
                    "that matters in either, kept (same layer, row, col), moved (same layer and row, another col; "
                    "or the same row in a neighbouring layer), lost or new, with both values and spike sizes; and "
                    "cross-ablations with 95% intervals and verdicts: A's catastrophic set zeroed in B, B's in A, "
                    "and each model's own set beside them. A and B are models (their latest scan in the catalog, "
                    "or scanned first) or scan ids. The comparison is written to the catalog's lineage table.")
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B")
    catalog_option(d, help="read the scans from, and write new scans and the comparison to, this catalog "
                           "(default: $SUPERWEIGHTS_CATALOG if set, else nothing is written)")
    d.add_argument("--no-ablate", action="store_true",
                   help="compare coordinates only (no model is loaded when both are in the catalog)")
    d.add_argument("--json", action="store_true", help="print the lineage row as JSON instead of the table")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    add_scan_options(d, brief=True, leave_out=("--no-validate",))
    d.set_defaults(func=run_diff)


def run_diff(args) -> int:
    from catalog.cli import catalog_to_write
    from catalog.lineage import render
    from catalog.query import jsonable
    from scanner.cpus import set_threads
    from scanner.options import scan_config

    from .errors import BadOption
    from .lineage import diff

    cfg = scan_config(args)
    if args.a == args.b:
        raise BadOption(f"diff compares two models; both are {args.a!r}")
    catalog = catalog_to_write(args.catalog)  # checked before loading models
    set_threads()
    row = diff(catalog, args.a, args.b, cfg, ablate=not args.no_ablate, progress=not args.quiet)
    print(json.dumps(jsonable(row), indent=1) if args.json else render(row))
    return 0
