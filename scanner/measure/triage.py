"""Triage: which spikes deserve the perplexity validation. Each spike's candidates are zeroed together and
the output's change on the calibration prompts (mean KL divergence) ranks them; the best are validated
up to a budget of candidates, the rest reported as unvalidated."""
from __future__ import annotations

import torch

from .detect import Candidate
from ..load.loading import Loaded
from .replay import Runner, head_logits


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
        base = logprobs(runner.base()[0])
        for v, hidden in runner.run(variants):
            a = logprobs(hidden[0])
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
