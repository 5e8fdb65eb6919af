"""What super weights are for: perplexity of a model under simulated RTN quantization, with and without its
super weights (and super activations) kept in full precision, measured with the validation's statistics:
per evaluation window, the mean loss difference against the unquantized model on the same tokens; a
setting's ln(ppl ratio) is their mean, with a 95% interval across windows.

Studies (rows of `QuantRow.study`):
  weights      every decoder Linear quantized per block (`scanner.study.quantize`, in the RTN form asked), for
               each bits, block size and variant (plain, keep, clip_keep, clip);
  activations  the down projections' inputs quantized per tensor: plain, then held out ("hold"): the super
               activation's channel alone (the kept weights' input channel seen largest), with each partner's
               channel, and all of them; each against the setting holding its first channel only (paired);
  restore      the paper's check: the super weights zeroed and their super activations restored at the
               tokens where they fire; a ratio near 1 says the weight acts only through its activation.
A resident model is quantized in place for a setting and restored from a copy after it; a streamed one layer
by layer as each layer is read (so a model that does not fit in memory can be studied too).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from words import verdicts

from ..measure.ablation import values_at, zeroed
from ..adapters import Coord, get, layers
from ..config import QUANT_BITS as BITS, QUANT_BLOCKS as BLOCKS, QUANT_TOLERANCE, RTN_FORMS
from ..errors import BadInput
from ..measure.evaluator import Effect, Evaluator, ratio
from ..load.loading import Loaded
from .quantize import VARIANTS, Clip, quantize_activation, quantize_weight

FIRES = 10.0  # a super activation "fires" at tokens where |x[col]| is this many times the median |x| of its sequence


@dataclass(frozen=True)
class StudyConfig:
    bits: tuple[int, ...] = BITS
    blocks: tuple[int | None, ...] = BLOCKS
    variants: tuple[str, ...] = VARIANTS
    act_bits: tuple[int, ...] = (8,)
    clip: Clip = field(default_factory=Clip)
    windows: int = 16  # evaluation windows per setting
    confidence: float = 0.95
    rtn: str = "paper"  # RTN form of the weights (scanner.study.quantize): paper | zero-point
    # of the activations: the paper form moves exact zeros by up to half a step, a bias on every channel
    act_rtn: str = "zero-point"
    tolerance: float = QUANT_TOLERANCE  # usable: the perplexity ratio's interval wholly below this

    def __post_init__(self):
        for form in (self.rtn, self.act_rtn):
            if form not in RTN_FORMS:
                raise BadInput(f"unknown RTN form {form!r}; choose among {', '.join(RTN_FORMS)}")
        if not self.tolerance > 1:
            raise BadInput(f"the tolerance is a perplexity ratio above 1, not {self.tolerance}")
        for b in self.bits + self.act_bits:
            if not 2 <= b <= 16:
                raise BadInput(f"bits must be in 2..16, not {b}")
        for b in self.blocks:
            if b is not None and b < 2:
                raise BadInput(f"a block holds at least 2 elements, not {b}")
        bad = set(self.variants) - set(VARIANTS)
        if bad:
            raise BadInput(f"unknown variant(s) {', '.join(sorted(bad))}; choose among {', '.join(VARIANTS)}")
        if self.windows < 2:
            raise BadInput(f"an interval needs at least 2 windows, not {self.windows}")


@dataclass
class QuantRow:
    study: str  # weights | activations | restore
    bits: int | None
    block: int | None  # elements per block; None: per tensor
    variant: str  # plain | keep | clip_keep | clip (weights), plain | hold (activations), restore
    ppl: float
    ppl_lo: float
    ppl_hi: float
    ppl_ratio: float  # against the unquantized model on the same windows
    ppl_ratio_lo: float
    ppl_ratio_hi: float
    windows: int
    stopword_shift: float | None = None
    rtn: str | None = None  # RTN form (weights, activations): paper | zero-point
    held: list[str] | None = None  # activations: the input channels held out, the super activation's first
    # activations held out: ppl ratio over the setting holding only the first channel listed (over plain when
    # one is held), paired on the same windows: below 1, the last channels listed help
    held_gain: float | None = None
    held_gain_lo: float | None = None
    held_gain_hi: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _matrices(loaded: Loaded, i: int, layer: nn.Module) -> Iterator[tuple[str, int | None, torch.Tensor]]:
    """Every weight matrix of decoder layer `i` as (module path, expert, [out, in] view): its Linear
    layers (GPT-2's Conv1D transposed) and each expert of fused experts ([experts, out, in] parameters)."""
    for name, m in layer.named_modules():
        if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
            yield name, None, m.weight.T if type(m).__name__ == "Conv1D" else m.weight
    if loaded.adapter.experts:
        experts = get(layer, loaded.adapter.experts)
        for pname, p in experts.named_parameters(recurse=False):
            if p.dim() == 3:
                for e in range(p.shape[0]):
                    yield f"{loaded.adapter.experts}.{pname}", e, p[e]


def _quantize_layer(loaded: Loaded, i: int, layer: nn.Module, bits: int, block: int | None, variant: str,
                    keep: list[Coord], clip: Clip, form: str) -> None:
    """Every weight matrix of decoder layer `i` quantized in place, each on its own (the super weights among
    `keep` as the variant says)."""
    for name, expert, w in _matrices(loaded, i, layer):
        entries = [(c.row, c.col) for c in keep if c.layer == i and c.module == name and c.expert == expert]
        with torch.no_grad():
            w.copy_(quantize_weight(w, bits, block, variant, entries, clip, form))


@contextmanager
def _weights_quantized(loaded: Loaded, bits: int, block: int | None, variant: str, keep: list[Coord],
                       clip: Clip, form: str) -> Iterator[None]:
    """The decoder quantized for the duration: resident layers in place (restored after), streamed ones
    layer by layer as each is read (`LayerLoop.after_load`), so a model that does not fit can be studied."""
    stack = layers(loaded.model, loaded.adapter)
    if loaded.streamer is not None:
        with ExitStack() as hooks:
            for i, layer in enumerate(stack):
                hooks.enter_context(loaded.loop.after_load(
                    i, lambda i=i, layer=layer: _quantize_layer(loaded, i, layer, bits, block, variant, keep, clip, form)))
            yield
        return
    saved = [(p, p.detach().clone()) for p in {id(p): p for layer in stack for p in layer.parameters()}.values()]
    try:
        for i, layer in enumerate(stack):
            _quantize_layer(loaded, i, layer, bits, block, variant, keep, clip, form)
        yield
    finally:
        with torch.no_grad():
            for p, w in saved:
                p.copy_(w)


def _down_hooks(loaded: Loaded, fn: Callable[[int, torch.Tensor, torch.Tensor | None], torch.Tensor | None],
                stack: ExitStack, on_output: bool = False) -> None:
    """fn(layer, input, output) on every dense down projection: returns a new input (pre-hook) or output."""
    down = loaded.adapter.down
    if down is None:
        raise BadInput("activation studies need a dense down projection (this architecture has experts only)")
    for i, layer in enumerate(layers(loaded.model, loaded.adapter)):
        module = get(layer, down)
        if on_output:
            h = module.register_forward_hook(lambda _m, args, out, i=i: fn(i, args[0], out))
        else:
            h = module.register_forward_pre_hook(lambda _m, args, i=i: (fn(i, args[0], None),) + args[1:])
        stack.callback(h.remove)


class Study:
    """Settings evaluated on the first `cfg.windows` windows of an evaluator's set."""

    def __init__(self, loaded: Loaded, ev: Evaluator, keep: list[Coord], cfg: StudyConfig, progress=None):
        if loaded.offloaded and loaded.streamer is None:
            raise BadInput("the quantization study cannot quantize layers accelerate offloads: load the model "
                           "in memory or streamed (--stream)")
        self.loaded, self.ev, self.keep, self.cfg, self.progress = loaded, ev, keep, cfg, progress
        self.n = min(cfg.windows, ev.windows.count)
        ev.ensure_base(self.n)
        self.base_ppl = ev.base_ppl(self.n)

    @torch.no_grad()
    def measure(self) -> Effect:
        """The model as it is now (quantized or hooked) against the base, window by window."""
        ev, e = self.ev, Effect()
        step = ev.runner.seqs
        for a in range(0, self.n, step):
            with self.loaded.loop.head_inputs() as got:
                self.loaded.model(input_ids=ev.ids[a: min(self.n, a + step)], use_cache=False)
            ev.record(e, got[0], a)
        if self.progress is not None:
            self.progress.update(1)
        return e

    def _row(self, study: str, bits, block, variant: str, e: Effect) -> QuantRow:
        lo, hi = e.interval(self.cfg.confidence)
        r, rlo, rhi = ratio(e.mean), ratio(lo), ratio(hi)
        return QuantRow(study, bits, block, variant, self.base_ppl * r, self.base_ppl * rlo, self.base_ppl * rhi,
                        r, rlo, rhi, e.windows, e.stopword_shift)

    def weights(self) -> Iterator[QuantRow]:
        stack = layers(self.loaded.model, self.loaded.adapter)
        largest = max(w.numel() for i, layer in enumerate(stack) for _, _, w in _matrices(self.loaded, i, layer))
        seen: dict[tuple, Effect] = {}
        for bits in self.cfg.bits:
            for block in self.cfg.blocks:
                same = None if block is None or block >= largest else block  # a block holding every matrix whole
                for variant in self.cfg.variants:
                    if variant in ("keep", "clip_keep") and not self.keep:
                        continue  # nothing to keep: equal to plain / clip
                    key = (bits, same, variant)
                    if key in seen:  # quantized as per tensor: measured already, the same numbers
                        if self.progress is not None:
                            self.progress.update(1)
                    else:
                        with _weights_quantized(self.loaded, bits, block, variant, self.keep, self.cfg.clip,
                                                self.cfg.rtn):
                            seen[key] = self.measure()
                    row = self._row("weights", bits, block, variant, seen[key])
                    row.rtn = self.cfg.rtn
                    yield row

    def channels(self) -> list[tuple[int, int]]:
        """The kept weights' input channels (layer, col), the largest |x[col]| seen on the first window first:
        the super activation's channel, then its partners'."""
        wanted = sorted({(c.layer, c.col) for c in self.keep if c.expert is None})
        if not wanted:
            return []
        seen: dict[tuple[int, int], float] = {}

        def look(i, x, _o):
            for layer, col in wanted:
                if layer == i:
                    seen[layer, col] = max(seen.get((layer, col), 0.0), float(x[..., col].abs().max()))
            return x

        with ExitStack() as stack, torch.no_grad():
            _down_hooks(self.loaded, look, stack)
            self.loaded.model(input_ids=self.ev.ids[:1], use_cache=False)
        return sorted(wanted, key=lambda k: -seen.get(k, 0.0))

    def activations(self) -> Iterator[QuantRow]:
        found = self.channels()
        first, partners = (found[0], found[1:]) if found else (None, [])
        held_sets = [[]] + ([[first]] + [[first, p] for p in partners] if first else [])
        if len(partners) > 1:
            held_sets.append([first, *partners])
        for bits in self.cfg.act_bits:
            effects: dict[tuple, Effect] = {}
            for held in held_sets:
                hold: dict[int, list[int]] = {}
                for layer, col in held:
                    hold.setdefault(layer, []).append(col)
                with ExitStack() as stack:
                    _down_hooks(self.loaded, lambda i, x, _o: quantize_activation(x, bits, hold.get(i, []), self.cfg.act_rtn),
                                stack)
                    e = effects[tuple(held)] = self.measure()
                row = self._row("activations", bits, None, "hold" if held else "plain", e)
                row.rtn = self.cfg.act_rtn
                if held:
                    gain = e.minus(effects[tuple(held[:1]) if len(held) > 1 else ()])
                    lo, hi = gain.interval(self.cfg.confidence)
                    row.held = [f"layer {layer} col {col}" for layer, col in held]
                    row.held_gain, row.held_gain_lo, row.held_gain_hi = ratio(gain.mean), ratio(lo), ratio(hi)
                yield row

    def restore(self) -> Iterator[QuantRow]:
        """Super weights zeroed, their activations put back where they fire."""
        if not self.keep:
            return
        values = values_at(self.loaded.loop, self.keep)  # before zeroing
        by_layer: dict[int, list[Coord]] = {}
        for c in self.keep:
            by_layer.setdefault(c.layer, []).append(c)
        with ExitStack() as stack:
            stack.enter_context(zeroed(self.loaded.loop, self.keep))

            def put_back(i, x, out):
                if i not in by_layer:
                    return out
                typical = x.abs().flatten(1).median(dim=1).values[:, None]  # [batch, 1]: over tokens and channels
                for c in by_layer[i]:
                    a = x[..., c.col]  # [batch, tokens]
                    out[..., c.row] += torch.where(a.abs() >= FIRES * typical, values[c] * a, 0).to(out.dtype)
                return out

            _down_hooks(self.loaded, put_back, stack, on_output=True)
            yield self._row("restore", None, None, "restore", self.measure())

    def run(self) -> list[QuantRow]:
        return [*self.weights(), *self.activations(), *self.restore()]

    def settings(self) -> int:
        keep = bool(self.keep)
        w = len(self.cfg.bits) * len(self.cfg.blocks) * sum(keep or v not in ("keep", "clip_keep")
                                                            for v in self.cfg.variants)
        k = len({(c.layer, c.col) for c in self.keep if c.expert is None})
        return w + len(self.cfg.act_bits) * (1 + k + (k > 2)) + keep


@dataclass
class StudyResult:
    rows: list[QuantRow]
    keep: list[Coord]
    scan: object | None  # the ScanResult when the study scanned first
    ppl_base: float
    eval_text_sha256: str
    dtype: str
    clip: str


def study_source(source, cfg, study: StudyConfig, keep: list[Coord] | None = None,
                 progress: bool = False) -> StudyResult:
    """Load `source` once; without `keep`, scan it first and keep its catastrophic weights (super_weight and
    super_set)."""
    from tqdm import tqdm

    from ..load.loading import load
    from ..scan import evaluator, scan_loaded

    loaded = load(source, cfg.load)
    try:
        result = None
        if keep is None:
            result = scan_loaded(loaded, cfg, progress=progress)
            keep = [c.coord for c in result.candidates if verdicts.is_catastrophic(c.verdict)]
        ev = evaluator(loaded, cfg)
        with tqdm(desc="quantization settings", unit="setting", disable=not progress, leave=False) as bar:
            s = Study(loaded, ev, keep, study, bar)
            bar.total = s.settings()
            rows = s.run()
        return StudyResult(rows, keep, result, s.base_ppl, ev.windows.sha256, str(loaded.dtype).removeprefix("torch."),
                           study.clip.label)
    finally:
        loaded.close()
