"""Ground truth: for every architecture in the adapter table, a tiny model with a planted super
weight is found at exactly the planted coordinates with a positive verdict, and its twin without
the plant yields none. Also partners (two weights in one row) and two rows sharing a column."""
import pytest

from scanner.adapters import ADAPTERS
from scanner.planted import CONFIGS

from .helpers import agree_outside_zones, planted, positives, scan_dict, truth

ARCHS = sorted(ADAPTERS)


def test_every_adapter_has_a_planted_config():
    assert set(CONFIGS) == set(ADAPTERS)


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_single(arch, tmp_path):
    folder = planted(arch, tmp_path)
    result = scan_dict(folder)
    assert result["architecture"] == arch
    assert positives(result) == {c: "super_weight" for c in truth(folder)}
    # a weight's share is of the output it is a term of: never above 1 (MoE: before the routing weight)
    assert all(0 < s["share"] <= 1.001 for s in result["candidates"] if s["verdict"] == "super_weight")
    group = next(g for g in result["groups"] if g["row"] == 10)
    assert group["verdict"] == "super_activation"
    assert group["ppl_ratio_lo"] > 10  # catastrophic, by the interval's lower end
    # the controls, three random draws and the largest other weights of the matrix, zeroed together: harmless
    [union] = group["controls"]
    assert union["kind"] == "union" and len(union["weights"]) == 4 * len(group["members"])  # 3 draws, the largest
    assert [10, 20] not in union["weights"]
    assert union["ppl_ratio_hi"] < 1.1
    twin = scan_dict(planted(arch, tmp_path / "twin", planted=False))
    assert twin["ppl_base"] < 100  # a reasonable model: uniform over its 260 tokens would be 260


@pytest.mark.parametrize("arch", ARCHS)
def test_unplanted_twin_has_no_positive_verdict(arch, tmp_path):
    result = scan_dict(planted(arch, tmp_path, planted=False))
    assert positives(result) == {} and result["finding"] in ("no_spike", "spikes_harmless", "not_visible")


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_partners(arch, tmp_path):
    folder = planted(arch, tmp_path, "pair")
    result = scan_dict(folder)
    assert positives(result) == {c: "super_set" for c in truth(folder)}  # each needed, neither enough alone
    group = next(g for g in result["groups"] if g["row"] == 10)
    assert {(10, 20), (10, 33)} <= {tuple(m) for m in group["members"]}
    assert group["verdict"] == "super_activation"


@pytest.mark.parametrize("arch", ARCHS)
def test_planted_rows_sharing_a_column(arch, tmp_path):
    folder = planted(arch, tmp_path, "rows")
    result = scan_dict(folder)
    assert positives(result) == {c: "super_weight" for c in truth(folder)}
    assert {g["row"] for g in result["groups"] if g["verdict"] == "super_activation"} == {10, 40}


def test_planted_llama_as_a_gguf_file(tmp_path):
    """The same model as a .gguf file (as llama.cpp writes one): same weight found, same perplexity, also
    when its layers are streamed from the file."""
    from tests.fixtures.planted_gguf import write_gguf

    folder = planted("llama", tmp_path / "m")
    gguf = write_gguf(folder, tmp_path / "planted-llama.gguf")
    twin = scan_dict(folder)
    for stream in (False, True):
        got = scan_dict(gguf, stream=stream)
        assert got["source"] == "gguf" and got["gguf_file"] == "planted-llama.gguf"
        assert positives(got) == positives(twin) == {k: "super_weight" for k in truth(folder)}
        assert abs(got["ppl_base"] - twin["ppl_base"]) <= 1e-5 * twin["ppl_base"]


@pytest.mark.parametrize("arch", ARCHS)
def test_sequential_verdicts_equal_every_window(arch, tmp_path):
    """Stopping each ablation as soon as its interval decides gives the verdicts of every window wherever the
    every-window interval lies outside the zones (here: every candidate)."""
    from scanner.config import LoadOptions, ScanConfig
    from scanner.scan import scan

    folder = planted(arch, tmp_path, "pair")
    cfg = ScanConfig(load=LoadOptions(device="cpu")).replace(validate={"eval_tokens": 4096})
    sequential = scan(str(folder), cfg).to_dict()
    every = scan(str(folder), cfg.replace(validate={"sequential": False})).to_dict()
    assert agree_outside_zones(sequential, every) == len(every["candidates"])
    assert sum(s["windows"] or 0 for s in sequential["candidates"]) < \
        sum(s["windows"] or 0 for s in every["candidates"])


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_screen_gives_float32_verdicts(arch, tmp_path):
    """Looks in bfloat16 first (forced on: this CPU may lack fast bfloat16), float32 for what touches a zone:
    the verdicts of float32 alone wherever its interval lies outside the zones; measured in bfloat16 only
    what the screen settled."""
    from scanner.config import LoadOptions, ScanConfig
    from scanner.scan import scan

    folder = planted(arch, tmp_path, "pair")
    cfg = ScanConfig(load=LoadOptions(device="cpu"))
    screened = scan(str(folder), cfg.replace(validate={"screen": "on"})).to_dict()
    full = scan(str(folder), cfg.replace(validate={"screen": "off"})).to_dict()
    assert agree_outside_zones(screened, full) >= 2
    assert {s["measured_in"] for s in full["candidates"] if s["ppl_ratio"] is not None} == {"float32"}
    assert "bfloat16" in {s["measured_in"] for s in screened["candidates"]}


def test_validation_shows_a_bar_and_keeps_stage_timings(tmp_path, capsys):
    from scanner.config import LoadOptions, ScanConfig
    from scanner.scan import scan

    cfg = ScanConfig(load=LoadOptions(device="cpu")).replace(validate={"screen": "off"})
    r = scan(str(planted("llama", tmp_path)), cfg, progress=True).to_dict()
    err = capsys.readouterr().err
    assert "validating" in err and "window evaluations" in err and "ablation" in err
    assert all(r["timings"][k] >= 0 for k in ("detect_s", "triage_s", "validate_s", "total_s"))
    assert r["window_evaluations"] == sum(int(k) * v for k, v in r["decided_at"].items())


def test_a_weight_decided_as_its_group_of_one_is_not_looked_at_again(tmp_path):
    """A spike whose group is the one planted weight: the group, decided catastrophic on the first look, is the
    weight alone, so the weight's own question finds it decided and adds no window (it used to take a second
    look, twice the windows for nothing)."""
    r = scan_dict(planted("llama", tmp_path), {"screen": "off"})
    [group] = [g for g in r["groups"] if g["verdict"] == "super_activation"]
    [weight] = [c for c in r["candidates"] if c["verdict"] == "super_weight"]
    from scanner.config import ValidateConfig

    assert group["windows"] == weight["windows"] == ValidateConfig().min_windows
    assert r["window_evaluations"] == sum(int(k) * v for k, v in r["decided_at"].items())
