"""Spike-profile plots, one PNG per model: the largest down-projection input and output per layer.

Drawn with Pillow rather than matplotlib: an index of 100,000 models needs a plot each, and a
matplotlib figure costs ~70 ms to render here against ~3 ms for these few lines and labels.
"""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

W, H = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 46, 40
OUTPUT, INPUT, FOUND, GRID, TEXT = (214, 96, 77), (67, 147, 195), (178, 24, 43), (225, 225, 225), (40, 40, 40)
_font = None


def _fonts():
    global _font
    if _font is None:
        _font = (ImageFont.load_default(size=12), ImageFont.load_default(size=13))
    return _font


def render(title: str, inputs: list[float], outputs: list[float], marked: set[int], path: str) -> None:
    """Bars: max |output| of each layer's down projection; dots: max |input|; red: layers with a super weight.

    Log scale, because a super activation is hundreds to thousands of times the typical layer."""
    small, big = _fonts()
    img = Image.new("P", (W, H), "white")  # a palette image encodes 3x faster than RGB
    d = ImageDraw.Draw(img)
    n = max(len(outputs), 1)
    vals = [v for v in inputs + outputs if v and v > 0 and math.isfinite(v)]
    lo = math.floor(math.log10(min(vals))) if vals else 0
    hi = math.ceil(math.log10(max(vals))) if vals else 1
    hi = max(hi, lo + 1)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def y(v: float) -> float:
        v = max(v, 10.0 ** lo)
        return TOP + ph * (1 - (math.log10(v) - lo) / (hi - lo))

    step = max(1, math.ceil((hi - lo) / 6))
    for k in range(lo, hi + 1, step):
        yy = y(10.0 ** k)
        d.line([(LEFT, yy), (W - RIGHT, yy)], fill=GRID)
        d.text((LEFT - 6, yy), f"1e{k}", fill=TEXT, font=small, anchor="rm")
    slot = pw / n
    bar = max(1.0, slot * 0.7)
    xstep = max(1, math.ceil(n / 16))
    for i, v in enumerate(outputs):
        x0 = LEFT + i * slot + (slot - bar) / 2
        if v and v > 0:
            d.rectangle([x0, y(v), x0 + bar, TOP + ph], fill=FOUND if i in marked else OUTPUT)
        if i % xstep == 0:
            d.text((x0 + bar / 2, TOP + ph + 4), str(i), fill=TEXT, font=small, anchor="mt")
    pts = [(LEFT + (i + 0.5) * slot, y(v)) for i, v in enumerate(inputs) if v and v > 0]
    if len(pts) > 1:
        d.line(pts, fill=INPUT, width=2)
    for px, py in pts:
        d.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=INPUT)
    d.rectangle([LEFT, TOP, W - RIGHT, TOP + ph], outline=(150, 150, 150))
    d.text((LEFT, 6), title[:90], fill=TEXT, font=big)
    d.text((W // 2, H - 14), "layer", fill=TEXT, font=small, anchor="mm")
    lx, ly = LEFT, 30
    d.rectangle([lx, ly - 5, lx + 10, ly + 5], fill=OUTPUT)
    d.text((lx + 14, ly), "max |down_proj output|", fill=TEXT, font=small, anchor="lm")
    d.ellipse([lx + 160, ly - 3, lx + 166, ly + 3], fill=INPUT)
    d.text((lx + 170, ly), "max |down_proj input|", fill=TEXT, font=small, anchor="lm")
    d.rectangle([lx + 310, ly - 5, lx + 320, ly + 5], fill=FOUND)
    d.text((lx + 324, ly), "layer with a super weight", fill=TEXT, font=small, anchor="lm")
    img.save(path, format="PNG", compress_level=1)


QUANT_COLORS = {"plain": (120, 120, 120), "keep": (178, 24, 43), "clip_keep": (33, 102, 172), "clip": (230, 145, 56)}


def render_quant(title: str, rows: list[dict], ppl_base: float, tolerance: float | None, path: str) -> None:
    """Perplexity (log scale) against block size, one line per weight variant and bit width, with the
    unquantized model's perplexity and the usable limit (`tolerance` times it) as lines."""
    small, big = _fonts()
    img = Image.new("P", (W, H), "white")
    d = ImageDraw.Draw(img)
    weights = [r for r in rows if r["study"] == "weights"]
    blocks = sorted({r["block"] for r in weights}, key=lambda b: math.inf if b is None else b)
    vals = [v for r in weights for v in (r["ppl_lo"], r["ppl_hi"]) if v and v > 0 and math.isfinite(v)]
    vals += [ppl_base, ppl_base * (tolerance or 1)]
    lo, hi = math.floor(math.log10(min(vals)) * 4) / 4, math.ceil(math.log10(max(vals)) * 4) / 4
    hi = max(hi, lo + 0.25)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def y(v: float) -> float:
        return TOP + ph * (1 - (math.log10(max(v, 10.0 ** lo)) - lo) / (hi - lo))

    def x(i: int) -> float:
        return LEFT + pw * (i + 0.5) / max(len(blocks), 1)

    quarters = round((hi - lo) * 4)
    step = next(q for q in (1, 2, 4, 8, 16, 10 ** 6) if quarters / q <= 8)  # at most ~8 labels
    for k in range(round(lo * 4), round(hi * 4) + 1, step):
        yy = y(10.0 ** (k / 4))
        d.line([(LEFT, yy), (W - RIGHT, yy)], fill=GRID)
        d.text((LEFT - 6, yy), f"{10.0 ** (k / 4):.3g}", fill=TEXT, font=small, anchor="rm")
    for i, b in enumerate(blocks):
        d.text((x(i), TOP + ph + 4), "tensor" if b is None else f"{b:,}", fill=TEXT, font=small, anchor="mt")
    d.line([(LEFT, y(ppl_base)), (W - RIGHT, y(ppl_base))], fill=TEXT, width=1)
    if tolerance:  # usable below it (by the interval)
        for x0 in range(LEFT, W - RIGHT, 8):
            d.line([(x0, y(ppl_base * tolerance)), (min(x0 + 4, W - RIGHT), y(ppl_base * tolerance))], fill=TEXT)
    widths = sorted({r["bits"] for r in weights})

    def marker(px: float, py: float, bits: int, color) -> None:  # one shape per bit width
        box = [px - 3, py - 3, px + 3, py + 3]
        [d.ellipse, d.rectangle, lambda b, fill: d.polygon([(px, py - 4), (px - 4, py + 3), (px + 4, py + 3)],
                                                           fill=fill)][widths.index(bits) % 3](box, fill=color)

    for (variant, bits) in sorted({(r["variant"], r["bits"]) for r in weights}):
        color = QUANT_COLORS.get(variant, TEXT)
        pts = [(x(blocks.index(r["block"])), y(r["ppl"]), y(r["ppl_lo"]), y(r["ppl_hi"])) for r in weights
               if r["variant"] == variant and r["bits"] == bits]
        if len(pts) > 1:
            d.line([(px, py) for px, py, _, _ in pts], fill=color, width=2)
        for px, py, ylo, yhi in pts:
            d.line([(px, ylo), (px, yhi)], fill=color, width=1)  # the 95% interval
            marker(px, py, bits, color)
    d.rectangle([LEFT, TOP, W - RIGHT, TOP + ph], outline=(150, 150, 150))
    d.text((LEFT, 6), title[:90], fill=TEXT, font=big)
    d.text((W // 2, H - 14), "block size (elements)", fill=TEXT, font=small, anchor="mm")
    lx = LEFT
    for variant, color in QUANT_COLORS.items():
        d.rectangle([lx, 25, lx + 10, 35], fill=color)
        d.text((lx + 14, 30), variant, fill=TEXT, font=small, anchor="lm")
        lx += 90
    d.text((lx, 30), "line: unquantized" + (f"; dashed: x{tolerance:g}" if tolerance else ""), fill=TEXT,
           font=small, anchor="lm")
    for i, bits in enumerate(widths):  # the shapes' key, bottom left
        marker(LEFT + 6 + 52 * i, H - 14, bits, TEXT)
        d.text((LEFT + 13 + 52 * i, H - 14), f"INT{bits}", fill=TEXT, font=small, anchor="lm")
    img.save(path, format="PNG", compress_level=1)
