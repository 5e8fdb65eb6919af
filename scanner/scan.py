"""The whole scan of one model: resolve, load once, detect iteratively, validate, report."""
from __future__ import annotations

import hashlib
import time

import torch

from . import __version__
from .config import ScanConfig
from .detect import detect
from .errors import BadInput
from .loading import Loaded, load
from .replay import Runner
from .report import ScanResult
from .sources import Source, resolve
from .texts import default_eval_text
from .validate import Evaluator, triage, validate


def scan(spec: str, cfg: ScanConfig | None = None, revision: str | None = None) -> ScanResult:
    started = time.time()
    return scan_source(resolve(spec, revision), cfg, started)


def scan_source(source: Source, cfg: ScanConfig | None = None, started: float | None = None) -> ScanResult:
    """Scan a resolved `sources.Source` (callers resolve first, so a failure can name the revision)."""
    cfg = cfg or ScanConfig()
    loaded = load(source, cfg.load)
    try:
        return scan_loaded(loaded, cfg, started)
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


def scan_loaded(loaded: Loaded, cfg: ScanConfig, started: float | None = None) -> ScanResult:
    started = started or time.time()
    t0 = time.time()
    prompts = tokenize(loaded, cfg.prompts)
    runners = [Runner(loaded.loop, ids) for ids in prompts]
    profiles, base, spikes, ranked, rounds = detect(loaded.loop, prompts, cfg.detect, runners)
    kept, dropped = triage(loaded, runners, ranked, cfg.detect.max_candidates)
    del runners  # their stored layer outputs
    for c in dropped:
        c.verdict = "unvalidated"
    warnings = [f"{len(dropped)} candidate(s) of spikes that barely move the output (by KL on the prompts) "
                "were not validated; raise --max-candidates to validate them"] if dropped else []
    t1 = time.time()
    text = cfg.eval_text if cfg.eval_text is not None else default_eval_text()
    base_eval, singles, groups, ev = None, {}, [], None
    if cfg.run_validation:
        ev = Evaluator(loaded, text, cfg.validate.eval_tokens, upto=max((c.coord.layer for c in kept), default=0))
        if ev.tokens < 2:
            raise BadInput("the evaluation text has fewer than 2 tokens")
        if ev.tokens < 512:
            warnings.append(f"evaluation text is only {ev.tokens} tokens (512 or more recommended)")
        if ev.limit < cfg.validate.eval_tokens:
            warnings.append(f"evaluation cut to {ev.limit} tokens: this model takes at most {loaded.positions}")
        base_eval, singles, groups = validate(loaded, ev, kept, cfg.validate)
    else:
        for c in kept:
            c.verdict = "unvalidated"
    t2 = time.time()
    src = loaded.source
    return ScanResult(
        spec=src.spec, model=src.model, repo_id=src.repo_id, revision=src.revision, source=src.kind,
        gguf_file=src.gguf_file, info=loaded.info(), layers_path=loaded.adapter.layers,
        scanner_version=__version__, prompts=list(cfg.prompts), profiles=profiles, baseline=base,
        spikes=spikes, candidates=kept + dropped, groups=groups, base_eval=base_eval, singles=singles,
        eval_tokens=ev.tokens if ev else 0, eval_passes=ev.passes if ev else 0,
        eval_sha256=hashlib.sha256(text.encode()).hexdigest()[:16],
        config=cfg.to_dict(), rounds=rounds,
        started=started, timings={"detect_s": t1 - t0, "validate_s": t2 - t1, "total_s": time.time() - started},
        warnings=warnings)
