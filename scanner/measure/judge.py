"""Judging ablations against thresholds, at the cost the decision needs (`scanner.measure.sequential` holds the
statistics). An ablation is asked a `Question`: its effect, or how much of a set's effect one member carries
(the set's effect over the rest's, paired on the same windows). `sequential` evaluates each question on the
design's looks until every threshold it depends on is decided at its zone's edges, or the windows run out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import ValidateConfig
from .evaluator import Effect, Evaluator, ratio
from .sequential import Design, Side, decide, schedule


@dataclass
class Estimate:
    """What is reported of an ablation: its ppl ratio with the interval that decided it, on how many windows,
    decided or not, and the threshold whose line the interval still holds (`near`, a ratio), if any."""

    ratio: float
    lo: float
    hi: float
    windows: int
    decided: bool
    stopword_shift: float | None
    by_kind: dict
    near: float | None = None
    deltas: list = field(default_factory=list)  # per window, ln ratio (for paired comparisons)
    precision: str | None = None  # of the passes it was measured in: the model's, or the screen's (bfloat16)

    def to_dict(self, prefix: str = "ppl_ratio") -> dict:
        return {prefix: self.ratio, f"{prefix}_lo": self.lo, f"{prefix}_hi": self.hi}


class Judge:
    """Where an effect lies against the thresholds: the interval of its look (error spent across looks), and
    each threshold's indifference zone [theta / zone, theta * zone]."""

    def __init__(self, cfg: ValidateConfig, windows: int):
        self.cfg = cfg
        self.design = Design(schedule(windows, cfg.min_windows, cfg.sequential), 1 - cfg.confidence, cfg.spending)
        self.mild, self.catastrophic = math.log(cfg.min_ppl_ratio), math.log(cfg.catastrophic_ratio)
        self.zones = (math.log(cfg.mild_zone), math.log(cfg.zone))

    def zone(self, t: float) -> float:
        """ln of the zone factor of threshold t: the catastrophic line's, or the significant one's (below it)."""
        return self.zones[t >= self.catastrophic]

    @property
    def looks(self) -> tuple[int, ...]:
        return self.design.looks

    def interval(self, e: Effect) -> tuple[float, float]:
        """ln-ratio interval of the look `e` is at (its error spent across the looks before)."""
        if e.windows < 2:
            return -math.inf, math.inf
        half = self.design.critical(e.windows) * e.se
        return e.mean - half, e.mean + half

    def side(self, e: Effect, t: float) -> Side | None:
        """The side of threshold t (ln ratio); None while it is undecided and more windows may come."""
        lo, hi = self.interval(e)
        return decide(e.mean, (hi - lo) / 2, t, self.zone(t), last=e.windows >= self.looks[-1])

    def touches(self, e: Effect, thresholds: tuple[float, ...]) -> bool:
        """Whether the interval reaches into the zone of any of the thresholds."""
        lo, hi = self.interval(e)
        return any(lo < t + self.zone(t) and hi > t - self.zone(t) for t in thresholds)

    def above(self, e: Effect, t: float) -> bool:
        s = self.side(e, t)
        return e.mean >= t if s is None else s.above

    def estimate(self, e: Effect, thresholds: tuple[float, ...], precision: str | None = None) -> Estimate:
        lo, hi = self.interval(e)
        sides = [(t, self.side(e, t)) for t in thresholds]
        decided = all(s is not None and s.decided for _, s in sides)
        near = next((ratio(t) for t, s in sides if s is None or s.near), None)
        return Estimate(ratio(e.mean), ratio(lo), ratio(hi), e.windows, decided, e.stopword_shift, e.by_kind(),
                        near, list(e.deltas), precision)


@dataclass(frozen=True)
class Question:
    """An ablation's effect (`rest` None), or a set's effect over the effect of the set without one member
    (`rest`: that set): both on the same windows. Variants are sorted tuples of coordinates."""

    variant: tuple
    thresholds: tuple
    rest: tuple | None = None

    def variants(self) -> list[tuple]:
        return [self.variant] if self.rest is None else [self.variant, self.rest]

    def effect(self, ev: Evaluator) -> Effect:
        e = ev.effect(self.variant)
        return e if self.rest is None else e.minus(ev.effect(self.rest))


def sequential(ev: Evaluator, judge: Judge, questions: list[Question], progress=None) -> None:
    """Evaluate the ablations each question reads on the judge's looks until every threshold it depends on is
    decided (or the windows run out); questions at the same look share their passes. With a screen, looks are
    first taken in its precision, and only the questions whose interval touches a zone are asked again in
    full precision, with every question that reads an ablation measured there (precisions never mix in one
    question's answer)."""
    ev.asked.extend(questions)
    if ev.screen is None:
        _run(ev.full, ev, judge, questions, progress)
        return
    _run(ev.screen, ev, judge, questions, progress)
    confirm = [q for q in questions if judge.touches(q.effect(ev.screen), q.thresholds)]
    measured = set(ev.full.effects) | {frozenset(v) for q in confirm for v in q.variants()}
    while True:
        more = [q for q in ev.asked if q not in confirm and any(frozenset(v) in measured for v in q.variants())]
        if not more:
            break
        confirm += more
        measured |= {frozenset(v) for q in more for v in q.variants()}
    _run(ev.full, ev, judge, confirm, progress)


def _run(passes, ev: Evaluator, judge: Judge, questions: list[Question], progress) -> None:
    def open_(q: Question) -> bool:  # a question asked again (a group of one is its weight alone) may be decided
        e = q.effect(passes)
        return e.windows < judge.looks[-1] and any(judge.side(e, t) is None for t in q.thresholds)

    pending = [q for q in questions if open_(q)]
    while pending:
        by_next: dict[int, set] = {}
        for q in pending:
            nxt = next((n for n in judge.looks if n > q.effect(passes).windows), None)
            if nxt is not None:
                by_next.setdefault(nxt, set()).update(q.variants())
        for nxt, vs in sorted(by_next.items()):
            passes.advance([list(v) for v in sorted(vs)], nxt)
        if progress:
            progress([v for q in pending for v in q.variants()], ev)
        pending = [q for q in pending if open_(q)]
