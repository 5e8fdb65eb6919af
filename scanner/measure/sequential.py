"""Group-sequential decisions: error spent across looks, and an indifference zone around each threshold.

An ablation's effect is looked at after n_1 < n_2 < ... < n_K windows (information fractions t_k = n_k / N).
Each side's error alpha / 2 is spent across the looks by a spending function (Lan and DeMets 1983): look k
may spend s(t_k) - s(t_{k-1}), so early looks, which see few windows, demand large effects and the last look
is near the nominal level. The critical values come from the joint law of the standardized partial sums (a
Brownian motion seen at t_k; numerical integration as in Armitage, McPherson and Rowe 1969), then move to
Student's t at the same tail probability (windows, not tokens, are the units, and there are few of them).

The contract of a decision about a threshold theta with zone factor delta: when the true ratio is above
theta * delta, "below" is said with probability at most alpha / 2; below theta / delta, "above" at most
alpha / 2; inside [theta / delta, theta * delta] either answer is acceptable, and the answer says so when its
interval still holds the line (`near`). Looking stops as soon as the interval lies wholly above theta / delta
(say above) or wholly below theta * delta (say below).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

_N = NormalDist()


# ---- Student's t ------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, as in Numerical Recipes)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0

    def keep(v: float) -> float:
        return v if abs(v) > tiny else tiny
    c, d = 1.0, 1.0 / keep(1.0 - qab * x / qap)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d, c = 1.0 / keep(1.0 + aa * d), keep(1.0 + aa / c)
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d, c = 1.0 / keep(1.0 + aa * d), keep(1.0 + aa / c)
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _ibeta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(x: float, df: int) -> float:
    """P(T > x) for Student's t with `df` degrees of freedom (exact, through the incomplete beta function)."""
    tail = 0.5 * _ibeta(df / 2.0, 0.5, df / (df + x * x))
    return tail if x >= 0 else 1.0 - tail


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile, p > 0.5."""
    return t_upper(1.0 - p, df)


@lru_cache(maxsize=None)
def t_upper(q: float, df: int) -> float:
    """x with P(T > x) = q (0 < q < 0.5), by bisection on the exact tail: good to 1e-10 even as far out as a
    group-sequential design's first look reaches (q = 1e-12)."""
    if df < 1 or q <= 0.0:
        return math.inf
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf(mid, df) > q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


# ---- spending and boundaries ------------------------------------------------------------------------------
def spend(t: float, alpha: float, gamma: float | str) -> float:
    """Error spent by information fraction t, of a one-sided `alpha`. A number: Hwang, Shih and DeCani's family
    (1990), where gamma = -4 is close to O'Brien and Fleming's shape (almost nothing early), 1 to Pocock's
    (much early) and 0 spends in proportion to t. "obf" and "pocock": Lan and DeMets' own forms."""
    t = min(max(t, 0.0), 1.0)
    if gamma == "obf":
        return 0.0 if t == 0 else 2 * (1 - _N.cdf(_N.inv_cdf(1 - alpha / 2) / math.sqrt(t)))
    if gamma == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    if gamma == 0:
        return alpha * t
    return alpha * (1 - math.exp(-gamma * t)) / (1 - math.exp(-gamma))


@lru_cache(maxsize=None)
def z_boundaries(fractions: tuple[float, ...], alpha: float, gamma: float | str) -> tuple[float, ...]:
    """One-sided critical values c_k of the standardized sums Z_k such that, with no effect, the chance of the
    first crossing Z_k > c_k at look k is spend(t_k) - spend(t_{k-1})."""
    h = 0.01  # grid step of W(t) = Z_k sqrt(t); the density of the paths not yet crossed is carried along
    out, grid, dens, prev_t, prev_s = [], None, None, 0.0, 0.0
    for t in fractions:
        target, root = spend(t, alpha, gamma) - prev_s, math.sqrt(t)
        if grid is None:  # W(t) is N(0, t)
            new = np.arange(-10 * root, 12 * root, h)
            nd = np.exp(-new ** 2 / (2 * t)) / math.sqrt(2 * math.pi * t)
        else:
            sd = math.sqrt(t - prev_t)
            new = np.arange(-10 * root, grid[-1] + 10 * sd, h)
            w = dens * _trapezoid(grid, h)
            nd = np.concatenate([np.exp(-(part[:, None] - grid[None, :]) ** 2 / (2 * sd * sd)) @ w
                                 for part in np.array_split(new, max(1, len(new) // 256))])
            nd /= sd * math.sqrt(2 * math.pi)
        tail = np.concatenate([np.cumsum(((nd[1:] + nd[:-1]) * h / 2)[::-1])[::-1], [0.0]])  # P(W > w, alive)
        if not out and 0 < target < 1:  # the first look is exact: W(t) / sqrt(t) is a standard normal
            c = -_N.inv_cdf(target)
            keep = int(np.searchsorted(new, c * root))
            new, nd = np.append(new[:keep], c * root), np.append(nd[:keep], _N.pdf(c) / root)
            keep += 1
        elif target <= 0 or target >= tail[0]:
            c = math.inf if target <= 0 else -math.inf
            keep = len(new) if target <= 0 else 1
        else:
            i = int(np.searchsorted(-tail, -target)) - 1  # tail[i] >= target > tail[i + 1]
            frac = (tail[i] - target) / (tail[i] - tail[i + 1])
            b = new[i] + frac * h
            c, keep = b / root, i + 1
            new, nd = np.append(new[:keep], b), np.append(nd[:keep], nd[i] + frac * (nd[i + 1] - nd[i]))
            keep += 1
        grid, dens = new[:keep], nd[:keep]
        out.append(float(c))
        prev_t, prev_s = t, spend(t, alpha, gamma)
    return tuple(out)


def _trapezoid(grid: np.ndarray, h: float) -> np.ndarray:
    """Trapezoid weights on a grid of step h whose last step may be shorter."""
    w = np.full(len(grid), h)
    if len(grid) > 1:
        last = grid[-1] - grid[-2]
        w[0] = h / 2
        w[-2] = (h + last) / 2 if len(grid) > 2 else (h / 2 + last / 2)
        w[-1] = last / 2
    return w


@dataclass(frozen=True)
class Design:
    """Where an ablation is looked at, and the confidence each look's interval has."""

    looks: tuple[int, ...]  # windows at each look
    alpha: float  # two-sided: alpha / 2 spent per side
    gamma: float  # the spending function's shape

    def critical(self, n: int) -> float:
        """The t critical value of an interval on n windows: at a look, that look's; elsewhere (n windows
        without a look there, as an every-window run has) the last look's."""
        fractions = tuple(k / self.looks[-1] for k in self.looks)
        zs = z_boundaries(fractions, self.alpha / 2, self.gamma)
        k = self.looks.index(n) if n in self.looks else len(self.looks) - 1
        return t_upper(_N.cdf(-zs[k]), max(1, n - 1))


def schedule(windows: int, first: int, sequential: bool) -> tuple[int, ...]:
    """first, 2 first, 4 first, ..., then every window; one look when not sequential."""
    if not sequential or windows <= first:
        return (windows,)
    out = [first]
    while out[-1] * 2 < windows:
        out.append(out[-1] * 2)
    return tuple(out + [windows])


@dataclass(frozen=True)
class Side:
    """A decision about one threshold."""

    above: bool  # the side said
    decided: bool  # by the interval at the zone's edges (False: the windows ran out; the point estimate says)
    near: bool  # the interval holds the threshold itself: the truth may be in the zone, where either is right


def decide(mean: float, half: float, line: float, zone: float, last: bool) -> Side | None:
    """The side of ln-ratio `line` for an interval mean +- half, with zone ln(delta) = `zone`; None while it
    must look again (and it may: not `last`)."""
    up, down = mean - half >= line - zone, mean + half < line + zone
    near = mean - half < line <= mean + half
    if up and down:
        return Side(mean >= line, True, near)
    if up or down:
        return Side(up, True, near)
    return None if not last else Side(mean >= line, False, True)
