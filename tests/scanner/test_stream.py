"""Streaming (layers read from the shards one at a time) gives the in-memory answers, in less memory."""
import json
import subprocess
import sys

import pytest

from scanner.errors import NotAModel
from scanner.planted import CONFIGS

from .helpers import MOE, planted, positives, scan_dict, truth

DENSE = sorted(set(CONFIGS) - MOE)
# In full precision whatever the default: with the bfloat16 screen, an ablation decided by the screen reports
# bfloat16's numbers, which differ with the order of the sums (blocks of rows when streamed)
FULL = {"screen": "off"}


@pytest.mark.parametrize("arch", DENSE)
def test_streaming_gives_the_in_memory_answers(arch, tmp_path):
    folder = planted(arch, tmp_path / arch)
    memory, streamed = scan_dict(folder, FULL), scan_dict(folder, FULL, stream=True)
    assert positives(streamed) == positives(memory) and set(positives(streamed)) == truth(folder)
    assert [s["verdict"] for s in streamed["candidates"]] == [s["verdict"] for s in memory["candidates"]]
    for a, b in zip(memory["candidates"], streamed["candidates"]):
        if a["ppl"] is not None:
            assert abs(a["ppl"] - b["ppl"]) <= 1e-4 * a["ppl"]
    assert abs(memory["ppl_base"] - streamed["ppl_base"]) <= 1e-4 * memory["ppl_base"]


@pytest.mark.parametrize("arch", sorted(MOE))
def test_fused_expert_checkpoints_are_not_streamed(arch, tmp_path):
    folder = planted(arch, tmp_path / arch)
    with pytest.raises(NotAModel, match="cannot stream"):
        scan_dict(folder, stream=True)


def test_a_memory_budget_streams_what_does_not_fit_and_offloads_what_cannot_stream(tmp_path, caplog):
    from scanner.load.loading import LoadOptions, load
    from scanner.load.sources import resolve

    dense = planted("llama", tmp_path / "llama")
    loaded = load(resolve(str(dense)), LoadOptions(device="cpu", max_memory="150KB"))
    try:
        assert loaded.streamer is not None  # streamed, not offloaded to a folder by accelerate
    finally:
        loaded.close()
    assert positives(scan_dict(dense, max_memory="150KB")) == positives(scan_dict(dense))
    moe = planted("mixtral", tmp_path / "mixtral")  # fused experts: accelerate's disk offload instead
    with caplog.at_level("INFO", logger="superweights"):
        off = scan_dict(moe, max_memory="150KB")
    assert off["offloaded"] and "offloading with accelerate instead" in caplog.text
    assert positives(off) == positives(scan_dict(moe)) and set(positives(off)) == truth(moe)


CHILD = """
import sys
from pathlib import Path
from cluster.cli import main
code = main(sys.argv[2:])
hwm = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
Path(sys.argv[1]).write_text(str(int(hwm.split()[1]) * 1024))
sys.exit(code)
"""


def test_a_model_larger_than_the_memory_it_may_use(tmp_path):
    """1.07 GB of bf16 weights (2.1 GB once upcast); the scanning process must peak below 1.07 GB."""
    import torch

    from scanner.planted import Plant, build

    folder = build("llama", tmp_path / "big", [Plant(2, 100, 300)], dtype=torch.bfloat16, max_shard_size="200MB",
                   calib_chars=256, config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=32,
                                                num_attention_heads=8, num_key_value_heads=8, head_dim=128,
                                                max_position_embeddings=2048))
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    assert weights > 1.0e9
    out, peak = tmp_path / "result.json", tmp_path / "peak"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(peak), "scan", str(folder), "--stream", "--json", "-q",
                           "--eval-tokens", "256", "--window-tokens", "64", "--max-candidates", "4"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out.write_text(proc.stdout)
    result = json.loads(proc.stdout)
    found = {(s["layer"], s["row"], s["col"]) for s in result["candidates"] if s["verdict"] == "super_weight"}
    assert found == {(2, 100, 300)}
    assert int(peak.read_text()) < weights, f"peak {int(peak.read_text()) / 1e9:.2f} GB, weights {weights / 1e9:.2f} GB"


@pytest.mark.parametrize("arch", DENSE)
def test_streaming_a_bf16_checkpoint_upcasts_exactly(arch, tmp_path):
    """Stored in bfloat16: in memory the whole model is upcast at load; streamed, each module while it
    computes. bf16 values are exact in fp32, so the answers must agree."""
    import torch

    from scanner.planted import Plant, build


    folder = build(arch, tmp_path / arch, [Plant(1, 10, 20)], dtype=torch.bfloat16)
    memory, streamed = scan_dict(folder, FULL), scan_dict(folder, FULL, stream=True)
    assert positives(streamed) == positives(memory)
    assert [s["verdict"] for s in streamed["candidates"]] == [s["verdict"] for s in memory["candidates"]]
    assert abs(memory["ppl_base"] - streamed["ppl_base"]) <= 1e-4 * memory["ppl_base"]
    for a, b in zip(memory["candidates"], streamed["candidates"]):
        if a["ppl"] is not None:
            assert abs(a["ppl"] - b["ppl"]) <= 1e-4 * a["ppl"]
