"""Zero chosen weights in place and restore them; read weights that accelerate offloaded.

Weights that accelerate offloaded to CPU/disk live on `meta` between forwards and are
re-materialised by an AlignDevicesHook just before their module runs. For those, the zeroing
is done by a second hook appended after accelerate's, on the fresh copy, so nothing needs
restoring and the offloaded store is never written.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from accelerate.hooks import ModelHook, SequentialHook, add_hook_to_module, remove_hook_from_module
from torch import nn

from .adapters import Adapter, Coord, Unit, get, layers, matrix


def _param_owner(adapter: Adapter, unit: Unit) -> tuple[str, str]:
    """(module path inside the layer that owns the parameter, parameter name)."""
    if unit.expert is not None:
        return adapter.experts, "down_proj"
    return unit.module, "weight"


def _offload_hook(module: nn.Module):
    hook = getattr(module, "_hf_hook", None)
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    for h in hooks:
        if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None:
            return h
    return None


def read_matrix(adapter: Adapter, layer: nn.Module, unit: Unit) -> torch.Tensor:
    """The unit's [hidden, d_mlp] weight, materialised even when accelerate offloaded it."""
    mat = matrix(adapter, layer, unit)
    if mat.device.type != "meta":
        return mat.detach()
    owner, name = _param_owner(adapter, unit)
    if hasattr(layer, "_sw_fetch"):  # streamed (scanner.stream): read it from its shard
        stored = layer._sw_fetch(f"{owner}.{name}")
        if unit.expert is not None:
            return stored[unit.expert]
        return stored.T if adapter.conv1d else stored
    stored = _offload_hook(get(layer, owner)).weights_map[name]
    if unit.expert is not None:
        return stored[unit.expert]
    return stored.T if adapter.conv1d else stored


class _ZeroAfterLoad(ModelHook):
    """Runs after accelerate's AlignDevicesHook has loaded the weights, and zeroes entries."""

    def __init__(self, fn):
        self.fn = fn

    def pre_forward(self, module, *args, **kwargs):
        with torch.no_grad():
            self.fn()
        return args, kwargs


@contextmanager
def zeroed(model: nn.Module, adapter: Adapter, coords: Iterable[Coord]) -> Iterator[None]:
    """Set W[row, col] = 0 for every coordinate for the duration of the block, then restore."""
    stack = layers(model, adapter)
    saved: list[tuple[torch.Tensor, int, int, torch.Tensor]] = []
    hooked: list[tuple[nn.Module, object]] = []
    streamed: list[tuple[nn.Module, object]] = []
    by_owner: dict[tuple[int, Unit], list[Coord]] = {}
    for c in coords:
        by_owner.setdefault((c.layer, c.unit), []).append(c)
    try:
        with torch.no_grad():
            for (li, unit), cs in by_owner.items():
                layer = stack[li]
                mat = matrix(adapter, layer, unit)
                if mat.device.type != "meta":
                    for c in cs:
                        saved.append((mat, c.row, c.col, mat[c.row, c.col].clone()))
                        mat[c.row, c.col] = 0
                    continue
                owner = get(layer, adapter.experts if unit.expert is not None else unit.module)
                def zero(layer=layer, unit=unit, cs=cs):
                    m = matrix(adapter, layer, unit)
                    for c in cs:
                        m[c.row, c.col] = 0
                if hasattr(layer, "_sw_after_load"):  # streamed: zero each time the layer is read
                    layer._sw_after_load.append(zero)
                    streamed.append((layer, zero))
                    continue
                old = owner._hf_hook
                add_hook_to_module(owner, _ZeroAfterLoad(zero), append=True)
                hooked.append((owner, old))
        yield
    finally:
        with torch.no_grad():
            for mat, r, c, v in reversed(saved):
                mat[r, c] = v
        for owner, old in hooked:
            remove_hook_from_module(owner)
            add_hook_to_module(owner, old)
        for layer, fn in streamed:
            layer._sw_after_load.remove(fn)
