"""Zero chosen weights in place and restore them; read weights that are not resident.

Weights that accelerate offloaded to CPU/disk live on `meta` between forwards and are
re-materialised by an AlignDevicesHook just before their module runs. For those, the zeroing
is done by a second hook appended after accelerate's, on the fresh copy, so nothing needs
restoring and the offloaded store is never written. Streamed weights (`LayerLoop.source`) are
zeroed each time their layer is read (`LayerLoop.after_load`).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterable, Iterator

import torch
from accelerate.hooks import ModelHook, SequentialHook, add_hook_to_module, remove_hook_from_module
from torch import nn

from ..adapters import Adapter, Coord, Unit, get, matrix
from ..errors import OutOfRange
from ..layerloop import LayerLoop


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


def read_matrix(loop: LayerLoop, index: int, unit: Unit) -> torch.Tensor:
    """The unit's [hidden, d_mlp] weight in layer `index`, materialised even when streamed or offloaded."""
    adapter, layer = loop.adapter, loop.stack[index]
    mat = matrix(adapter, layer, unit)
    if mat.device.type != "meta":
        return mat.detach()
    owner, name = _param_owner(adapter, unit)
    if loop.source is not None:
        stored = loop.source.read(index, f"{owner}.{name}")
    else:
        stored = _offload_hook(get(layer, owner)).weights_map[name]
    if unit.expert is not None:
        return stored[unit.expert]
    return stored.T if adapter.conv1d else stored


def values_at(loop: LayerLoop, coords: Iterable[Coord]) -> dict[Coord, float]:
    """W[row, col] of each coordinate, as the model holds it now (read from its file when streamed)."""
    out, mats = {}, {}
    for c in coords:
        key = (c.layer, c.unit)
        if key not in mats:
            try:
                if not 0 <= c.layer < len(loop.stack):
                    raise IndexError(c.layer)
                mats[key] = read_matrix(loop, c.layer, c.unit)
            except (IndexError, AttributeError):
                raise OutOfRange(f"{c.label()}: this model ({len(loop.stack)} layers) has no such layer, module "
                                 "or expert") from None
        m = mats[key]  # [hidden, d_mlp]
        if not (0 <= c.row < m.shape[0] and 0 <= c.col < m.shape[1]):
            raise OutOfRange(f"{c.label()} is outside this model's down projection of shape "
                             f"[{m.shape[0]}, {m.shape[1]}]")
        out[c] = float(m[c.row, c.col])
    return out


class _ZeroAfterLoad(ModelHook):
    """Runs after accelerate's AlignDevicesHook has loaded the weights, and zeroes entries."""

    def __init__(self, fn):
        self.fn = fn

    def pre_forward(self, module, *args, **kwargs):
        with torch.no_grad():
            self.fn()
        return args, kwargs


@contextmanager
def zeroed(loop: LayerLoop, coords: Iterable[Coord]) -> Iterator[None]:
    """Set W[row, col] = 0 for every coordinate for the duration of the block, then restore. Resident weights
    are written (and restored); streamed ones are zeroed each time their layer is read; offloaded ones by a
    hook that runs after accelerate's has loaded them."""
    adapter = loop.adapter
    saved: list[tuple[torch.Tensor, int, int, torch.Tensor]] = []
    hooked: list[tuple[nn.Module, object]] = []
    by_owner: dict[tuple[int, Unit], list[Coord]] = {}
    for c in coords:
        by_owner.setdefault((c.layer, c.unit), []).append(c)
    with ExitStack() as streamed:
        try:
            with torch.no_grad():
                for (li, unit), cs in by_owner.items():
                    layer = loop.stack[li]
                    mat = matrix(adapter, layer, unit)
                    if mat.device.type != "meta":
                        for c in cs:
                            saved.append((mat, c.row, c.col, mat[c.row, c.col].clone()))
                            mat[c.row, c.col] = 0
                        continue

                    def zero(layer=layer, unit=unit, cs=cs):
                        m = matrix(adapter, layer, unit)
                        for c in cs:
                            m[c.row, c.col] = 0
                    if loop.source is not None:
                        streamed.enter_context(loop.after_load(li, zero))
                        continue
                    owner = get(layer, adapter.experts if unit.expert is not None else unit.module)
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
