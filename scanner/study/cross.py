"""Cross-ablation: a set of coordinates found in one model, zeroed in another (a base's super weights in its
fine-tune, or the other way), measured as every ablation is (`scanner.measure.validate`): paired per-window loss
differences, sequential looks, a 95% interval, a graded verdict. The model's own set is measured on the same
windows beside it, so "the base's weights no longer matter here" can be told from "nothing matters here".

Verdicts are the candidates' tiers without controls (the sets were chosen in another model, not by size in
this one): `super_weight` (one weight) or `super_set` (several) when catastrophic, `mild` when significant,
`negligible` otherwise; an empty set has no verdict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from words import verdicts

from ..adapters import Coord
from ..config import ScanConfig
from ..load.loading import Loaded
from ..measure.ablation import values_at
from ..measure.evaluator import Effect, Evaluator, ratio
from ..measure.judge import Estimate, Judge, Question, sequential


@dataclass
class Cross:
    """One set zeroed in one model."""

    zeroed: list[Coord]
    values: list[float]  # W[row, col] of each, in this model, before zeroing
    estimate: Estimate | None  # None: nothing to zero
    verdict: str | None

    def to_dict(self, prefix: str) -> dict:
        e = self.estimate
        return {f"{prefix}_ppl_ratio": e and e.ratio, f"{prefix}_ppl_ratio_lo": e and e.lo,
                f"{prefix}_ppl_ratio_hi": e and e.hi, f"{prefix}_windows": e and e.windows,
                f"{prefix}_decided": e and e.decided, f"{prefix}_verdict": self.verdict}


def cross_ablate(loaded: Loaded, ev: Evaluator, cfg: ScanConfig, sets: dict[str, list[Coord]],
                 progress=None) -> dict[str, Cross]:
    """Each named set zeroed in `loaded` (on `ev`'s windows, sharing passes), judged against `cfg`'s
    thresholds. Raises OutOfRange when a coordinate does not exist in this model."""
    judge = Judge(cfg.validate, ev.windows.count)
    both = (judge.mild, judge.catastrophic)
    values = values_at(loaded.loop, [c for s in sets.values() for c in s])  # before any zeroing; checks range
    todo = {tuple(sorted(set(s))) for s in sets.values() if s}
    sequential(ev, judge, [Question(v, both) for v in sorted(todo)], progress)
    out = {}
    for name, s in sets.items():
        coords = sorted(set(s))
        if not coords:
            out[name] = Cross([], [], None, None)
            continue
        e = ev.effect(coords)
        cat = judge.above(e, judge.catastrophic)
        verdict = verdicts.tier(catastrophic_alone=cat and len(coords) == 1, needed=cat and len(coords) > 1,
                                significant=judge.above(e, judge.mild))
        out[name] = Cross(coords, [values[c] for c in coords], judge.estimate(e, both, ev.precision(coords)), verdict)
    return out


@dataclass
class CrossOutcome:
    result: object | None  # the ScanResult, when the model was scanned in the same load
    crosses: dict[str, Cross]
    values: dict[Coord, float]  # W at each coordinate asked to be read
    eval_text_sha256: str
    eval_ids_sha256: str  # of the windows' token ids: another load's effects pair with these when it is equal


@dataclass(frozen=True)
class Change:
    """How an effect changed from one model to another: `after`'s over `before`'s, paired on the windows both
    were measured on, with its interval."""

    label: str  # stronger | weaker | unchanged | unpaired
    ratio: float | None = None
    lo: float | None = None
    hi: float | None = None

    def to_dict(self, prefix: str) -> dict:
        return {prefix: self.label, f"{prefix}_ratio": self.ratio, f"{prefix}_ratio_lo": self.lo,
                f"{prefix}_ratio_hi": self.hi}


def change(before: list | None, after: list | None, cfg: ScanConfig) -> Change:
    """A change only when the interval (t, at the configured confidence) lies wholly outside the zone
    [1 / zone, zone]: a difference the interval does not place there is reported unchanged, never as a change.
    The windows must be the same ones (the caller checks their ids); fewer than two: unpaired."""
    if not before or not after or min(len(before), len(after)) < 2:
        return Change("unpaired")
    e = Effect(list(after)).minus(Effect(list(before)))
    lo, hi = e.interval(cfg.validate.confidence)
    z = math.log(cfg.validate.zone)
    label = "stronger" if lo > z else "weaker" if hi < -z else "unchanged"
    return Change(label, ratio(e.mean), ratio(lo), ratio(hi))


def cross_source(source, cfg: ScanConfig, sets: dict[str, list[Coord]], read: list[Coord] = (),
                 scan_as: str | None = None, progress: bool = False) -> CrossOutcome:
    """Load `source` once: scan it first when `scan_as` names it (its own catastrophic set is then measured
    as the set `scan_as`), read W at the coordinates `read`, and zero each of `sets` in it."""
    from tqdm import tqdm

    from ..load.loading import load
    from ..scan import evaluator, scan_loaded

    loaded = load(source, cfg.load)
    try:
        result = None
        sets = dict(sets)
        if scan_as is not None:
            result = scan_loaded(loaded, cfg, progress=progress)
            sets[scan_as] = [c.coord for c in result.candidates if verdicts.is_catastrophic(c.verdict)]
        values = values_at(loaded.loop, read)
        coords = [c for s in sets.values() for c in s]
        ev = evaluator(loaded, cfg, upto=max((c.layer for c in coords), default=0))
        total = sum(bool(s) for s in sets.values())
        with tqdm(desc="cross-ablations", unit="ablation", total=total, disable=not progress or not total,
                  leave=False) as bar:
            def update(pending, _ev):
                bar.n = bar.total - len(pending)
                bar.refresh()
            crosses = cross_ablate(loaded, ev, cfg, sets, update)  # empty sets: no verdict, nothing evaluated
        return CrossOutcome(result, crosses, values, ev.windows.sha256, ev.windows.ids_sha256)
    finally:
        loaded.close()
