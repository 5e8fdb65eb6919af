"""Validation by ablation: perplexity on a fixed text with candidates zeroed, against controls.

Verdict rules (also in the README):
- effect(v) = ln(ppl with v zeroed / ppl of the original model).
- v is *significant* when effect(v) >= ln(min_ppl_ratio) and effect(v) >= control_margin x the larger
  effect of its controls (the same number of random weights of the same matrix, and the same
  number of its largest-magnitude other weights).
- a group (the candidates of one spike zeroed together) is `super_activation` if significant,
  else `spike_only` (a spike whose ablation costs little: reported, not dropped).
- a candidate is `super_weight` if significant on its own; `partner` if its group is significant
  and leaving it out of the group's ablation lowers the effect by >= ln(min_ppl_ratio); else
  `negligible`.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from importlib import resources

import torch

from .ablation import read_matrix, zeroed
from .adapters import Coord
from .detect import Candidate
from .loading import Loaded
from .replay import Prefix, corrections, dense, first_layer, skip_before

LOGITS_BUDGET = 256 << 20  # bytes of float32 logits per batched pass (the peak memory they add)

log = logging.getLogger("superweights")

STOPWORDS = ("the a an of and to in is it that was for on as with by at from or be this which are but not "
             "his her they he she we you i had has have were been their its").split()


@dataclass
class ValidateConfig:
    min_ppl_ratio: float = 1.5
    control_margin: float = 10.0
    eval_tokens: int = 1024
    seed: int = 0


@dataclass
class Evaluation:
    ppl: float
    stopword: float | None  # mean next-token probability mass on stopwords

    def ratio(self, base: "Evaluation") -> float:
        return self.ppl / base.ppl

    def effect(self, base: "Evaluation") -> float:
        return math.log(self.ppl / base.ppl)


def default_eval_text() -> str:
    return resources.files("scanner").joinpath("data/eval.txt").read_text()


def stopword_ids(tokenizer) -> list[int]:
    ids = set()
    for w in STOPWORDS:
        for form in (" " + w, w, " " + w.capitalize(), w.capitalize()):
            enc = tokenizer.encode(form, add_special_tokens=False)
            if len(enc) == 1:
                ids.add(enc[0])
    return sorted(ids)


class Evaluator:
    """Perplexity (and stopword mass) of the loaded model with any set of weights zeroed."""

    def __init__(self, loaded: Loaded, text: str, max_tokens: int):
        tok = loaded.tokenizer
        cfg = loaded.model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or max_tokens
        ids = tok(text, return_tensors="pt").input_ids[:, : min(max_tokens, limit)]
        self.ids = ids.to(loaded.device)  # [1, tokens]
        self.loaded = loaded
        stop = stopword_ids(tok)
        self.stop = torch.tensor(stop, dtype=torch.long) if stop else None
        self.cache: dict[frozenset, Evaluation] = {}
        self.passes = 0
        self.prefix = Prefix()
        self.vocab = 0

    @property
    def tokens(self) -> int:
        return self.ids.shape[1]

    def __call__(self, coords=()) -> Evaluation:
        return self.many([list(coords)])[0]

    @torch.no_grad()
    def many(self, variants: list[list[Coord]]) -> list[Evaluation]:
        """Evaluations of several ablations; those whose weights share a layer run as one batch from it."""
        model, adapter = self.loaded.model, self.loaded.adapter
        if frozenset() not in self.cache:  # the base pass keeps every layer's output for the rest
            with self.prefix.capture(model, adapter):
                logits = model(input_ids=self.ids, use_cache=False).logits  # [1, tokens, vocab]
            self.passes += 1
            self.vocab = logits.shape[-1]
            self.cache[frozenset()] = self._score(logits[0])
        todo = list(dict.fromkeys(frozenset(v) for v in variants if frozenset(v) not in self.cache))
        batched = [v for v in todo if dense(list(v))]
        by_layer: dict[int, list[frozenset]] = {}
        for v in batched:
            by_layer.setdefault(first_layer([list(v)]), []).append(v)
        size = max(1, LOGITS_BUDGET // max(1, self.tokens * self.vocab * 4))
        for start, group in by_layer.items():
            for i in range(0, len(group), size):
                chunk = group[i: i + size]
                self._run(start, [list(v) for v in chunk], corrected=True)
        for v in todo:  # expert weights: one variant at a time, zeroed in place
            if v not in self.cache:
                self._run(first_layer([list(v)]), [list(v)], corrected=False)
        return [self.cache[frozenset(v)] for v in variants]

    def _run(self, start: int, chunk: list[list[Coord]], corrected: bool) -> None:
        model, adapter = self.loaded.model, self.loaded.adapter
        n = len(chunk)
        with skip_before(model, adapter, self.prefix, start, n), \
                (corrections(model, adapter, chunk) if corrected else zeroed(model, adapter, chunk[0])):
            logits = model(input_ids=self.ids.expand(n, -1), use_cache=False).logits  # [variants, tokens, vocab]
        self.passes += 1
        for v, lg in zip(chunk, logits):
            self.cache[frozenset(v)] = self._score(lg)

    def _score(self, logits: torch.Tensor) -> Evaluation:
        targets = self.ids[0, 1:]
        nll, stop = 0.0, 0.0
        for s in range(0, targets.numel(), 256):  # chunks keep [chunk, vocab] float32 small
            lp = torch.log_softmax(logits[s: s + 256][: targets.numel() - s].float(), dim=-1)
            nll -= float(lp.gather(1, targets[s: s + 256, None]).sum())
            if self.stop is not None:
                stop += float(lp[:, self.stop.to(lp.device)].exp().sum())
        n = targets.numel()
        return Evaluation(math.exp(nll / n), stop / n if self.stop is not None else None)


def group_candidates(candidates: list[Candidate]) -> dict[tuple, list[Candidate]]:
    """The candidates of one spike (layer, module, expert, row), in ranked order."""
    groups: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.spike.key(), []).append(c)
    return groups


@torch.no_grad()
def triage(loaded: Loaded, prompts: list[torch.Tensor], candidates: list[Candidate], budget: int):
    """Rank spikes by how much zeroing their candidates moves the model's output on the calibration
    prompts (mean KL divergence, a few cheap short passes), and keep whole groups, best first, up to
    `budget` candidates for the full perplexity validation. Sets `screen_kl` and `rank`."""
    model = loaded.model

    def logprobs():
        return [torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), -1) for ids in prompts]

    base = logprobs()
    scored = []
    for key, members in group_candidates(candidates).items():
        with zeroed(model, loaded.adapter, [m.coord for m in members]):
            ablated = logprobs()
        kl = sum(float((b.exp() * (b - a)).sum(-1).mean()) for b, a in zip(base, ablated)) / len(prompts)
        for m in members:
            m.screen_kl = kl
        scored.append((kl, members))
    scored.sort(key=lambda s: -s[0])
    kept, rest = [], []
    for kl, members in scored:
        (kept if not kept or len(kept) + len(members) <= budget else rest).extend(members)
    for i, c in enumerate(kept + rest, 1):
        c.rank = i
    return kept, rest


@dataclass
class GroupResult:
    key: tuple
    members: list[Candidate]
    ablated: Evaluation
    random: Evaluation
    largest: Evaluation
    controls: dict = field(default_factory=dict)  # which weights the controls zeroed
    verdict: str = ""


def _controls(loaded: Loaded, members: list[Coord], exclude: set[Coord], seed: int) -> tuple[list, list]:
    c0 = members[0]
    w = read_matrix(loaded.adapter, loaded.layers[c0.layer], c0.unit).float().abs().cpu()  # [hidden, d_mlp]
    mask = torch.zeros_like(w, dtype=torch.bool)
    for c in exclude:
        if (c.layer, c.unit) == (c0.layer, c0.unit):
            mask[c.row, c.col] = True
    k = len(members)
    largest = w.masked_fill(mask, -1).flatten().topk(k).indices
    # seeded by matrix and count, so groups of one matrix share (and reuse) their controls
    digest = hashlib.sha256(f"{seed}:{c0.layer}:{c0.module}:{c0.expert}:{k}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    allowed = (~mask).flatten().nonzero().flatten()
    rand = allowed[torch.randperm(allowed.numel(), generator=gen)[:k]]

    def coords(flat):
        return [Coord(c0.layer, c0.module, *divmod(int(i), w.shape[1]), c0.expert) for i in flat]
    return coords(rand), coords(largest)


def validate(loaded: Loaded, ev: Evaluator, candidates: list[Candidate], cfg: ValidateConfig):
    """Returns (base evaluation, per-candidate evaluations, group results); sets verdicts."""
    base = ev()
    groups = group_candidates(candidates)
    everything = {c.coord for c in candidates}
    threshold = math.log(cfg.min_ppl_ratio)

    def significant(effect: float, control: float) -> bool:
        return effect >= threshold and effect >= cfg.control_margin * max(control, 0.0)

    singles: dict[Coord, Evaluation] = {}
    results = []
    for key, members in groups.items():
        coords = [m.coord for m in members]
        log.info("validating %s: %d candidate(s)", members[0].coord.label().rsplit("[", 1)[0], len(members))
        rand, largest = _controls(loaded, coords, everything, cfg.seed)
        # every ablation of this group (all in one layer) in one batched pass from that layer
        ev.many([coords, rand, largest] + [[m.coord] for m in members]
                + ([[c for c in coords if c != m.coord] for m in members] if len(members) > 1 else []))
        g = GroupResult(key, members, ev(coords), ev(rand), ev(largest),
                        {"random": [[c.row, c.col] for c in rand], "largest": [[c.row, c.col] for c in largest]})
        control = max(g.random.effect(base), g.largest.effect(base))
        g_sig = significant(g.ablated.effect(base), control)
        g.verdict = "super_activation" if g_sig else "spike_only"
        for m in members:
            own = singles[m.coord] = ev([m.coord])
            if significant(own.effect(base), control):
                m.verdict = "super_weight"
            elif g_sig and len(members) > 1 and \
                    g.ablated.effect(base) - ev([c for c in coords if c != m.coord]).effect(base) >= threshold:
                m.verdict = "partner"
            else:
                m.verdict = "negligible"
        results.append(g)
    return base, singles, results
