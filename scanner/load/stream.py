"""Streaming: decoder layers read from the safetensors shards one at a time, in their stored dtype,
applied in the compute dtype a block of rows at a time, released after; the next layer is read while
the current one computes.

The model is built on the meta device; the final norm is loaded once, embeddings and head as stored.
The `Streamer` is the model's `layerloop.WeightSource`: the layer loop asks it to put a layer's weights
in place (read into one of two reusable buffers) before the layer computes and to return them to meta
after, so the peak holds about two layers plus the rest. Why not accelerate's disk offload: it re-reads
and re-converts every weight on every pass and converts the whole checkpoint into its offload folder
first; here the shards are read where they are, and layers that replay answers from the base pass
(`LayerLoop.answering`) are not read at all.
Supported: safetensors checkpoints whose tensor names are the model's own (the dense architectures;
fused-expert MoE checkpoints are stored per expert and are not streamed); GGUF in `stream_gguf`.
"""
from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters import Adapter, layers
from ..errors import CannotStream, CorruptCheckpoint
from .sources import SAFETENSORS_BYTES


def _libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def _return_freed_memory() -> None:
    """glibc raises its mmap threshold after a large free, so later layer-sized blocks come from the heap
    and are never returned: the process would keep every layer it ever read. Fix it at 1 MiB."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _trim() -> None:
    """Hand freed heap pages back to the system: smaller blocks freed in the middle of the heap (a layer's
    activations) otherwise stay resident, and the peak creeps up pass after pass."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


class Streamer:
    def __init__(self, folder: Path, model: nn.Module, adapter: Adapter, device: torch.device, dtype: torch.dtype):
        _return_freed_memory()
        self.device, self.dtype = device, dtype
        # read with pread, not a memory map: mapped pages of the files would count in (and hold) the
        # process's resident memory
        self.where: dict[str, Entry] = self._index(folder, model)
        names = set(model.state_dict().keys())
        missing = sorted(n for n in names if n not in self.where and not _tied(model, n))
        if missing:
            raise CannotStream(f"cannot stream this checkpoint: its tensor names differ from the model's "
                            f"(e.g. {missing[0]}); load it without --stream")
        _check_against(model, self.where)
        self.stack = layers(model, adapter)
        self.prefix = adapter.layers
        self.layer_entries: list[dict] = [{} for _ in self.stack]
        for name, where in self.where.items():
            head, _, rest = name.partition(self.prefix + ".")
            index, _, local = rest.partition(".")
            if not head and index.isdigit() and int(index) < len(self.stack):
                self.layer_entries[int(index)][local] = where
        size = max(sum(_aligned(e.nbytes) for e in le.values()) for le in self.layer_entries)
        self.buffers = [bytearray(size), bytearray(size)]
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: dict[int, Future] = {}
        self.stored: dict[nn.Module, dict] = {}  # modules computing now: their parameters as stored
        for layer in self.stack:
            for mod in layer.modules():
                if mod._parameters:
                    self._compute_as_stored(mod)
        # embeddings and head stay as stored too (with a 50k vocabulary they are as big as a layer or two)
        big = {m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
        big_names = {f"{n}.weight" for n, m in model.named_modules() if m in big}
        for name in _non_layer_tensors(model, self.prefix):
            _set(model, name, self.read_tensor(name, upcast=name not in big_names))
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()
        for mod in big:
            if mod.weight.dtype != dtype:
                self._compute_as_stored(mod)

    @property
    def layer_bytes(self) -> int:
        """The largest layer as stored (the size of each read buffer)."""
        return len(self.buffers[0])

    def _compute_as_stored(self, mod: nn.Module) -> None:
        """A module whose weights stay in their stored dtype computes in the compute dtype: a Linear a
        block of rows at a time; a plain embedding looks rows up as stored and upcasts them (exact, the
        table never copied); anything else (norms, Gemma's scaled embedding, which multiplies in its
        weight's dtype) is upcast while it computes."""
        if type(mod) is nn.Linear:
            mod.forward = lambda x: _blocked_linear(mod, x, self.dtype)
        elif type(mod).forward is nn.Embedding.forward:
            mod.register_forward_hook(lambda _m, _a, out: out.to(self.dtype))
        else:
            mod.register_forward_pre_hook(self._upcast)
            mod.register_forward_hook(self._downcast)

    def _index(self, folder: Path, model: nn.Module) -> dict[str, "Entry"]:
        """The model's parameter name -> where its bytes are (safetensors shards, by their headers)."""
        where = {}
        renames = _renames(model)
        for f, k, entry, data_start in _entries(folder):
            name = k
            for pattern, target in renames:
                name = pattern.sub(target, name)
            start, end = entry["data_offsets"]
            where[name] = Entry(str(f), data_start + start, end - start, SAFETENSORS_DTYPES[entry["dtype"]],
                                tuple(entry["shape"]))
        return where

    def _load(self, e: "Entry", into: memoryview | None = None) -> torch.Tensor:
        buf = into if into is not None else bytearray(e.nbytes)
        with open(e.path, "rb", buffering=0) as fh:
            fh.seek(e.offset)
            fh.readinto(buf)
        if e.decode is not None:
            return e.decode(buf)
        return torch.frombuffer(buf, dtype=e.dtype, count=e.nbytes // e.dtype.itemsize).reshape(e.shape)

    def read_tensor(self, name: str, upcast: bool = True) -> torch.Tensor:
        """One tensor from its file, on the compute device, in the compute dtype (or as stored); never
        shared with anything, since an ablation zeroes entries of what it gets."""
        t = self._load(self.where[name])
        if upcast and t.is_floating_point():
            return t.to(self.device, self.dtype)
        return t.to(self.device)  # owns its buffer: a private copy already

    def _layer_tensors(self, i: int) -> dict[str, torch.Tensor]:
        """A layer as stored, read into one of two buffers that are allocated once (the layer computing
        and the next): a fixed footprint, where fresh allocations per layer left the peak to the
        allocator's timing. Each module is upcast only while it computes."""
        view = memoryview(self.buffers[i % 2])
        out, at = {}, 0
        for k, e in self.layer_entries[i].items():
            out[k] = self._load(e, view[at: at + e.nbytes]).to(self.device)
            at += _aligned(e.nbytes)
        return out

    def _upcast(self, module: nn.Module, _args):
        stored = {n: p for n, p in module._parameters.items()
                  if p is not None and p.is_floating_point() and p.dtype != self.dtype and p.device.type != "meta"}
        if stored:
            self.stored[module] = stored
            for n, p in stored.items():
                module._parameters[n] = nn.Parameter(p.to(self.dtype), requires_grad=False)
        return None

    def _downcast(self, module: nn.Module, _args, _out):
        for n, p in self.stored.pop(module, {}).items():
            module._parameters[n] = p  # the upcast copy is dropped
        return None

    def _fetch(self, i: int) -> Future:
        if i not in self.pending:
            for j in [j for j in self.pending if j % 2 == i % 2]:  # a read left over (a pass that failed)
                self.pending.pop(j).result()  # shares layer i's buffer: done with it first
            self.pending[i] = self.pool.submit(self._layer_tensors, i)
        return self.pending[i]

    def load(self, i: int, layer: nn.Module) -> None:
        tensors = self._fetch(i).result()
        del self.pending[i]
        for name, t in tensors.items():
            _set(layer, name, t)
        if i + 1 < len(self.stack):
            self._fetch(i + 1)  # read the next layer while this one computes

    def release(self, i: int, layer: nn.Module) -> None:
        for name, _ in list(layer.named_parameters()):
            _set(layer, name, None)  # back to meta: the memory is free for the next layer
        _trim()

    def read(self, i: int, name: str, upcast: bool = True) -> torch.Tensor:
        """One weight of layer `i` from its file (see `read_tensor`)."""
        return self.read_tensor(f"{self.prefix}.{i}.{name}", upcast)


@dataclass(frozen=True)
class Entry:
    """Where one tensor's bytes are, and how to make a tensor of them (`decode`: GGUF's dequantizing)."""

    path: str
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple
    decode: Callable | None = None


def _check_against(model: nn.Module, where: dict[str, Entry]) -> None:
    """Every stored tensor (of a safetensors checkpoint: GGUF ones are dequantized to their shape) has the
    shape of the model's, and a float dtype where the model's is float: a header that lies (transposed,
    its dtype relabelled, two tensors swapped) is refused before any byte is read, never scanned."""
    state = model.state_dict()
    for name, e in where.items():
        if e.decode is not None or name not in state:
            continue
        want = state[name]
        if tuple(want.shape) != tuple(e.shape):
            raise CorruptCheckpoint(f"tensor {name} is stored with shape {list(e.shape)}; the model's config "
                                    f"makes it {list(want.shape)}")
        if want.is_floating_point() and not e.dtype.is_floating_point:
            raise CorruptCheckpoint(f"tensor {name} is stored as {str(e.dtype).removeprefix('torch.')}, where "
                                    "a float weight is due")


def _aligned(n: int) -> int:
    return (n + 63) // 64 * 64


def _blocked_linear(mod: nn.Linear, x: torch.Tensor, dtype: torch.dtype, block_bytes: int = 8 << 20):
    """A linear layer stored in bf16 applied in the compute dtype, upcasting ~8 MiB of its rows at a time
    (an output feature's sum is the same whichever block it is in)."""
    w, b = mod.weight, mod.bias
    if w.dtype == dtype:
        return F.linear(x, w, b)
    rows = max(1, block_bytes // (w.shape[1] * dtype.itemsize))
    x = x.to(dtype)
    out = x.new_empty(*x.shape[:-1], w.shape[0])  # [..., out_features]
    for i in range(0, w.shape[0], rows):
        out[..., i: i + rows] = F.linear(x, w[i: i + rows].to(dtype), None if b is None else b[i: i + rows].to(dtype))
    return out


def _renames(model: nn.Module) -> list:
    """transformers' plain renamings of checkpoint names (e.g. GPT-NeoX's embed_out -> lm_head); tensors
    that it converts (fused MoE experts) are not renamings, and such checkpoints are not streamed."""
    import re

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming

        rules = [r for r in get_model_conversion_mapping(model) if type(r) is WeightRenaming]
        return [(re.compile(r.source_patterns[0]), r.target_patterns[0]) for r in rules]
    except (ImportError, AttributeError, IndexError, TypeError):
        return []


def _tied(model: nn.Module, name: str) -> bool:
    return getattr(model.config, "tie_word_embeddings", False) and name.endswith("lm_head.weight")


def _non_layer_tensors(model: nn.Module, prefix: str):
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not name.startswith(prefix + ".") and t.device.type == "meta" and not _tied(model, name):
            yield name


def _set(root: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Put a tensor in place of a (meta) parameter, or return it to meta (None)."""
    mod_name, _, attr = name.rpartition(".")
    mod = root.get_submodule(mod_name) if mod_name else root
    old = getattr(mod, attr)
    if value is None:
        value = torch.empty_like(old, device="meta")
    if isinstance(old, nn.Parameter):
        mod._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        mod._buffers[attr] = value


def build(folder: Path, adapter: Adapter, device: torch.device, dtype: torch.dtype,
          trust_remote_code: bool = False) -> tuple[nn.Module, Streamer]:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=trust_remote_code)
    model.eval()
    streamer = Streamer(folder, model, adapter, device, dtype)
    return model, streamer


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                      "F8_E5M2": torch.float8_e5m2}


def _entries(folder: Path):
    """(shard, tensor name, header entry, offset of the shard's data) for every tensor, from the headers."""
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, entry in header.items():
            if k != "__metadata__":
                yield f, k, entry, 8 + n


def compute_bytes(folder: Path, dtype: torch.dtype) -> int:
    """The weights' size once upcast to `dtype`, from the shards' headers (no tensor is read)."""
    total = 0
    for _f, _k, t, _start in _entries(folder):
        size = t["data_offsets"][1] - t["data_offsets"][0]
        total += size * dtype.itemsize // SAFETENSORS_BYTES.get(t["dtype"], dtype.itemsize)
    return total
