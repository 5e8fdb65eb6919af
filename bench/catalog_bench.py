"""Catalog at scale: build a catalog of synthetic scans, then time writes, the common queries and publishing.

    .venv/bin/python bench/catalog_bench.py                  # 100,000 scans, ~1M candidate rows
    .venv/bin/python bench/catalog_bench.py --scans 5000     # a quick look

Writes: the first --single scans go through the real per-scan path (four Delta commits each: candidates,
spikes, layer profiles, then the scan) from --writers processes at once; the rest are appended 5,000 scans
per commit, then the tables compacted. Each query is timed as the CLI runs it: the tables' logs read, a
snapshot's datasets registered in a fresh sealed DuckDB, the query answered.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog import query, store, views  # noqa: E402
from catalog.publish import publish  # noqa: E402
from catalog.rows import ok_row  # noqa: E402
from catalog.store import Catalog  # noqa: E402
from tests.fixtures.synthetic import result  # noqa: E402

REFERENCED = ["huggyllama/llama-7b", "huggyllama/llama-13b", "meta-llama/Llama-2-7b-hf", "allenai/OLMo-7B-0724-hf"]


def model_of(i: int, models: int) -> str:
    m = i % models
    return REFERENCED[m] if m < len(REFERENCED) else f"org{m % 97}/model-{m}"


def rows_for(start: int, stop: int, models: int, candidates: int) -> list[dict]:
    t0 = 1_700_000_000
    return [ok_row(result(model_of(i, models), i, candidates=candidates, started=t0 + i)) for i in range(start, stop)]


def _single_writer(location: str, start: int, stop: int, models: int, candidates: int, q) -> None:
    rows = rows_for(start, stop, models, candidates)
    cat = Catalog(location)
    t = time.perf_counter()
    for r in rows:
        cat.write_scan(r)
    q.put(time.perf_counter() - t)


def timed(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=100_000)
    ap.add_argument("--models", type=int, default=20_000, help="distinct models (the rest are rescans)")
    ap.add_argument("--candidates", type=int, default=10, help="candidate rows per scan")
    ap.add_argument("--single", type=int, default=2_000, help="scans written one file each")
    ap.add_argument("--writers", type=int, default=2, help="processes writing single scans at once")
    ap.add_argument("--dir", help="where to build (default: a temporary folder, removed after)")
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="sw-catalog-bench-"))
    location = str(base / "catalog")
    shutil.rmtree(location, ignore_errors=True)
    cat = Catalog(location)
    print(f"catalog {location}: {args.scans} scans of {args.models} models, {args.candidates} candidates each, "
          f"{os.cpu_count()} cores")

    # per-scan writes from several processes
    single = min(args.single, args.scans)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    bounds = [(single * w // args.writers, single * (w + 1) // args.writers) for w in range(args.writers)]
    procs = [ctx.Process(target=_single_writer, args=(location, a, b, args.models, args.candidates, q))
             for a, b in bounds]
    for p in procs:
        p.start()
    spans = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(spans)
    files = len(cat.table("scans").file_uris())
    print(f"write, one durable scan at a time: {single} scans by {args.writers} processes in {wall:.1f} s = "
          f"{single / wall:.0f} scans/s ({wall / single * args.writers * 1e3:.1f} ms per scan per process); "
          f"{files} data files in the scans table's snapshot (writers do not compact)")

    # the rest in files of 5,000 scans
    gen = write = 0.0
    for start in range(single, args.scans, 5000):
        t = time.perf_counter()
        rows = rows_for(start, min(start + 5000, args.scans), args.models, args.candidates)
        gen += time.perf_counter() - t
        t = time.perf_counter()
        cat.write_scans(rows)
        write += time.perf_counter() - t
    bulk = args.scans - single
    if bulk:
        print(f"write, 5,000 scans per commit: {bulk} scans in {write:.1f} s = {bulk / write:.0f} scans/s "
              f"({bulk * args.candidates / write:.0f} candidate rows/s; generating them took {gen:.1f} s)")
    t = time.perf_counter()
    cat.compact()
    print(f"compaction of every table (and a checkpoint of each log): {time.perf_counter() - t:.1f} s")
    cat.import_reference(Path(__file__).resolve().parents[1] / "catalog/data/published_super_weights.csv")
    cat.compact(retention_hours=0, force=True)  # what a week's vacuum leaves (nothing else at work here)
    size = sum(f.stat().st_size for f in Path(location).rglob("*") if f.is_file())
    n_files = len([f for f in Path(location).rglob("*.parquet") if "_delta_log" not in f.parts])
    print(f"catalog after compaction and vacuum: {n_files} data files, {size / 1e6:.0f} MB with the logs")

    cols, data = query.run(cat, "SELECT (SELECT count(*) FROM scans_all), (SELECT count(*) FROM candidates_all)")
    print(f"rows: {data[0][0]} scans, {data[0][1]} candidate rows")
    checks = [
        ("count scans (scans view)", "SELECT count(*) FROM scans", None),
        ("super weights of one model (--model)", *views.model_sql(model_of(len(REFERENCED) + 5, args.models))),
        ("models with a super weight in layer 2 (--layer 2)", *views.where_sql(2, None)),
        ("models of one architecture (--architecture llama)", *views.where_sql(None, "llama")),
        ("scans that disagree with the reference (--disagreements)", views.DISAGREEMENTS_SQL, None),
        ("reference rows only", "SELECT count(*) FROM reference", None),
    ]
    print("common queries, each as the CLI runs it (logs read, fresh sealed DuckDB), median of 3:")
    for name, sql, params in checks:
        n = len(query.run(cat, sql, params)[1])
        print(f"  {timed(lambda: query.run(cat, sql, params)):6.3f} s  {name}  ({n} rows)")

    out = base / "index"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    s = publish(cat, out)
    first = time.perf_counter() - t
    print(f"publish: {s.models} models, {s.coordinates} coordinates, {s.plots_drawn} plots in {first:.1f} s")
    t = time.perf_counter()
    s = publish(cat, out)
    print(f"publish again, nothing changed: {time.perf_counter() - t:.1f} s ({s.plots_drawn} plots drawn)")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
