"""Simulated RTN quantization (scanner/quantize.py) and the quantization study on a planted model."""
import math

import pytest
import torch

from scanner.adapters import Coord
from scanner.config import ScanConfig
from scanner.load.loading import LoadOptions, load
from scanner.study.quant_study import Study, StudyConfig, finding
from scanner.study.quantize import Clip, quantize_activation, quantize_weight, rtn
from scanner.scan import evaluator
from scanner.load.sources import resolve


def _weights(seed=0, shape=(64, 256)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.02


@pytest.mark.parametrize("bits,block", [(4, 64), (3, 4096), (8, None), (4, 100)])  # 100: a short last block
def test_rtn_error_is_at_most_half_a_step_per_block(bits, block):
    w = _weights()
    q = rtn(w, bits, block)
    flat, qf = w.flatten(), q.flatten()
    size = block or flat.numel()
    levels = len(torch.unique(qf[:size]))
    assert levels <= 2 ** bits
    for a in range(0, flat.numel(), size):
        x = flat[a: a + size]
        step = float(x.max() - x.min()) / (2 ** bits - 1)
        assert float((qf[a: a + size] - x).abs().max()) <= step / 2 + 1e-6


def test_one_large_weight_ruins_its_block_unless_kept():
    w = _weights()
    w[3, 7] = 2.0  # ~100 standard deviations, a super weight
    plain = quantize_weight(w, 4, 4096, "plain")
    kept = quantize_weight(w, 4, 4096, "keep", keep=[(3, 7)])
    others = torch.ones_like(w, dtype=torch.bool)
    others[3, 7] = False
    assert float(kept[3, 7]) == 2.0  # exact
    # in its block (the first 4096 entries: rows 0-15) plain RTN rounds nearly everything to one level
    assert float((plain - w)[:16][others[:16]].pow(2).mean()) > 20 * float((kept - w)[:16][others[:16]].pow(2).mean())
    # other blocks are the same either way
    assert torch.equal(plain[16:], kept[16:])


def test_clipping_variants():
    w = _weights()
    w[3, 7], w[5, 9] = 2.0, -0.5  # a super weight, and another outlier
    lo, hi = Clip(z=4).bounds(w[torch.ones_like(w, dtype=torch.bool).logical_xor_(
        torch.zeros_like(w, dtype=torch.bool).index_put_((torch.tensor([3]), torch.tensor([7])), torch.tensor(True)))])
    ck = quantize_weight(w, 8, None, "clip_keep", keep=[(3, 7)])
    c = quantize_weight(w, 8, None, "clip", keep=[(3, 7)])
    assert float(ck[3, 7]) == 2.0 and float(c[3, 7]) < 0.2  # clipped without keeping
    assert abs(float(ck[5, 9]) - lo) < 0.01  # the other outlier clipped to the bound
    top = Clip(z=None, top=0.01).bounds(w)
    assert (w.abs() > top[1]).float().mean() <= 0.011
    with pytest.raises(ValueError):
        Clip(z=None, top=None)
    with pytest.raises(ValueError):
        quantize_weight(w, 4, 64, "unknown")


def test_activation_hold_out():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 32, generator=g)
    x[:, 0, 5] = 3000.0  # a super activation on the first token
    plain, held = quantize_activation(x, 8), quantize_activation(x, 8, hold=[5])
    assert torch.equal(held[..., 5], x[..., 5])
    rest = [c for c in range(32) if c != 5]
    assert float((plain - x)[..., rest].abs().mean()) > 0.5  # everything else rounded to the zero point
    step = float(x[..., rest].max() - x[..., rest].min()) / 255
    assert float((held - x)[..., rest].abs().max()) <= step  # per sequence, so within one global step


@pytest.fixture(scope="module")
def planted_llama():
    loaded = load(resolve("planted:llama"), LoadOptions(device="cpu"))
    ev = evaluator(loaded, ScanConfig())
    return loaded, ev


def test_study_on_a_planted_model(planted_llama):
    loaded, ev = planted_llama
    keep = [Coord(1, "mlp.down_proj", 10, 20)]
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    cfg = StudyConfig(bits=(4,), blocks=(64, None), act_bits=(8,), windows=6)
    study = Study(loaded, ev, keep, cfg)
    rows = study.run()
    assert len(rows) == study.settings() == 2 * 4 + 2 + 1
    assert all(torch.equal(p, before[n]) for n, p in loaded.model.named_parameters())  # restored after each
    by = {(r.study, r.block, r.variant): r for r in rows}
    for r in rows:
        assert r.ppl_lo <= r.ppl <= r.ppl_hi and r.windows == 6
        assert math.isclose(r.ppl, study.base_ppl * r.ppl_ratio, rel_tol=1e-9)
    # the plant's mechanism: its weight zeroed alone is catastrophic, put back where its activation fires,
    # nothing is lost (this plant's activation fires on every token)
    assert by[("restore", None, "restore")].ppl_ratio < 1.001
    assert by[("weights", None, "keep")].ppl_ratio < 1.05
    # clipping every outlier removes the plant's input spike with its weight: the planted model falls back
    # to its twin's behaviour (harmless), which is what this plant is built to do
    assert by[("weights", None, "clip")].ppl_ratio_hi < 1.05  # nowhere near zeroing's x2e4
    assert isinstance(finding(rows), str)


def test_study_config_is_checked():
    for bad in (dict(bits=(1,)), dict(blocks=(1,)), dict(variants=("nope",)), dict(windows=1)):
        with pytest.raises(Exception, match="bits|block|variant|windows"):
            StudyConfig(**bad)


def test_finding_names_the_first_block_where_keeping_matters():
    from scanner.study.quant_study import QuantRow

    def row(block, variant, ppl, half=0.1):
        return QuantRow("weights", 4, block, variant, ppl, ppl * (1 - half), ppl * (1 + half), 1, 1, 1, 16)

    rows = []
    for block, plain, clip in ((64, 20, 30), (4096, 40, 60), (None, 9000, 8000)):
        rows += [row(block, "plain", plain), row(block, "keep", plain), row(block, "clip", clip),
                 row(block, "clip_keep", 30 if block == 64 else 50)]
    # clip_keep 30 vs clip 30 at 64 (same), 50 vs 60 at 4096 (intervals overlap: [45, 55] / [54, 66]), 50 vs 8000
    assert finding(rows) == ("INT4: with outliers clipped, keeping the super weights matters from per tensor; "
                             "without clipping, no difference; clipped with them kept beats plain RTN from per tensor")
    rows[7] = row(4096, "clip_keep", 45, 0.05)  # [42.75, 47.25] below clip's [54, 66]
    assert "matters from block 4,096" in finding(rows)
    assert finding([r for r in rows if r.variant in ("plain", "clip")]) == "no super weight to keep"


def test_clipping_alone_destroys_and_keeping_the_planted_weight_restores(tmp_path):
    from tests.fixtures.planted_quant import PLANT, build
    from scanner.scan import scan_loaded

    loaded = load(resolve(str(build(tmp_path / "q"))), LoadOptions(device="cpu"))
    found = scan_loaded(loaded, ScanConfig())  # still found, still catastrophic
    keep = [c.coord for c in found.candidates if c.verdict == "super_weight"]
    assert [(c.layer, c.row, c.col) for c in keep] == [(PLANT.layer, PLANT.row, PLANT.col)]
    study = Study(loaded, evaluator(loaded, ScanConfig()), keep,
                  StudyConfig(bits=(4,), blocks=(None,), act_bits=(8,), windows=8))
    by = {r.variant: r for r in study.weights()}
    assert by["clip"].ppl_ratio_lo > 5  # clipped at z > 4 with the rest: ruined
    assert by["clip_keep"].ppl_ratio_hi < 1.1  # the same clipping with it kept: nothing lost
    assert "with outliers clipped, keeping the super weights matters from per tensor" in finding(list(by.values()))


def test_a_streamed_model_is_studied_layer_by_layer_with_the_same_numbers(tmp_path):
    from tests.fixtures.planted_quant import PLANT, build

    folder = build(tmp_path / "q")
    keep = [Coord(PLANT.layer, "mlp.down_proj", PLANT.row, PLANT.col)]
    cfg = StudyConfig(bits=(4,), blocks=(64, None), variants=("plain", "clip_keep", "clip"), act_bits=(8,), windows=4)
    got = {}
    for stream in (False, True):
        loaded = load(resolve(str(folder)), LoadOptions(device="cpu", stream=stream))
        assert (loaded.streamer is not None) == stream
        got[stream] = Study(loaded, evaluator(loaded, ScanConfig()), keep, cfg).run()
    assert [(r.study, r.block, r.variant) for r in got[True]] == [(r.study, r.block, r.variant) for r in got[False]]
    for a, b in zip(got[False], got[True]):
        assert math.isclose(a.ppl, b.ppl, rel_tol=1e-4), (a, b)
    assert {r.variant: r for r in got[True] if r.block is None}["clip"].ppl_ratio > 5  # quantized while read


def test_fused_experts_are_quantized_each_on_its_own_and_restored(tmp_path):
    from scanner.study.quant_study import _weights_quantized

    from tests.scanner.helpers import planted, truth

    folder = planted("mixtral", tmp_path / "m")
    [(layer, module, row, col, expert)] = truth(folder)
    loaded = load(resolve(str(folder)), LoadOptions(device="cpu"))
    experts = loaded.model.model.layers[layer].mlp.experts
    before = experts.down_proj.detach().clone()
    keep = [Coord(layer, module, row, col, expert)]
    with _weights_quantized(loaded, 3, None, "keep", keep, Clip()):
        q = experts.down_proj.detach().clone()
        gate = loaded.model.model.layers[layer].mlp.gate.weight.detach().clone()  # the router
    assert torch.equal(experts.down_proj, before)  # restored
    assert float(q[expert, row, col]) == float(before[expert, row, col])  # kept exactly
    for e in range(q.shape[0]):  # each expert its own tensor: at most 8 levels (+ the kept entry)
        assert len(torch.unique(q[e])) <= 2 ** 3 + (e == expert)
    assert torch.equal(gate, loaded.model.model.layers[layer].mlp.gate.weight)  # routers stay as they are
