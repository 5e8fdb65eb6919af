"""Compute little: ablations at layer L recompute only layers L and later, all variants in one batch.

The base pass keeps each decoder layer's output (the hidden states entering the next layer are small
next to the weights). An ablation whose weights all sit in layer L then runs the model with layers
before L answering from that store (`LayerLoop.answering`: their weights are not even touched), on a batch of V variants at once. Zeroing W[row, col] for variant v is applied to the
down projection's output (y[v, :, row] recomputed from x[v] and the row with its zeroed entries),
never by writing the weight, so the variants share one read of every later layer. Expert units of fused MoE modules have no separate
output to correct; their variants run one at a time with the weight zeroed in place (`ablation.zeroed`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .ablation import read_matrix, zeroed
from ..adapters import Coord, get
from ..layerloop import LayerLoop

BATCH_BUDGET = 256 << 20  # bytes of activations a batch of variants may add (a rough estimate, below)


class Prefix:
    """Outputs of every decoder layer in the base passes, kept for the windows passed so far."""

    def __init__(self):
        self.outputs: list = []  # per layer: what its forward returned, windows stacked (a Tensor or a tuple)
        self.upto = 0

    @contextmanager
    def capture(self, stack: nn.ModuleList, upto: int | None = None) -> Iterator[None]:
        """Keep the outputs of layers before `upto` (all by default: no ablation starts later), appended
        after those of the windows already kept."""
        if not self.outputs:
            self.outputs = [None] * len(stack)
            self.upto = len(stack) if upto is None else min(upto, len(stack))

        def keep(i):
            def hook(_module, _args, out):
                self.outputs[i] = out if self.outputs[i] is None else _cat(self.outputs[i], out)
            return hook

        handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(stack[: self.upto])]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _cat(a, b):
    """Two stored outputs of a layer, windows stacked (a tuple's first element: the hidden states)."""
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    return (torch.cat([a[0], b[0]]), *a[1:])


def _take(out, a: int, b: int, times: int):
    """A stored output's windows [a, b), repeated for `times` variants, variant-major."""
    if isinstance(out, torch.Tensor):
        part = out[a:b]
        return part if times == 1 else part.repeat(times, *([1] * (part.dim() - 1)))
    return (_take(out[0], a, b, times), *out[1:])


@contextmanager
def corrections(loop: LayerLoop, variants: list[list[Coord]]) -> Iterator[None]:
    """Variant v of the batch sees every W[row, col] of variants[v] zeroed, through the output."""
    stack = loop.stack
    by_unit: dict[tuple, list[tuple[int, Coord]]] = {}
    for v, coords in enumerate(variants):
        for c in coords:
            by_unit.setdefault((c.layer, c.unit), []).append((v, c))
    handles = []
    for (li, unit), items in by_unit.items():
        layer = stack[li]
        w = read_matrix(loop, li, unit)  # [hidden, d_mlp]
        bias = getattr(get(layer, unit.module), "bias", None)
        rows: dict[tuple[int, int], list[int]] = {}
        for v, c in items:
            rows.setdefault((v, c.row), []).append(c.col)
        # each affected output entry is recomputed from its row with the weights zeroed: subtracting
        # W[row, col] * x[col] from the full sum would lose the small remainder to rounding (a super
        # weight's term is hundreds of times the rest of the sum)
        fixes = []
        for (v, row), cols in rows.items():
            w_row = w[row].clone()  # [d_mlp]
            w_row[cols] = 0
            b = None if bias is None or bias.device.type == "meta" else bias[row].detach().clone()
            fixes.append((v, row, w_row, b))
        n = len(variants)

        def hook(_module, args, out, fixes=fixes, n=n):
            x = args[0].reshape(n, -1, args[0].shape[-1])  # [variants, tokens, d_mlp] (OPT passes 2-D)
            y = out.reshape(n, -1, out.shape[-1]).clone()  # [variants, tokens, hidden]
            for v, row, w_row, b in fixes:
                val = x[v] @ w_row.to(x.device, x.dtype)  # [tokens]
                y[v, :, row] = (val if b is None else val + b.to(val.device, val.dtype)).to(y.dtype)
            return y.reshape(out.shape)

        handles.append(get(layer, unit.module).register_forward_hook(hook))
    w = None  # a streamed layer's matrix was read for the rows above: not kept through the pass
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def dense(coords: list[Coord]) -> bool:
    return all(c.expert is None for c in coords)


def first_layer(variants: list[list[Coord]]) -> int:
    return min((c.layer for v in variants for c in v), default=0)


def finish_logits(config, logits: torch.Tensor) -> torch.Tensor:
    """What a causal LM does to its head's output before returning it (Gemma 2/3 soft-cap the logits).
    Every architecture's planted test compares scores made this way with the model's own logits."""
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits from its head's input: [tokens, hidden] -> [tokens, vocab]."""
    return finish_logits(model.config, model.get_output_embeddings()(hidden))


def _variant_bytes(config, tokens: int) -> int:
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = c.hidden_size
    d_mlp = getattr(c, "intermediate_size", None) or getattr(c, "ffn_dim", None) or 4 * hidden
    heads = getattr(c, "num_attention_heads", 1)
    return tokens * (4 * d_mlp + 4 * hidden + heads * tokens) * 4  # MLP and attention scores, float32


class Runner:
    """Windows of tokens ([windows, tokens] ids; one window for a calibration prompt) through the model: base
    passes, whose layer outputs are kept, then ablation variants, those of one layer batched from it
    (replaying the layers before), expert variants one at a time. Passes end at the head's input,
    [sequences, tokens, hidden], for the caller to score; variants come variant-major."""

    def __init__(self, loop: LayerLoop, ids: torch.Tensor, budget: int = BATCH_BUDGET, upto: int | None = None):
        self.loop, self.model, self.ids = loop, loop.model, ids  # ids: [windows, tokens]
        self.upto = upto  # layers whose outputs are kept: ablations start no later than this
        self.prefix = Prefix()
        self.hidden: torch.Tensor | None = None  # the base passes' head inputs, [windows passed, tokens, hidden]
        self.passes = 0
        self.seqs = max(1, budget // _variant_bytes(self.model.config, ids.shape[1]))  # sequences per pass

    @property
    def based(self) -> int:
        """Windows whose base pass is done."""
        return 0 if self.hidden is None else self.hidden.shape[0]

    @torch.no_grad()
    def base(self, windows: int | None = None) -> torch.Tensor:
        """The unablated passes of the first `windows` windows (all by default; once each; detection's
        hooked pass can be the first), [windows, tokens, hidden]."""
        end = self.ids.shape[0] if windows is None else min(windows, self.ids.shape[0])
        for a in range(self.based, end, self.seqs):
            b = min(end, a + self.seqs)
            with self.prefix.capture(self.loop.stack, self.upto), self.loop.head_inputs() as got:
                self.model(input_ids=self.ids[a:b], use_cache=False)
            self.passes += 1
            self.hidden = got[0] if self.hidden is None else torch.cat([self.hidden, got[0]])
        return self.hidden[:end]

    @torch.no_grad()
    def run(self, variants: list[list[Coord]], windows: tuple[int, int] | None = None
            ) -> Iterator[tuple[list[Coord], torch.Tensor]]:
        """Each variant over windows [a, b) (all by default): (variant, head input [b - a, tokens, hidden])."""
        a, b = windows or (0, self.ids.shape[0])
        self.base(b)
        per_pass = max(1, self.seqs // (b - a))  # variants in one batch
        by_layer: dict[int, list[list[Coord]]] = {}
        for v in variants:
            if dense(v):
                by_layer.setdefault(self._start(v), []).append(v)
        for start, group in by_layer.items():
            for i in range(0, len(group), per_pass):
                chunk = group[i: i + per_pass]
                out = self._pass(start, chunk, corrections(self.loop, chunk), a, b)
                yield from zip(chunk, out.split(b - a))
        for v in variants:  # expert weights: zeroed in place, one variant at a time
            if not dense(v):
                yield v, self._pass(self._start(v), [v], zeroed(self.loop, v), a, b)

    def _start(self, v: list[Coord]) -> int:
        """The layer a variant's pass starts from: its own, or the deepest whose input was kept."""
        return min(first_layer([v]), self.prefix.upto)

    def _pass(self, start: int, chunk: list[list[Coord]], ablate, a: int, b: int) -> torch.Tensor:
        n = len(chunk)
        stored = {i: _take(self.prefix.outputs[i], a, b, n) for i in range(start)}  # layers before: not computed
        with self.loop.answering(stored), ablate, self.loop.head_inputs() as got:
            self.model(input_ids=self.ids[a:b].repeat(n, 1), use_cache=False)
        self.passes += 1
        return got[0]  # [variants * windows, tokens, hidden]
