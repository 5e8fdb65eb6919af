"""The batch run loop: pin, skip what is complete, fan out to workers, write each scan as it finishes.

Workers are Ray actors (Ray started in this process, or a cluster joined at `address`) or, with `local`,
processes of this machine without Ray (`cluster.dispatch`). Nothing else differs.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from catalog.store import Catalog
from scanner import __version__ as SCANNER_VERSION
from scanner.config import ScanConfig

from .dispatch import dispatch_for
from .errors import BadOption, BatchInterrupted, WorkerDied
from .jobs import PROGRESS
from .models import Entry
from .pin import Pinned, pin_all
from .pool import Pool, gpus_for
from .service import failure
from .work import Family, Job, JobKind, bases_first

log = logging.getLogger("superweights")


@dataclass
class BatchConfig:
    address: str | None = None  # None: start Ray here; "auto" or "ray://host:10001": connect
    local: bool = False  # workers as processes of this machine, without Ray
    workers: int | None = None  # workers at once (default: one per GPU, else 2 on CPUs)
    gpus: float | None = None  # GPUs per worker; None: whole GPU unless the model's size says less
    cpus: float = 1.0
    timeout: float = 6 * 3600.0  # per model, seconds (a models-file line can set its own)
    retries: int = 2  # when a worker process dies (not when a model fails by itself)
    scan: ScanConfig = field(default_factory=ScanConfig)  # sent whole with every model (per-model options applied)
    rescan: bool = False  # scan every model, even one already scanned with this configuration
    progress: bool = True  # a bar on stderr
    lines: bool = False  # a `progress:` line on stdout per finished model (a job's logs; `status` reads the last)
    cache_limit: int | None = None  # bytes the batch's hub downloads may hold at once; each removed once used
    fetch_ahead: bool = True  # the next hub models download while others are scanned (one per worker)

    def __post_init__(self):
        if self.local and self.address:
            raise BadOption("--local runs without Ray: it cannot join the cluster at --address")


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (model, reason)
    compared: list[str] = field(default_factory=list)  # "base -> model" comparisons written
    retried: int = 0
    seconds: float = 0.0
    queue_s: list[float] = field(default_factory=list)  # per scan: submitted -> worker began
    scan_s: list[float] = field(default_factory=list)  # per scan: the scan itself

    saved: int = 0  # scan rows written to the catalog by this run (failed ones included)
    catalog: str = ""

    def render(self) -> str:
        lines = [f"batch finished in {self.seconds:.0f} s: {len(self.done)} scanned, {len(self.skipped)} skipped "
                 f"(already in the catalog), {len(self.failed)} failed"
                 + (f", {len(self.compared)} compared with their base" if self.compared else "")
                 + (f", {self.retried} retried after a worker died" if self.retried else "")
                 + f"; {self.saved} scan(s) saved to {self.catalog}"]
        lines += [f"  failed: {m}: {why}" for m, why in self.failed]
        return "\n".join(lines)


def completed(catalog: Catalog, scanner_version: str) -> set[tuple[str, str, str]]:
    """(model, revision, configuration fingerprint) of every successful scan by this scanner version: a model
    scanned with another configuration (thresholds, evaluation set, detect-only) is not complete."""
    from catalog import query

    _, rows = query.run(catalog, "SELECT DISTINCT model, revision, config_fingerprint FROM scans_all WHERE "
                                 "status = 'ok' AND scanner_version = $1 AND revision IS NOT NULL",
                        [scanner_version])
    return set(rows)


def config_for(entry: Entry, cfg: BatchConfig) -> ScanConfig:
    """The batch's scan configuration with this model's own options (its models-file line) applied."""
    return cfg.scan.replace(load={"trust_remote_code": entry.trust_remote_code})


def run(entries: list[Entry], catalog: Catalog, cfg: BatchConfig) -> Summary:
    """Raises BatchInterrupted (with what was saved) on Ctrl-C: every scan finished before it is in the catalog."""
    t0 = time.time()
    summary = Summary(catalog=catalog.location)
    try:
        jobs, pending, family, downloads = _plan(entries, catalog, cfg, summary)
        if jobs:
            _Loop(catalog, cfg, summary, jobs, pending, family, downloads).run()
    except KeyboardInterrupt:
        summary.seconds = time.time() - t0
        raise BatchInterrupted(f"interrupted after {summary.seconds:.0f} s: {summary.saved} scan(s) saved to "
                               f"{summary.catalog} ({len(summary.done)} ok, {len(summary.failed)} failed); run the "
                               "same command again to go on where it stopped") from None
    if summary.done or summary.failed or summary.compared:
        _compact(catalog)
    summary.seconds = time.time() - t0
    return summary


def _compact(catalog: Catalog) -> None:
    """Writers never compact (two compactions at once duplicate rows: Catalog.compact); a batch does, at its
    end, with the safe retention. A failure is a warning: the scans are already safe."""
    from catalog.errors import CatalogUnavailable

    try:
        catalog.compact()
    except CatalogUnavailable as e:
        log.warning("catalog: could not compact: %s", e)


def _plan(entries: list[Entry], catalog: Catalog, cfg: BatchConfig, summary: Summary):
    """Pin every model (those that cannot be pinned are failed rows at once), skip what is complete, and
    order the rest: (jobs, models whose scan is owed, the batch's Family)."""
    pinned = pin_all(entries, cfg.progress)
    unpinned = [p for p in pinned if p.error is not None]
    if unpinned:  # one write for all of them: a long list of missing paths is not thousands of commits
        catalog.write_scans([failure(p.entry.spec, p.error, time.time(), config_for(p.entry, cfg),
                                     revision=p.revision, base=p.entry.base) for p in unpinned])
    summary.saved += len(unpinned)
    for p in unpinned:
        summary.failed.append((p.entry.name, f"{type(p.error).__name__}: {p.error}"))
    done = set() if cfg.rescan else completed(catalog, SCANNER_VERSION)
    todo = []
    for p in pinned:
        if p.error is None:
            key = (p.model, p.revision, config_for(p.entry, cfg).fingerprint())
            (summary.skipped.append(p.entry.name) if key in done else todo.append(p))
    downloads = _downloads(catalog, cfg, todo, summary)
    family = Family([p for p in pinned if p.error is None], catalog)
    pending = {p.model for p in todo}  # models whose scan has not finished
    jobs = deque(Job(JobKind.SCAN, p, waits_for=p.entry.base if p.entry.base in pending else None)
                 for p in bases_first(todo))
    jobs.extend(family.ready(pending))  # comparisons a run before this one left undone
    if cfg.lines:
        print(f"{PROGRESS}0/{len(jobs)} done, {len(summary.skipped)} skipped (already in the catalog), "
              f"{len(unpinned)} failed before scanning", flush=True)
    return jobs, pending, family, downloads


def _downloads(catalog: Catalog, cfg: BatchConfig, todo: list, summary: Summary) -> dict:
    """The hub revisions this batch downloads (not cached before it) -> their bytes (read with --cache-limit;
    else 0); a model larger than the limit is a failed row, and leaves `todo`."""
    from .cache import cached, hub_bytes

    out, big = {}, []
    for p in list(todo):
        if p.source != "hub" or cached(p.repo_id, p.revision):
            continue
        size = (hub_bytes(p.entry.spec, p.repo_id, p.revision) or 0) if cfg.cache_limit is not None else 0
        if cfg.cache_limit is not None and size > cfg.cache_limit:
            todo.remove(p)
            big.append(p)
        out[(p.repo_id, p.revision)] = size
    if big:
        catalog.write_scans([failure(p.entry.spec, f"its files take {out[(p.repo_id, p.revision)]:,} bytes, more than "
                                     f"--cache-limit ({cfg.cache_limit:,})", time.time(), config_for(p.entry, cfg),
                                     error_type="CacheLimit", revision=p.revision, repo_id=p.repo_id, source=p.source,
                                     base=p.entry.base) for p in big])
        summary.saved += len(big)
        summary.failed += [(p.entry.name, "CacheLimit: larger than --cache-limit") for p in big]
    return out


@dataclass
class _Flight:
    job: Job
    actor: object
    share: float  # GPUs it holds
    submitted: float
    deadline: float


class _Loop:
    """Hands jobs to actors as they free up, writes each result as it comes, retries a job whose worker died,
    stops one past its time limit, and queues a derivative's comparison once it and its base are scanned."""

    def __init__(self, catalog: Catalog, cfg: BatchConfig, summary: Summary, jobs: deque, pending: set,
                 family: Family, downloads: dict):
        from .cache import Downloads

        self.catalog, self.cfg, self.summary = catalog, cfg, summary
        self.jobs, self.pending, self.family = jobs, pending, family
        self.downloads = Downloads(downloads, cfg.cache_limit, 0)
        self.attempts: Counter = Counter()
        self.inflight: dict = {}  # ref -> _Flight

    def run(self) -> None:
        self.dispatch = dispatch_for(self.cfg)
        res = self.dispatch.start()
        self.gpu_bytes = res.gpu_bytes
        self.pool = Pool(self.cfg.workers or (max(1, int(res.gpus)) if res.gpus else 2), self.cfg, res.gpus, res.cpus,
                         self.dispatch)
        # one ahead per worker, on this node's cache: only where that is the workers' cache (a one-node cluster)
        self.downloads.ahead = self.pool.size if self.cfg.fetch_ahead and res.nodes == 1 else 0
        self.bar = _bar(len(self.jobs), self.cfg.progress)
        self.finished, self.total = 0, len(self.jobs)  # the bar's counts, which a disabled bar does not keep
        try:
            while self.jobs or self.inflight:
                self.start()
                if not self.inflight:
                    break  # nothing runs and nothing can start (cannot happen: the models file has no loops)
                wait = min(f.deadline for f in self.inflight.values()) - time.time()
                for ref in self.dispatch.wait(list(self.inflight), max(0.05, min(5.0, wait))):
                    self.collect(ref)
                self.expire()
        finally:
            self.bar.close()
            self.downloads.close()
            for f in self.inflight.values():
                self.pool.kill(f.actor)
            self.pool.close()
            self.dispatch.close()

    def start(self) -> None:
        """Start every job that may start (its base scanned) while an actor can be had."""
        while self.jobs:
            job = next((j for j in self.jobs if j.waits_for not in self.pending and self.downloads.fits(j)), None)
            if job is None:
                break  # every job left waits for a base still being scanned, or for room in the cache
            share = gpus_for(job.model, self.cfg, self.gpu_bytes)
            actor = self.pool.take(share)
            if actor is None:
                break
            self.jobs.remove(job)
            cfg = config_for(job.model.entry, self.cfg)
            evict = self.downloads.start(job)
            ref = self.dispatch.call(actor, "scan", job.model.entry.spec, job.model.revision, cfg, job.model.entry.base,
                                     evict) if job.kind is JobKind.SCAN else \
                self.dispatch.call(actor, "compare", *job.comparison.sides(), cfg, evict)
            now = time.time()
            self.inflight[ref] = _Flight(job, actor, share, now, now + self.limit(job))
            self.bar.set_postfix_str(job.name[-40:])
        self.downloads.fetch_ahead(self.jobs)  # the next ones download while these are scanned

    def limit(self, job: Job) -> float:
        return job.model.entry.timeout or self.cfg.timeout

    def collect(self, ref) -> None:
        f = self.inflight.pop(ref)
        try:
            row = self.dispatch.result(ref)
        except WorkerDied as e:  # the worker process died: a new one tries again
            self.pool.kill(f.actor)
            self.attempts[f.job.name] += 1
            if self.attempts[f.job.name] <= self.cfg.retries:
                self.summary.retried += 1
                log.warning("worker died while working on %s; retrying (%d/%d)", f.job.name,
                            self.attempts[f.job.name], self.cfg.retries)
                self.jobs.appendleft(f.job)
                return
            row = self.failed(f, f"the worker died {self.attempts[f.job.name]} times: {e}", "WorkerDied")
        else:
            self.pool.give(f.actor, f.share)
            if f.job.kind is JobKind.SCAN:
                took = row.get("duration_s") or 0.0
                self.summary.scan_s.append(took)
                self.summary.queue_s.append(max(0.0, time.time() - f.submitted - took))
        self.finish(f.job, row)

    def expire(self) -> None:
        """Stop what is past its time limit (its process, so its GPU is free) and record it."""
        now = time.time()
        for ref, f in list(self.inflight.items()):
            if now >= f.deadline:
                self.inflight.pop(ref)
                self.pool.kill(f.actor)
                self.finish(f.job, self.failed(f, f"time limit of {self.limit(f.job):g} s exceeded", "TimeLimit"))

    def failed(self, f: _Flight, text: str, error_type: str) -> dict:
        from .lineage import failed_lineage

        if f.job.kind is JobKind.COMPARE:
            c = f.job.comparison
            return failed_lineage(c.base.model, c.derivative.model, text, c.declared, c.base.scan_id,
                                  c.derivative.scan_id, error_type=error_type)
        p = f.job.model
        return failure(p.entry.spec, text, f.submitted, config_for(p.entry, self.cfg), error_type=error_type,
                       revision=p.revision, repo_id=p.repo_id, source=p.source, base=p.entry.base)

    def finish(self, job: Job, row: dict) -> None:
        self.downloads.done(job)
        if job.kind is JobKind.COMPARE:
            self.catalog.write("lineage", [row])
            (self.summary.compared.append(job.name) if row["status"] == "ok" else
             self.summary.failed.append((job.name, f"{row['error_type']}: {row['error']}")))
        else:
            _record(self.catalog, row, job.model, self.summary)
            self.pending.discard(job.model.model)
            ok = row["status"] == "ok" and self.family.concerns(job.model, row)
            new = self.family.ready(self.pending) if ok else []
            self.jobs.extendleft(reversed(new))  # a derivative's comparison runs as soon as both are scanned
            self.bar.total += len(new)
            self.total += len(new)
        self.bar.update(1)
        self.finished += 1
        if self.cfg.lines:
            print(f"{PROGRESS}{self.finished}/{self.total} done ({len(self.summary.done)} scanned, "
                  f"{len(self.summary.failed)} failed, {len(self.summary.compared)} compared), {len(self.inflight)} "
                  f"running, {len(self.jobs)} waiting; last: {job.name} {row['status']}"
                  + (f"; {self.downloads.budget.render()}" if self.downloads.budget is not None else "")
                  + (f"; {self.downloads.fetched} fetched ahead" if self.downloads.fetched else ""), flush=True)


def _record(catalog: Catalog, row: dict, p: Pinned, summary: Summary) -> None:
    catalog.write_scan(row)  # at once: a crash of this driver loses only the scans in flight
    summary.saved += 1
    if row["status"] == "ok":
        summary.done.append(p.entry.name)
    else:
        summary.failed.append((p.entry.name, f"{row['error_type']}: {row['error']}"))


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="model", disable=not enabled, dynamic_ncols=True, leave=True)
