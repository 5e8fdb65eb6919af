"""What a quantization study found, in the terms of the paper's claim: per weight variant the largest block size
at which the model stays within a tolerance of its unquantized perplexity (judged by the 95% interval), whether
keeping the super weights moves it, and which held-out activation channels help (paired gains)."""
from __future__ import annotations

import math

from ..config import QUANT_TOLERANCE
from .quant_study import QuantRow


def _block(k: int | None) -> str:
    return "per tensor" if k is None else f"block {k:,}"


def usable(rows: list[QuantRow], tolerance: float) -> dict[tuple[int, str], tuple[int | None, bool, list]]:
    """Per (bits, variant) of the weight rows: (the largest block size whose perplexity ratio's interval lies
    wholly below `tolerance`, whether any setting is, the larger blocks left undecided (interval across it))."""
    out = {}
    for bits, variant in dict.fromkeys((r.bits, r.variant) for r in rows if r.study == "weights"):
        mine = sorted((r for r in rows if r.study == "weights" and (r.bits, r.variant) == (bits, variant)),
                      key=lambda r: math.inf if r.block is None else r.block)
        within = [r for r in mine if r.ppl_ratio_hi < tolerance]
        best = within[-1] if within else None
        after = mine[mine.index(best) + 1:] if best else mine
        out[bits, variant] = (best.block if best else None, best is not None,
                              [r.block for r in after if r.ppl_ratio_lo <= tolerance <= r.ppl_ratio_hi])
    return out


def _gain(r: QuantRow) -> str:
    word = ("helps" if r.held_gain_hi < 1 else "hurts" if r.held_gain_lo > 1 else "no difference the interval decides")
    return f"x{r.held_gain:.3g} [{r.held_gain_lo:.3g}, {r.held_gain_hi:.3g}], {word}"


def finding(rows: list[QuantRow], tolerance: float = QUANT_TOLERANCE) -> str:
    """The study in the terms of the paper's claim: per bit width, the largest block size at which each weight
    variant stays within `tolerance` of the unquantized perplexity (its 95% interval wholly below), whether
    keeping the super weights moves that size, and which held-out activation channels help."""
    fit = usable(rows, tolerance)
    parts = []
    for bits in sorted({b for b, _ in fit}):
        def size(v: str) -> str:
            block, ok, undecided = fit[bits, v]
            text = f"up to {_block(block)}" if ok else "at no block size"
            return text + (f" ({', '.join(map(_block, undecided))} undecided)" if undecided else "")

        def moved(base: str, kept: str) -> str:
            if (bits, kept) not in fit:
                return ""
            (a, ok_a, _), (b, ok_b, _) = fit[bits, base], fit[bits, kept]
            if (a, ok_a) == (b, ok_b):
                return "; keeping the super weights does not move it"
            return f"; keeping the super weights moves it to {size(kept).removeprefix('up to ')}"

        line = []
        if (bits, "plain") in fit:
            line.append(f"plain RTN within x{tolerance:g} {size('plain')}{moved('plain', 'keep')}")
        if (bits, "clip") in fit:
            line.append(f"outliers clipped, {size('clip')}{moved('clip', 'clip_keep')}")
        elif (bits, "clip_keep") in fit:
            line.append(f"outliers clipped with the super weights kept, {size('clip_keep')}")
        if line:
            parts.append(f"INT{bits} weights: " + "; ".join(line))
    for bits in sorted({r.bits for r in rows if r.study == "activations" and r.held}):
        held = [r for r in rows if r.study == "activations" and r.bits == bits and r.held]
        one = [r for r in held if len(r.held) == 1]
        text = [f"holding the super activation's channel ({one[0].held[0]}) {_gain(one[0])}"] if one else []
        text += [f"adding {', '.join(r.held[1:])} {_gain(r)}" for r in held if len(r.held) > 1]
        parts.append(f"INT{bits} activations: " + "; ".join(text))
    return "; ".join(parts) if parts else "no super weight to keep"


def render(rows: list[QuantRow], tolerance: float = QUANT_TOLERANCE) -> str:
    """The study as a table: perplexity and its ratio with 95% intervals per setting."""
    head = ("| study | bits | block | variant | held out | perplexity [95%] | ratio [95%] | windows |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head] + [
        f"| {r.study} | {r.bits or '-'} | {(r.block or 'tensor') if r.study == 'weights' else '-'} | {r.variant} | "
        f"{', '.join(r.held or []) or '-'} | {r.ppl:.4g} [{r.ppl_lo:.4g}, {r.ppl_hi:.4g}] | "
        f"x{r.ppl_ratio:.3g} [{r.ppl_ratio_lo:.3g}, {r.ppl_ratio_hi:.3g}] | {r.windows} |" for r in rows]
    return "\n".join(lines) + f"\n\n{finding(rows, tolerance)}"
