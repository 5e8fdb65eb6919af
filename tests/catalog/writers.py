"""Writers in processes of their own (spawned: delta-rs's runtime does not survive a fork)."""
import multiprocessing as mp

from catalog.rows import ok_row
from catalog.store import Catalog
from tests.fixtures.synthetic import result

SPAWN = mp.get_context("spawn")


def write(location: str, worker: int, count: int) -> None:
    cat = Catalog(location)
    for i in range(count):
        cat.write_scan(ok_row(result(f"org/w{worker}-m{i % 7}", worker * 1000 + i)))


def in_processes(location: str, processes: int, count: int) -> None:
    """`processes` writers at once, `count` scans each; every one must finish cleanly."""
    procs = [SPAWN.Process(target=write, args=(location, w, count)) for w in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
