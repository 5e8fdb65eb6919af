"""The catalog commands of `superweights`: query, publish, import-reference. Errors are raised, and
`cluster.cli.main` turns them into one-line messages. Nothing here imports torch."""
from __future__ import annotations

import logging
import sys

from .errors import BadOption
from . import views

log = logging.getLogger("superweights")
CATALOG_HELP = "catalog folder or URI (s3://..., file://...); default: $SUPERWEIGHTS_CATALOG, else " \
               "~/.local/share/superweights/catalog"


def catalog_option(parser, **kw) -> None:
    """--catalog, as every command that reads or writes a catalog takes it."""
    parser.add_argument("--catalog", metavar="LOCATION", **{"help": CATALOG_HELP, **kw})


def catalog_to_write(location: str | None):
    """The catalog a command also writes to when asked (--catalog, else $SUPERWEIGHTS_CATALOG), checked
    writable before any long work; None when not asked."""
    import os

    if not (location or os.environ.get("SUPERWEIGHTS_CATALOG")):
        return None
    from .store import Catalog

    catalog = Catalog(location)
    catalog.ensure_writable()
    return catalog


QUERY = ("Run read-only SQL (DuckDB) over the catalog's views: "
         + ", ".join(v for v in views.views() if not v.endswith("_all"))
         + ", and *_all versions that include superseded scans (super_weights: the candidates of the catastrophic "
           "tiers). Or ask a common question with --model, --layer/--architecture, --disagreements or --family.")
QUERY_EXAMPLE = "example: superweights query \"SELECT model, layer, row, col FROM super_weights WHERE verdict = " \
                "'super_weight'\""


def add_commands(sub, canonical=None) -> None:
    """The catalog's commands on `sub`. `canonical(FILE or None)`: the scan configuration whose scans `publish`
    shows (a catalog.canonical.Canonical; the service layer knows the scanner's); without it, the latest."""
    q = sub.add_parser("query", help="run read-only SQL over the catalog, or a common question", description=QUERY,
                       epilog=QUERY_EXAMPLE)
    q.add_argument("sql", nargs="?", metavar="SQL", help="one or more read-only statements; the last one's rows")
    catalog_option(q)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")
    q.add_argument("--memory-limit", metavar="SIZE", type=size,
                   help="memory the query may take (default: a quarter of this machine's, at most 4GiB)")
    q.add_argument("--time-limit", metavar="SECONDS", type=seconds, default=300.0,
                   help="stop the query after this long (default 300)")
    q.add_argument("--model", help="the weights of this model's latest scan, every tier a measurement decided, "
                                   "with intervals")
    q.add_argument("--tier", action="append", choices=views.VALIDATED + ("unvalidated",), metavar="TIER",
                   help="with --model: only this tier (repeat for more): " + ", ".join(views.VALIDATED)
                        + ", unvalidated")
    q.add_argument("--layer", type=int, help="models with a super weight in this layer")
    q.add_argument("--architecture", help="models of this architecture (model_type) with a super weight")
    q.add_argument("--disagreements", action="store_true",
                   help="latest scans that disagree with the published reference coordinates")
    q.add_argument("--family", metavar="MODEL",
                   help="every model of MODEL's family (its base's base ... and their derivatives) with what the "
                        "comparison with its base found")
    q.set_defaults(func=_run_query)

    p = sub.add_parser(
        "publish", help="write the coordinate index (Markdown, CSV, JSON, changelog, plots, HTML)",
        description="Write the coordinate index of the catalog's latest scans to OUT_DIR: index.md (the "
                    "paper's Table 1 form), index.csv, index.json, CHANGELOG.md against the index already in "
                    "OUT_DIR, a dataset card README.md, plots/*.png and index.html.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    catalog_option(p)
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="then upload OUT_DIR as this Hugging Face dataset (token from HF_TOKEN or `hf auth "
                        "login`, never written anywhere)")
    p.add_argument("--private", action="store_true", help="create the hub dataset private")
    p.add_argument("--workers", type=int, help="processes drawing plots (default: cores, at most 8)")
    _shown_config(p, canonical, _run_publish)

    e = sub.add_parser(
        "export", help="write the index's coordinates as one flat table (Parquet and Delta) for other engines",
        description="Write OUT_DIR/coordinates.parquet and the Delta table OUT_DIR/coordinates: one row per weight "
                    "that matters (catastrophic and mild) in the scan `publish` shows for each model, with its model, "
                    "revision and configuration; pandas, polars and DuckDB read either directly (`publish` writes "
                    "them too).")
    e.add_argument("out_dir", metavar="OUT_DIR")
    catalog_option(e)
    _shown_config(e, canonical, _run_export)

    r = sub.add_parser(
        "import-reference", help="import published coordinates and channel claims as reference rows",
        description="Import published claims into the catalog as reference rows, marked with their source: "
                    "coordinates (CSV columns model, hub_id, layer, module, row, col, source, and optionally "
                    "expert) or claims about a channel (model, hub_id, layer, row, claim, effect, source). "
                    "Default: the three files shipped with superweights (the paper's Table 1 and others, "
                    "published expert weights, published channels).")
    r.add_argument("csv", nargs="?", metavar="CSV")
    catalog_option(r)
    r.set_defaults(func=_run_import)

    c = sub.add_parser("catalog", help="look after a catalog: migrate an old one, compact, check and repair",
                       description="Look after a catalog's Delta tables.")
    ops = c.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    m = ops.add_parser("migrate", help="copy a catalog of superweights 0.1 (Parquet files) into a new location",
                       description="Read a catalog written by superweights 0.1 (scans/bucket=*/ Parquet files, "
                                   "schema versions 1 and 2) and write its scans and reference rows as Delta tables "
                                   "at NEW. OLD is only read; unreadable files are named and left out.")
    m.add_argument("old", metavar="OLD")
    m.add_argument("new", metavar="NEW")
    m.set_defaults(func=_run_migrate)
    k = ops.add_parser("compact", help="merge small files, checkpoint the logs, delete files no snapshot needs",
                       description="Merge the tables' small files, write a checkpoint of each log, and delete files "
                                   "that no snapshot younger than --retention-hours needs (those of killed writers "
                                   "too). A batch does it when it ends; writers never do (two compactions at once "
                                   "duplicate rows).")
    catalog_option(k)
    k.add_argument("--retention-hours", type=float, default=168.0,
                   help="keep files a snapshot this recent may read (default 168: a week; below 1, --force)")
    k.add_argument("--force", action="store_true",
                   help="allow a retention below 1 hour: only when no writer or query is at work")
    k.set_defaults(func=_run_compact)
    h = ops.add_parser("check", help="verify the logs, checkpoints and data files; --repair what can be",
                       description="Verify every table's log entries, checkpoints and data files (readable, in "
                                   "the table's schema, named by the log). With --repair: a bad checkpoint is "
                                   "written anew, a bad log entry is set aside with the entries after it and their "
                                   "readable rows appended again; nothing is deleted (_set_aside/ beside the "
                                   "tables). Exit status 1 when a problem remains.")
    catalog_option(h)
    h.add_argument("--repair", action="store_true", help="repair what can be repaired, saying what was done")
    h.set_defaults(func=_run_check)


def _shown_config(parser, canonical, func) -> None:
    """--config FILE, where the service layer says which configuration's scans an index shows."""
    if canonical is not None:
        parser.add_argument("--config", metavar="FILE",
                            help="show each model's scan made with this scan configuration (JSON, as `--scan-config` "
                                 "takes; default: the default configuration); scans of others are listed apart")
    parser.set_defaults(func=func, canonical=canonical)


def _shown(args):
    """The configuration whose scans an index shows (`_shown_config`): --config FILE's, else the default."""
    return args.canonical(getattr(args, "config", None)) if args.canonical else None


def size(text: str) -> int:
    """'500MB', '2GiB' -> bytes (argparse turns the ValueError into a one-line usage error)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", text, re.I)
    if not m:
        raise ValueError(text)
    size = float(m.group(1)) * (1024 if m.group(3) else 1000) ** " kmgt".index((m.group(2) or " ").lower())
    if not 1 << 20 <= size < 1 << 50:
        raise ValueError(text)
    return int(size)


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 1e7:
        raise ValueError(text)
    return value


def _open(args):
    from .store import Catalog

    import os

    cat = Catalog(args.catalog)
    if cat.local and not cat.exists():
        state = "holds no catalog tables" if os.path.isdir(cat.root) else "does not exist yet"
        log.warning("warning: catalog %s %s; it is empty", cat.location, state)
    return cat


def _run_query(args) -> int:
    from . import query

    short = [args.model is not None, args.layer is not None or args.architecture is not None, args.disagreements,
             args.family is not None]
    if sum(short) + (args.sql is not None) != 1:
        raise BadOption("give either SQL or one of --model, --layer/--architecture, --disagreements, --family")
    params = None
    if args.tier and args.model is None:
        raise BadOption("--tier goes with --model")
    if args.model is not None:
        sql, params = views.model_sql(args.model, tuple(args.tier or views.VALIDATED))
    elif short[1]:
        sql, params = views.where_sql(args.layer, args.architecture)
    elif args.disagreements:
        sql = views.DISAGREEMENTS_SQL
    elif args.family is not None:
        sql, params = views.family_sql(args.family)
    else:
        sql = args.sql
    query.check_read_only(sql)  # a refused statement is the error, before any note about the catalog
    limits = query.Limits(**({"memory_bytes": args.memory_limit} if args.memory_limit else {}),
                          seconds=args.time_limit)
    columns, rows = query.run(_open(args), sql, params, limits)
    print(query.render(columns, rows, args.format))
    return 0


def _run_publish(args) -> int:
    from .publish import publish, push_to_hub

    if args.workers is not None and args.workers < 1:
        raise BadOption(f"--workers must be at least 1, got {args.workers}")
    s = publish(_open(args), args.out_dir, args.workers, _shown(args))
    changes = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in s.changes.items() if v) or "no changes"
    print(f"published {s.models} model(s), {s.coordinates} coordinate(s)"
          + (f", {s.failed} failed scan(s) listed" if s.failed else "")
          + f" to {s.out_dir} in {s.seconds:.1f} s ({s.plots_drawn} plot(s) drawn); since the previous index: "
          + changes)
    if args.push_to_hub:
        url = push_to_hub(args.out_dir, args.push_to_hub, private=args.private)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub} ({url})")
    return 0


def _run_export(args) -> int:
    from .publish import export_coordinates

    n = export_coordinates(_open(args), args.out_dir, _shown(args))
    print(f"wrote {n} coordinate(s) to {args.out_dir}/coordinates.parquet and the Delta table "
          f"{args.out_dir}/coordinates")
    return 0


def _run_import(args) -> int:
    from . import reference
    from .store import Catalog

    cat = Catalog(args.catalog)
    cat.ensure_writable()
    for path in [args.csv] if args.csv else reference.shipped():
        n, where = cat.import_reference(path)
        print(f"imported {n} reference row(s) from {path} into {where}", file=sys.stdout)
    return 0




def _run_check(args) -> int:
    from .repair import check
    from .store import Catalog

    catalog = Catalog(args.catalog)
    report = check(catalog, repair=args.repair)
    print(report.render())
    if args.repair and report.repairs:
        report = check(Catalog(args.catalog))
        print(report.render())
    return 1 if report.findings else 0


def _run_migrate(args) -> int:
    from .legacy import migrate
    from .store import Catalog

    scans, refs, skipped = migrate(args.old, Catalog(args.new))
    print(f"migrated {scans} scan(s) and {refs} reference row(s) from {args.old} to {args.new}"
          + (f"; {len(skipped)} unreadable file(s) left out (named above)" if skipped else ""))
    return 0


def _run_compact(args) -> int:
    import math

    from .store import Catalog

    if not 0 <= args.retention_hours < math.inf:
        raise BadOption(f"--retention-hours must be a number of hours, got {args.retention_hours}")
    removed = Catalog(args.catalog).compact(args.retention_hours, force=args.force)
    print("compacted " + ", ".join(f"{t} ({n} file(s) deleted)" for t, n in removed.items()) if removed
          else "nothing to compact: the catalog has no tables")
    return 0
