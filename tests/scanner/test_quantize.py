"""Simulated RTN quantization (scanner/study/quantize.py) and the quantization study on a planted model."""
import math

import numpy as np

import pytest
import torch

from scanner.adapters import Coord
from scanner.config import ScanConfig
from scanner.load.loading import LoadOptions, load
from scanner.study.quant_finding import finding
from scanner.study.quant_study import Study, StudyConfig
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


def _reference(w: np.ndarray, bits: int, block: int, form: str) -> np.ndarray:
    """Min-max RTN block by block in numpy, written from the formulas (not from scanner.study.quantize)."""
    flat, out, top = w.reshape(-1).astype(np.float64), np.empty(w.size), 2 ** bits - 1
    for a in range(0, flat.size, block):
        x = flat[a: a + block]
        step = (x.max() - x.min()) / top
        if form == "paper":
            out[a: a + block] = np.clip(np.rint((x - x.min()) / step), 0, top) * step + x.min()
        else:
            zero = np.rint(-x.min() / step)
            out[a: a + block] = (np.clip(np.rint(x / step) + zero, 0, top) - zero) * step
    return out.reshape(w.shape)


@pytest.mark.parametrize("form", ["paper", "zero-point"])
@pytest.mark.parametrize("bits,block", [(4, 32), (4, 4096), (3, 100), (8, 16384)])
def test_both_forms_equal_an_independent_reference(form, bits, block):
    w = _weights(seed=bits + block)
    w[3, 7] = 0.9  # a super weight: the extreme of its block
    ours = rtn(w, bits, block, form=form).numpy()
    assert np.allclose(ours, _reference(w.numpy(), bits, block, form), rtol=0, atol=1e-7)
    if form == "zero-point":  # torch's own fake quantization is the integer-zero-point form
        x = w.flatten().view(-1, block) if w.numel() % block == 0 else None
        if x is not None:
            lo, hi = x.amin(1), x.amax(1)
            scale = ((hi - lo) / (2 ** bits - 1)).double()
            zero = torch.round(-lo.double() / scale).int()
            fake = torch.fake_quantize_per_channel_affine(x, scale.float(), zero, 0, 0, 2 ** bits - 1)
            assert np.allclose(ours, fake.view_as(w).numpy(), rtol=0, atol=1e-6)


def test_paper_form_keeps_each_blocks_extremes_and_the_zero_point_moves_them():
    w = _weights(seed=3)
    w[3, 7], w[9, 1] = 0.9, -0.7  # the tensor's largest and smallest: a super weight and a partner
    blocks = w.flatten().view(-1, 4096)
    paper, zp = (rtn(w, 4, 4096, form=f).flatten().view(-1, 4096) for f in ("paper", "zero-point"))
    assert torch.equal(paper.amax(1), blocks.amax(1)) and torch.equal(paper.amin(1), blocks.amin(1))
    assert not torch.equal(zp.amax(1), blocks.amax(1))  # z's rounding shifts the grid
    per_tensor = rtn(w, 4, None, form="paper")
    assert per_tensor[3, 7] == w[3, 7] and per_tensor[9, 1] == w[9, 1]
    assert abs(float(rtn(w, 4, None, form="zero-point")[3, 7] - w[3, 7])) > 1e-3


def test_block_32_is_gguf_q4_1():
    """gguf's own Q4_1 (block 32, min offset, scale and min stored in fp16) is the paper form up to fp16
    rounding; re-quantizing its output with the paper form gives it back exactly, the zero point does not."""
    import gguf

    q41 = gguf.GGMLQuantizationType.Q4_1
    w = _weights(seed=5)
    w[3, 7] = 0.9
    theirs = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), q41), q41)
    error = float(((rtn(w, 4, 32).numpy() - w.numpy()) ** 2).mean())  # the quantization error itself
    paper, zp = (rtn(w, 4, 32, form=f).numpy() for f in ("paper", "zero-point"))
    assert ((paper - theirs) ** 2).mean() < 1e-3 * error  # fp16 scales: 6e-5 here
    assert ((zp - theirs) ** 2).mean() > 0.5 * error  # 2.1 here
    back = torch.from_numpy(theirs)
    assert torch.equal(rtn(back, 4, 32, form="paper"), back)
    assert not torch.equal(rtn(back, 4, 32, form="zero-point"), back)


def test_smollm2s_q4_1_source_is_reproduced_at_block_32():
    """The packaged SmolLM2 file's 210 Q4_1 tensors, dequantized, re-quantized at block 32: the paper form
    gives every one back exactly, the zero point moves them (relative MSE ~0.007 in the layer-11 down
    projection, whose extremes are the two super weights: 6.066 becomes 6.236 per tensor)."""
    import gguf

    from scanner.load.shipped import packaged_file

    tensors = [t for t in gguf.GGUFReader(packaged_file("smollm2-135m")[0]).tensors
               if t.tensor_type == gguf.GGMLQuantizationType.Q4_1]
    assert len(tensors) == 210
    for t in tensors:
        w = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type))
        assert torch.equal(rtn(w, 4, 32, form="paper"), w), t.name
        if t.name == "blk.11.ffn_down.weight":
            zp = rtn(w, 4, 32, form="zero-point")
            assert 0.003 < float(((zp - w) ** 2).sum() / (w ** 2).sum()) < 0.02
            assert float(w[507, 1487]) == pytest.approx(6.0659, abs=1e-4)  # the tensor's largest
            assert float(rtn(w, 4, None, form="paper")[507, 1487]) == float(w[507, 1487])
            assert float(rtn(w, 4, None, form="zero-point")[507, 1487]) == pytest.approx(6.2358, abs=1e-3)


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


def test_activations_keep_exact_zeros_only_with_the_zero_point():
    """Why activations default to the zero point: gated MLP inputs hold many near-zero values, and the paper
    form puts an exact zero half a step away at most (min + k * step), a bias the down projection sums over
    every channel; the integer zero point keeps zeros exact."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, 64, generator=g) * (torch.rand(1, 16, 64, generator=g) < 0.3)  # 70% exact zeros
    x[0, 0, 5] = 400.0  # a super activation sets the range
    zeros = x == 0
    zp, paper = quantize_activation(x, 8, form="zero-point"), quantize_activation(x, 8, form="paper")
    step = float(x.max() - x.min()) / 255
    assert torch.equal(zp[zeros], x[zeros])
    shift = paper[zeros]
    assert float(shift.abs().min()) > 0 and float(shift.abs().max()) <= step / 2 + 1e-6
    assert torch.unique(shift).numel() == 1  # one offset on every zero: a bias, not noise


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


def test_a_block_holding_every_matrix_whole_is_measured_once_as_per_tensor(planted_llama):
    loaded, ev = planted_llama
    study = Study(loaded, ev, [Coord(1, "mlp.down_proj", 10, 20)],
                  StudyConfig(bits=(4,), blocks=(64, 1 << 20, None), variants=("plain",), windows=4))
    calls = []
    measure = study.measure
    study.measure = lambda: calls.append(1) or measure()
    rows = list(study.weights())
    assert [r.block for r in rows] == [64, 1 << 20, None] and len(calls) == 2
    assert (rows[1].ppl, rows[1].ppl_lo, rows[1].ppl_hi) == (rows[2].ppl, rows[2].ppl_lo, rows[2].ppl_hi)


def test_study_config_is_checked():
    for bad in (dict(bits=(1,)), dict(blocks=(1,)), dict(variants=("nope",)), dict(windows=1)):
        with pytest.raises(Exception, match="bits|block|variant|windows"):
            StudyConfig(**bad)


def _row(block, variant, r, lo, hi, study="weights", bits=4):
    from scanner.study.quant_study import QuantRow

    return QuantRow(study, bits, block, variant, 16 * r, 16 * lo, 16 * hi, r, lo, hi, 16)


def test_finding_gives_the_largest_block_within_the_tolerance_by_its_interval():
    rows = [_row(64, "plain", 1.02, 1.01, 1.04), _row(4096, "plain", 1.08, 1.05, 1.12),  # 4,096: across x1.1
            _row(None, "plain", 20, 15, 27),
            _row(64, "keep", 1.02, 1.01, 1.04), _row(4096, "keep", 1.06, 1.04, 1.07), _row(None, "keep", 19, 14, 26),
            _row(64, "clip", 60, 40, 90), _row(4096, "clip", 70, 50, 95), _row(None, "clip", 80, 60, 99),
            _row(64, "clip_keep", 45, 30, 60), _row(4096, "clip_keep", 50, 35, 70), _row(None, "clip_keep", 52, 36, 75)]
    line = finding(rows)
    assert line == ("INT4 weights: plain RTN within x1.1 up to block 64 (block 4,096 undecided); keeping the super "
                    "weights moves it to block 4,096; outliers clipped, at no block size; keeping the super weights "
                    "does not move it")
    assert "beats" not in line  # two unusable settings are not compared
    # the tolerance moved across the plant's values moves the answer
    assert "plain RTN within x1.03 at no block size (block 64 undecided)" in finding(rows, 1.03)
    assert "within x1.2 up to block 4,096; keeping the super weights does not move it" in finding(rows, 1.2)
    assert finding([r for r in rows if r.variant in ("plain", "clip")]).count("does not move") == 0
    assert finding([]) == "no super weight to keep"


def test_finding_says_which_held_channels_help():
    plain = _row(None, "plain", 1.5, 1.4, 1.6, "activations", 8)
    one = _row(None, "hold", 1.3, 1.2, 1.4, "activations", 8)
    one.held, one.held_gain, one.held_gain_lo, one.held_gain_hi = ["layer 11 col 1229"], 0.87, 0.85, 0.89
    two = _row(None, "hold", 1.29, 1.2, 1.4, "activations", 8)
    two.held, two.held_gain, two.held_gain_lo, two.held_gain_hi = ["layer 11 col 1229", "layer 11 col 1487"], \
        0.99, 0.97, 1.01
    line = finding([plain, one, two])
    assert "holding the super activation's channel (layer 11 col 1229) x0.87 [0.85, 0.89], helps" in line
    assert "adding layer 11 col 1487 x0.99 [0.97, 1.01], no difference the interval decides" in line
    two.held_gain_hi = 0.995
    assert "adding layer 11 col 1487 x0.99 [0.97, 0.995], helps" in finding([plain, one, two])


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
    # INT4 per tensor, clipped: usable only with the plant kept (plain RTN keeps a block's extremes: usable too)
    assert "outliers clipped, at no block size; keeping the super weights moves it to per tensor" \
        in finding(list(by.values()))


def test_a_planted_super_weight_at_its_blocks_extreme_is_kept_by_the_paper_form_only(tmp_path):
    """The quantization plant's weight is its down projection's largest entry, so the extreme of its block at
    every block size: the paper form leaves it exact in plain RTN (keeping it changes nothing for it), the
    integer zero point moves it (by at most half a step, never zero here)."""
    from tests.fixtures.planted_quant import PLANT, build
    from scanner.adapters import get, layers
    from scanner.study.quant_study import _weights_quantized

    loaded = load(resolve(str(build(tmp_path / "q"))), LoadOptions(device="cpu"))
    w = get(layers(loaded.model, loaded.adapter)[PLANT.layer], "mlp.down_proj").weight
    value = float(w[PLANT.row, PLANT.col])
    assert value == float(w.max())
    keep = [Coord(PLANT.layer, "mlp.down_proj", PLANT.row, PLANT.col)]
    for bits in (3, 4):
        for block in (64, 4096, None):
            with _weights_quantized(loaded, bits, block, "plain", keep, Clip(), "paper"):
                assert float(w[PLANT.row, PLANT.col]) == value
            with _weights_quantized(loaded, bits, block, "plain", keep, Clip(), "zero-point"):
                moved = abs(float(w[PLANT.row, PLANT.col]) - value)
                at = PLANT.row * w.shape[1] + PLANT.col
                mine = w.flatten()[at - at % block: at - at % block + block] if block else w.flatten()
                block_range = float(mine.max() - mine.min())
                assert 0 < moved <= block_range / (2 ** bits - 1) / 2 + 1e-6
            assert float(w[PLANT.row, PLANT.col]) == value  # restored after each


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
    with _weights_quantized(loaded, 3, None, "keep", keep, Clip(), "paper"):
        q = experts.down_proj.detach().clone()
        gate = loaded.model.model.layers[layer].mlp.gate.weight.detach().clone()  # the router
    assert torch.equal(experts.down_proj, before)  # restored
    assert float(q[expert, row, col]) == float(before[expert, row, col])  # kept exactly
    for e in range(q.shape[0]):  # each expert its own tensor: at most 8 levels (+ the kept entry)
        assert len(torch.unique(q[e])) <= 2 ** 3 + (e == expert)
    assert torch.equal(gate, loaded.model.model.layers[layer].mlp.gate.weight)  # routers stay as they are
