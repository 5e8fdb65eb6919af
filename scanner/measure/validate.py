"""Validation by ablation, graded, with intervals, at the cost the decision needs.

Effects (`scanner.measure.evaluator`): ln(ppl ratio) of an ablation is the mean over windows of the paired loss
difference; its interval is a t interval across windows at the confidence its look may spend
(`scanner.measure.sequential`). Thresholds: ln(min_ppl_ratio) (significant), ln(catastrophic_ratio)
(catastrophic), each with an indifference zone: an ablation is evaluated on more windows only while its
interval crosses both edges of a zone its verdict depends on (`scanner.measure.judge`).

Stages, each its own sequential run: (A) every spike's group of candidates zeroed together; then, for groups
not decided harmless, (B) controls of the group's size from the same matrix (several random draws, and its
largest-magnitude other weights), zeroed all together first (harmless together: harmless each; else each on
its own), and (C) for catastrophic groups of several weights, what each member carries: the set's effect over
the effect of the set without it (paired, on the same windows); a member carrying at least the catastrophic
factor is needed; (D) each candidate alone, but the members a set needs with others (`super_set`: their
verdict is what they carry, whether or not they are catastrophic alone).

Verdicts come from `words.verdicts.tier`. Groups: `super_activation` (catastrophic), `mild_activation`
(significant), `spike_only`. Significant also means above `control_margin` times the larger of its controls'
upper bounds.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import torch

from words import verdicts

from .ablation import read_matrix
from ..adapters import Coord
from ..config import ValidateConfig
from .detect import Candidate
from .evaluator import Effect, Evaluator
from .judge import Estimate, Judge, Question, sequential
from ..load.loading import Loaded
from .triage import group_candidates

log = logging.getLogger("superweights")


@dataclass
class GroupResult:
    key: tuple
    members: list[Candidate]
    ablated: Estimate
    controls: list[tuple[str, list[Coord], Estimate]] = field(default_factory=list)  # (kind, weights, estimate)
    rest: dict = field(default_factory=dict)  # Coord -> Estimate of the group without that member
    carried: dict = field(default_factory=dict)  # Coord -> Estimate of the group's effect over the rest's
    verdict: str = ""


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


def validate(loaded: Loaded, ev: Evaluator, candidates: list[Candidate], cfg: ValidateConfig, progress=None):
    """Group results (with every estimate), verdicts set on the candidates."""
    judge = Judge(cfg, ev.windows.count)
    everything = {c.coord for c in candidates}
    groups = [GroupResult(key, members, None) for key, members in group_candidates(candidates).items()]
    both = (judge.mild, judge.catastrophic)

    def coords(g: GroupResult) -> tuple:
        return tuple(sorted(m.coord for m in g.members))

    def ask(questions: list[Question]) -> None:
        sequential(ev, judge, questions, progress)

    # (A) groups
    ask([Question(coords(g), both) for g in groups])
    live = [g for g in groups if not _harmless(judge, ev.effect(coords(g)))]
    sets = [g for g in live if len(g.members) > 1 and judge.above(ev.effect(coords(g)), judge.catastrophic)]
    # (B) each live group's controls zeroed together (harmless together: harmless each), and (C) what each member
    # of a catastrophic set carries: the set's effect over the effect of the set without it
    drawn = {id(g): draw_controls(loaded, list(coords(g)), everything, cfg.control_draws, cfg.seed) for g in live}
    union = {id(g): tuple(sorted({c for _, cs in drawn[id(g)] for c in cs})) for g in live}
    carried = {(id(g), m.coord): Question(coords(g), (judge.catastrophic,), tuple(c for c in coords(g) if c != m.coord))
               for g in sets for m in g.members}
    ask([Question(union[id(g)], (judge.mild,)) for g in live] + list(carried.values()))
    controls = {id(g): [("union", list(union[id(g)]))] if _harmless(judge, ev.effect(union[id(g)])) else drawn[id(g)]
                for g in live}
    needed = [k for k, q in carried.items() if judge.above(q.effect(ev), judge.catastrophic)]
    shared = {k for k in needed if sum(k2[0] == k[0] for k2 in needed) > 1}  # sets that need several weights
    # (D) each weight alone (but those a set needs with others: their verdict is what they carry), and the
    # controls that were not harmless together, each on its own
    ask([Question((m.coord,), both) for g in live for m in g.members if (id(g), m.coord) not in shared]
        + [Question(tuple(sorted(c)), (judge.mild,)) for g in live for kind, c in controls[id(g)] if kind != "union"])

    for g in groups:
        g.ablated = judge.estimate(ev.effect(coords(g)), both, ev.precision(coords(g)))
        g.controls = [(kind, c, judge.estimate(ev.effect(c), (judge.mild,))) for kind, c in controls.get(id(g), [])]
        bar = cfg.control_margin * max([0.0] + [judge.interval(ev.effect(c))[1] for _, c, _ in g.controls])
        sig = _significant(judge, ev.effect(coords(g)), bar)
        cat = sig and judge.above(ev.effect(coords(g)), judge.catastrophic)
        g.verdict = "super_activation" if cat else "mild_activation" if sig else "spike_only"
        for m in g.members:
            k, own = (id(g), m.coord), ev.effect([m.coord])
            if k in carried:
                g.rest[m.coord] = judge.estimate(ev.effect(carried[k].rest), (judge.catastrophic,))
                g.carried[m.coord] = judge.estimate(carried[k].effect(ev), (judge.catastrophic,))
            if k in shared:  # its verdict rests on what it carries; alone, it is reported as measured
                m.estimate = judge.estimate(own, (), ev.precision([m.coord])) if own.windows else None
                if m.estimate is not None:
                    m.estimate.decided, m.estimate.near = g.carried[m.coord].decided, g.carried[m.coord].near
                m.verdict = verdicts.tier(catastrophic_alone=False, significant=True, needed=True)
                continue
            if own.windows == 0:  # a group decided harmless: its members were not measured alone
                m.verdict, m.estimate = "negligible", None
                continue
            m.estimate = judge.estimate(own, both, ev.precision([m.coord]))
            m.verdict = verdicts.tier(catastrophic_alone=judge.above(own, judge.catastrophic),
                                      significant=_significant(judge, own, bar), needed=False)
    return groups


def _harmless(judge: Judge, e: Effect) -> bool:
    """Decided below the significant line: its members are not measured alone."""
    s = judge.side(e, judge.mild)
    return s is not None and s.decided and not s.above


def _significant(judge: Judge, e: Effect, control_bar: float) -> bool:
    """Above ln(min_ppl_ratio), and above control_margin x its controls' largest upper bound."""
    return judge.above(e, max(judge.mild, control_bar))
