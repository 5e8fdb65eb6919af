"""The statistics behind verdicts: Student's t and group-sequential boundaries against independent references,
the sequential rule's error rates outside the indifference zones (simulated, at any number of looks, with
windows that differ by kind and with heavy tails), and the evaluation set's windows."""
import math

import numpy as np
import pytest
import scipy.stats

from scanner.config import ValidateConfig
from scanner.measure.evalset import KINDS, cut, shipped
from scanner.measure.evaluator import Effect, ratio
from scanner.measure.judge import Judge
from scanner.measure.sequential import schedule, t_quantile, t_upper, z_boundaries
from scanner.planted import byte_tokenizer
from tests.fixtures.sequential_sim import draw, fast

@pytest.mark.parametrize("df", [1, 2, 3, 7, 15, 31, 38, 63])
def test_t_quantiles_equal_scipys_far_into_the_tails(df):
    for q in (0.025, 1e-3, 1e-6, 1e-9, 1e-12):
        want = scipy.stats.t.isf(q, df)
        assert abs(t_upper(q, df) - want) <= 1e-8 * max(1.0, want)
    assert abs(t_quantile(0.975, df) - scipy.stats.t.ppf(0.975, df)) < 1e-9


def test_interval_is_the_paired_t_interval():
    e = Effect(deltas=[0.10, 0.30, 0.20, 0.40])
    mean, sd = 0.25, math.sqrt(sum((d - 0.25) ** 2 for d in e.deltas) / 3)
    lo, hi = e.interval(0.95)
    assert abs(e.mean - mean) < 1e-12
    assert abs(hi - mean - 3.18245 * sd / 2) < 1e-4 and abs(mean - lo - 3.18245 * sd / 2) < 1e-4
    assert Effect(deltas=[1.0]).interval(0.95) == (-math.inf, math.inf)  # one window: no spread, no decision
    assert ratio(800.0) == math.exp(700.0)  # a destroyed model saturates instead of overflowing
    d = Effect([1.0, 2.0, 3.0], [], ["a", "b", "c"]).minus(Effect([0.5, 0.5], [], ["a", "b"]))
    assert d.deltas == [0.5, 1.5] and d.kinds == ["a", "b"]  # paired on the windows both have


@pytest.mark.parametrize("gamma, want", [
    ("obf", (4.877, 3.357, 2.680, 2.290, 2.031)),  # Lan-DeMets O'Brien-Fleming, 5 equal looks (gsDesign)
    ("pocock", (2.438, 2.427, 2.410, 2.397, 2.386)),  # Lan-DeMets Pocock
])
def test_boundaries_equal_the_published_ones(gamma, want):
    got = z_boundaries(tuple(k / 5 for k in range(1, 6)), 0.025, gamma)
    assert max(abs(a - b) for a, b in zip(got, want)) < 2e-3


@pytest.mark.parametrize("gamma", [-4.0, -2.0, 0.0, 1.0])
def test_boundaries_spend_what_the_function_allows_at_each_look(gamma):
    """Monte Carlo of the standardized sums at the looks of 39 windows: the first crossings at each look
    happen as often as the spending function allows there, whatever its shape."""
    from scanner.measure.sequential import spend

    looks = schedule(39, 4, True)
    t = np.array(looks) / looks[-1]
    z = z_boundaries(tuple(t), 0.025, gamma)
    rng = np.random.default_rng(7)
    steps = rng.standard_normal((400_000, len(t))) * np.sqrt(np.diff(t, prepend=0.0))
    zs = np.cumsum(steps, axis=1) / np.sqrt(t)
    crossed = zs > np.array(z)
    first = np.where(crossed.any(1), crossed.argmax(1), -1)
    for k in range(len(t)):
        want = spend(t[k], 0.025, gamma) - (spend(t[k - 1], 0.025, gamma) if k else 0.0)
        got = float(np.mean(first == k))
        assert abs(got - want) < 4 * math.sqrt(max(want, 1e-6) / 400_000) + 1e-5, (k, got, want)


def test_the_vectorised_rule_is_the_judges():
    cfg = ValidateConfig()
    judge = Judge(cfg, 39)
    rng = np.random.default_rng(3)
    x = draw(rng, 300, 39, mean=math.log(1.5) + 0.05, sd=0.3, kinds=0.2)
    got = fast(judge.design, judge.zone(judge.mild), judge.mild, x)
    for i in range(300):
        for n in judge.looks:
            side = judge.side(Effect(list(x[i, :n])), judge.mild)
            if side is not None:
                break
        assert (side.above, side.decided, n) == (got["above"][i], got["decided"][i], got["windows"][i])


@pytest.mark.parametrize("windows", [4, 8, 16, 39, 64])
@pytest.mark.parametrize("noise", [dict(sd=0.3), dict(sd=0.6, kinds=0.4), dict(sd=0.5, tails="t3")])
def test_outside_the_zone_each_side_errs_at_most_half_the_error(windows, noise):
    """True ratios just outside the zone of x1.5 and of x10: the wrong side is decided at most alpha / 2 of the
    time, at every number of looks (one look with 4 windows, up to six with 64). (What the windows cannot
    decide is said undecided: `decided` false, shown as such.)"""
    cfg = ValidateConfig()
    judge = Judge(cfg, windows)
    rng = np.random.default_rng(windows)
    runs = 20_000
    bound = (1 - cfg.confidence) / 2 + 3 * math.sqrt(0.025 / runs)
    for line in (judge.mild, judge.catastrophic):
        for side in (+1, -1):
            truth = line + side * (judge.zone(line) + 0.01)
            said = fast(judge.design, judge.zone(line), line, draw(rng, runs, windows, truth, **noise))
            wrong = np.mean(said["decided"] & (said["above"] != (side > 0)))
            assert wrong <= bound, (line, side, wrong)


def test_early_looks_demand_large_effects_and_the_last_is_near_nominal():
    d = Judge(ValidateConfig(), 39).design
    assert d.looks == (4, 8, 16, 32, 39)
    crit = [d.critical(n) for n in d.looks]
    assert crit[0] > 3 * scipy.stats.t.ppf(0.975, 3) and crit == sorted(crit, reverse=True)
    assert crit[-1] < 1.15 * scipy.stats.t.ppf(0.975, 38)


def test_all_windows_is_one_look_at_the_nominal_level():
    judge = Judge(ValidateConfig(sequential=False), 39)
    assert judge.looks == (39,)
    assert abs(judge.design.critical(39) - scipy.stats.t.ppf(0.975, 38)) < 1e-9


def test_the_zone_decides_early_and_says_when_the_line_is_inside():
    judge = Judge(ValidateConfig(), 39)
    line = judge.mild
    at_line = Effect([line + d for d in (0.02, -0.02, 0.01, -0.01) * 4])  # 16 windows, tight, on the line
    s = judge.side(at_line, line)
    assert s.decided and s.near  # inside the zone: either side is right, and the estimate says it is at the line
    est = judge.estimate(at_line, (line,))
    assert est.near == pytest.approx(1.5) and est.decided
    spread = Effect([line + d for d in (1.5, -1.5, 1.0, -1.0) * 10][:39])  # too noisy for the zone on 39
    s = judge.side(spread, line)
    assert not s.decided and s.near
    assert judge.side(Effect([line + d for d in (1.5, -1.5, 1.0, -1.0)]), line) is None  # 4 windows: look again


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


