"""From spike profiles to ranked super-weight candidates. No absolute threshold anywhere:
a spike is large *relative to the rest of the same model*, and a weight is a candidate by the
share of the spike it makes.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from .adapters import Coord
from .profile import LayerProfile, Peak


@dataclass
class DetectConfig:
    spike_ratio: float = 10.0  # a spike is >= this many times the model's median per-layer maximum
    min_share: float = 0.1  # a weight is a candidate if its term W[row,j]*x[j] makes >= this share
    max_partners: int = 4  # candidates per spiking row
    max_rounds: int = 3  # zero what was found and look again, at most this many passes
    max_candidates: int = 16  # validated per scan (ranked by contribution)
    top_rows: int = 8  # peaks kept per layer and unit


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


@dataclass
class Spike:
    layer: int
    module: str
    expert: int | None
    row: int
    token: int
    prompt: int
    value: float  # contribution to the residual (signed)
    raw: float  # down-projection output (signed)
    residual_in: float
    ratio: float  # size relative to the baseline (the larger of contribution and raw ratios)
    kind: str  # "super_activation" | "cancellation" | "diffuse"
    round: int
    candidates: list[Coord]

    def key(self) -> tuple:
        return (self.layer, self.module, self.expert, self.row)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "module": self.module, "expert": self.expert, "row": self.row,
                "token": self.token, "prompt": self.prompt, "value": self.value, "raw": self.raw,
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
    verdict: str = ""  # set by validation: super_weight | partner | negligible (or unvalidated)


def is_cancellation(p: Peak) -> bool:
    """A spike that fights a residual activation already there: opposite sign, comparable size."""
    return p.value * p.residual_in < 0 and abs(p.residual_in) >= 0.5 * abs(p.value)


def find_spikes(profiles: list[LayerProfile], base: Baseline, cfg: DetectConfig) -> list[Peak]:
    out = []
    for prof in profiles:
        for p in prof.peaks:
            if max(abs(p.value) / base.value, abs(p.raw) / base.raw) >= cfg.spike_ratio:
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
    ratio = max(abs(p.value) / base.value, abs(p.raw) / base.raw)
    kind = "cancellation" if is_cancellation(p) else "super_activation"
    return Spike(p.layer, p.unit.module, p.unit.expert, p.row, p.token, p.prompt, p.value, p.raw,
                 p.residual_in, ratio, kind, rnd, [])
