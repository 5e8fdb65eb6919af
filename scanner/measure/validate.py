"""Validation by ablation, graded, with intervals, at the cost the decision needs.

Effects (`scanner.measure.evaluator`): ln(ppl ratio) of an ablation is the mean over windows of the paired loss
difference; its interval is a t interval across windows. Thresholds: ln(min_ppl_ratio) (significant),
ln(catastrophic_ratio) (catastrophic). An interval *decides* a threshold when it lies wholly on one side.

Sequential evaluation: every ablation starts on `min_windows` windows (one of each kind of text), and only
those whose interval does not yet decide every threshold their verdict depends on get more windows,
doubling, up to the whole set. Each look uses an interval of confidence 1 - (1 - confidence) / looks, so
that the chance that any of a variant's looks puts the truth on the wrong side of a threshold is at most
1 - confidence (Bonferroni over the looks). What is still undecided on the whole set is judged by its
point estimate and stored as undecided. The interval stored is the plain one at `confidence`.

Stages, each its own sequential run: (A) every spike's group of candidates zeroed together; (B) for groups
not decided harmless: each candidate alone, and controls of the group's size from the same matrix (several
random draws, and its largest-magnitude other weights); (C) for catastrophic groups, each member that is
not catastrophic alone is left out (the rest zeroed): if the rest is not catastrophic, the member is
needed.

Verdicts of candidates: `super_weight` (catastrophic alone), `super_set` (needed member of a catastrophic
group), `mild` (significant alone, not catastrophic), `negligible`. Groups: `super_activation`
(catastrophic), `mild_activation` (significant), `spike_only`. Significant also means above
`control_margin` times the larger of its controls' upper bounds.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import torch

from words import verdicts

from .ablation import read_matrix
from ..adapters import Coord
from ..config import ValidateConfig
from .detect import Candidate
from .evaluator import Effect, Evaluator, ratio, t_quantile
from ..load.loading import Loaded
from .triage import group_candidates

log = logging.getLogger("superweights")


@dataclass
class Estimate:
    """What is reported of an ablation: its ppl ratio with interval, on how many windows, decided or not."""

    ratio: float
    lo: float
    hi: float
    windows: int
    decided: bool
    stopword_shift: float | None
    by_kind: dict

    def to_dict(self, prefix: str = "ppl_ratio") -> dict:
        return {prefix: self.ratio, f"{prefix}_lo": self.lo, f"{prefix}_hi": self.hi}


@dataclass
class GroupResult:
    key: tuple
    members: list[Candidate]
    ablated: Estimate
    controls: list[tuple[str, list[Coord], Estimate]] = field(default_factory=list)  # (kind, weights, estimate)
    rest: dict = field(default_factory=dict)  # Coord -> Estimate of the group without that member
    verdict: str = ""


class Judge:
    """Where an effect lies against the thresholds, at the confidence of the current look."""

    def __init__(self, cfg: ValidateConfig, windows: int):
        self.cfg = cfg
        self.schedule = self._schedule(windows)
        self.confidence = 1 - (1 - cfg.confidence) / len(self.schedule)
        self.mild, self.catastrophic = math.log(cfg.min_ppl_ratio), math.log(cfg.catastrophic_ratio)

    def _schedule(self, n: int) -> list[int]:
        if not self.cfg.sequential or n <= self.cfg.min_windows:
            return [n]
        out = [self.cfg.min_windows]
        while out[-1] * 2 < n:
            out.append(out[-1] * 2)
        return out + [n]

    def side(self, e: Effect, t: float) -> int:
        """+1 above t, -1 below, 0 undecided."""
        lo, hi = e.interval(self.confidence)
        return 1 if lo >= t else -1 if hi < t else 0

    def futile(self, e: Effect, t: float) -> bool:
        """Undecided, and not expected to decide on the whole set: the interval the whole set would give
        with this spread still holds the current estimate's distance to t (`futility` only)."""
        n, last = e.windows, self.schedule[-1]
        if not self.cfg.futility or n < 2 or n >= last or self.side(e, t) != 0:
            return False
        lo, hi = e.interval(self.confidence)  # half-width scales as t_quantile(n - 1) / sqrt(n)
        tq = t_quantile(1 - (1 - self.confidence) / 2, n - 1)
        half_at_last = (hi - lo) / 2 / tq * math.sqrt(n / last) * t_quantile(1 - (1 - self.confidence) / 2, last - 1)
        return abs(e.mean - t) < half_at_last

    def above(self, e: Effect, t: float) -> bool:
        """Decided above, or (undecided on every window) a point estimate above."""
        s = self.side(e, t)
        return s == 1 or (s == 0 and e.mean >= t)

    def estimate(self, e: Effect, thresholds: tuple[float, ...]) -> Estimate:
        """The stored interval is the plain one at `confidence` (95%); the decision used the look's own."""
        lo, hi = e.interval(self.cfg.confidence)
        decided = all(self.side(e, t) != 0 for t in thresholds)
        return Estimate(ratio(e.mean), ratio(lo), ratio(hi), e.windows, decided, e.stopword_shift, e.by_kind())


def draw_controls(loaded: Loaded, members: list[Coord], exclude: set[Coord], draws: int, seed: int):
    """Controls of the group's size from its matrix: `draws` random sets, and the largest other weights."""
    c0 = members[0]
    w = read_matrix(loaded.loop, c0.layer, c0.unit).float().abs().cpu()  # [hidden, d_mlp]
    mask = torch.zeros_like(w, dtype=torch.bool)
    for c in exclude:
        if (c.layer, c.unit) == (c0.layer, c0.unit):
            mask[c.row, c.col] = True
    k = len(members)

    def coords(flat):
        return [Coord(c0.layer, c0.module, *divmod(int(i), w.shape[1]), c0.expert) for i in flat]
    out = [("largest", coords(w.masked_fill(mask, -1).flatten().topk(k).indices))]
    allowed = (~mask).flatten().nonzero().flatten()
    for d in range(draws):  # seeded by matrix, size and draw: groups of one matrix share their controls
        digest = hashlib.sha256(f"{seed}:{c0.layer}:{c0.module}:{c0.expert}:{k}:{d}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        out.append(("random", coords(allowed[torch.randperm(allowed.numel(), generator=gen)[:k]])))
    return out


def sequential(ev: Evaluator, judge: Judge, variants: list[list[Coord]], thresholds, progress=None) -> None:
    """Evaluate each ablation on the judge's schedule of windows until its interval decides every threshold
    `thresholds(variant)` names (or the windows run out)."""
    pending = list(variants)
    while pending:
        by_next: dict[int, list] = {}
        for v in pending:
            done = ev.effect(v).windows
            nxt = next((n for n in judge.schedule if n > done), None)
            if nxt is not None:
                by_next.setdefault(nxt, []).append(v)
        for nxt, vs in sorted(by_next.items()):
            ev.advance(vs, nxt)
        if progress:
            progress(pending, ev)
        pending = [v for v in pending if ev.effect(v).windows < judge.schedule[-1]
                   and any(judge.side(ev.effect(v), t) == 0 and not judge.futile(ev.effect(v), t)
                           for t in thresholds(v))]


def validate(loaded: Loaded, ev: Evaluator, candidates: list[Candidate], cfg: ValidateConfig, progress=None):
    """Group results (with every estimate), verdicts set on the candidates."""
    judge = Judge(cfg, ev.windows.count)
    everything = {c.coord for c in candidates}
    groups = [GroupResult(key, members, None) for key, members in group_candidates(candidates).items()]
    both = (judge.mild, judge.catastrophic)

    def run(variants: list[list[Coord]], thresholds) -> None:
        sequential(ev, judge, variants, thresholds, progress)

    # (A) groups
    run([[m.coord for m in g.members] for g in groups], lambda v: both)
    live = [g for g in groups if judge.side(ev.effect([m.coord for m in g.members]), judge.mild) != -1]
    # (B) singles and controls of the groups that may matter
    controls = {id(g): draw_controls(loaded, [m.coord for m in g.members], everything, cfg.control_draws, cfg.seed)
                for g in live}
    singles = [[m.coord] for g in live for m in g.members]
    ctrl = [c for g in live for _, c in controls[id(g)]]
    is_ctrl = {frozenset(c) for c in ctrl}
    run(singles + ctrl, lambda v: (judge.mild,) if frozenset(v) in is_ctrl else both)
    # (C) leave-one-out for the members of catastrophic groups that are not catastrophic alone
    rests = {}
    for g in live:
        coords = [m.coord for m in g.members]
        if len(coords) > 1 and judge.above(ev.effect(coords), judge.catastrophic):
            for m in g.members:
                if not judge.above(ev.effect([m.coord]), judge.catastrophic):
                    rests[(id(g), m.coord)] = [c for c in coords if c != m.coord]
    run(list(rests.values()), lambda v: (judge.catastrophic,))

    for g in groups:
        coords = [m.coord for m in g.members]
        g.ablated = judge.estimate(ev.effect(coords), both)
        g.controls = [(kind, c, judge.estimate(ev.effect(c), (judge.mild,))) for kind, c in controls.get(id(g), [])]
        bar = cfg.control_margin * max([0.0] + [ev.effect(c).interval(judge.confidence)[1] for _, c, _ in g.controls])
        sig = _significant(judge, ev.effect(coords), bar)
        cat = sig and judge.above(ev.effect(coords), judge.catastrophic)
        g.verdict = "super_activation" if cat else "mild_activation" if sig else "spike_only"
        for m in g.members:
            own = ev.effect([m.coord])
            if own.windows == 0:  # a group decided harmless: its members were not measured alone
                m.verdict, m.estimate = "negligible", None
                continue
            m.estimate = judge.estimate(own, both)
            rest = rests.get((id(g), m.coord))
            if rest is not None:
                g.rest[m.coord] = judge.estimate(ev.effect(rest), (judge.catastrophic,))
            m.verdict = verdicts.tier(
                catastrophic_alone=judge.above(own, judge.catastrophic), significant=_significant(judge, own, bar),
                needed=cat and rest is not None and not judge.above(ev.effect(rest), judge.catastrophic))
    return groups


def _significant(judge: Judge, e: Effect, control_bar: float) -> bool:
    """Above ln(min_ppl_ratio), and above control_margin x its controls' largest upper bound."""
    return judge.above(e, max(judge.mild, control_bar))
