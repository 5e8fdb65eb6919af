"""Pinning without downloading: hub shas and sizes, the offline cache, local fingerprints; GPU shares."""
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.constants as hub_constants

from cluster import batch, pool
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
    assert pool.gpus_for(p, cfg, 80e9) == 0.5  # 14 GB of bf16 weights x 2.5 = 35 GB: half of 80 GB
    p.params = 20_000_000_000
    assert pool.gpus_for(p, cfg, 80e9) == 1.0  # more than a GPU: a whole one (accelerate offloads the rest)
    small = pin(parse("org/small")[0])
    small.params = 500_000_000
    assert pool.gpus_for(small, cfg, 80e9) == 0.25
    assert pool.gpus_for(small, cfg, None) == 0.0  # no GPU in the cluster: CPU actors
    assert pool.gpus_for(small, batch.BatchConfig(gpus=0.5), 80e9) == 0.5


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


def test_a_worker_scans_exactly_what_was_pinned(tmp_path):
    """A local folder is pinned by its files' fingerprint; a worker scans that folder only while its files
    are still those (before, the fingerprint was handed back as a hub revision and every local model failed)."""
    import json

    from cluster.service import scan_to_row
    from scanner.config import ScanConfig
    from tests.scanner.helpers import planted

    folder = planted("llama", tmp_path / "m")
    p = pin(parse(str(folder))[0])
    assert p.error is None and p.revision.startswith("local-")
    cfg = ScanConfig().replace(run_validation=False)
    row, result, error = scan_to_row(str(folder), p.revision, cfg, pinned=True)
    assert error is None and row["status"] == "ok" and row["revision"] == p.revision
    config = json.loads((folder / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5  # re-exported since it was pinned
    (folder / "config.json").write_text(json.dumps(config))
    row, result, error = scan_to_row(str(folder), p.revision, cfg, pinned=True)
    assert row["status"] == "failed" and row["error_type"] == "ModelChanged" and p.revision in row["error"]


def test_a_fault_while_pinning_is_a_failed_row_not_a_traceback(monkeypatch, tmp_path):
    import scanner.load.sources

    def broken(spec, revision=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(scanner.load.sources, "resolve", broken)
    (p,) = [pin(e) for e in parse(str(tmp_path))]
    assert type(p.error).__name__ == "InternalError" and "RuntimeError: boom" in str(p.error)
