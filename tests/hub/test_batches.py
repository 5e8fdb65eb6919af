"""Batches of hub ids through a real Hugging Face server on loopback (olah, tests/hub/conftest.py): pins by the
API (a branch, a tag, a sha), a new commit, a missing repository, a base named in a model card, a server that
stops in the middle of a batch, a night larger than the cache limit, and a token that is never written
anywhere."""
import os
import subprocess
import sys

from tests.cluster.test_cli import ROOT, run_cli
from tests.scanner.helpers import planted

from .helpers import SECRET, batch, rows


def test_a_batch_of_hub_ids_is_pinned_downloaded_and_scanned(hub, repos, tmp_path):
    cat = str(tmp_path / "catalog")
    done = batch(hub, tmp_path, ["org/tiny-llama", "org/tiny-llama@v1", "org/tiny-llama-ft", "org/missing"], cat,
                 ray=True)  # the token and the endpoint reach Ray's workers too
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 scanned, 0 skipped (already in the catalog), 1 failed, 1 compared with their base" in done.stdout, \
        done.stdout + done.stderr[-3000:]
    scans = {(r["model"], r["revision"]): r for r in rows(cat, "SELECT * FROM scans")}
    # each pinned to its commit by the API: the branch and the tag to their shas
    assert scans[("org/tiny-llama", repos["main"])]["status"] == "ok"
    assert scans[("org/tiny-llama", repos["v1"])]["status"] == "ok"
    [missing] = [r for (m, _), r in scans.items() if m == "org/missing"]
    assert missing["error_type"] == "ModelNotFound" and "no model 'org/missing'" in missing["error"]
    found = rows(cat, "SELECT model, layer, row, col FROM super_weights ORDER BY model")
    assert {(r["layer"], r["row"], r["col"]) for r in found} == {(1, 10, 20)} and len(found) == 3
    # the base its card names joins the family, and the batch compares them
    [ft] = [r for (m, _), r in scans.items() if m == "org/tiny-llama-ft"]
    assert (ft["base_model"], ft["base_model_from"]) == ("org/tiny-llama", "card")
    [lin] = rows(cat, "SELECT a_model, b_model, status, kept, a_scan_id FROM lineage")
    assert (lin["a_model"], lin["b_model"], lin["status"], lin["kept"]) == ("org/tiny-llama", "org/tiny-llama-ft",
                                                                         "ok", 1)
    # once, and with the base as its card names it (main), not the tag the batch also scanned
    assert lin["a_scan_id"] == scans[("org/tiny-llama", repos["main"])]["scan_id"]
    assert not list((tmp_path / "catalog").rglob("*")) or all(
        SECRET.encode() not in p.read_bytes() for p in (tmp_path / "catalog").rglob("*") if p.is_file())

    # a new commit on main: the next run scans it and keeps the older scans; a sha is a pin too (v1's commit,
    # already scanned: skipped)
    new = hub.commit("org/tiny-llama", {"README.md": "---\nlicense: mit\n---\n# tiny llama, v2\n"}, "card v2")
    again = batch(hub, tmp_path, ["org/tiny-llama", f"org/tiny-llama@{repos['v1']}"], cat)
    assert "1 scanned, 1 skipped" in again.stdout, again.stdout + again.stderr[-2000:]
    revisions = {r["revision"] for r in rows(cat, "SELECT revision FROM scans_all WHERE model = 'org/tiny-llama' "
                                                   "AND status = 'ok'")}
    assert revisions == {repos["v1"], repos["main"], new}


def test_a_server_that_stops_mid_batch_gives_failed_rows_and_the_next_run_resumes(hub, repos, tmp_path):
    """The server stops in the middle of a batch, once its first hub model is scanned and before the last one's
    files are fetched: that model is a HubUnavailable row at its pinned revision after huggingface_hub's
    retries with backoff, and the batch goes on. A run while the server is down pins the scanned model from
    the cache's refs (skipped); once it is back, the next run scans only what is missing."""
    cat, home = str(tmp_path / "catalog"), tmp_path / "hf-home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **hub.env(home), "HF_TOKEN": SECRET}
    names = ["org/tiny-llama-ft", "planted:llama", "org/later"]  # one worker, in this order
    models = tmp_path / "models.txt"
    models.write_text("\n".join(names) + "\n")
    cmd = [sys.executable, "-m", "cluster.cli", "batch", str(models), "--catalog", cat, "--progress-lines",
           "--workers", "1", "--no-fetch-ahead", "--local"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("progress: 1/3"):  # the first is scanned, the planted one next: stop the server
                hub.stop()
                break
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "2 scanned, 0 skipped (already in the catalog), 1 failed" in out, out + err
        [row] = rows(cat, "SELECT revision, error_type, error FROM scans_all WHERE model = 'org/later'")
        assert row["error_type"] == "HubUnavailable" and "does not answer after retries" in row["error"], row
        assert row["revision"] == repos["later"][0]  # pinned before the server stopped
        assert SECRET not in out + err and "HTTP Request" not in err  # nor a line per request
        down = batch(hub, tmp_path, names[:1], cat, home=home)  # still down: pinned from the refs, skipped
        assert "0 scanned, 1 skipped (already in the catalog), 0 failed" in down.stdout, down.stdout
    finally:
        hub.start()
    back = batch(hub, tmp_path, names, cat, home=home)
    assert "1 scanned, 2 skipped" in back.stdout, back.stdout + back.stderr[-2000:]
    ok = rows(cat, "SELECT model FROM scans_all WHERE status = 'ok'")
    assert sorted(r["model"] for r in ok) == sorted(names)  # each once


def test_a_night_larger_than_the_cache_limit(hub, tmp_path):
    """Five hub models of 0.74 MB each under --cache-limit 2MB on three workers: all scanned, never more than two
    models' files held (the budget) nor 2 MB on disk (sampled every 20 ms), each removed once scanned, and the
    one cached before the batch kept."""
    import threading
    import time

    folder = planted("llama", tmp_path / "m")
    names = [f"org/night-{i}" for i in range(5)]
    for i, name in enumerate(names):
        hub.commit(name, folder, f"night {i}")
    home = tmp_path / "hf-home"
    env = hub.env(home)
    assert run_cli("scan", names[0], "-q", "--no-validate", env=env).returncode == 0  # cached before the batch
    caches = [home / "hub" / f"models--{n.replace('/', '--')}" for n in names[1:]]
    peak, stop = [0], threading.Event()

    def held() -> int:  # bytes on disk: blobs (and partial downloads), not the snapshot links to them
        total = 0
        for c in caches:
            try:
                total += sum(p.lstat().st_size for p in (c / "blobs").iterdir())
            except OSError:  # not there yet, or removed while we looked
                pass
        return total

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], held())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        models = tmp_path / "models.txt"
        models.write_text("\n".join(names) + "\n")
        done = run_cli("batch", str(models), "--catalog", str(tmp_path / "catalog"), "--progress-lines",
                       "--workers", "3", "--cache-limit", "2MB", "--local", env=env)
    finally:
        stop.set()
        sampler.join()
    assert done.returncode == 0 and "5 scanned" in done.stdout, done.stdout + done.stderr[-3000:]
    assert peak[0] <= 2_000_000, peak  # on disk
    # three workers, and room for two models: the limit, not the workers, held it to two (three: 2.2 MB)
    budget = [float(ln.split("at most ")[1].split(" MB")[0]) for ln in done.stdout.splitlines() if "at most" in ln]
    assert budget and 1.4 < max(budget) <= 2.0, done.stdout
    assert "fetched ahead" in done.stdout.splitlines()[-2]  # the next ones downloaded while others were scanned
    assert not any((c / "snapshots").exists() and any((c / "snapshots").iterdir()) for c in caches)
    assert any((home / "hub" / "models--org--night-0" / "snapshots").iterdir())  # cached before: kept
