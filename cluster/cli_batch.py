"""The batch commands of `superweights`: batch, submit, status, logs. They take the scan options of
`scan` (`scanner.options`), checked here, before Ray starts. Errors are raised, and `cluster.cli.main`
turns them into one-line messages."""
from __future__ import annotations

import json
import logging
import os
import sys

from catalog.cli import catalog_option, size
from scanner.options import add_scan_options

from .errors import BadOption

log = logging.getLogger("superweights")
ADDRESS_HELP = "Ray dashboard address (default: $RAY_ADDRESS if it is http(s)://, else http://127.0.0.1:8265)"


def add_commands(sub) -> None:
    b = sub.add_parser(
        "batch", help="scan a list of models on Ray workers (or local processes) into the catalog",
        description="Scan every model of MODELS_FILE (one per line: MODEL[@REVISION] [timeout=S] "
                    "[trust_remote_code=true] [base=MODEL], # comments; base= names the model this one was made "
                    "from, scanned first and compared with it) on Ray actors, writing each scan to the catalog as it "
                    "finishes. Models already scanned at the same pinned revision by this scanner version with the "
                    "same configuration are skipped (--rescan: none), so a batch re-run resumes. Without --address "
                    "Ray starts in this process; with --local the workers are processes of this machine, without Ray.")
    b.add_argument("models_file", metavar="MODELS_FILE", nargs="?",
                   help="default: the shipped list (SmolLM2, Gemma-3 and planted models)")
    catalog_option(b)
    b.add_argument("--address", help="Ray cluster to join ('auto', ray://HOST:10001); default: start one here")
    b.add_argument("--local", action="store_true",
                   help="workers as processes of this machine, without Ray (ready in seconds rather than about ten; "
                        "the same scans, retries and time limits)")
    b.add_argument("--workers", type=int, help="scan workers at once (default: one per GPU, else 2)")
    b.add_argument("--gpus-per-model", type=float,
                   help="GPUs per actor (default: 1, or less when the model's weights are known to be small)")
    b.add_argument("--timeout", type=float, default=6 * 3600, help="per-model time limit in seconds (default 6 h)")
    b.add_argument("--retries", type=int, default=2, help="retries when a worker process dies (default 2)")
    b.add_argument("--publish", metavar="OUT_DIR", help="publish the index to OUT_DIR at the end")
    b.add_argument("--rescan", action="store_true",
                   help="scan every model again, even those already scanned with this configuration")
    b.add_argument("--cache-limit", metavar="SIZE", type=size,
                   help="hub models this batch downloads take at most SIZE (e.g. 200GB) of the Hugging Face cache at "
                        "once; each is removed once scanned (what was cached before stays)")
    b.add_argument("--no-fetch-ahead", dest="fetch_ahead", action="store_false",
                   help="download each hub model only when its scan starts (default: the next ones download while "
                        "others are scanned, one per worker)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.add_argument("--progress-lines", action="store_true",
                   help="a line per finished model (done, failed, running, waiting) instead of a bar: for logs "
                        "(`submit` runs its batch so, and `status` reports the last line)")
    add_scan_options(b)
    b.set_defaults(func=_run_batch)

    s = sub.add_parser("submit", help="submit a batch as a Ray job and return its id at once",
                       description="Submit `superweights batch MODELS_FILE` to a Ray cluster through the Ray Jobs "
                                   "API. The models file travels with the job; the catalog must be reachable "
                                   "from the cluster (s3://... or a shared folder).")
    s.add_argument("models_file", metavar="MODELS_FILE")
    s.add_argument("--address", help=ADDRESS_HELP)
    catalog_option(s, required=True, help="catalog URI as the cluster sees it")
    s.add_argument("--timeout", type=float, help="per-model time limit in seconds")
    s.add_argument("--workers", type=int, help="scan actors at once")
    s.add_argument("--publish", metavar="OUT_DIR", help="publish the index there at the end (as the cluster sees it)")
    add_scan_options(s)
    s.set_defaults(func=_run_submit)

    st = sub.add_parser("status", help="the state of a submitted batch", description="The state of a Ray job.")
    st.add_argument("job", metavar="JOB")
    st.add_argument("--address", help=ADDRESS_HELP)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=_run_status)

    lg = sub.add_parser("logs", help="the output of a submitted batch", description="The output of a Ray job.")
    lg.add_argument("job", metavar="JOB")
    lg.add_argument("--address", help=ADDRESS_HELP)
    lg.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    lg.set_defaults(func=_run_logs)


def _address(args) -> str:
    from .jobs import DEFAULT_ADDRESS

    env = os.environ.get("RAY_ADDRESS", "")
    return args.address or (env if env.startswith(("http://", "https://")) else DEFAULT_ADDRESS)


def default_models_file() -> str:
    from importlib import resources

    return str(resources.files("cluster") / "data" / "default_models.txt")


def _batch_scan_config(args):
    """The scan options of a batch: those of `scan`, except that a model's own code may run only when its
    line in the models file says so."""
    from scanner.options import scan_config

    cfg = scan_config(args)
    if cfg.load.trust_remote_code:
        raise BadOption("a batch allows a model's own code only on that model's line of the models file "
                        "(trust_remote_code=true), not for every model")
    return cfg


def _run_batch(args) -> int:
    from catalog.store import Catalog

    from . import batch, models

    for name, value, low in (("--workers", args.workers, 1), ("--retries", args.retries, 0)):
        if value is not None and value < low:
            raise BadOption(f"{name} must be at least {low}, got {value}")
    if not 0 < args.timeout < float("inf") or (args.gpus_per_model is not None
                                                and not 0 <= args.gpus_per_model <= 8):
        raise BadOption("--timeout must be a positive number of seconds and --gpus-per-model between 0 and 8")
    scan = _batch_scan_config(args)
    cfg = batch.BatchConfig(address=args.address, local=args.local, workers=args.workers, gpus=args.gpus_per_model,
                            timeout=args.timeout, retries=args.retries, scan=scan, rescan=args.rescan,
                            progress=not args.quiet and not args.progress_lines, lines=args.progress_lines,
                            cache_limit=args.cache_limit, fetch_ahead=args.fetch_ahead)
    entries = models.read(args.models_file or default_models_file())
    catalog = Catalog(args.catalog)
    catalog.ensure_writable()
    summary = batch.run(entries, catalog, cfg)
    print(summary.render())
    if args.publish:
        from catalog.publish import publish

        from .service import canonical

        s = publish(catalog, args.publish, canonical=canonical(cfg=scan))
        print(f"published {s.models} model(s), {s.coordinates} coordinate(s) to {s.out_dir}")
    return 0


def _run_submit(args) -> int:
    from . import jobs, models

    models.read(args.models_file)  # a missing or malformed list is refused here, not by the cluster
    scan = _batch_scan_config(args)  # and bad scan options too: the job carries the checked configuration
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise BadOption("--timeout must be a positive number of seconds")
    if args.workers is not None and args.workers < 1:
        raise BadOption(f"--workers must be at least 1, got {args.workers}")
    options = [*(["--timeout", str(args.timeout)] if args.timeout else []),
               *(["--workers", str(args.workers)] if args.workers else []),
               *(["--publish", args.publish] if args.publish else [])]
    if "://" not in args.catalog:
        log.warning("warning: %s is a path: the cluster's workers must see it at the same place", args.catalog)
    job = jobs.submit(_address(args), args.models_file, args.catalog, scan, options)
    print(job)
    return 0


def _run_status(args) -> int:
    from . import jobs

    st = jobs.status(_address(args), args.job)
    print(json.dumps(st) if args.json else f"{st['job_id']}: {st['status']}"
          + (f", {st['progress']}" if st["progress"] else "")
          + (f"\n{st['last_line']}" if st["last_line"] else ""))
    return 0


def _run_logs(args) -> int:
    from . import jobs

    jobs.logs(_address(args), args.job, follow=args.follow, out=sys.stdout)
    return 0
