"""Ablations recomputed from the ablated layer, in one batch, equal full passes with the weights zeroed."""
import pytest
import torch

from scanner.ablation import zeroed
from scanner.adapters import Coord
from scanner.loading import LoadOptions, load
from scanner.planted import CONFIGS
from scanner.sources import resolve
from scanner.texts import default_eval_text
from scanner.validate import Evaluator

from .helpers import MOE, planted


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_batched_partial_passes_equal_full_passes(arch, tmp_path):
    folder = planted(arch, tmp_path / arch, kind="pair")
    loaded = load(resolve(str(folder)), LoadOptions(device="cpu"))
    ev = Evaluator(loaded, default_eval_text(), 256)
    e = 1 if arch in MOE else None
    mod = loaded.adapter.down if e is None else loaded.adapter.experts + ".down_proj"
    variants = [[Coord(1, mod, 10, 20, e)], [Coord(1, mod, 10, 33, e)],
                [Coord(1, mod, 10, 20, e), Coord(1, mod, 10, 33, e)],  # the planted pair: the big effect
                [Coord(1, mod, 3, 4, e), Coord(1, mod, 5, 4, e)], [Coord(2, mod, 7, 8, e)], [Coord(0, mod, 1, 2, e)]]
    got = ev.many(variants)
    assert got[2].ppl > 2 * ev().ppl  # the pair matters, so the comparison is not trivial
    for v, g in zip(variants, got):
        with zeroed(loaded.loop, v), torch.no_grad():
            want = ev.score_logits(loaded.model(input_ids=ev.ids, use_cache=False).logits[0])
        assert abs(g.ppl - want.ppl) <= 1e-4 * want.ppl, (v, g.ppl, want.ppl)
        assert abs(g.stopword - want.stopword) <= 1e-5
    # dense weights: the variants in layer 1 shared one pass (expert weights run one at a time)
    assert ev.passes == (1 + 3 if e is None else 1 + len(variants))
    # keeping only layer 0's output: the layer-2 variant starts from layer 1 instead, same answer
    short = Evaluator(loaded, default_eval_text(), 256, upto=1)
    for v, g, s in zip(variants, got, short.many(variants)):
        assert abs(g.ppl - s.ppl) <= 1e-5 * g.ppl, v
    assert sum(o is not None for o in short.runner.prefix.outputs) == 1
