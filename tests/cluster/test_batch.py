"""The batch run loop on a real local Ray (in this process, one GPU declared)."""
import signal
import threading
import time

import psutil

from catalog import query
from catalog.store import Catalog
from cluster import batch, pool
from cluster.models import parse
from cluster.pin import pin
from tests.scanner.helpers import planted

from .conftest import ARCHS12


def _scans(cat):
    cols, rows = query.run(cat, "SELECT model, status, error_type, error FROM scans_all ORDER BY model")
    return [dict(zip(cols, r)) for r in rows]


def _found(cat):
    _, rows = query.run(cat, "SELECT model, layer, row, col FROM super_weights WHERE verdict = 'super_weight'")
    return {r[0]: r[1:] for r in rows}


def test_twelve_planted_models_on_two_workers(local_ray, tmp_path):
    cat = Catalog(tmp_path / "catalog")
    entries = parse("\n".join(f"planted:{a}" for a in ARCHS12))
    s = batch.run(entries, cat, batch.BatchConfig(workers=2, progress=False))
    assert sorted(s.done) == sorted(f"planted:{a}" for a in ARCHS12) and not s.failed and not s.skipped
    scans = _scans(cat)
    assert len(scans) == 12 and all(x["status"] == "ok" for x in scans)
    assert _found(cat) == {f"planted:{a}": (1, 10, 20) for a in ARCHS12}  # the planted weight, every one
    # GPU scheduling: each actor asked for a share of the declared GPU, sized from the tiny weights
    assert pool.gpus_for(pin(entries[0]), batch.BatchConfig(), 80e9) == 0.25
    # run again: everything is complete at that revision and scanner version
    again = batch.run(entries, cat, batch.BatchConfig(workers=2, progress=False))
    assert len(again.skipped) == 12 and not again.done and len(_scans(cat)) == 12


def _kill_a_worker_mid_scan(stop: threading.Event, killed: list) -> None:
    """Kill the first scan worker process seen busy (Ray names it ray::ScanWorker.scan)."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for p in me.children(recursive=True):
            try:
                if "ScanWorker.scan" in " ".join(p.cmdline()):  # Ray's title while the method runs
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_a_worker_killed_mid_scan_is_retried_without_duplicates(local_ray, tmp_path):
    cat = Catalog(tmp_path / "catalog")
    archs = ARCHS12[:6]
    stop, killed = threading.Event(), []
    t = threading.Thread(target=_kill_a_worker_mid_scan, args=(stop, killed))
    t.start()
    try:
        s = batch.run(parse("\n".join(f"planted:{a}" for a in archs)), cat, batch.BatchConfig(workers=2, progress=False))
    finally:
        stop.set()
        t.join()
    assert killed, "no worker was seen scanning"
    assert s.retried >= 1 and not s.failed
    scans = _scans(cat)
    assert sorted(x["model"] for x in scans) == sorted(f"planted:{a}" for a in archs)  # none missing, none twice


def test_failures_become_rows_and_the_rest_is_done(local_ray, tmp_path):
    corrupt = planted("llama", tmp_path / "corrupt")
    shard = sorted(corrupt.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    (bert / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    text = f"""
    nobody/no-such-model
    {tmp_path / 'missing-folder'}
    {corrupt}
    {bert}
    planted:qwen3 timeout=0.2
    planted:llama
    planted:gpt2
    """
    cat = Catalog(tmp_path / "catalog")
    s = batch.run(parse(text), cat, batch.BatchConfig(workers=2, progress=False))
    assert sorted(s.done) == ["planted:gpt2", "planted:llama"]
    reasons = {m: r for m, r in s.failed}
    assert len(reasons) == 5
    rows = {x["model"]: x for x in _scans(cat) if x["status"] == "failed"}
    assert rows["nobody/no-such-model"]["error_type"] in ("HubUnavailable", "ModelNotFound")
    assert rows[str(tmp_path / "missing-folder")]["error_type"] == "ModelNotFound"
    assert rows[str(corrupt)]["error_type"] == "CorruptCheckpoint" and shard.name in rows[str(corrupt)]["error"]
    assert rows[str(bert)]["error_type"] in ("UnsupportedArchitecture", "NotAModel")
    assert rows["planted:qwen3"]["error_type"] == "TimeLimit" and "0.2 s" in rows["planted:qwen3"]["error"]
    assert len(_scans(cat)) == 7
