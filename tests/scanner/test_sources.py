"""Resolving model specs: hub ids through a hand-made offline cache, revision pinning, checks."""

import pytest

from scanner.errors import CorruptCheckpoint, HubUnavailable, ModelNotFound, NotAModel
from scanner.load.sources import check_safetensors, gguf_architecture, resolve

from .helpers import HUB_SHA as SHA
from .helpers import hub_cache as make_hub_cache
from .helpers import planted, positives, scan_dict


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A hub cache as huggingface_hub lays it out: refs/main -> sha, snapshots/<sha>/files."""
    home = tmp_path / "hf"
    cache = make_hub_cache(home)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return home


def test_hub_id_resolves_to_pinned_sha(hub_cache):
    src = resolve("tiny-org/planted-llama")
    assert (src.kind, src.revision, src.repo_id, src.model_type) == ("hub", SHA, "tiny-org/planted-llama", "llama")
    assert resolve("tiny-org/planted-llama@main").revision == SHA
    assert resolve("tiny-org/planted-llama", revision=SHA).revision == SHA


def test_hub_scan_reports_the_sha(hub_cache):
    result = scan_dict("tiny-org/planted-llama")
    assert result["revision"] == SHA and result["source"] == "hub"
    assert (1, "mlp.down_proj", 10, 20, None) in positives(result)


def test_hub_model_card_names_the_base(hub_cache):
    from .helpers import HUB_REPO

    snap = hub_cache / "hub" / ("models--" + HUB_REPO.replace("/", "--")) / "snapshots" / SHA
    (snap / "README.md").write_text("---\nbase_model: meta-llama/Llama-2-7b-hf\nlicense: mit\n---\n# A fine-tune\n")
    result = scan_dict(HUB_REPO)
    assert (result["base_model"], result["base_model_from"]) == ("meta-llama/Llama-2-7b-hf", "card")


def test_hub_unknown_offline(hub_cache):
    with pytest.raises(HubUnavailable):
        resolve("tiny-org/other")
    with pytest.raises(HubUnavailable):
        resolve("tiny-org/planted-llama@v2")


def test_missing_and_not_a_model(tmp_path):
    with pytest.raises(ModelNotFound):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFound):
        resolve("./relative/missing")
    with pytest.raises(NotAModel):
        resolve(str(tmp_path))
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(NotAModel):
        resolve(str(tmp_path / "x.gguf"))


def test_safetensors_header_check(tmp_path):
    folder = planted("llama", tmp_path / "m")
    shard = sorted(folder.glob("*.safetensors"))[0]
    check_safetensors(shard)
    shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(CorruptCheckpoint):
        check_safetensors(shard)
    shard.write_bytes(b"\xff" * 8)
    with pytest.raises(CorruptCheckpoint):
        check_safetensors(shard)


def test_local_revision_is_a_content_fingerprint(tmp_path):
    a = resolve(str(planted("llama", tmp_path / "a")))
    b = resolve(str(planted("llama", tmp_path / "b")))
    c = resolve(str(planted("llama", tmp_path / "c", planted=False)))
    assert a.revision == b.revision != c.revision and a.revision.startswith("local-")


def test_gguf_header_reader(tmp_path):
    import gguf
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    w.add_block_count(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert gguf_architecture(tmp_path / "t.gguf") == "llama"


def test_derived_packaged_model_is_made_once_and_names_its_base(tmp_path, monkeypatch):
    from scanner.load.card import declared_base

    monkeypatch.setenv("SUPERWEIGHTS_CACHE", str(tmp_path))
    src = resolve("pkg:smollm2-135m-q4_0")
    assert (src.kind, src.model_type, src.model) == ("packaged", "llama", "pkg:smollm2-135m-q4_0")
    assert declared_base(src.path, src.gguf_file) == ("pkg:smollm2-135m", "gguf")
    made = (src.path / src.gguf_file).stat().st_mtime_ns
    again = resolve("pkg:smollm2-135m-q4_0")
    assert again.revision == src.revision and (again.path / again.gguf_file).stat().st_mtime_ns == made
    assert not [p for p in src.path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(ModelNotFound, match="pkg:smollm2-135m-bf16"):
        resolve("pkg:nope")  # the error lists the derived ones too


def test_planted_models_built_in_threads_at_once_are_the_same_models(tmp_path, monkeypatch):
    """Batches pin in threads, and a build draws from torch's global RNG: builds at once must not interleave."""
    from concurrent.futures import ThreadPoolExecutor

    specs = ["planted:llama", "planted:qwen2", "planted:gpt2", "planted:mistral", "planted:olmo", "planted:phi3"]
    monkeypatch.setenv("SUPERWEIGHTS_CACHE", str(tmp_path / "threads"))
    with ThreadPoolExecutor(len(specs)) as pool:
        together = {s.spec: s.revision for s in pool.map(resolve, specs)}
    monkeypatch.setenv("SUPERWEIGHTS_CACHE", str(tmp_path / "alone"))
    alone = {s: resolve(s).revision for s in specs}  # the revision fingerprints the weight files
    assert together == alone


def test_hub_ids_with_a_gguf_file():
    """`org/name[:FILE][@REVISION]`: the file a tag or name picks, and the model's name without the revision."""
    from scanner.load.hub import hub_parts, pick_gguf
    from scanner.load.sources import is_hub_id, model_name

    assert hub_parts("org/m:Q4_K_M@v1") == ("org/m", "Q4_K_M", "v1")
    assert hub_parts("org/m@refs/pr/1") == ("org/m", None, "refs/pr/1")
    assert is_hub_id("org/m:model-Q8_0.gguf@" + "a" * 40) and not is_hub_id("org/m:a:b")
    assert model_name("org/m:Q4_K_M@v1", "org/m", "hub") == model_name("org/m:Q4_K_M") == "org/m:Q4_K_M"
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q8_0.gguf", "sub/m-F16.gguf"]
    assert pick_gguf("org/m", files, "q4_k_m") == "m-Q4_K_M.gguf"
    assert pick_gguf("org/m", files, "m-F16.gguf") == "sub/m-F16.gguf"
    assert pick_gguf("org/m", ["a.gguf", "config.json"], None) == "a.gguf"
    with pytest.raises(NotAModel, match="2 .gguf files match 'Q4_K'.*name one: org/m:FILE"):
        pick_gguf("org/m", files, "Q4_K")
    with pytest.raises(ModelNotFound, match="no .gguf file of the repository matches 'IQ2'.*m-Q8_0.gguf"):
        pick_gguf("org/m", files, "IQ2")
    with pytest.raises(NotAModel, match="holds no .gguf file and no config.json"):
        pick_gguf("org/m", ["README.md"], None)
