"""From spike profiles to ranked super-weight candidates. No absolute threshold anywhere:
a spike is large *relative to the rest of the same model*, and a weight is a candidate by the
share of the spike it makes. `detect` iterates: profile, find spikes, attribute them, zero what was
found, profile again.
"""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

import torch

from .ablation import read_matrix, zeroed
from ..adapters import Coord
from ..config import DetectConfig
from ..layerloop import LayerLoop
from .profile import LayerProfile, Peak, record

log = logging.getLogger("superweights")


@dataclass
class Baseline:
    """Typical per-layer maxima of the original model: the yardstick for 'spike'."""

    value: float  # median over layers of max |MLP contribution to the residual|
    raw: float  # median over layers of max |down-projection output|
    input: float  # median over layers of max |down-projection input|

    @classmethod
    def of(cls, profiles: list[LayerProfile]) -> "Baseline":
        def med(xs):
            return max(statistics.median(abs(v) for v in xs), 1e-30)
        return cls(med((p.post or p.output).value for p in profiles),
                   med(p.output.value for p in profiles), med(p.input.value for p in profiles))

    def ratio(self, p: Peak) -> float:
        """A peak's size against the model's typical layer: the larger of what it adds to the residual
        and the raw down-projection output, each over its median."""
        return max(abs(p.value) / self.value, abs(p.raw) / self.raw)


@dataclass
class Spike:
    layer: int
    module: str
    expert: int | None
    row: int
    token_pos: int  # position of the token in its prompt
    token_id: int  # the token's id in the vocabulary
    prompt: int
    value: float  # contribution to the residual (signed)
    raw: float  # down-projection output (signed)
    residual_in: float
    ratio: float  # size relative to the baseline (the larger of contribution and raw ratios)
    kind: str  # a key of words.verdicts.SPIKE_KINDS
    round: int
    candidates: list[Coord]

    def key(self) -> tuple:
        return (self.layer, self.module, self.expert, self.row)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "module": self.module, "expert": self.expert, "row": self.row,
                "token_pos": self.token_pos, "token_id": self.token_id, "prompt": self.prompt, "value": self.value, "raw": self.raw,
                "residual_in": self.residual_in, "ratio": self.ratio, "kind": self.kind,
                "round": self.round, "candidates": [[c.row, c.col] for c in self.candidates]}


@dataclass
class Candidate:
    coord: Coord
    weight: float  # W[row, col]
    input: float  # x[col] at the spike's token
    input_ratio: float  # |x[col]| relative to the model's median per-layer input maximum
    contribution: float  # W[row, col] * x[col]
    share: float  # of the spike's raw output
    spike: Spike
    round: int
    rank: int = 0
    screen_kl: float | None = None  # KL on the calibration prompts when its group is zeroed
    verdict: str = ""  # set by validation: super_weight | super_set | mild | negligible (or unvalidated)
    estimate: object | None = None  # its own ablation (validate.Estimate), where measured


def is_cancellation(p: Peak) -> bool:
    """A spike that fights a residual activation already there: opposite sign, comparable size."""
    return p.value * p.residual_in < 0 and abs(p.residual_in) >= 0.5 * abs(p.value)


def find_spikes(profiles: list[LayerProfile], base: Baseline, cfg: DetectConfig) -> list[Peak]:
    out = []
    for prof in profiles:
        for p in prof.peaks:
            if base.ratio(p) >= cfg.spike_ratio:
                out.append(p)
    return out


def attribute(p: Peak, row_weights: torch.Tensor, cfg: DetectConfig) -> list[tuple[int, float]]:
    """The input channels whose terms W[row, j] * x[j] make the spike: (col, term), largest first."""
    terms = row_weights.float().cpu() * p.x  # [d_mlp]
    sign = 1.0 if p.raw >= 0 else -1.0
    aligned = terms * sign
    total = max(abs(p.raw), 1e-30)
    top = aligned.topk(min(cfg.max_partners, aligned.numel()))
    return [(int(j), float(terms[j])) for v, j in zip(top.values, top.indices) if v / total >= cfg.min_share]


def spike_from_peak(p: Peak, base: Baseline, rnd: int) -> Spike:
    kind = "cancellation" if is_cancellation(p) else "massive"
    return Spike(p.layer, p.unit.module, p.unit.expert, p.row, p.token_pos, p.token_id, p.prompt, p.value, p.raw,
                 p.residual_in, base.ratio(p), kind, rnd, [])


def detect(loop: LayerLoop, prompts: list[torch.Tensor], cfg: DetectConfig, runners: list | None = None):
    """Iterate: profile, find spikes, attribute them, zero what was found, profile again. The first
    round's passes are the runners' base passes (kept for triage's ablations).
    Returns (first round's profiles, baseline, spikes, candidates ranked, rounds run)."""
    found: dict[Coord, Candidate] = {}
    spikes: dict[tuple, Spike] = {}
    first: list[LayerProfile] | None = None
    base: Baseline | None = None
    rounds = 0
    for rnd in range(1, cfg.max_rounds + 1):
        rounds = rnd
        first_pass = (lambda i: runners[i].base()) if runners and rnd == 1 else None
        with zeroed(loop, found):
            profiles = record(loop.model, loop.adapter, prompts, cfg.top_rows, run=first_pass)
        if base is None:
            first, base = profiles, Baseline.of(profiles)
        new: dict[Coord, Candidate] = {}
        peaks = find_spikes(profiles, base, cfg)
        for peak in peaks:
            s = spike_from_peak(peak, base, rnd)
            # the first round's reading of a (layer, row) stands: a late layer that cancels the super
            # activation in the original model is not a new spike once that activation is zeroed
            spike = spikes.setdefault(s.key(), s)
            if spike.kind == "cancellation":
                continue
            w_row = read_matrix(loop, peak.layer, peak.unit)[peak.row]  # [d_mlp]
            terms = attribute(peak, w_row, cfg)
            if not terms and not spike.candidates:
                spike.kind = "diffuse"
            for col, term in terms:
                coord = Coord(peak.layer, peak.unit.module, peak.row, col, peak.unit.expert)
                if coord in found or coord in new:
                    continue
                x = float(peak.x[col])
                new[coord] = Candidate(coord, float(w_row[col]), x, abs(x) / base.input, term,
                                       term / peak.raw if peak.raw else 0.0, spike, rnd)
                spike.candidates.append(coord)
                spike.kind = "massive"
        log.info("round %d: %d spike(s) above %.0fx the median layer, %d new candidate(s)",
                 rnd, len(peaks), cfg.spike_ratio, len(new))
        if not new:
            break
        found.update(new)
    # first-round candidates first: later rounds measure a model with weights already zeroed
    ranked = sorted(found.values(), key=lambda c: (c.round, -abs(c.contribution)))
    return first, base, list(spikes.values()), ranked, rounds
