"""Streaming a GGUF file: each decoder layer's tensors are read (pread, quantized as stored) and
dequantized when the layer is about to compute, then dropped; the rest as in `scanner.load.stream`.

Names and tensor fix-ups are transformers' own (`get_gguf_hf_weights_map`, its per-architecture tensor
processors, e.g. Llama's q/k un-permutation), applied per tensor. Processors that rename or merge
tensors (GPT-2's head, fused MoE experts, ...) need the whole file at once: such files are not streamed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import gguf_once
from ..adapters import Adapter
from ..errors import CannotStream
from .stream import Entry, Streamer

# processors whose output name is always the input name (the only change is to the values)
SAME_NAMES = ("TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor", "NemotronTensorProcessor")


class GGUFStreamer(Streamer):
    def __init__(self, file: Path, model: nn.Module, adapter: Adapter, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(file, model, adapter, device, dtype)

    def _index(self, file: Path, model: nn.Module) -> dict[str, Entry]:
        import gguf
        from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                               get_gguf_hf_weights_map, load_gguf_checkpoint)

        with gguf_once.parsed_once():
            parsed = load_gguf_checkpoint(str(file), return_tensors=False)
            reader = gguf.GGUFReader(str(file))
            arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
            processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=parsed.get("config", {}))
            if type(processor).__name__ not in SAME_NAMES:
                raise CannotStream(f"cannot stream this GGUF file ({arch}: transformers converts its tensors "
                                "together); load it without --stream")
            mapping = get_gguf_hf_weights_map(model, processor)
        where = {}
        for t in reader.tensors:
            if t.name not in mapping:
                continue
            raw_dtype, raw_shape = t.data.dtype, t.data.shape  # the memory map's layout; no page is touched

            def decode(buf, t=t, raw_dtype=raw_dtype, raw_shape=raw_shape) -> torch.Tensor:
                raw = np.frombuffer(buf, dtype=raw_dtype, count=int(np.prod(raw_shape))).reshape(raw_shape)
                w = processor.process(weights=gguf.dequantize(raw, t.tensor_type), name=t.name,
                                      tensor_key_mapping=mapping, parsed_parameters={}).weights
                return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))  # float32, as transformers

            where[mapping[t.name]] = Entry(str(file), int(t.data_offset), int(t.n_bytes), torch.uint8,
                                           tuple(raw_shape), decode)
        return where


def build(file: Path, adapter: Adapter, device: torch.device, dtype: torch.dtype,
          trust_remote_code: bool = False) -> tuple[nn.Module, GGUFStreamer]:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with gguf_once.parsed_once():
        cfg = AutoConfig.from_pretrained(file.parent, gguf_file=file.name, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=trust_remote_code)
    model.eval()
    return model, GGUFStreamer(file, model, adapter, device, dtype)


def compute_bytes(file: Path, dtype: torch.dtype) -> int:
    """The weights' size once dequantized to `dtype`, from the file's tensor table."""
    import gguf

    with gguf_once.parsed_once():
        reader = gguf.GGUFReader(str(file))
    return sum(int(t.n_elements) for t in reader.tensors) * dtype.itemsize
