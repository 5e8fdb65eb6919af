"""Simulated round-to-nearest quantization, as in the paper's compression study: weights quantized and
dequantized per block of the flattened tensor, activations per tensor, with chosen entries kept in full
precision.

Two forms of asymmetric min-max RTN (b bits, 2^b - 1 steps between a block's min and max):
  paper       q = round((x - min) / s), x' = q * s + min, s = (max - min) / (2^b - 1): each block offset by
              its minimum, so its extremes are kept (gguf's Q4_1 is this form at block 32, scales in fp16);
  zero-point  q = round(x / s) + z, x' = (q - z) * s, z = round(-min / s): an integer zero point, the form of
              integer kernels; z's rounding moves a block's grid, and its extremes with it.
Weights: RTN over blocks of `block` consecutive elements of the flattened weight (the paper's 128^2 to
1024^2; None is the whole tensor); the last block may be shorter. Variants:
  plain      RTN of every entry;
  keep       the super weights kept: left out of their block's min and max, restored after;
  clip_keep  the other outliers clipped first (|z| above `clip_z` over the tensor, or the largest
             `clip_top` fraction of magnitudes), the super weights kept;
  clip       the same clipping with the super weights clipped too (what clipping does without them).
Activations: per-tensor (per sequence) RTN in the same form, the held-out channels left out of the range
and passed through.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import QUANT_VARIANTS as VARIANTS, RTN_FORMS as FORMS


@dataclass(frozen=True)
class Clip:
    """Which weights count as outliers: |w - mean| > z * std over the tensor, or the `top` fraction of
    largest magnitudes (one of the two)."""

    z: float | None = 4.0
    top: float | None = None

    def __post_init__(self):
        if (self.z is None) == (self.top is None):
            raise ValueError("clipping takes a z-score or a top fraction, one of the two")
        if self.z is not None and not self.z > 0:
            raise ValueError(f"clip z-score must be > 0, not {self.z}")
        if self.top is not None and not 0 < self.top < 1:
            raise ValueError(f"clip top fraction must be in (0, 1), not {self.top}")

    @property
    def label(self) -> str:
        """The rule in a few characters, as stored with a study: "z>4", "top 0.0001"."""
        return f"z>{self.z:g}" if self.z is not None else f"top {self.top:g}"

    def bounds(self, w: torch.Tensor) -> tuple[float, float]:
        """The range outside which entries of `w` are clipped."""
        if self.z is not None:
            mean, std = float(w.mean()), float(w.std())
            return mean - self.z * std, mean + self.z * std
        flat = w.abs().flatten().float()
        k = max(1, int(flat.numel() * (1 - self.top)))
        edge = float(flat.kthvalue(k).values)
        return -edge, edge


def _round_trip(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, form: str) -> torch.Tensor:
    """`x` quantized to `bits` between `lo` and `hi` (broadcast) and dequantized, in float32."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, not {bits}")
    if form not in FORMS:
        raise ValueError(f"unknown RTN form {form!r}; one of {', '.join(FORMS)}")
    x, lo, hi = x.float(), lo.float(), hi.float()
    levels = 2 ** bits - 1
    scale = ((hi - lo) / levels).clamp_min(1e-30)
    if form == "paper":
        q = torch.clamp(torch.round((x - lo) / scale), 0, levels)
        return torch.where(q == levels, hi, q * scale + lo)  # the top level is the max itself, not a rounding of it
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, levels) - zero) * scale


def rtn(w: torch.Tensor, bits: int, block: int | None = None, skip: torch.Tensor | None = None,
        form: str = "paper") -> torch.Tensor:
    """Min-max RTN of `w` per block of the flattened tensor in `form`, dequantized (same shape and dtype).
    `skip`: a bool mask of entries left out of their block's min and max (they are returned unchanged)."""
    flat = w.detach().flatten().float()
    n = flat.numel()
    size = n if block is None else min(block, n)
    pad = (-n) % size
    x = torch.nn.functional.pad(flat, (0, pad)).view(-1, size)  # [blocks, size]
    valid = torch.nn.functional.pad(torch.ones(n, dtype=torch.bool), (0, pad), value=False).view(-1, size)
    counted = valid if skip is None else valid & ~torch.nn.functional.pad(skip.flatten(), (0, pad)).view(-1, size)
    lo = torch.where(counted, x, torch.inf).amin(1, keepdim=True)  # [blocks, 1]
    hi = torch.where(counted, x, -torch.inf).amax(1, keepdim=True)
    lo, hi = torch.where(torch.isfinite(lo), lo, 0.0), torch.where(torch.isfinite(hi), hi, 0.0)  # all skipped
    out = _round_trip(x, lo, hi, bits, form).flatten()[:n]
    if skip is not None:
        out = torch.where(skip.flatten(), flat, out)
    return out.view_as(w).to(w.dtype)


def quantize_weight(w: torch.Tensor, bits: int, block: int | None, variant: str,
                    keep: list[tuple[int, int]] = (), clip: Clip = Clip(), form: str = "paper") -> torch.Tensor:
    """`w` [out, in] quantized under one of VARIANTS; `keep`: (row, col) entries (the super weights)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    mask = torch.zeros(w.shape, dtype=torch.bool)
    for row, col in keep:
        mask[row, col] = True
    kept = mask.any() and variant in ("keep", "clip_keep")
    x = w.detach().float()
    if variant in ("clip_keep", "clip"):
        lo, hi = clip.bounds(x[~mask] if kept else x)
        clipped = x.clamp(lo, hi)
        x = torch.where(mask, x, clipped) if kept else clipped
    return rtn(x, bits, block, mask if kept else None, form).to(w.dtype)


def quantize_activation(x: torch.Tensor, bits: int, hold: list[int] = (), form: str = "paper") -> torch.Tensor:
    """`x` [batch, tokens, channels] quantized per tensor of each sequence in `form`; `hold`: channels left out
    of the range and passed through in full precision."""
    counted = torch.ones(x.shape[-1], dtype=torch.bool, device=x.device)
    if hold:
        counted[list(hold)] = False
    inner = x.float()[..., counted]  # [batch, tokens, counted channels]
    lo = inner.amin(dim=(-2, -1), keepdim=True)  # [batch, 1, 1]: per sequence
    hi = inner.amax(dim=(-2, -1), keepdim=True)
    q = _round_trip(x, lo, hi, bits, form).to(x.dtype)
    if hold:
        q[..., ~counted] = x[..., ~counted]
    return q
