"""One hooked forward pass: the spike profile of every layer's down projection.

Per layer we keep the largest |input| and |output| of the down projection (and after the
post-MLP norm where the architecture has one), each with its token and channel, plus the
`top_rows` largest entries of what the MLP adds to the residual stream ("peaks"), each with
the input vector that produced it so detection can attribute the peak to single weights.
Raw activations are dropped as soon as their layer has finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters import Adapter, Unit, get, layers
from ..errors import UnsupportedArchitecture


@dataclass
class Extreme:
    """The entry of largest magnitude of a [tokens, channels] activation."""

    value: float  # signed
    token_pos: int  # position in the prompt
    token_id: int  # the token's id in the vocabulary
    channel: int
    prompt: int = 0
    expert: int | None = None

    def to_dict(self, prefix: str) -> dict:
        return {f"{prefix}_{k}": v for k, v in vars(self).items()}


@dataclass
class Peak:
    """A large entry of one unit's contribution to the residual stream, at (token, row)."""

    layer: int
    unit: Unit
    prompt: int
    token_pos: int
    token_id: int
    row: int
    value: float  # what enters the residual (after the post-MLP norm, if any), signed
    raw: float  # the down projection's own output y[token, row]
    residual_in: float  # the residual stream entering the layer at (token, row)
    x: torch.Tensor = field(repr=False)  # [d_mlp] the unit's input at that token, float32 on CPU


@dataclass
class LayerProfile:
    layer: int
    input: Extreme  # largest |x| entering the down projection
    output: Extreme  # largest |y| leaving it
    post: Extreme | None  # largest |norm(y)| where a post-MLP norm exists
    peaks: list[Peak]

    def to_dict(self) -> dict:
        post = {"post_norm_value": self.post.value, "post_norm_channel": self.post.channel} if self.post else \
            {"post_norm_value": None, "post_norm_channel": None}
        return {"layer": self.layer, **self.input.to_dict("input"), **self.output.to_dict("output"), **post}


def tokens_first(t: torch.Tensor) -> torch.Tensor:
    """[1, tokens, ch] -> [tokens, ch]; some models (OPT, MoE shared experts) already flatten to 2-D."""
    return (t[0] if t.dim() == 3 else t).detach()


def _extreme(t: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor, prompt: int, expert: int | None) -> Extreme:
    """`tokens`: the position of each row of t; `ids`: the prompt's token ids."""
    flat = int(t.abs().argmax())
    i, ch = divmod(flat, t.shape[1])
    pos = int(tokens[i])
    return Extreme(float(t[i, ch]), pos, int(ids[pos]), ch, prompt, expert)


def _bigger(a: Extreme | None, b: Extreme | None) -> Extreme | None:
    if a is None or (b is not None and abs(b.value) > abs(a.value)):
        return b
    return a


def _check_experts(mod: nn.Module) -> None:
    layout = (getattr(mod, "has_gate", True), getattr(mod, "is_concatenated", True),
              getattr(mod, "is_transposed", False), getattr(mod, "has_bias", False))
    if layout != (True, True, False, False) or not hasattr(mod, "gate_up_proj"):
        raise UnsupportedArchitecture(f"experts module {type(mod).__name__} has a layout this scanner "
                                      "does not instrument (need fused gate_up_proj, no bias)")


class Recorder:
    """Context manager that hooks every layer; `run(ids, prompt)` adds one prompt to `profiles`."""

    def __init__(self, model: nn.Module, adapter: Adapter, top_rows: int = 8):
        self.model, self.adapter, self.top_rows = model, adapter, top_rows
        self.profiles: dict[int, LayerProfile] = {}
        self._peaks: dict[int, dict[tuple, Peak]] = {}
        self._scratch: dict[int, dict] = {}
        self._handles: list = []
        self._patched: list[tuple[nn.Module, str, object]] = []
        self.prompt = 0
        self.ids = torch.zeros(0, dtype=torch.long)  # the current prompt's token ids, [tokens]

    def __enter__(self) -> "Recorder":
        a = self.adapter
        for li, layer in enumerate(layers(self.model, a)):
            self._handles.append(layer.register_forward_pre_hook(self._enter_layer(li), with_kwargs=True))
            if a.down:
                hook = self._dense(li, Unit(a.down))
                self._handles.append(get(layer, a.down).register_forward_hook(hook))
            if a.down_gate:
                self._handles.append(get(layer, a.down_gate).register_forward_hook(self._gate(li)))
            if a.experts:
                self._patch_experts(li, get(layer, a.experts))
            if a.post_norm:
                self._handles.append(get(layer, a.post_norm).register_forward_hook(self._post(li)))
            self._handles.append(layer.register_forward_hook(self._finish(li)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        for mod, attr, fn in self._patched:
            setattr(mod, attr, fn)
        self._handles, self._patched, self._scratch = [], [], {}

    def start(self, input_ids: torch.Tensor, prompt: int) -> None:
        """The next forward pass is prompt `prompt`, these ids ([1, tokens])."""
        self.prompt, self.ids = prompt, input_ids[0].cpu()

    @torch.no_grad()
    def run(self, input_ids: torch.Tensor, prompt: int = 0) -> None:
        self.start(input_ids, prompt)
        self.model(input_ids=input_ids, use_cache=False)

    # -- hooks ---------------------------------------------------------------------------------
    def _enter_layer(self, li):
        def hook(mod, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self._scratch[li] = {"h": tokens_first(h), "calls": []}  # h: [tokens, hidden]
        return hook

    def _dense(self, li, unit):
        def hook(mod, inp, out):
            self._scratch[li]["calls"].append((unit, None, tokens_first(inp[0]), tokens_first(out), None))
        return hook

    def _gate(self, li):
        """A gate that scales the dense down projection's output on its way to the residual (Qwen2-MoE's shared
        expert: sigmoid(gate(h)))."""
        def hook(mod, inp, out):
            self._scratch[li]["gate"] = torch.sigmoid(tokens_first(out).float())  # [tokens, 1]
        return hook

    def _post(self, li):
        def hook(mod, inp, out):
            self._scratch[li]["post"] = (tokens_first(inp[0]), tokens_first(out))
        return hook

    def _patch_experts(self, li, mod):
        _check_experts(mod)
        module_path = self.adapter.experts + ".down_proj"
        # accelerate keeps the real forward in `_old_forward` when it hooked the module
        attr = "_old_forward" if hasattr(mod, "_old_forward") else "forward"

        def forward(hidden_states, top_k_index, top_k_weights):
            # hidden_states: [tokens, hidden]; top_k_index / top_k_weights: [tokens, k]
            out = torch.zeros_like(hidden_states)
            for e in torch.unique(top_k_index).tolist():
                if e >= mod.down_proj.shape[0]:
                    continue
                tok, pos = torch.where(top_k_index == e)
                gate, up = F.linear(hidden_states[tok], mod.gate_up_proj[e]).chunk(2, dim=-1)
                x = mod.act_fn(gate) * up  # [n, d_mlp]
                y = F.linear(x, mod.down_proj[e])  # [n, hidden], the expert's own output
                gain = top_k_weights[tok, pos, None]  # [n, 1] its routing weight
                # recorded unweighted, so a weight's term W[row, col] * x[col] is a share of this output (<= 1);
                # the routing weight scales what reaches the residual
                self._scratch[li]["calls"].append((Unit(module_path, e), tok, x.detach(), y.detach(), gain.detach()))
                out.index_add_(0, tok, (y * gain).to(out.dtype))
            return out

        self._patched.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, forward)

    def _finish(self, li):
        def hook(mod, args, out):
            self._summarise(li, self._scratch.pop(li))
        return hook

    # -- summary -------------------------------------------------------------------------------
    def _summarise(self, li: int, sc: dict) -> None:
        h = sc["h"].float()
        scale = None
        post = None
        if "post" in sc:
            a, z = (t.float() for t in sc["post"])
            # the norm rescales each entry; attribute through it: value = y * (z / a)
            scale = torch.where(a.abs() > 1e-30, z / a, torch.zeros_like(a))
            post = _extreme(z, torch.arange(z.shape[0]), self.ids, self.prompt, None)
        inp = outp = None
        peaks = self._peaks.setdefault(li, {})
        for unit, idx, x, y, gain in sc["calls"]:
            x, y = x.float(), y.float()
            tokens = idx.cpu() if idx is not None else torch.arange(x.shape[0])
            inp = _bigger(inp, _extreme(x, tokens, self.ids, self.prompt, unit.expert))
            outp = _bigger(outp, _extreme(y, tokens, self.ids, self.prompt, unit.expert))
            if gain is None and unit.expert is None and "gate" in sc:
                gain = sc["gate"]
            value = y if gain is None else y * gain.float()  # [n, hidden] what reaches the residual
            value = value * scale[tokens] if scale is not None else value
            best, at = value.abs().max(dim=0)  # per row: largest over tokens
            k = min(self.top_rows, best.numel())
            xs: dict[int, torch.Tensor] = {}
            for row in best.topk(k).indices.tolist():
                i = int(at[row])
                t = int(tokens[i])
                if i not in xs:
                    xs[i] = x[i].cpu().clone()
                p = Peak(li, unit, self.prompt, t, int(self.ids[t]), row, float(value[i, row]), float(y[i, row]),
                         float(h[t, row]), xs[i])
                key = (unit, row)
                if key not in peaks or abs(p.value) > abs(peaks[key].value):
                    peaks[key] = p
        old = self.profiles.get(li)
        self.profiles[li] = LayerProfile(
            li, _bigger(old and old.input, inp), _bigger(old and old.output, outp),
            _bigger(old and old.post, post), sorted(peaks.values(), key=lambda p: -abs(p.value)))


def record(model: nn.Module, adapter: Adapter, prompts: list[torch.Tensor], top_rows: int = 8,
           run=None) -> list[LayerProfile]:
    """Run every prompt ([1, tokens] ids) through the hooked model; profiles merged over prompts.
    `run(i)`, when given, makes prompt i's forward pass itself (a `replay.Runner` keeping its base pass)."""
    with Recorder(model, adapter, top_rows) as rec:
        for i, ids in enumerate(prompts):
            if run is None:
                rec.run(ids, i)
            else:
                rec.start(ids, i)
                run(i)
    return [rec.profiles[i] for i in sorted(rec.profiles)]
