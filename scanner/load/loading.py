"""Load a resolved model once, through accelerate's device maps (offloading what does not fit)."""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from . import gguf_once
from ..adapters import Adapter, adapter_for, matrix, units
from ..config import LoadOptions, parse_size
from ..errors import BadInput, CannotStream, CorruptCheckpoint, NotAModel, UnsafeCheckpoint
from ..layerloop import LayerLoop, WeightSource
from .sources import Source

log = logging.getLogger("superweights")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object
    adapter: Adapter
    source: Source
    device: torch.device
    dtype: torch.dtype
    offloaded: bool
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    streamer: WeightSource | None = field(default=None, repr=False)
    loop: LayerLoop = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.loop = LayerLoop(self.model, self.adapter, self.streamer)  # every pass goes through it

    @property
    def layers(self) -> nn.ModuleList:
        return self.loop.stack

    @property
    def positions(self) -> int | None:
        """The longest input the model takes (its position table), where its config says."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    def info(self) -> dict:
        cfg = self.model.config
        first = self.layers[0]
        d_mlp = matrix(self.adapter, first, units(self.adapter, first)[0]).shape[1]
        return {"architecture": cfg.model_type, "num_layers": len(self.layers),
                "hidden_size": int(getattr(cfg, "hidden_size", 0) or cfg.n_embd),
                "intermediate_size": int(d_mlp),
                "num_experts": len(units(self.adapter, first)) - (1 if self.adapter.down else 0)
                if self.adapter.experts else None,
                "num_parameters": sum(p.numel() for p in self.model.parameters()),
                "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
                "offloaded": self.offloaded}

    def close(self) -> None:
        self.model = self.loop = None
        if self._tmp is not None:
            self._tmp.cleanup()


def _device(opts: LoadOptions) -> torch.device:
    if opts.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(opts.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"--device {opts.device}: no CUDA device is available")
    return dev


def load(source: Source, opts: LoadOptions | None = None) -> Loaded:
    opts = opts or LoadOptions()
    adapter = adapter_for(source.model_type)
    device = _device(opts)
    if opts.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = DTYPES[opts.dtype]  # the name was checked where the options were made

    # streaming when asked, or when the model does not fit the budget (--max-memory on the CPU, else 80%
    # of the memory free); accelerate's offload where streaming does not serve: an explicit
    # --offload-folder, a budget on a GPU (accelerate splits the model between GPU and CPU), or a
    # checkpoint that cannot be streamed (fused MoE experts, .bin)
    if opts.stream:
        return _streamed(source, opts, adapter, device, dtype)
    budget = parse_size(opts.max_memory) if opts.max_memory else None
    need = _compute_bytes(source, dtype)
    limit = budget if budget is not None else int(0.8 * available_bytes(device))
    fits = need is None or need <= limit
    if not fits and opts.offload_folder is None and (budget is None or device.type == "cpu"):
        log.info("%s needs %.1f GB in %s, more than %s: streaming it", source.spec, need / 1e9, dtype,
                 "the budget" if budget is not None else "the memory free")
        try:
            return _streamed(source, opts, adapter, device, dtype)
        except CannotStream as e:
            log.info("%s; offloading with accelerate instead", e)
            budget = limit

    tmp = None
    kw: dict = {"dtype": dtype, "trust_remote_code": opts.trust_remote_code}
    if source.gguf_file:
        kw["gguf_file"] = source.gguf_file
    else:
        kw["weights_only"] = True  # a .bin checkpoint is unpickled only as plain tensors
    if budget is not None:
        # accelerate fills the compute device up to the budget, then CPU RAM (on a GPU worker),
        # then disk; offloaded layers are streamed in for each forward.
        key = (device.index or 0) if device.type == "cuda" else "cpu"
        kw["max_memory"] = {key: budget} if key == "cpu" else {key: budget, "cpu": parse_size("1TiB")}
        kw["device_map"] = "auto"
        if opts.offload_folder is None:
            tmp = tempfile.TemporaryDirectory(prefix="superweights-offload-")
        kw["offload_folder"] = opts.offload_folder or tmp.name
    else:
        kw["device_map"] = {"": str(device)}

    path = str(source.path)
    with gguf_once.parsed_once() if source.gguf_file else nullcontext():
        tokenizer, model = _from_pretrained(source, path, opts, kw)
    model.eval()
    if model.config.model_type != source.model_type:
        adapter = adapter_for(model.config.model_type)
    offloaded = any(p.device.type == "meta" for p in model.parameters())
    return Loaded(model, tokenizer, adapter, source, device, dtype, offloaded, tmp)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _compute_bytes(source: Source, dtype: torch.dtype) -> int | None:
    """The whole model's weights in the compute dtype, from the files' headers (None: neither safetensors
    nor GGUF, so it cannot be streamed anyway)."""
    from . import stream, stream_gguf

    if source.gguf_file:
        return stream_gguf.compute_bytes(source.path / source.gguf_file, dtype)
    if any(source.path.glob("*.safetensors")):
        return stream.compute_bytes(source.path, dtype)
    return None


def _streamed(source: Source, opts: LoadOptions, adapter: Adapter, device, dtype) -> "Loaded":
    from . import stream, stream_gguf

    if not source.gguf_file and not any(source.path.glob("*.safetensors")):
        raise BadInput(f"--stream reads safetensors checkpoints and GGUF files; {source.spec} has neither")
    with gguf_once.parsed_once() if source.gguf_file else nullcontext():
        tokenizer = _tokenizer(source, opts)
    log.info("streaming %s (%s, %s) layer by layer", source.spec, source.model_type, dtype)
    if source.gguf_file:
        model, streamer = stream_gguf.build(source.path / source.gguf_file, adapter, device, dtype,
                                            opts.trust_remote_code)
    else:
        model, streamer = stream.build(source.path, adapter, device, dtype, opts.trust_remote_code)
    if model.config.model_type != source.model_type:
        adapter = adapter_for(model.config.model_type)
    return Loaded(model, tokenizer, adapter, source, device, dtype, True, None, streamer)


def _tokenizer(source: Source, opts: LoadOptions):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source.path), gguf_file=source.gguf_file,
                                             trust_remote_code=opts.trust_remote_code)
    except Exception as e:  # transformers raises many types for a folder without a usable tokenizer
        raise NotAModel(f"no usable tokenizer in {source.path}: {_first_line(e)}") from None


def _from_pretrained(source: Source, path: str, opts: LoadOptions, kw: dict):
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(source, opts)
    log.info("loading %s (%s, %s)", source.spec, source.model_type, kw["dtype"])
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kw)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise UnsafeCheckpoint(f"{source.spec} needs custom code; pass --trust-remote-code "
                                   "only if you trust its authors") from None
        raise CorruptCheckpoint(f"cannot load {source.spec}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - a checkpoint that fails to load is a user-facing error
        raise CorruptCheckpoint(f"cannot load {source.spec}: {_first_line(e)}") from None
    for key, what in (("missing_keys", "lacks {n} weight(s) its config asks for, which would be random"),
                      ("unexpected_keys", "holds {n} weight(s) its config has no place for")):
        names = sorted(info.get(key) or ())
        if names:  # transformers initialises missing weights at random and drops unexpected ones: never scan that
            raise CorruptCheckpoint(f"cannot load {source.spec}: the checkpoint {what.format(n=len(names))} "
                                    f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    return tokenizer, model


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


