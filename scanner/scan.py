"""The whole scan of one model: resolve, load once, detect iteratively, validate, report."""
from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager

import torch

from words import verdicts

from . import __version__
from .measure import evalset
from .load.card import declared_base
from .config import ScanConfig
from .measure.detect import detect
from .errors import BadInput
from .load.loading import Loaded, load
from .measure.replay import Runner
from .report import ScanResult
from .load.sources import Source, resolve
from .measure.evaluator import Evaluator, screening
from .measure.triage import triage
from .measure.validate import validate


def scan(spec: str, cfg: ScanConfig | None = None, revision: str | None = None, progress: bool = False) -> ScanResult:
    started = time.time()
    return scan_source(resolve(spec, revision), cfg, started, progress)


def scan_source(source: Source, cfg: ScanConfig | None = None, started: float | None = None,
                progress: bool = False) -> ScanResult:
    """Scan a resolved `sources.Source` (callers resolve first, so a failure can name the revision)."""
    cfg = cfg or ScanConfig()
    loaded = load(source, cfg.load)
    try:
        return scan_loaded(loaded, cfg, started, progress)
    finally:
        loaded.close()


def tokenize(loaded: Loaded, prompts) -> list[torch.Tensor]:
    """Each calibration prompt's ids; one longer than the model's positions is refused, not cut (what would
    be left is not the prompt asked for), and before any pass, whose attention grows with its square."""
    out = []
    for i, p in enumerate(prompts, 1):
        ids = loaded.tokenizer(p, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise BadInput(f"prompt {i} ({p[:40]!r}) has no tokens")
        if loaded.positions and ids.shape[1] > loaded.positions:
            raise BadInput(f"prompt {i} ({p[:40]!r}...) has {ids.shape[1]} tokens; this model takes at most "
                           f"{loaded.positions}")
        out.append(ids.to(loaded.device))  # [1, tokens]
    return out


def scan_loaded(loaded: Loaded, cfg: ScanConfig, started: float | None = None, progress: bool = False) -> ScanResult:
    """`progress`: a bar on stderr while validating (ablations decided / total, windows evaluated)."""
    started = started or time.time()
    t0 = time.time()
    prompts = tokenize(loaded, cfg.prompts)
    runners = [Runner(loaded.loop, ids) for ids in prompts]
    profiles, base, spikes, ranked, rounds = detect(loaded.loop, prompts, cfg.detect, runners)
    t1 = time.time()
    kept, dropped = triage(loaded, runners, ranked, cfg.detect.max_candidates)
    del runners  # their stored layer outputs
    for c in dropped:
        c.verdict = "unvalidated"
    warnings = [f"{len(dropped)} candidate(s) of spikes that barely move the output (by KL on the prompts) "
                "were not validated; raise --max-candidates to validate them"] if dropped else []
    t2 = time.time()
    groups, evaluation = [], {}
    if cfg.run_validation:
        ev = evaluator(loaded, cfg, kept, warnings)
        with _bar(progress) as bar:
            groups = validate(loaded, ev, kept, cfg.validate, progress=bar)
        ev.ensure_base(cfg.validate.min_windows)  # a base perplexity even when nothing needed validating
        n = max([len(ev.base_nll)] + [e.windows for e in ev.effects.values()])
        evaluation = {"ppl_base": ev.base_ppl(n), "stopword_mass": ev.base_stopword(n), "eval_windows": n,
                      "window_tokens": ev.windows.ids.shape[1], "eval_tokens": n * ev.windows.ids.shape[1],
                      "eval_text_sha256": ev.windows.sha256, "eval_ids_sha256": ev.windows.ids_sha256,
                      "eval_passes": ev.passes,
                      "eval_ablations": len(ev.effects),
                      "window_evaluations": ev.window_evaluations,
                      "decided_at": dict(sorted(Counter(e.windows for e in ev.effects.values()).items())),
                      "screened": len(ev.screen.effects) if ev.screen else 0,
                      "base_ppl_by_windows": {k: ev.base_ppl(k) for k in {e.windows for e in ev.effects.values()}
                                              if k}}
    else:
        for c in kept:
            c.verdict = "unvalidated"
    t3 = time.time()
    src = loaded.source
    base_model, base_from = declared_base(src.path, src.gguf_file)
    return ScanResult(
        spec=src.spec, model=src.model, repo_id=src.repo_id, revision=src.revision, source=src.kind,
        gguf_file=src.gguf_file, info=loaded.info(), layers_path=loaded.adapter.layers,
        scanner_version=__version__, prompts=list(cfg.prompts), profiles=profiles, baseline=base,
        spikes=spikes, candidates=kept + dropped, groups=groups, evaluation=evaluation,
        finding=finding(loaded, base, spikes, kept + dropped, cfg.run_validation), config=cfg.to_dict(),
        config_fingerprint=cfg.fingerprint(),
        rounds=rounds, started=started,
        timings={"detect_s": t1 - t0, "triage_s": t2 - t1, "validate_s": t3 - t2, "total_s": time.time() - started},
        warnings=warnings, base_model=base_model, base_model_from=base_from)


def evaluator(loaded: Loaded, cfg: ScanConfig, kept=(), warnings: list[str] | None = None,
              upto: int | None = None) -> Evaluator:
    """The evaluation windows of `cfg` for `loaded`, ready to measure ablations of the `kept` candidates (or
    of weights no deeper than layer `upto`, or anything else that changes the model: the quantization study).
    Warnings go to `warnings` when given."""
    warnings = [] if warnings is None else warnings
    v = cfg.validate
    texts = {"text": cfg.eval_text} if cfg.eval_text is not None else evalset.shipped()
    window = min(v.window_tokens, loaded.positions or v.window_tokens)
    if window < v.window_tokens:
        warnings.append(f"evaluation windows cut to {window} tokens: this model takes at most {loaded.positions}")
    windows = evalset.cut(loaded.tokenizer, texts, window, v.eval_tokens)
    if windows.count < 2:
        raise BadInput(f"the evaluation text makes {windows.count} window(s) of {window} tokens; at least 2 are "
                       "needed for an interval (a longer --eval-text, or a smaller --window-tokens)")
    if windows.count < v.min_windows * 2:
        warnings.append(f"evaluation has only {windows.count} windows of {window} tokens: intervals are wide")
    return Evaluator(loaded, windows, upto=max((c.coord.layer for c in kept), default=0) if upto is None else upto,
                     screen=torch.bfloat16 if screening(v.screen, loaded.device) else None)


def finding(loaded: Loaded, base, spikes, candidates, validated: bool) -> str:
    """What a scan found, in one word of words.verdicts.FINDINGS: "none found" is said three different ways."""
    if any(verdicts.is_catastrophic(c.verdict) for c in candidates):
        return "super_weights"
    if any(verdicts.matters(c.verdict) for c in candidates):
        return "mild_only"
    if not validated and candidates:
        return "unvalidated"
    # a post-MLP norm that multiplies the MLP's typical output tenfold or more makes the activations itself
    if loaded.adapter.post_norm and base.value >= 10 * base.raw:
        return "not_visible"
    return "spikes_harmless" if any(s.kind == "massive" for s in spikes) else "no_spike"


@contextmanager
def _bar(enabled: bool):
    """A progress bar of the validation: ablations decided out of those asked, windows evaluated."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    seen: set = set()
    with tqdm(total=0, unit="ablation", desc="validating", leave=False, dynamic_ncols=True) as bar:
        def update(pending, ev):
            for v in pending:
                seen.add(frozenset(v))
            bar.total = len(seen)
            bar.n = len(seen) - len(pending)
            bar.set_postfix_str(f"{ev.window_evaluations} window evaluations")
            bar.refresh()
        yield update
