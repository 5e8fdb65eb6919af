"""Pinning without downloading: hub shas and sizes, the offline cache, local fingerprints; GPU shares."""
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.constants as hub_constants

from cluster import batch
from cluster.models import parse
from cluster.pin import pin


def test_hub_revision_pinned_with_its_parameter_count(monkeypatch):
    calls = []

    class FakeApi:
        def model_info(self, repo_id, revision=None):
            calls.append((repo_id, revision))
            return SimpleNamespace(sha="a" * 40, safetensors=SimpleNamespace(total=7_000_000_000))

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    p = pin(parse("org/big@v2")[0])
    assert (p.model, p.revision, p.params, p.error) == ("org/big", "a" * 40, 7_000_000_000, None)
    assert calls == [("org/big", "v2")]
    cfg = batch.BatchConfig()
    assert batch.gpus_for(p, cfg, 80e9) == 0.5  # 14 GB of bf16 weights x 2.5 = 35 GB: half of 80 GB
    p.params = 20_000_000_000
    assert batch.gpus_for(p, cfg, 80e9) == 1.0  # more than a GPU: a whole one (accelerate offloads the rest)
    small = pin(parse("org/small")[0])
    small.params = 500_000_000
    assert batch.gpus_for(small, cfg, 80e9) == 0.25
    assert batch.gpus_for(small, cfg, None) == 0.0  # no GPU in the cluster: CPU actors
    assert batch.gpus_for(small, batch.BatchConfig(gpus=0.5), 80e9) == 0.5


def test_offline_pins_from_the_cache_refs(monkeypatch, tmp_path):
    cache = tmp_path / "hub"
    (cache / "models--org--m" / "refs").mkdir(parents=True)
    (cache / "models--org--m" / "refs" / "main").write_text("b" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert pin(parse("org/m")[0]).revision == "b" * 40
    missing = pin(parse("org/other")[0])
    assert type(missing.error).__name__ == "HubUnavailable"
    assert pin(parse(f"org/m@{'c' * 40}")[0]).revision == "c" * 40  # a sha needs no lookup
