"""Paired effects of ablations on evaluation windows: for each ablation and window, the mean difference in
next-token loss against the unablated model on the same tokens. Their mean over windows is ln(ppl ratio);
their spread across windows gives its interval. Windows are evaluated a few at a time, on request
(`advance`), so that a caller can stop as soon as an interval decides (`scanner.measure.validate`).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from ..adapters import Coord
from .evalset import Windows
from ..load.loading import Loaded
from .replay import BATCH_BUDGET, Runner, head_logits
from .sequential import t_quantile

SCORE_BYTES = 64 << 20  # float32 logits scored at once (a chunk of tokens)
STOPWORDS = ("the a an of and to in is it that was for on as with by at from or be this which are but not "
             "his her they he she we you i had has have were been their its").split()


def ratio(log_ratio: float) -> float:
    """exp, saturating where a float ends: a model destroyed beyond e^700 is reported as e^700."""
    return math.exp(min(log_ratio, 700.0))


@dataclass
class Effect:
    """An ablation on the windows evaluated so far: per window, the mean loss difference (ablated - base)
    and the stopword-mass difference."""

    deltas: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return len(self.deltas)

    @property
    def mean(self) -> float:
        """ln(ppl ratio) on these windows."""
        return sum(self.deltas) / len(self.deltas) if self.deltas else 0.0

    @property
    def se(self) -> float:
        """Standard error of the mean across windows (infinite below two windows)."""
        n = len(self.deltas)
        if n < 2:
            return math.inf
        return math.sqrt(sum((d - self.mean) ** 2 for d in self.deltas) / (n - 1) / n)

    def interval(self, confidence: float) -> tuple[float, float]:
        """Two-sided interval of the mean ln ratio (t across windows) at one look; infinite below two windows."""
        if len(self.deltas) < 2:
            return -math.inf, math.inf
        half = t_quantile(1 - (1 - confidence) / 2, len(self.deltas) - 1) * self.se
        return self.mean - half, self.mean + half

    def minus(self, other: "Effect") -> "Effect":
        """The paired difference on the windows both were evaluated on: how much more this ablation costs."""
        n = min(self.windows, other.windows)
        return Effect([a - b for a, b in zip(self.deltas[:n], other.deltas[:n])], [], self.kinds[:n])

    def by_kind(self) -> dict[str, float]:
        """ppl ratio per kind of text."""
        out: dict[str, list[float]] = {}
        for k, d in zip(self.kinds, self.deltas):
            out.setdefault(k, []).append(d)
        return {k: ratio(sum(v) / len(v)) for k, v in out.items()}

    @property
    def stopword_shift(self) -> float | None:
        return sum(self.stops) / len(self.stops) if self.stops else None


def stopword_ids(tokenizer) -> list[int]:
    ids = set()
    for w in STOPWORDS:
        for form in (" " + w, w, " " + w.capitalize(), w.capitalize()):
            enc = tokenizer.encode(form, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
    return sorted(ids)


def fast_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): 4.4x float32 on an AVX512-BF16
    EPYC here, where an AVX2 one runs bfloat16 a hundred times slower than float32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def screening(asked: str, device: torch.device) -> bool:
    """Whether to look in bfloat16 first: asked "on", or "auto" on CUDA. Not by itself on a CPU, even one with
    fast bfloat16: there the screen's passes cost about a third of float32's (casts, attention and the head's
    log-softmax stay slow), and what touches a zone is measured again in float32, so SmolLM2's scan took
    34.2 s screened against 23.3 s not (bench/scan_bench.py --only e, --screen on and off)."""
    if asked != "auto":
        return asked == "on"
    return device.type == "cuda"


class Passes:
    """Passes of the model in one precision over the windows: the base losses, and the effects measured."""

    def __init__(self, ev: "Evaluator", runner: Runner, autocast: torch.dtype | None):
        self.ev, self.runner, self.autocast = ev, runner, autocast  # autocast: matmuls in it, weights as stored
        self.base_nll: list[torch.Tensor] = []  # per window, [tokens - 1]
        self.base_stop: list[float] = []
        self.effects: dict[frozenset, Effect] = {}

    @property
    def precision(self) -> str:
        return str(self.autocast or self.ev.loaded.dtype).removeprefix("torch.")

    def _cast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ev.loaded.device.type, dtype=self.autocast)

    def effect(self, variant) -> Effect:
        """What is known of an ablation here (nothing, for one never evaluated: it is not counted as asked)."""
        return self.effects.get(frozenset(variant)) or Effect()

    @torch.no_grad()
    def advance(self, variants: list[list[Coord]], to: int) -> None:
        """Evaluate each variant on its next windows, up to `to` windows in all (those with the same number
        of windows done share their passes)."""
        to = min(to, self.ev.windows.count)
        self.ensure_base(to)
        by_start: dict[int, list[list[Coord]]] = {}
        for v in variants:
            done = self.effect(v).windows
            if done < to:
                by_start.setdefault(done, []).append(v)
        for a, group in by_start.items():
            with self._cast():
                for v, hidden in self.runner.run(group, (a, to)):
                    self.record(self.effects.setdefault(frozenset(v), Effect()), hidden, a)

    def record(self, e: Effect, hidden: torch.Tensor, first: int) -> None:
        """Add to `e` the windows `first`, `first + 1`, ... whose head inputs are `hidden` [windows, tokens,
        hidden]: each one's loss difference against the base on the same tokens (the base must be there)."""
        nll, stop = self.ev.score(hidden, first)
        for w in range(first, first + hidden.shape[0]):
            e.deltas.append(float((nll[w - first] - self.base_nll[w]).mean()))
            e.kinds.append(self.ev.windows.kinds[w])
            if stop is not None:
                e.stops.append(stop[w - first] - self.base_stop[w])

    @torch.no_grad()
    def ensure_base(self, to: int) -> None:
        """The unablated losses of the first `to` windows."""
        if len(self.base_nll) >= to:
            return
        a = len(self.base_nll)
        with self._cast():
            nll, stop = self.ev.score(self.runner.base(to)[a:to], a)
        self.base_nll.extend(nll)
        self.base_stop.extend(stop or [])


class Evaluator:
    """Effects of ablations of the loaded model on `windows`, computed window by window on request: in the
    model's own precision (`full`), and, when `screen` is given, first in that one (bfloat16 matmuls while
    the model computes in float32): `scanner.measure.judge.sequential` measures in float32 only what the
    screen cannot settle. `effect` answers from float32 where it was measured, else from the screen."""

    def __init__(self, loaded: Loaded, windows: Windows, upto: int | None = None, screen: torch.dtype | None = None):
        """`upto`: the deepest layer an ablation will be in (the base passes keep the outputs before it)."""
        self.loaded, self.windows = loaded, windows
        self.ids = windows.ids.to(loaded.device)  # [windows, tokens]
        stop = stopword_ids(loaded.tokenizer)
        self.stop = torch.tensor(stop, dtype=torch.long) if stop else None
        # streaming: a batch's activations may take about what one layer does, so the peak stays a few
        # layers (a big model's layer allows a big batch, and every batch is one more read of the layers)
        budget = loaded.streamer.layer_bytes if loaded.streamer is not None else BATCH_BUDGET
        self.full = Passes(self, Runner(loaded.loop, self.ids, budget, upto), None)
        screening = screen is not None and loaded.dtype == torch.float32
        self.screen = Passes(self, Runner(loaded.loop, self.ids, budget, upto), screen) if screening else None
        self.runner = self.full.runner
        self.asked: list = []  # every judge.Question asked of it, for `sequential` to ask again in full precision

    @property
    def passes(self) -> int:
        return self.full.runner.passes + (self.screen.runner.passes if self.screen else 0)

    @property
    def window_evaluations(self) -> int:
        """Ablated windows evaluated, in every precision."""
        return sum(e.windows for p in (self.full, self.screen) if p for e in p.effects.values())

    @property
    def base_nll(self) -> list[torch.Tensor]:
        return self.full.base_nll

    @property
    def effects(self) -> dict[frozenset, Effect]:
        """Every ablation measured, each in the precision `effect` answers from."""
        return {**(self.screen.effects if self.screen else {}), **self.full.effects}

    def base_ppl(self, windows: int | None = None) -> float:
        n = windows or len(self.full.base_nll)
        return math.exp(float(torch.stack(self.full.base_nll[:n]).mean()))

    def base_stopword(self, windows: int | None = None) -> float | None:
        n = windows or len(self.full.base_stop)
        return sum(self.full.base_stop[:n]) / n if self.stop is not None and n else None

    def effect(self, variant) -> Effect:
        """What is known of an ablation: measured in full precision, else screened."""
        k = frozenset(variant)
        return self.full.effects.get(k) or (self.screen and self.screen.effects.get(k)) or Effect()

    def precision(self, variant) -> str:
        k = frozenset(variant)
        return self.screen.precision if self.screen and k not in self.full.effects else self.full.precision

    def advance(self, variants: list[list[Coord]], to: int) -> None:
        self.full.advance(variants, to)

    def record(self, e: Effect, hidden: torch.Tensor, first: int) -> None:
        self.full.record(e, hidden, first)

    def ensure_base(self, to: int) -> None:
        self.full.ensure_base(to)

    def score(self, hidden: torch.Tensor, first: int) -> tuple[list[torch.Tensor], list[float] | None]:
        """Per window: next-token losses [tokens - 1] and mean stopword mass, from the head's input
        [windows, tokens, hidden]; logits a few tokens at a time, never [windows, tokens, vocab] at once."""
        model = self.loaded.model
        vocab = model.get_output_embeddings().weight.shape[0]
        k, t = hidden.shape[0], hidden.shape[1]
        targets = self.ids[first: first + k, 1:]  # [k, t - 1]
        flat_h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        flat_t = targets.reshape(-1)
        chunk = max(8, SCORE_BYTES // (vocab * 4))
        nll = torch.empty(flat_t.numel())
        stop = torch.empty(flat_t.numel()) if self.stop is not None else None
        for s in range(0, flat_t.numel(), chunk):
            lp = torch.log_softmax(head_logits(model, flat_h[s: s + chunk]).float(), dim=-1)  # [chunk, vocab]
            nll[s: s + chunk] = -lp.gather(1, flat_t[s: s + chunk, None].to(lp.device))[:, 0].cpu()
            if stop is not None:
                stop[s: s + chunk] = lp[:, self.stop.to(lp.device)].exp().sum(-1).cpu()
        per = nll.view(k, t - 1)
        return list(per), None if stop is None else [float(x) for x in stop.view(k, t - 1).mean(1)]
