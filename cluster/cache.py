"""The batch's hub downloads. Fetched one ahead: while a worker scans a model, the next hub models in the queue
(one per worker) download on a thread of the driver, into the cache the workers read (a node's), so the link
and the CPUs or GPUs work at once. With `--cache-limit SIZE` (a night of more models than the disk holds) each
model the batch downloads is removed from the cache once scanned (and compared); what was cached before the
batch stays; a model starts, or is fetched ahead, only when its files (the hub's sizes, read while pinning) fit
beside those the batch holds, so the cache never holds more of the batch's files than the limit.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from scanner.load.hub import cache_folder
from .work import Job, JobKind


def cached(repo_id: str, sha: str) -> bool:
    """The revision's snapshot is in the local cache (downloaded before, by anyone)."""
    return (cache_folder(repo_id) / "snapshots" / sha).is_dir()


def hub_bytes(spec: str, repo_id: str, sha: str) -> int | None:
    """What a scan of hub id `spec` downloads of the revision (`scanner.load.hub.hub_patterns`), by the
    hub's tree listing; None when the hub does not say."""
    from huggingface_hub import HfApi

    from scanner.load.hub import hub_patterns

    try:
        tree = HfApi().list_repo_tree(repo_id, revision=sha, recursive=True)
        sizes = [(f.path, getattr(f, "size", None)) for f in tree]
        patterns = hub_patterns(spec, [path for path, _ in sizes])
    except Exception:  # noqa: BLE001  no listing: the model is scheduled as if it were small
        return None
    wanted = [size for path, size in sizes if any(fnmatch.fnmatch(path, p) for p in patterns)]
    return None if any(s is None for s in wanted) else sum(wanted)


def evict(repo_id: str, sha: str) -> int:
    """Remove the revision from the cache (its snapshot and the blobs no other revision uses); bytes freed."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir()
    except Exception:  # noqa: BLE001  no cache folder: nothing to free
        return 0
    hashes = [r.commit_hash for repo in info.repos if repo.repo_id == repo_id and repo.repo_type == "model"
              for r in repo.revisions if r.commit_hash == sha]
    if not hashes:
        return 0
    strategy = info.delete_revisions(*hashes)
    strategy.execute()
    return strategy.expected_freed_size


@dataclass
class Budget:
    """The bytes of the batch's downloads in flight, against the limit."""
    limit: int
    held: dict = field(default_factory=dict)  # job name -> bytes
    peak: int = 0  # the most held at once

    def fits(self, size: int) -> bool:
        return not self.held or sum(self.held.values()) + size <= self.limit

    def take(self, name: str, size: int) -> None:
        self.held[name] = size
        self.peak = max(self.peak, sum(self.held.values()))

    def give(self, name: str) -> None:
        self.held.pop(name, None)

    def render(self) -> str:
        return f"cache: {sum(self.held.values()) / 1e6:.2f} MB of the batch's downloads held, at most " \
               f"{self.peak / 1e6:.2f} MB at once, limit {self.limit / 1e6:.2f} MB"


class Downloads:
    """Which hub revisions a job brings into the cache, room for them under the limit, and the fetches ahead."""

    def __init__(self, sizes: dict, limit: int | None, ahead: int):
        self.sizes = sizes  # (repo, sha) -> bytes of each hub revision this batch downloads (0: unknown)
        self.budget = Budget(limit) if limit is not None else None
        self.ahead = ahead  # fetches ahead at most (one per worker)
        self.fetching: dict = {}  # job name -> Future of its fetch
        self.fetched = 0
        self._pool = None

    def of(self, job: Job) -> tuple:
        """The hub revisions the job downloads for this batch (removed after it under a limit)."""
        if job.kind is JobKind.SCAN:
            key = (job.model.repo_id, job.model.revision)
            return (key,) if key in self.sizes else ()
        from scanner.load.hub import hub_parts
        from scanner.load.sources import is_hub_id

        sides = [(hub_parts(s.spec)[0], s.revision) for s in job.comparison.sides()[:2]]
        return tuple(k for k in sides if k in self.sizes or (is_hub_id(k[0]) and not cached(*k)))

    def _bytes(self, keys: tuple) -> int:
        return sum(self.sizes.get(k, 0) for k in keys)

    def fits(self, job: Job) -> bool:
        return self.budget is None or job.name in self.budget.held or self.budget.fits(self._bytes(self.of(job)))

    def start(self, job: Job) -> tuple:
        """The job starts: its room is taken; what its worker removes after it (under a limit)."""
        self.fetching.pop(job.name, None)
        if self.budget is None:
            return ()
        keys = self.of(job)
        self.budget.take(job.name, self._bytes(keys))
        return keys

    def done(self, job: Job) -> None:
        if self.budget is not None:
            self.budget.give(job.name)

    def fetch_ahead(self, queue) -> None:
        """Start fetching the next scans' hub files, in queue order, up to `ahead` at once, where they fit."""
        from concurrent.futures import ThreadPoolExecutor

        for job in list(queue):
            if sum(not f.done() for f in self.fetching.values()) >= self.ahead:
                return
            keys = self.of(job) if job.kind is JobKind.SCAN and job.name not in self.fetching else ()
            if not keys or not self.fits(job):
                continue
            if self.budget is not None:
                self.budget.take(job.name, self._bytes(keys))
            self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="fetch-ahead")
            self.fetching[job.name] = self._pool.submit(_fetch, job.model.entry.spec, job.model.repo_id,
                                                     job.model.revision)
            self.fetched += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _fetch(spec: str, repo_id: str, sha: str) -> None:
    """The files a scan reads, into the cache; a failure is left for the worker to meet and record."""
    from scanner.load.hub import download, hub_files, hub_patterns

    try:
        download(spec, repo_id, sha, hub_patterns(spec, hub_files(spec, repo_id, sha)))
    except Exception:  # noqa: BLE001  the worker downloads again and names what went wrong
        pass
