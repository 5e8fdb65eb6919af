"""Ground truth near the thresholds (scanner/scenario.py): a catastrophic weight, a mild one whose spike is
30x the median and whose removal costs a few-fold, a spike two weights share (0.3 and 0.7) that matters
to nothing, a spike on the first token only, and the model's largest weight, which never fires. Moving a
threshold across a plant's measured value changes that plant's verdict and nothing else."""
import pytest

from scanner.adapters import Coord
from scanner.config import DetectConfig, LoadOptions, ScanConfig, ValidateConfig
from scanner.load.loading import load
from scanner.load.sources import resolve
from scanner.measure.evalset import cut, shipped
from scanner.measure.evaluator import Evaluator
from scanner.scan import scan
from tests.fixtures.scenario import build

from .helpers import agree_outside_zones

MILD, SIDE_MINOR, SIDE_MAJOR = (0, 30, 40), (1, 11, 20), (1, 11, 21)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return build(tmp_path_factory.mktemp("scene") / "llama")


def run(scene, **changes) -> dict:
    detect = {k: v for k, v in changes.items() if k in DetectConfig.__dataclass_fields__}
    validate = {k: v for k, v in changes.items() if k in ValidateConfig.__dataclass_fields__}
    cfg = ScanConfig(load=LoadOptions(device="cpu")).replace(detect=detect, validate=validate)
    return scan(str(scene), cfg).to_dict()


def verdicts(result: dict) -> dict:
    return {(s["layer"], s["row"], s["col"]): s["verdict"] for s in result["candidates"]}


@pytest.fixture(scope="module")
def reference(scene):
    return run(scene)


def test_every_plant_gets_its_verdict(scene, reference):
    r = reference
    assert r["ppl_base"] < 100  # a reasonable model: uniform over its 260 tokens would be 260
    got = {(s["layer"], s["row"], s["col"]): s for s in r["candidates"]}
    assert got[(1, 10, 20)]["verdict"] == "super_weight" and got[(1, 10, 20)]["ppl_ratio_lo"] > 10
    mild = got[MILD]
    assert mild["verdict"] == "mild" and 1.5 < mild["ppl_ratio_lo"] and mild["ppl_ratio_hi"] < 10
    assert 15 < mild["output_ratio"] < 40  # a spike of the size real ones have, not 100,000x
    assert got[SIDE_MINOR]["verdict"] == got[SIDE_MAJOR]["verdict"] == "negligible"
    assert abs(got[SIDE_MINOR]["share"] - 0.3) < 0.05 and abs(got[SIDE_MAJOR]["share"] - 0.7) < 0.05
    first = got[(2, 35, 70)]
    assert first["token_pos"] == 0 and first["verdict"] == "negligible"
    assert (4, 5, 99) not in got  # the largest weight of the model never fires: no spike, no candidate
    assert set(verdicts(r).values()) == {"super_weight", "mild", "negligible"}


def test_the_largest_weight_that_never_fires_is_harmless(scene):
    loaded = load(resolve(str(scene)), LoadOptions(device="cpu"))
    ev = Evaluator(loaded, cut(loaded.tokenizer, shipped(), 128, 8 * 128))
    silent = [Coord(4, "mlp.down_proj", 5, 99)]
    ev.advance([silent], 8)
    assert abs(ev.effect(silent).mean) < 1e-6


def _changed(low: dict, high: dict) -> set:
    return {k for k in set(low) | set(high) if low.get(k) != high.get(k)}


def test_each_threshold_flips_exactly_its_plant(scene, reference):
    got = {(s["layer"], s["row"], s["col"]): s for s in reference["candidates"]}
    mild, side = got[MILD], got[SIDE_MAJOR]
    cases = [  # option, a value below the plant's, a value above it, the plant
        ("spike_ratio", mild["output_ratio"] * 0.85, mild["output_ratio"] * 1.25, {MILD}),
        ("spike_ratio", side["output_ratio"] * 0.8, side["output_ratio"] * 1.15, {SIDE_MINOR, SIDE_MAJOR}),
        ("min_share", 0.25, 0.35, {SIDE_MINOR}),
        ("min_ppl_ratio", mild["ppl_ratio_lo"] / 1.5, mild["ppl_ratio_hi"] * 1.5, {MILD}),  # beyond its zone, 1.4
        ("catastrophic_ratio", mild["ppl_ratio_lo"] / 1.3, mild["ppl_ratio_hi"] * 1.3, {MILD}),
    ]
    for option, below, above, plant in cases:
        low, high = verdicts(run(scene, **{option: below})), verdicts(run(scene, **{option: above}))
        assert _changed(low, high) == plant, (option, low, high)


def test_sequential_verdicts_equal_every_window_on_the_scene(scene, reference):
    """Outside the zones (here: every plant, the mild one at x4.5 included), the same verdicts."""
    every = run(scene, sequential=False)
    assert agree_outside_zones(reference, every) == len(every["candidates"])
    assert reference["window_evaluations"] < every["window_evaluations"] / 2
