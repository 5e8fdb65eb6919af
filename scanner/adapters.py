"""The adapter table: the one place that knows where each architecture keeps its MLP.

Coordinate convention, used everywhere in this project: a super weight is
`(layer, row, col)` of the down projection seen as a Linear weight `W[out, in]`:
`row` is the hidden (output, residual-stream) channel and `col` the intermediate
(input) channel, so `y[row] = sum_col W[row, col] * x[col]`. Layers count from 0.
GPT-2's Conv1D stores the transpose (`weight[in, out]`); the adapter hides that.
Mixture-of-experts layers add an `expert` index: `experts.down_proj[expert, row, col]`.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the table is read by commands that never load a model: no torch import for it
    import torch
    from torch import nn

from .errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Adapter:
    layers: str  # dotted path from the *ForCausalLM module to the decoder-layer ModuleList
    down: str | None = "mlp.down_proj"  # dense down projection inside a layer (Linear or Conv1D)
    conv1d: bool = False  # GPT-2 Conv1D: weight stored [in, out]
    post_norm: str | None = None  # norm applied to the MLP output before the residual add
    norm_offset: float = 0.0  # Gemma's RMSNorm multiplies by (offset + weight)
    experts: str | None = None  # fused experts: down_proj [E, hidden, d_mlp], gate_up_proj [E, 2*d_mlp, hidden]
    down_gate: str | None = None  # a gate whose sigmoid scales the dense down projection's output (shared experts)
    # Input side of the MLP (what makes x = down's input): (path, layout) with layout one of
    # "linear" (weight [d_mlp, hidden]), "conv1d" ([hidden, d_mlp]), "fused" ([2*d_mlp, hidden],
    # gate rows then up rows) or "experts". Used to plant test models and to explain an input spike.
    up: tuple[tuple[str, str], ...] = (("mlp.gate_proj", "linear"), ("mlp.up_proj", "linear"))


_LLAMA = Adapter("model.layers")
_POST_NORM = Adapter("model.layers", post_norm="post_feedforward_layernorm", norm_offset=1.0)
_MOE = Adapter("model.layers", down=None, experts="mlp.experts", up=(("mlp.experts", "experts"),))

ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "olmo": _LLAMA,
    "gemma2": _POST_NORM,
    "gemma3_text": _POST_NORM,
    "olmo2": Adapter("model.layers", post_norm="post_feedforward_layernorm"),
    "phi3": Adapter("model.layers", up=(("mlp.gate_up_proj", "fused"),)),
    "mixtral": _MOE,
    "qwen3_moe": _MOE,
    "qwen2_moe": Adapter("model.layers", down="mlp.shared_expert.down_proj", experts="mlp.experts",
                         down_gate="mlp.shared_expert_gate", up=(("mlp.experts", "experts"),)),
    "gpt2": Adapter("transformer.h", down="mlp.c_proj", conv1d=True, up=(("mlp.c_fc", "conv1d"),)),
    "gpt_neox": Adapter("gpt_neox.layers", down="mlp.dense_4h_to_h", up=(("mlp.dense_h_to_4h", "linear"),)),
    "opt": Adapter("model.decoder.layers", down="fc2", up=(("fc1", "linear"),)),
    "falcon": Adapter("transformer.h", down="mlp.dense_4h_to_h", up=(("mlp.dense_h_to_4h", "linear"),)),
}


# llama.cpp's architecture name where it differs from model_type with "_text" and "_" dropped (GGUF tensor names)
GGUF_ARCH = {"mistral": "llama", "mixtral": "llama", "opt": None}


def gguf_tensor(model_type: str, layers_path: str, layer: int, module: str, num_layers: int) -> str | None:
    """The GGUF name of a decoder layer's weight `module` (llama.cpp's, via gguf's name map), or None."""
    import gguf

    arch = GGUF_ARCH.get(model_type, model_type.replace("_text", "").replace("_", ""))
    names = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in names:
        return None
    name = gguf.get_tensor_name_map(names[arch], num_layers).get_name(f"{layers_path}.{layer}.{module}")
    return None if name is None else name + ".weight"


def supported() -> str:
    return ", ".join(sorted(ADAPTERS))


def adapter_for(model_type: str | None) -> Adapter:
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"architecture {model_type!r} is not supported; supported: {supported()}") from None


def get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def layers(model: nn.Module, adapter: Adapter) -> nn.ModuleList:
    return get(model, adapter.layers)


@dataclass(frozen=True)
class Unit:
    """One down projection of a layer: the dense one, or one expert of a fused experts module."""

    module: str  # path inside the decoder layer, e.g. "mlp.down_proj" or "mlp.experts.down_proj"
    expert: int | None = None


def units(adapter: Adapter, layer: nn.Module) -> list[Unit]:
    out = [Unit(adapter.down)] if adapter.down else []
    if adapter.experts:
        n = get(layer, adapter.experts).down_proj.shape[0]
        out += [Unit(adapter.experts + ".down_proj", e) for e in range(n)]
    return out


def matrix(adapter: Adapter, layer: nn.Module, unit: Unit) -> torch.Tensor:
    """The unit's weight as a [hidden, d_mlp] view: writes through to the parameter."""
    if unit.expert is not None:
        return get(layer, adapter.experts).down_proj[unit.expert]
    w = get(layer, unit.module).weight
    return w.T if adapter.conv1d else w


@dataclass(frozen=True, order=True)
class Coord:
    """One scalar of a down projection, in the project's convention (see module docstring)."""

    layer: int
    module: str
    row: int  # hidden / output channel
    col: int  # intermediate / input channel
    expert: int | None = None

    @property
    def unit(self) -> Unit:
        return Unit(self.module, self.expert)

    def label(self) -> str:
        e = f" expert {self.expert}" if self.expert is not None else ""
        return f"layer {self.layer}{e} {self.module}[{self.row}, {self.col}]"
