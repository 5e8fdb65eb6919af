"""The whole scan of one model: resolve, load once, detect iteratively, validate, report."""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import torch

from . import __version__
from .ablation import read_matrix, zeroed
from .adapters import Coord
from .detect import Baseline, Candidate, DetectConfig, Spike, attribute, find_spikes, spike_from_peak
from .errors import BadInput
from .loading import Loaded, LoadOptions, load
from .profile import LayerProfile, record
from .replay import Runner
from .report import ScanResult
from .sources import resolve
from .validate import Evaluator, ValidateConfig, default_eval_text, triage, validate

log = logging.getLogger("superweights")

PAPER_PROMPT = "Apple Inc. is a worldwide tech company."


@dataclass
class ScanConfig:
    prompts: list[str] = field(default_factory=lambda: [PAPER_PROMPT])
    detect: DetectConfig = field(default_factory=DetectConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    eval_text: str | None = None  # the text itself; None means the shipped scanner/data/eval.txt
    run_validation: bool = True


def scan(spec: str, opts: LoadOptions | None = None, cfg: ScanConfig | None = None,
         revision: str | None = None) -> ScanResult:
    started = time.time()
    return scan_source(resolve(spec, revision), opts, cfg, started)


def scan_source(source, opts: LoadOptions | None = None, cfg: ScanConfig | None = None,
                started: float | None = None) -> ScanResult:
    """Scan a resolved `sources.Source` (the CLI resolves first, so a failure can name the revision)."""
    loaded = load(source, opts)
    try:
        return scan_loaded(loaded, cfg or ScanConfig(), started)
    finally:
        loaded.close()


def scan_to_row(spec: str, revision: str | None, opts: LoadOptions, cfg: ScanConfig, host: str | None = None):
    """Scan, and the catalog row of the outcome: (row, result, None), or a `failed` row naming what went
    wrong, (row, None, error), for the caller to record and re-raise. One place for the CLI and workers."""
    from catalog.rows import failed_row, ok_row

    started, source = time.time(), None
    try:
        source = resolve(spec, revision)
        result = scan_source(source, opts, cfg, started)
    except Exception as e:  # noqa: BLE001  the caller decides: re-raise (CLI) or keep the row (batch)
        return failed_row(spec, e, started, revision=source.revision if source else revision,
                          repo_id=source.repo_id if source else None, source=source.kind if source else None,
                          prompts=cfg.prompts, host=host), None, e
    return ok_row(result.to_dict(), host=host), result, None


def _tokenize(loaded: Loaded, prompts: list[str]) -> list[torch.Tensor]:
    out = []
    for p in prompts:
        ids = loaded.tokenizer(p, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise BadInput(f"prompt {p!r} has no tokens")
        out.append(ids.to(loaded.device))  # [1, tokens]
    return out


def detect(loaded: Loaded, prompts: list[torch.Tensor], cfg: DetectConfig, runners: list[Runner] | None = None):
    """Iterate: profile, find spikes, attribute them, zero what was found, profile again. The first
    round's passes are the runners' base passes (kept for triage's ablations)."""
    found: dict[Coord, Candidate] = {}
    spikes: dict[tuple, Spike] = {}
    first: list[LayerProfile] | None = None
    base: Baseline | None = None
    rounds = 0
    for rnd in range(1, cfg.max_rounds + 1):
        rounds = rnd
        first_pass = (lambda i: runners[i].base()) if runners and rnd == 1 else None
        with zeroed(loaded.model, loaded.adapter, found):
            profiles = record(loaded.model, loaded.adapter, prompts, cfg.top_rows, run=first_pass)
        if base is None:
            first, base = profiles, Baseline.of(profiles)
        new: dict[Coord, Candidate] = {}
        peaks = find_spikes(profiles, base, cfg)
        for peak in peaks:
            s = spike_from_peak(peak, base, rnd)
            # the first round's reading of a (layer, row) stands: a late layer that cancels the super
            # activation in the original model is not a new spike once that activation is zeroed
            spike = spikes.setdefault(s.key(), s)
            if spike.kind == "cancellation":
                continue
            w_row = read_matrix(loaded.adapter, loaded.layers[peak.layer], peak.unit)[peak.row]  # [d_mlp]
            terms = attribute(peak, w_row, cfg)
            if not terms and not spike.candidates:
                spike.kind = "diffuse"
            for col, term in terms:
                coord = Coord(peak.layer, peak.unit.module, peak.row, col, peak.unit.expert)
                if coord in found or coord in new:
                    continue
                x = float(peak.x[col])
                new[coord] = Candidate(coord, float(w_row[col]), x, abs(x) / base.input, term,
                                       term / peak.raw if peak.raw else 0.0, spike, rnd)
                spike.candidates.append(coord)
                spike.kind = "super_activation"
        log.info("round %d: %d spike(s) above %.0fx the median layer, %d new candidate(s)",
                 rnd, len(peaks), cfg.spike_ratio, len(new))
        if not new:
            break
        found.update(new)
    # first-round candidates first: later rounds measure a model with weights already zeroed
    ranked = sorted(found.values(), key=lambda c: (c.round, -abs(c.contribution)))
    return first, base, list(spikes.values()), ranked, rounds


def scan_loaded(loaded: Loaded, cfg: ScanConfig, started: float | None = None) -> ScanResult:
    started = started or time.time()
    t0 = time.time()
    prompts = _tokenize(loaded, cfg.prompts)
    runners = [Runner(loaded.model, loaded.adapter, ids) for ids in prompts]
    profiles, base, spikes, ranked, rounds = detect(loaded, prompts, cfg.detect, runners)
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
        base_eval, singles, groups = validate(loaded, ev, kept, cfg.validate)
    else:
        for c in kept:
            c.verdict = "unvalidated"
    t2 = time.time()
    src = loaded.source
    return ScanResult(
        model=src.spec, repo_id=src.repo_id, revision=src.revision, source=src.kind,
        gguf_file=src.gguf_file, info=loaded.info(), layers_path=loaded.adapter.layers,
        scanner_version=__version__, prompts=cfg.prompts, profiles=profiles, baseline=base,
        spikes=spikes, candidates=kept + dropped, groups=groups, base_eval=base_eval, singles=singles,
        eval_tokens=ev.tokens if ev else 0, eval_passes=ev.passes if ev else 0,
        eval_sha256=hashlib.sha256(text.encode()).hexdigest()[:16],
        config={"detect": vars(cfg.detect), "validate": vars(cfg.validate)}, rounds=rounds,
        started=started, timings={"detect_s": t1 - t0, "validate_s": t2 - t1, "total_s": time.time() - started},
        warnings=warnings)
