"""Batch throughput on a local Ray and on local worker processes (`--local`): models per minute with 1 and 2
workers, the scheduling overhead, and a whole `superweights batch` command of one model each way.

    .venv/bin/python bench/cluster_bench.py [--models 12]

Each run scans the same tiny planted models (built once, before timing) into a fresh catalog. Overhead
per model = time from submission to the result back in the driver, minus the scan's own duration (queue
wait, hand-over, result transfer); worker start-up (imports) is reported apart.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "olmo2", "phi3", "gpt2", "gpt_neox", "opt", "falcon"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--no-validate", action="store_true", help="detection only (shorter scans, more overhead)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sw-cluster-bench-"))
    os.environ["SUPERWEIGHTS_CACHE"] = str(tmp / "cache")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from catalog.store import Catalog
    from cluster import batch
    from cluster.models import parse
    from cluster.pin import pin
    from scanner.config import ScanConfig

    names = [f"planted:{ARCHS[i % len(ARCHS)]}" for i in range(min(args.models, len(ARCHS)))]
    entries = parse("\n".join(names))
    for e in entries:
        pin(e)  # builds the planted models now, outside the timings
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(f"{len(entries)} tiny planted models, {os.cpu_count()} cores; ray.init {time.perf_counter() - t:.1f} s")
    scan = ScanConfig(run_validation=not args.no_validate)
    for local in (False, True):
        for workers in (1, 2):
            cat = Catalog(tmp / f"catalog-{workers}-{local}")
            s = batch.run(entries, cat, batch.BatchConfig(workers=workers, progress=False, scan=scan, local=local))
            assert len(s.done) == len(entries), s.render()
            scan_med = statistics.median(s.scan_s)
            over = statistics.median(s.queue_s[workers:]) if len(s.queue_s) > workers else float("nan")
            print(f"{'local' if local else 'Ray'}, {workers} worker(s): {len(entries)} models in {s.seconds:.1f} s = "
                  f"{len(entries) / s.seconds * 60:.1f} models/min; scan median {scan_med:.2f} s; scheduling "
                  f"overhead per model (queue + hand-over, after start) median {over * 1e3:.0f} ms; "
                  f"first result after {s.queue_s[0] + s.scan_s[0]:.1f} s (worker start-up and imports included)")
    ray.shutdown()
    models = tmp / "one.txt"
    models.write_text(names[0] + "\n")
    for local in (False, True):  # what a user waits for: the command, from start to exit
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cluster.cli", "batch", str(models), "--catalog",
                        str(tmp / f"cli-{local}"), "-q", "--workers", "1", *(["--local"] if local else [])],
                       check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        print(f"`superweights batch` of one planted model{' --local' if local else ''}: "
              f"{time.perf_counter() - t:.1f} s from start to exit")


if __name__ == "__main__":
    main()
