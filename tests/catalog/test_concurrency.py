"""Writers, readers and publishers at once, and writers killed mid-commit: no failure, no traceback, no lost
or half-visible scan, no litter left for good."""
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from catalog import publish, query
from catalog.rows import ok_row
from catalog.store import Catalog
from tests.fixtures.synthetic import result

SPAWN = mp.get_context("spawn")  # delta-rs's runtime does not survive a fork


def _write_for(location: str, worker: int, seconds: float, done) -> None:
    cat, n, end = Catalog(location), 0, time.time() + seconds
    while time.time() < end:
        cat.write_scan(ok_row(result(f"org/w{worker}-{n % 5}", worker * 100_000 + n)))
        n += 1
    done.put(n)


def test_two_writers_while_queries_and_publishes_run(tmp_path):
    location = str(tmp_path / "catalog")
    Catalog(location).write_scan(ok_row(result("org/first", 0)))
    done = SPAWN.Queue()
    writers = [SPAWN.Process(target=_write_for, args=(location, w, 15.0, done)) for w in range(2)]
    for w in writers:
        w.start()
    cat, queries, publishes = Catalog(location), 0, 0
    while any(w.is_alive() for w in writers):
        # one query sees one snapshot: every scan in it is whole, its 10 candidates and 24 layers with it
        [(n, sw, lp)] = query.run(cat, "SELECT (SELECT count(*) FROM scans_all), (SELECT count(*) FROM "
                                       "candidates_all), (SELECT count(*) FROM layer_profiles_all)")[1]
        assert (sw, lp) == (10 * n, 24 * n)
        queries += 1
        if queries % 3 == 0:
            publish.publish(cat, tmp_path / "index", workers=1)
            publishes += 1
    for w in writers:
        w.join(30)
        assert w.exitcode == 0
    written = 1 + done.get(timeout=5) + done.get(timeout=5)
    assert query.run(cat, "SELECT count(*), count(DISTINCT scan_id) FROM scans_all")[1] == [(written, written)]
    assert queries >= 3 and publishes >= 1 and written > 20 and cat.warnings == []


def _write_forever(location: str, worker: int) -> None:
    cat, n = Catalog(location), 0
    while True:
        cat.write_scan(ok_row(result(f"org/k{worker}", worker * 100_000 + n)))
        n += 1


def test_writers_killed_mid_commit_leave_nothing_visible_and_compaction_clears_their_files(tmp_path):
    location = str(tmp_path / "catalog")
    Catalog(location).ensure_writable()
    for k in range(3):
        w = SPAWN.Process(target=_write_forever, args=(location, k))
        w.start()
        time.sleep(4 + k * 0.37)  # somewhere inside a commit, or between two
        os.kill(w.pid, signal.SIGKILL)
        w.join()
    cat = Catalog(location)
    n = query.run(cat, "SELECT count(*) FROM scans_all")[1][0][0]
    assert n > 0
    assert query.run(cat, "SELECT count(*) FROM candidates_all")[1][0][0] == 10 * n  # no half scan shown
    from deltalake import DeltaTable

    # another engine reading the table itself, around the views: whole scans only (a scan is one row, one commit)
    raw = DeltaTable(cat.uri("scans")).to_pyarrow_table()
    assert len(raw) == n and all(len(c) == 10 and len(p) == 24 for c, p in
                                 zip(raw["candidates"].to_pylist(), raw["layer_profiles"].to_pylist()))
    assert sorted(p.name for p in Path(location).iterdir()) == ["lineage", "quant_results", "reference", "scans"]
    cat.compact(retention_hours=0, force=True)  # no writer at work any more

    for name in ("scans",):
        listed = {Path(u.removeprefix("file://")).name for u in DeltaTable(cat.uri(name)).file_uris()}
        on_disk = {p.name for p in Path(cat.uri(name)).glob("*.parquet")}
        assert on_disk == listed, name  # the killed writers' files are gone; none the log names is missing
    assert not [p for p in Path(location).rglob("*") if p.name.startswith(".") and p.is_file()]
    assert query.run(cat, "SELECT count(*) FROM scans_all")[1][0][0] == n


def _compact_for(location: str, seconds: float, retention: float) -> None:
    cat, end = Catalog(location), time.time() + seconds
    while time.time() < end:
        cat.compact(retention_hours=retention)


def test_compaction_at_the_shortest_allowed_retention_while_two_writers_write(tmp_path):
    """Two compactions (merge, checkpoint, vacuum) looping at the shortest retention allowed, from two
    processes, while two writers append: every acknowledged scan is there once and whole (two compactions at
    once would both rewrite the same files and duplicate their rows: they take turns); below that retention
    compaction refuses, in one line."""
    from catalog.errors import UnsafeCompaction
    from catalog.store import SAFE_RETENTION_HOURS

    location = str(tmp_path / "catalog")
    Catalog(location).write_scan(ok_row(result("org/first", 0)))
    done = SPAWN.Queue()
    writers = [SPAWN.Process(target=_write_for, args=(location, w, 10.0, done)) for w in range(2)]
    other = SPAWN.Process(target=_compact_for, args=(location, 10.0, SAFE_RETENTION_HOURS))
    for w in [*writers, other]:
        w.start()
    cat, compactions = Catalog(location), 0
    while any(w.is_alive() for w in writers):
        cat.compact(retention_hours=SAFE_RETENTION_HOURS)
        compactions += 1
    for w in [*writers, other]:
        w.join()
    assert other.exitcode == 0
    acknowledged = 1 + done.get() + done.get()
    got = query.run(Catalog(location), "SELECT (SELECT count(*) FROM scans_all), (SELECT count(DISTINCT scan_id) "
                                       "FROM scans_all), (SELECT count(*) FROM candidates_all)")[1][0]
    assert compactions >= 2 and got == (acknowledged, acknowledged, 10 * acknowledged)
    try:
        cat.compact(retention_hours=0)
        raise AssertionError("a retention of 0 was not refused")
    except UnsafeCompaction as e:
        assert "--force" in str(e)
