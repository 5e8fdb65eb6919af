"""The scan configuration: one typed, validated object from the command line to every worker and into the
catalog. A new scan option is one field here (its flag, help, bounds and whether it changes verdicts in the
field's metadata), in a section or at the top: the commands that scan get its flag from `scanner.options`,
workers receive the whole object, `to_dict()` is what the catalog stores with each scan, and `fingerprint()`
covers it when it is marked `verdicts=True`.

Nothing here imports torch: the configuration is checked where the user types it, in milliseconds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields

from .errors import BadInput
from .texts import PAPER_PROMPT

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(i?)b?\s*$", re.I)


def parse_size(text: str) -> int:
    """'500MB', '2GiB', '1e9' -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise BadInput(f"cannot read memory size {text!r} (examples: 800MB, 2GiB, 1e9)")
    base = 1024 if m.group(3) else 1000
    size = float(m.group(1)) * base ** " kmgt".index((m.group(2) or " ").lower())
    if not size < 1 << 60:  # an exabyte; 1e999 reads as infinity
        raise BadInput(f"memory size {text!r} is not a size a machine has")
    return int(size)


def option(default, help: str, *, flag: str | None = None, low: float | None = None, high: float | None = None,
           check=None, verdicts: bool = False, from_file: bool = False):
    """A configuration field and how it is typed: `flag` (default --name-with-dashes), bounds, `check` (a
    function that raises BadInput for a value it refuses), `verdicts` (a different value may change a scan's
    verdicts: it is part of the fingerprint) and `from_file` (the flag names a file whose text is the value)."""
    meta = {"help": help, "flag": flag, "low": low, "high": high, "check": check, "verdicts": verdicts,
            "from_file": from_file}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _device(v: str) -> None:
    if not _DEVICE.match(v):
        raise BadInput(f"--device must be auto, cpu, cuda or cuda:N, got {v!r}")


def _dtype(v: str) -> None:
    if v not in DTYPE_NAMES:
        raise BadInput(f"unknown dtype {v!r}; choose from {', '.join(DTYPE_NAMES)}")


def _screen(v: str) -> None:
    if v not in ("auto", "on", "off"):
        raise BadInput(f"--screen must be auto, on or off, got {v!r}")


def _size(v: str | None) -> None:
    if v is not None and parse_size(v) <= 0:
        raise BadInput(f"--max-memory must be positive, got {v!r}")


def _prompts(v: tuple) -> None:
    if not v or not all(isinstance(p, str) and p.strip() for p in v):
        raise BadInput("calibration prompts must be non-empty text (at least one)")


def _text(v: str | None) -> None:
    if v is not None and not v.strip():
        raise BadInput("the evaluation text is empty")


class Checked:
    """Checks every field against its type (from the default) and its metadata when constructed."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = f"{flag_of(f)} ({f.name})" if flag_of(f) != "--" + f.name.replace("_", "-") else flag_of(f)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, Checked):
                if type(value) is not type(default):
                    raise BadInput(f"{f.name} must be a {type(default).__name__}")
                continue
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # 20 from JSON is 20.0: one spelling in the stored configuration
            object.__setattr__(self, f.name, value)
            _check_type(flag, value, default)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if meta.get("low") is not None and value < meta["low"]:
                    raise BadInput(f"{flag} must be at least {meta['low']:g}, got {value:g}")
                if meta.get("high") is not None and value > meta["high"]:
                    raise BadInput(f"{flag} must be at most {meta['high']:g}, got {value:g}")
            if meta.get("check"):
                meta["check"](value)


def _check_type(flag: str, value, default) -> None:
    if default is None:  # optional text
        ok = value is None or isinstance(value, str)
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, tuple):
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = ("text" if default is None else "true or false" if isinstance(default, bool)
                else "a whole number" if isinstance(default, int) else "a finite number" if isinstance(default, float)
                else "a list of texts" if isinstance(default, tuple) else "text")
        raise BadInput(f"{flag} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class LoadOptions(Checked):
    device: str = option("auto", "auto (cuda if available), cpu, cuda, cuda:N", check=_device)
    dtype: str = option("auto", "auto (bfloat16 on cuda, float32 on cpu), float32, bfloat16, float16", check=_dtype,
                        verdicts=True)
    max_memory: str | None = option(None, "memory budget on the device, e.g. 2GiB: a model that does not fit is "
                                          "streamed layer by layer (CPU), or offloaded by accelerate (GPU, "
                                          "--offload-folder, or a checkpoint that cannot be streamed)", check=_size)
    offload_folder: str | None = option(None, "where accelerate offloads to disk (default: a temporary folder)")
    trust_remote_code: bool = option(False, "allow the model's own Python code to run (only for models you trust)")
    stream: bool = option(False, "read decoder layers from the safetensors shards or GGUF file one at a time (peak "
                                 "memory about two layers); chosen by itself when the model does not fit")


@dataclass(frozen=True)
class DetectConfig(Checked):
    spike_ratio: float = option(10.0, "a spike is this many times the model's median layer maximum", low=1.0, verdicts=True)
    min_share: float = option(0.1, "a weight is a candidate if its term W[row, col] * x[col] makes this share of "
                                   "the spike", low=1e-6, high=1.0, verdicts=True)
    max_partners: int = option(4, "candidates per spiking row", low=1, verdicts=True)
    max_rounds: int = option(3, "detection rounds (zero what was found, look again)", low=1, verdicts=True)
    max_candidates: int = option(16, "candidates validated, best by KL triage first", low=1, verdicts=True)
    top_rows: int = option(8, "peaks kept per layer", low=1, verdicts=True)


@dataclass(frozen=True)
class ValidateConfig(Checked):
    min_ppl_ratio: float = option(1.5, "perplexity ratio that makes an ablation significant", low=1.0, verdicts=True)
    catastrophic_ratio: float = option(10.0, "perplexity ratio that makes an ablation catastrophic (a super weight, "
                                             "or a set of them)", low=1.0, verdicts=True)
    control_margin: float = option(10.0, "an effect must be this many times its controls' effect", low=0.0,
                                   verdicts=True)
    eval_tokens: int = option(8192, "evaluation tokens at most, in windows", low=2, verdicts=True)
    window_tokens: int = option(128, "tokens per evaluation window", low=8, verdicts=True)
    min_windows: int = option(4, "windows every ablation is evaluated on first", low=2, verdicts=True)
    confidence: float = option(0.95, "confidence of each verdict: its error, 1 - this, is split between the two "
                                     "sides and spent across the looks", low=0.5, high=0.9999, verdicts=True)
    zone: float = option(1.3, "indifference zone of the catastrophic threshold: a true ratio beyond it x or / this "
                               "is judged on its side with the stated confidence; within it, either answer is "
                               "acceptable and the row says the verdict is at the line", low=1.01, high=10.0,
                         verdicts=True)
    mild_zone: float = option(1.4, "indifference zone of the significant threshold (--min-ppl-ratio), as --zone",
                              low=1.01, high=10.0, verdicts=True)
    spending: float = option(-2.0, "how the error is spent across looks (Hwang-Shih-DeCani gamma): -4 keeps almost "
                                   "all for the last look (O'Brien-Fleming), 1 spends much early (Pocock)",
                             low=-10.0, high=5.0, verdicts=True)
    sequential: bool = option(True, "evaluate every ablation on every window in one look (slower; verdicts the "
                                    "same outside the zones, up to the error rate)", flag="--all-windows",
                              verdicts=True)
    screen: str = option("auto", "look in bfloat16 first while the model computes in float32, and measure in "
                                  "float32 only what touches a zone: auto (on CUDA; on a CPU it does not pay, "
                                  "docs/scanning.md), on, off", check=_screen, verdicts=True)
    control_draws: int = option(3, "random control sets drawn per group", low=1, verdicts=True)
    seed: int = option(0, "seed of the random controls", verdicts=True)


@dataclass(frozen=True)
class ScanConfig(Checked):
    load: LoadOptions = field(default_factory=LoadOptions)
    detect: DetectConfig = field(default_factory=DetectConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    prompts: tuple = option([PAPER_PROMPT], "calibration prompt (repeatable; default: the paper's)",
                            flag="--prompt", check=_prompts, verdicts=True)
    eval_text: str | None = option(None, "evaluation text for perplexity, read from FILE (default: the shipped text)",
                                   check=_text, verdicts=True, from_file=True)
    run_validation: bool = option(True, "detect only; skip ablation", flag="--no-validate", verdicts=True)

    def to_dict(self) -> dict:
        """Plain JSON values (lists, not tuples): what the catalog stores and `from_dict` reads."""
        return dataclasses.asdict(self, dict_factory=lambda kv: {k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in kv})

    @classmethod
    def from_dict(cls, data: dict) -> "ScanConfig":
        """The inverse of to_dict; an unknown key is an error, a missing one takes its default."""
        return _build(cls, data, "")

    def fingerprint(self) -> str:
        """A short hash of what a user asked that changes a scan's verdicts: every field marked `verdicts`
        (detection and validation settings, prompts, the evaluation text by its hash, whether it validates, the
        dtype asked for; the one used is the catalog's `dtype`). Not where or how the model was loaded."""
        return hashlib.sha256(json.dumps(_marked(self), sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **sections) -> "ScanConfig":
        """A copy with fields of sections replaced, e.g. replace(load={"trust_remote_code": True})."""
        changes = {k: dataclasses.replace(getattr(self, k), **v) if isinstance(v, dict) else v
                   for k, v in sections.items()}
        return dataclasses.replace(self, **changes)


def _marked(obj: Checked) -> dict:
    """The fields of `obj` (and its sections) marked `verdicts`, as JSON values; texts read from files hashed."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Checked):
            out[f.name] = _marked(value)
        elif f.metadata.get("verdicts"):
            if f.metadata.get("from_file") and value is not None:
                value = hashlib.sha256(value.encode()).hexdigest()
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def sections(cls) -> dict:
    """The fields of a configuration class that are sections (a Checked class of their own): name -> class."""
    return {f.name: type(f.default_factory()) for f in fields(cls)
            if f.default_factory is not dataclasses.MISSING and isinstance(f.default_factory(), Checked)}


SECTIONS = sections(ScanConfig)


def verdict_flags(cls=ScanConfig) -> dict[str, str]:
    """Every field that changes verdicts (those `fingerprint` hashes), as its path in `to_dict()`'s JSON
    ("validate.zone") -> its flag ("--zone"): how an index names what another configuration changed."""
    out = {}
    for f in fields(cls):
        if f.name in SECTIONS:
            out |= {f"{f.name}.{g.name}": flag_of(g) for g in fields(SECTIONS[f.name]) if g.metadata.get("verdicts")}
        elif f.metadata.get("verdicts"):
            out[f.name] = flag_of(f)
    return out


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise BadInput(f"scan configuration{where}: expected an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise BadInput(f"scan configuration{where}: unknown option {unknown[0]!r} (known: {', '.join(known)})")
    inner = sections(cls)
    kw = {k: _build(inner[k], v, f" {k}") if k in inner else v for k, v in data.items()}
    return cls(**kw)


# The quantization study's settings (scanner.study.quantize, scanner.study.quant_study), here so that the command line
# can offer them without importing torch.
QUANT_VARIANTS = ("plain", "keep", "clip_keep", "clip")
QUANT_BITS = (4, 8)  # weights: where SmolLM2 is usable at no block size, and at every one
QUANT_BLOCKS = (64, 64 ** 2, 128 ** 2, 256 ** 2, 512 ** 2, 1024 ** 2, None)  # None: the whole tensor
# paper: each block offset by its minimum (its extremes kept exactly; gguf's Q4_1 at block 32);
# zero-point: an integer zero point, the form of integer kernels (a block's extremes move)
RTN_FORMS = ("paper", "zero-point")
QUANT_TOLERANCE = 1.1  # a setting is usable when its perplexity ratio's interval lies wholly below this
