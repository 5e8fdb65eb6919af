"""The batch run loop: pin, skip what is complete, fan out to Ray actors, write each scan as it finishes.

A local run starts Ray in this process; a cluster run connects to one (`address`). Nothing else differs.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from catalog.store import Catalog
from scanner import __version__ as SCANNER_VERSION
from scanner.config import ScanConfig

from .errors import ClusterTooSmall
from .models import Entry
from .pin import Pinned, pin_all
from .service import failure
from .work import Family, Job, bases_first

log = logging.getLogger("superweights")


@dataclass
class BatchConfig:
    address: str | None = None  # None: start Ray here; "auto" or "ray://host:10001": connect
    workers: int | None = None  # actors at once (default: one per GPU, else 2 on CPUs)
    gpus: float | None = None  # GPUs per actor; None: whole GPU unless the model's size says less
    cpus: float = 1.0
    timeout: float = 6 * 3600.0  # per model, seconds (a models-file line can set its own)
    retries: int = 2  # when a worker process dies (not when a model fails by itself)
    scan: ScanConfig = field(default_factory=ScanConfig)  # sent whole with every model (per-model options applied)
    rescan: bool = False  # scan every model, even one already scanned with this configuration
    progress: bool = True


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

    def render(self) -> str:
        lines = [f"batch finished in {self.seconds:.0f} s: {len(self.done)} scanned, {len(self.skipped)} skipped "
                 f"(already in the catalog), {len(self.failed)} failed"
                 + (f", {len(self.compared)} compared with their base" if self.compared else "")
                 + (f", {self.retried} retried after a worker died" if self.retried else "")]
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


def weight_bytes(p: Pinned) -> int | None:
    """Bytes of weights where they are known without downloading: files on this machine, or the hub's
    parameter count (at 2 bytes each: workers compute in bfloat16 on GPUs)."""
    if p.path is None or not p.path.exists():
        return 2 * p.params if p.params else None
    files = [p.path] if p.path.is_file() else [f for f in p.path.iterdir()
                                               if f.suffix in (".safetensors", ".bin", ".gguf")]
    return sum(f.stat().st_size for f in files)


def gpus_for(p: Pinned, cfg: BatchConfig, gpu_bytes: float | None) -> float:
    """A whole GPU by default; a quarter-GPU step above what the weights need (x2.5 for activations and
    the upcast layer) when their size is known; none when the cluster has no GPU."""
    if not gpu_bytes:
        return 0.0
    if cfg.gpus is not None:
        return cfg.gpus
    size = weight_bytes(p)
    if size is None:
        return 1.0
    return min(1.0, max(0.25, math.ceil(size * 2.5 / gpu_bytes * 4) / 4))


class Pool:
    """Actors by GPU share: at most `size` alive, and never more GPU or CPU asked for than the cluster has
    (an idle actor holds its share, so an actor that cannot be placed would wait forever). An idle actor
    of another share is stopped when its resources are needed."""

    def __init__(self, size: int, cfg: BatchConfig, gpus: float, cpus: float):
        self.size, self.cfg, self.gpus, self.cpus = size, cfg, gpus, cpus
        self.idle: dict[float, list] = {}
        self.shares: dict = {}  # actor -> its GPU share, for every live actor

    def _fits(self, share: float) -> bool:
        used_gpu = sum(self.shares.values())
        return (len(self.shares) < self.size and used_gpu + share <= self.gpus + 1e-9
                and (len(self.shares) + 1) * self.cfg.cpus <= self.cpus + 1e-9)

    def take(self, share: float):
        import ray

        from .worker import ScanWorker

        if self.idle.get(share):
            return self.idle[share].pop()
        for other, actors in self.idle.items():  # make room by stopping idle actors of other shares
            while actors and not self._fits(share):
                self.kill(actors.pop())
        if not self._fits(share):
            if not self.shares:
                raise ClusterTooSmall(f"the cluster cannot hold one scan actor ({share:g} GPU, {self.cfg.cpus:g} CPU)")
            return None
        actor = ray.remote(ScanWorker).options(num_gpus=share, num_cpus=self.cfg.cpus, max_restarts=0).remote()
        self.shares[actor] = share
        return actor

    def give(self, actor, share: float) -> None:
        self.idle.setdefault(share, []).append(actor)

    def kill(self, actor) -> None:
        import ray

        self.shares.pop(actor, None)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001  already dead
            pass

    def close(self) -> None:
        for actors in self.idle.values():
            while actors:
                self.kill(actors.pop())


def _init_ray(cfg: BatchConfig) -> tuple[float, float, float | None]:
    """Start or join Ray; returns its GPUs, its CPUs and the memory of one GPU (None if unknown)."""
    import ray

    if not ray.is_initialized():
        kw = dict(address=cfg.address, log_to_driver=False, include_dashboard=False) if cfg.address else \
            dict(log_to_driver=False, include_dashboard=False)
        ray.init(**kw)
    res = ray.cluster_resources()
    gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
    mem = None
    if gpus:
        try:
            import torch

            mem = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001
            mem = None
        mem = mem or float(os.environ.get("SUPERWEIGHTS_GPU_BYTES", 80e9))  # a head without a GPU: assume 80 GB
    return gpus, cpus, mem


def config_for(entry: Entry, cfg: BatchConfig) -> ScanConfig:
    """The batch's scan configuration with this model's own options (its models-file line) applied."""
    return cfg.scan.replace(load={"trust_remote_code": entry.trust_remote_code})


def run(entries: list[Entry], catalog: Catalog, cfg: BatchConfig) -> Summary:
    import ray
    from ray.exceptions import RayActorError

    from .lineage import failed_lineage

    t0 = time.time()
    summary = Summary()
    pinned = pin_all(entries, cfg.progress)
    unpinned = [p for p in pinned if p.error is not None]
    if unpinned:  # one write for all of them: a long list of missing paths is not thousands of commits
        catalog.write_scans([failure(p.entry.spec, p.error, time.time(), config_for(p.entry, cfg),
                                     revision=p.revision, base=p.entry.base) for p in unpinned])
    for p in unpinned:
        summary.failed.append((p.entry.name, f"{type(p.error).__name__}: {p.error}"))
    done = set() if cfg.rescan else completed(catalog, SCANNER_VERSION)
    todo = []
    for p in pinned:
        if p.error is None:
            key = (p.model, p.revision, config_for(p.entry, cfg).fingerprint())
            (summary.skipped.append(p.entry.name) if key in done else todo.append(p))
    family = Family([p for p in pinned if p.error is None], catalog)
    pending = {p.model for p in todo}  # models whose scan has not finished
    jobs = deque(Job("scan", p, waits_for=p.entry.base if p.entry.base in pending else None) for p in bases_first(todo))
    jobs.extend(family.ready(pending))  # comparisons a run before this one left undone
    if not jobs:
        summary.seconds = time.time() - t0
        return summary

    n_gpus, n_cpus, gpu_bytes = _init_ray(cfg)
    size = cfg.workers or (max(1, int(n_gpus)) if n_gpus else 2)
    pool = Pool(size, cfg, n_gpus, n_cpus)
    attempts: Counter = Counter()
    inflight: dict = {}  # ref -> (job, actor, gpus, submitted, deadline)
    bar = _bar(len(jobs), cfg.progress)

    def failed(job: Job, text: str, error_type: str, submitted: float):
        if job.kind == "compare":
            a, b, declared = job.compare
            return failed_lineage(a.model, b.model, text, declared, a.scan_id, b.scan_id, error_type=error_type)
        p = job.p
        return failure(p.entry.spec, text, submitted, config_for(p.entry, cfg), error_type=error_type,
                       revision=p.revision, repo_id=p.repo_id, source=p.source, base=p.entry.base)

    def finish(job: Job, row: dict) -> None:
        if job.kind == "compare":
            catalog.write_lineage([row])
            (summary.compared.append(job.name) if row["status"] == "ok" else
             summary.failed.append((job.name, f"{row['error_type']}: {row['error']}")))
        else:
            _record(catalog, row, job.p, summary)
            pending.discard(job.p.model)
            new = family.ready(pending) if row["status"] == "ok" and family.concerns(job.p, row) else []
            jobs.extendleft(reversed(new))  # a derivative's comparison runs as soon as both are scanned
            bar.total += len(new)
        bar.update(1)

    try:
        while jobs or inflight:
            while jobs:
                job = next((j for j in jobs if j.waits_for not in pending), None)
                if job is None:
                    break  # every job left waits for a base still being scanned
                share = gpus_for(job.p, cfg, gpu_bytes)
                actor = pool.take(share)
                if actor is None:
                    break
                jobs.remove(job)
                limit = job.p.entry.timeout or cfg.timeout
                ref = actor.scan.remote(job.p.entry.spec, job.p.revision, config_for(job.p.entry, cfg),
                                        job.p.entry.base) if job.kind == "scan" else \
                    actor.compare.remote(*job.compare, config_for(job.p.entry, cfg))
                inflight[ref] = (job, actor, share, time.time(), time.time() + limit)
                bar.set_postfix_str(job.name[-40:])
            if not inflight:
                break  # nothing runs and nothing can start (cannot happen: the models file has no loops)
            next_deadline = min(v[4] for v in inflight.values())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=max(0.05, min(5.0, next_deadline - time.time())))
            for ref in ready:
                job, actor, share, submitted, _ = inflight.pop(ref)
                try:
                    row = ray.get(ref)
                except RayActorError as e:  # the worker process died: a new one tries again
                    pool.kill(actor)
                    attempts[job.name] += 1
                    if attempts[job.name] <= cfg.retries:
                        summary.retried += 1
                        log.warning("worker died while working on %s; retrying (%d/%d)", job.name,
                                    attempts[job.name], cfg.retries)
                        jobs.appendleft(job)
                        continue
                    row = failed(job, f"the worker died {attempts[job.name]} times: {str(e).splitlines()[0][:200]}",
                                 "WorkerDied", submitted)
                else:
                    pool.give(actor, share)
                    if job.kind == "scan":
                        summary.scan_s.append(row.get("duration_s") or 0.0)
                        summary.queue_s.append(max(0.0, time.time() - submitted - (row.get("duration_s") or 0.0)))
                finish(job, row)
            now = time.time()
            for ref, (job, actor, share, submitted, deadline) in list(inflight.items()):
                if now >= deadline:  # past its time limit: stop the process, free its GPU
                    inflight.pop(ref)
                    pool.kill(actor)
                    limit = job.p.entry.timeout or cfg.timeout
                    finish(job, failed(job, f"time limit of {limit:g} s exceeded", "TimeLimit", submitted))
    finally:
        bar.close()
        for ref, (job, actor, *_rest) in inflight.items():
            pool.kill(actor)
        pool.close()
    summary.seconds = time.time() - t0
    return summary


def _record(catalog: Catalog, row: dict, p: Pinned, summary: Summary) -> None:
    catalog.write_scan(row)  # at once: a crash of this driver loses only the scans in flight
    if row["status"] == "ok":
        summary.done.append(p.entry.name)
    else:
        summary.failed.append((p.entry.name, f"{row['error_type']}: {row['error']}"))


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="model", disable=not enabled, dynamic_ncols=True, leave=True)
