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

import torch

from .ablation import read_matrix
from .adapters import Coord
from .config import ValidateConfig
from .detect import Candidate
from .loading import Loaded
from .replay import BATCH_BUDGET, Runner, head_logits

SCORE_BYTES = 64 << 20  # float32 logits scored at once (a chunk of tokens)

log = logging.getLogger("superweights")

STOPWORDS = ("the a an of and to in is it that was for on as with by at from or be this which are but not "
             "his her they he she we you i had has have were been their its").split()


@dataclass
class Evaluation:
    ppl: float
    stopword: float | None  # mean next-token probability mass on stopwords

    def ratio(self, base: "Evaluation") -> float:
        return self.ppl / base.ppl

    def effect(self, base: "Evaluation") -> float:
        return math.log(self.ppl / base.ppl)


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

    def __init__(self, loaded: Loaded, text: str, max_tokens: int, upto: int | None = None):
        """`upto`: the deepest layer an ablation will be in (the base pass keeps the outputs before it)."""
        tok = loaded.tokenizer
        self.limit = min(max_tokens, loaded.positions or max_tokens)
        # a token is rarely more than a few characters: the rest of a long text is never tokenized
        ids = tok(text[: self.limit * 64], return_tensors="pt").input_ids[:, : self.limit]
        self.ids = ids.to(loaded.device)  # [1, tokens]
        self.loaded = loaded
        stop = stopword_ids(tok)
        self.stop = torch.tensor(stop, dtype=torch.long) if stop else None
        self.cache: dict[frozenset, Evaluation] = {}
        # streaming: a batch's activations may take about what one layer does, so the peak stays a few
        # layers (a big model's layer allows a big batch, and every batch is one more read of the layers)
        budget = loaded.streamer.layer_bytes if loaded.streamer is not None else BATCH_BUDGET
        self.runner = Runner(loaded.loop, self.ids, budget, upto)

    @property
    def tokens(self) -> int:
        return self.ids.shape[1]

    @property
    def passes(self) -> int:
        return self.runner.passes

    def __call__(self, coords=()) -> Evaluation:
        return self.many([list(coords)])[0]

    @torch.no_grad()
    def many(self, variants: list[list[Coord]]) -> list[Evaluation]:
        """Evaluations of several ablations; those whose weights share a layer run as one batch from it."""
        if frozenset() not in self.cache:
            self.cache[frozenset()] = self._score(self.runner.base())
        todo = list(dict.fromkeys(frozenset(v) for v in variants if frozenset(v) not in self.cache))
        for v, hidden in self.runner.run([list(v) for v in todo]):
            self.cache[frozenset(v)] = self._score(hidden)
        return [self.cache[frozenset(v)] for v in variants]

    def _score(self, hidden: torch.Tensor) -> Evaluation:
        """From the head's input [tokens, hidden]: logits a few tokens at a time."""
        model = self.loaded.model
        vocab = model.get_output_embeddings().weight.shape[0]
        chunk = max(8, SCORE_BYTES // (vocab * 4))
        return self.score_logits(head_logits(model, hidden[s: s + chunk]) for s in range(0, self.tokens - 1, chunk))

    def score_logits(self, chunks) -> Evaluation:
        """Perplexity and stopword mass from logits [tokens, vocab], whole or as consecutive chunks."""
        targets = self.ids[0, 1:]
        nll, stop, s = 0.0, 0.0, 0
        for logits in ([chunks] if isinstance(chunks, torch.Tensor) else chunks):
            lg = logits[: targets.numel() - s]
            lp = torch.log_softmax(lg.float(), dim=-1)  # [chunk, vocab]
            nll -= float(lp.gather(1, targets[s: s + lg.shape[0], None]).sum())
            if self.stop is not None:
                stop += float(lp[:, self.stop.to(lp.device)].exp().sum())
            s += lg.shape[0]
        n = targets.numel()
        return Evaluation(math.exp(nll / n), stop / n if self.stop is not None else None)


def group_candidates(candidates: list[Candidate]) -> dict[tuple, list[Candidate]]:
    """The candidates of one spike (layer, module, expert, row), in ranked order."""
    groups: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.spike.key(), []).append(c)
    return groups


@torch.no_grad()
def triage(loaded: Loaded, runners: list[Runner], candidates: list[Candidate], budget: int):
    """Rank spikes by how much zeroing their candidates moves the model's output on the calibration
    prompts (mean KL divergence; the groups of one layer in one batched pass from that layer), and keep
    whole groups, best first, up to `budget` candidates for the full perplexity validation. Sets
    `screen_kl` and `rank`."""
    def logprobs(hidden):  # [tokens, hidden] -> [tokens, vocab]
        return torch.log_softmax(head_logits(loaded.model, hidden).float(), -1)

    groups = list(group_candidates(candidates).values())
    kl = [0.0] * len(groups)
    variants = [[m.coord for m in members] for members in groups]
    index = {frozenset(v): i for i, v in enumerate(variants)}
    for runner in runners:  # one per prompt, their base passes usually made by detection already
        base = logprobs(runner.base())
        for v, hidden in runner.run(variants):
            a = logprobs(hidden)
            kl[index[frozenset(v)]] += float((base.exp() * (base - a)).sum(-1).mean()) / len(runners)
    scored = sorted(zip(kl, groups), key=lambda s: -s[0])
    for k, members in scored:
        for m in members:
            m.screen_kl = k
    kept, rest = [], []
    for k, members in scored:
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
    w = read_matrix(loaded.loop, c0.layer, c0.unit).float().abs().cpu()  # [hidden, d_mlp]
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
    # stage 1, every group at once (variants of one layer share a batch): each group, its controls,
    # each member alone
    plans = []
    for key, members in groups.items():
        coords = [m.coord for m in members]
        rand, largest = _controls(loaded, coords, everything, cfg.seed)
        plans.append((key, members, coords, rand, largest))
    ev.many([v for _, members, coords, rand, largest in plans
             for v in [coords, rand, largest] + [[m.coord] for m in members]])
    # stage 2: leave-one-out, only where a verdict depends on it (a member of a significant group
    # that is not significant alone), not for every member: most would go unused
    needed = []
    for key, members, coords, rand, largest in plans:
        log.info("validating %s: %d candidate(s)", members[0].coord.label().rsplit("[", 1)[0], len(members))
        g = GroupResult(key, members, ev(coords), ev(rand), ev(largest),
                        {"random": [[c.row, c.col] for c in rand], "largest": [[c.row, c.col] for c in largest]})
        control = max(g.random.effect(base), g.largest.effect(base))
        g_sig = significant(g.ablated.effect(base), control)
        g.verdict = "super_activation" if g_sig else "spike_only"
        for m in members:
            own = singles[m.coord] = ev([m.coord])
            if significant(own.effect(base), control):
                m.verdict = "super_weight"
            elif g_sig and len(members) > 1:
                needed.append((g, m, [c for c in coords if c != m.coord]))
            else:
                m.verdict = "negligible"
        results.append(g)
    ev.many([rest for _, _, rest in needed])
    for g, m, rest in needed:
        m.verdict = "partner" if g.ablated.effect(base) - ev(rest).effect(base) >= threshold else "negligible"
    return base, singles, results
