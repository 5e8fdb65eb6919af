"""Ablations recomputed from the ablated layer, in one batch over several windows, equal full passes with
the weights zeroed, window by window."""
import pytest
import torch

from scanner.measure.ablation import zeroed
from scanner.adapters import Coord
from scanner.config import LoadOptions
from scanner.measure.evalset import cut, shipped
from scanner.measure.evaluator import Evaluator
from scanner.load.loading import load
from scanner.planted import CONFIGS
from scanner.load.sources import resolve

from .helpers import MOE, planted


def full_pass_deltas(loaded, ev, variant):
    """Per window: the mean loss difference of a full pass with the weights zeroed in place."""
    def nll(logits, ids):  # [windows, tokens, vocab], [windows, tokens] -> [windows]
        lp = torch.log_softmax(logits[:, :-1].float(), -1)
        return -lp.gather(2, ids[:, 1:, None])[..., 0].mean(1)
    with torch.no_grad():
        base = nll(loaded.model(input_ids=ev.ids, use_cache=False).logits, ev.ids)
        with zeroed(loaded.loop, variant):
            ablated = nll(loaded.model(input_ids=ev.ids, use_cache=False).logits, ev.ids)
    return (ablated - base).tolist()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_batched_partial_passes_equal_full_passes(arch, tmp_path):
    folder = planted(arch, tmp_path / arch, kind="pair")
    loaded = load(resolve(str(folder)), LoadOptions(device="cpu"))
    windows = cut(loaded.tokenizer, shipped(), 64, 6 * 64)  # six windows, every kind
    ev = Evaluator(loaded, windows)
    e = 1 if arch in MOE else None
    mod = loaded.adapter.down if e is None else loaded.adapter.experts + ".down_proj"
    variants = [[Coord(1, mod, 10, 20, e)], [Coord(1, mod, 10, 33, e)],
                [Coord(1, mod, 10, 20, e), Coord(1, mod, 10, 33, e)],  # the planted pair: the big effect
                [Coord(1, mod, 3, 4, e), Coord(1, mod, 5, 4, e)], [Coord(2, mod, 7, 8, e)], [Coord(0, mod, 1, 2, e)]]
    ev.advance(variants, 2)  # two windows first, then the other four: the same as all six at once
    ev.advance(variants, 6)
    assert ev.effect(variants[2]).mean > 0.5  # the pair matters, so the comparison is not trivial
    for v in variants:
        want = full_pass_deltas(loaded, ev, v)
        got = ev.effect(v).deltas
        assert len(got) == 6 and all(abs(g - w) <= 1e-4 * max(1.0, abs(w)) for g, w in zip(got, want)), (v, got, want)
    # keeping only layer 0's output: the layer-2 variant starts from layer 1 instead, same answer
    short = Evaluator(loaded, windows, upto=1)
    short.advance(variants, 6)
    for v in variants:
        assert all(abs(a - b) <= 1e-5 for a, b in zip(short.effect(v).deltas, ev.effect(v).deltas)), v
    assert sum(o is not None for o in short.runner.prefix.outputs) == 1
