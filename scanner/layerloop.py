"""The seam where the scanner's parts change what a decoder layer does in a pass.

Every decoder layer's forward (and the output head's) is routed, once, when a model is loaded, through
one `LayerLoop`. The parts that need to change a pass ask it through declared methods, never through
attributes put on torch modules:
- replay (`replay.Runner`) has layers answer with an output stored from the base pass (`answering`):
  such a layer is neither computed nor, when streamed, read;
- a `WeightSource` (streaming, `stream.Streamer`) puts a layer's weights in place before it computes and
  takes them away after, and reads any one weight as stored;
- ablation of weights that are not resident (`ablation.zeroed`) zeroes entries each time their layer's
  weights are put in place (`after_load`);
- scoring stops a pass at the head's input (`head_inputs`) and makes logits a few tokens at a time.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

import torch
from torch import nn

from .adapters import Adapter, layers


class WeightSource(Protocol):
    """Where the weights of decoder layers come from when they are not resident (streaming)."""

    layer_bytes: int  # the largest layer as stored

    def load(self, index: int, layer: nn.Module) -> None:
        """Put layer `index`'s weights in place before it computes."""

    def release(self, index: int, layer: nn.Module) -> None:
        """Take them away after."""

    def read(self, index: int, name: str) -> torch.Tensor:
        """One weight of layer `index` (its name inside the layer), as stored, a private copy."""


class LayerLoop:
    def __init__(self, model: nn.Module, adapter: Adapter, source: WeightSource | None = None):
        self.model, self.adapter, self.source = model, adapter, source
        self.stack = layers(model, adapter)
        self._answers: dict[int, object] = {}
        self._after_load: dict[int, list[Callable[[], None]]] = {}
        self._heads: list[torch.Tensor] | None = None
        for i, layer in enumerate(self.stack):
            # the forward in place now (accelerate's wrapper, when it offloaded the layer) runs inside ours
            layer.forward = functools.partial(self._layer, i, layer.forward)
        head = model.get_output_embeddings()
        head.forward = functools.partial(self._head, head.forward)

    def _layer(self, i: int, forward, *args, **kwargs):
        if i in self._answers:
            return self._answers[i]
        if self.source is None:
            return forward(*args, **kwargs)
        layer = self.stack[i]
        self.source.load(i, layer)
        try:
            for fn in self._after_load.get(i, ()):
                fn()
            return forward(*args, **kwargs)
        finally:
            self.source.release(i, layer)

    def _head(self, forward, x: torch.Tensor, *args, **kwargs):
        if self._heads is None:
            return forward(x, *args, **kwargs)
        self._heads.append(x)
        return x.new_zeros(*x.shape[:-1], 0)  # no logits: the caller scores from the input

    @contextmanager
    def answering(self, outputs: dict[int, object]) -> Iterator[None]:
        """Layers in `outputs` return that output instead of computing, for the duration."""
        self._answers = outputs
        try:
            yield
        finally:
            self._answers = {}

    @contextmanager
    def after_load(self, index: int, fn: Callable[[], None]) -> Iterator[None]:
        """Call `fn` each time layer `index`'s weights are put in place by the weight source."""
        self._after_load.setdefault(index, []).append(fn)
        try:
            yield
        finally:
            self._after_load[index].remove(fn)

    @contextmanager
    def head_inputs(self) -> Iterator[list[torch.Tensor]]:
        """Passes end at the head, which keeps its input ([..., tokens, hidden]) and returns no logits."""
        self._heads = got = []
        try:
            yield got
        finally:
            self._heads = None
