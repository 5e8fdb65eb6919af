"""`batch --local`: the same run loop with worker processes of this machine instead of Ray actors."""
import signal
import threading
import time

import psutil

from catalog import query
from catalog.store import Catalog
from cluster import batch
from cluster.models import parse
from .test_cli import assert_clean_error, run_cli


def _workers(name: str | None = None) -> list:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("sw-") and (name is None or p.name() == name):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _kill_a_worker_mid_scan(stop: threading.Event, killed: list) -> None:
    """Kill the first worker process seen scanning (it names itself sw-scan while a scan runs)."""
    while not stop.is_set() and not killed:
        for p in _workers("sw-scan"):
            p.send_signal(signal.SIGKILL)
            killed.append(p.pid)
            return
        time.sleep(0.05)


def test_local_workers_retry_a_killed_scan_and_stop_one_past_its_time_limit(planted_cache, tmp_path):
    cat = Catalog(tmp_path / "catalog")
    archs = ["llama", "qwen2", "gpt2", "phi3"]
    stop, killed = threading.Event(), []
    t = threading.Thread(target=_kill_a_worker_mid_scan, args=(stop, killed))
    t.start()
    try:
        s = batch.run(parse("\n".join([*(f"planted:{a}" for a in archs), "planted:qwen3 timeout=0.2"])), cat,
                      batch.BatchConfig(local=True, workers=2, progress=False))
    finally:
        stop.set()
        t.join()
    assert killed, "no worker was seen scanning"
    assert s.retried >= 1 and sorted(s.done) == sorted(f"planted:{a}" for a in archs)
    assert [m for m, _ in s.failed] == ["planted:qwen3"]
    _, rows = query.run(cat, "SELECT model, status, error_type FROM scans_all ORDER BY model")
    assert sorted(r[0] for r in rows) == sorted(f"planted:{a}" for a in [*archs, "qwen3"])  # none twice
    assert {r[0]: r[2] for r in rows}["planted:qwen3"] == "TimeLimit"
    _, found = query.run(cat, "SELECT model, layer, row, col FROM super_weights WHERE verdict = 'super_weight'")
    assert {r[0]: r[1:] for r in found} == {f"planted:{a}": (1, 10, 20) for a in archs}
    assert not _workers(), "worker processes outlived the batch"


def test_local_refuses_an_address(tmp_path):
    models = tmp_path / "models.txt"
    models.write_text("planted:llama\n")
    assert_clean_error(run_cli("batch", str(models), "--catalog", str(tmp_path / "c"), "--local", "--address",
                               "auto"), "--local", "--address")
    assert not (tmp_path / "c").exists()  # refused before anything was written
