"""A batch of the model specs users type: local folders, a .gguf file, a hub id (from a hand-made cache, as
the hub would have left it) and a path that does not exist, on a real local Ray."""
import os

import pytest

from catalog import query
from catalog.store import Catalog
from cluster import batch
from cluster.models import parse
from tests.fixtures.planted_gguf import write_gguf
from tests.scanner.helpers import HUB_REPO, HUB_SHA, hub_cache, planted


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory, planted_cache):
    """The hand-made hub cache, in the environment before Ray starts (its workers inherit it)."""
    import huggingface_hub.constants as c

    home = tmp_path_factory.mktemp("hf")
    cache = hub_cache(home)
    saved = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_CACHE")}
    os.environ.update(HF_HOME=str(home), HF_HUB_CACHE=str(cache))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(c, "HF_HUB_CACHE", str(cache))
        mp.setattr(c, "HF_HUB_OFFLINE", True)
        yield home
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def local_ray(hub_home, local_ray):
    return local_ray


def test_local_folders_a_gguf_file_a_hub_id_and_a_missing_path(local_ray, tmp_path):
    gpt2 = planted("gpt2", tmp_path / "my models" / "gpt2")  # a space in the path, as folders have
    llama = planted("llama", tmp_path / "llama")
    gguf = write_gguf(llama, tmp_path / "planted-llama.gguf")
    missing = tmp_path / "not-there"
    (tmp_path / "models.txt").write_text(f"'{gpt2}'  # quoted, as in a shell\n{gguf}\n{HUB_REPO}\n{missing}\n")
    entries = parse((tmp_path / "models.txt").read_text())
    cat = Catalog(tmp_path / "catalog")
    s = batch.run(entries, cat, batch.BatchConfig(workers=2, progress=False))
    assert sorted(s.done) == sorted([str(gpt2), str(gguf), HUB_REPO]), s.render()
    assert [m for m, _ in s.failed] == [str(missing)]
    cols, data = query.run(cat, "SELECT model, source, revision, status, error_type FROM scans ORDER BY model")
    scans = {r[0]: dict(zip(cols, r)) for r in data}
    assert scans[HUB_REPO]["revision"] == HUB_SHA and scans[HUB_REPO]["source"] == "hub"
    assert scans[str(gguf)]["source"] == "gguf" and scans[str(gpt2)]["source"] == "local"
    assert scans[str(missing)]["status"] == "failed" and scans[str(missing)]["error_type"] == "ModelNotFound"
    found = query.run(cat, "SELECT model, layer, row, col FROM super_weights WHERE verdict = 'super_weight'")[1]
    assert sorted(found) == sorted((m, 1, 10, 20) for m in (str(gpt2), str(gguf), HUB_REPO))
    again = batch.run(entries, cat, batch.BatchConfig(workers=2, progress=False))
    assert sorted(again.skipped) == sorted([str(gpt2), str(gguf), HUB_REPO]) and not again.done
    assert [m for m, _ in again.failed] == [str(missing)]
