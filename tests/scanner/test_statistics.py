"""The statistics behind verdicts: t quantiles, paired intervals, the sequential rule's error rate, and the
evaluation set's windows."""
import math
import random

import pytest

from scanner.config import ValidateConfig
from scanner.measure.evalset import KINDS, cut, shipped
from scanner.measure.evaluator import Effect, ratio, t_quantile
from scanner.planted import byte_tokenizer
from scanner.measure.validate import Judge


@pytest.mark.parametrize("p, df, want", [(0.975, 3, 3.18245), (0.975, 38, 2.02439), (0.995, 7, 3.49948),
                                         (0.995, 3, 5.84091), (0.999, 31, 3.37490)])
def test_t_quantile_matches_tables(p, df, want):
    assert abs(t_quantile(p, df) - want) < 1e-4


def test_interval_is_the_paired_t_interval():
    e = Effect(deltas=[0.10, 0.30, 0.20, 0.40])
    mean, sd = 0.25, math.sqrt(sum((d - 0.25) ** 2 for d in e.deltas) / 3)
    lo, hi = e.interval(0.95)
    assert abs(e.mean - mean) < 1e-12
    assert abs(hi - mean - 3.18245 * sd / 2) < 1e-4 and abs(mean - lo - 3.18245 * sd / 2) < 1e-4
    assert Effect(deltas=[1.0]).interval(0.95) == (-math.inf, math.inf)  # one window: no spread, no decision
    assert ratio(800.0) == math.exp(700.0)  # a destroyed model saturates instead of overflowing


def _wrong_side_rate(judge: Judge, truth: float, threshold: float, runs: int, seed: int) -> float:
    """How often a sequential run, whose true mean is just below `threshold`, decides it is above."""
    rng, wrong = random.Random(seed), 0
    for _ in range(runs):
        deltas = []
        for look in judge.schedule:
            deltas += [rng.gauss(truth, 1.0) for _ in range(look - len(deltas))]
            side = judge.side(Effect(deltas=list(deltas)), threshold)
            if side:
                wrong += side == 1
                break
    return wrong / runs


def test_sequential_rule_keeps_its_error_rate():
    """With the truth just below a threshold, deciding "above" at any of the five looks (4, 8, 16, 32, 39
    windows) happens at most at the one-sided half of 5%; without the per-look correction it would not."""
    cfg = ValidateConfig()
    judge = Judge(cfg, 39)
    assert judge.schedule == [4, 8, 16, 32, 39] and abs(judge.confidence - 0.99) < 1e-12
    rate = _wrong_side_rate(judge, -0.01, 0.0, 4000, seed=1)
    assert rate <= 0.025 + 0.008  # 0.025 plus three standard errors of the estimate
    naive = Judge(cfg, 39)
    naive.confidence = cfg.confidence  # every look at 95%, no correction
    assert _wrong_side_rate(naive, -0.01, 0.0, 4000, seed=1) > 0.035


def test_all_windows_is_one_look():
    judge = Judge(ValidateConfig(sequential=False), 39)
    assert judge.schedule == [39] and judge.confidence == pytest.approx(0.95)


def test_windows_are_whole_round_robin_and_start_with_bos():
    tok = byte_tokenizer()
    tok.add_bos_token = True  # as a Llama tokenizer does
    w = cut(tok, shipped(), window=64, max_tokens=64 * 10)
    assert w.ids.shape == (10, 64) and w.tokens == 640
    assert w.kinds[:4] == list(KINDS) and w.kinds[4:8] == list(KINDS)  # one of each kind, then again
    bos = tok.bos_token_id
    assert (w.ids[:, 0] == bos).all() and not (w.ids[:, 1:] == bos).any()
    tok.add_bos_token = False  # a tokenizer that adds none gets none
    assert not (cut(tok, shipped(), 64, 640).ids == bos).any()
    assert cut(tok, {"text": "x" * 1000}, 64, 300).ids.shape[0] == 4  # at most max_tokens, whole windows only


def test_dialogue_uses_the_chat_template_when_there_is_one():
    tok = byte_tokenizer()
    plain = tok.decode(cut(tok, {"dialogue": shipped()["dialogue"]}, 256, 256 * 4).ids.flatten())
    assert "User: " in plain
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    templated = tok.decode(cut(tok, {"dialogue": shipped()["dialogue"]}, 256, 256 * 4).ids.flatten())
    assert "<|user|>" in templated and "<|assistant|>" in templated and "User: " not in templated
    a, b = cut(tok, shipped(), 64, 640), cut(tok, {**shipped(), "code": "def f():\n    return 1\n" * 40}, 64, 640)
    assert a.sha256 != b.sha256  # the stored hash follows the texts


def test_futility_stops_only_what_the_whole_set_could_not_decide():
    noise = (-1.3, 1.1, -0.4, 0.9, -1.0, 1.2, -0.2, -0.3)  # mean 0, sd 0.96
    on_threshold = Effect(deltas=[0.05 + d for d in noise])
    far = Effect(deltas=[0.6 + d for d in noise])  # undecided on 8 windows, decidable on 39
    judge = Judge(ValidateConfig(futility=True), 39)
    assert judge.side(on_threshold, 0.0) == 0 and judge.futile(on_threshold, 0.0)
    assert judge.side(far, 0.0) == 0 and not judge.futile(far, 0.0)
    assert not Judge(ValidateConfig(), 39).futile(on_threshold, 0.0)  # off by default
