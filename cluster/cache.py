"""`batch --cache-limit SIZE`: a night of more models than the disk holds. Each hub model the batch downloads is
removed from the Hugging Face cache once it is scanned (and compared); what was cached before the batch stays.
A model starts only when the bytes of the batch's downloads in flight plus its own (the hub's file sizes, read
while pinning) fit the limit, so the cache never holds more of the batch's files than the limit.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


def cached(repo_id: str, sha: str) -> bool:
    """The revision's snapshot is in the local cache (downloaded before, by anyone)."""
    from huggingface_hub import constants

    from pathlib import Path

    return (Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha).is_dir()


def hub_bytes(repo_id: str, sha: str) -> int | None:
    """What a scan downloads of the revision: its files that the scanner fetches, by the hub's tree listing;
    None when the hub does not say."""
    from huggingface_hub import HfApi

    from scanner.load.sources import WEIGHT_PATTERNS

    try:
        tree = HfApi().list_repo_tree(repo_id, revision=sha, recursive=True)
        sizes = [(f.path, getattr(f, "size", None)) for f in tree]
    except Exception:  # noqa: BLE001  no listing: the model is scheduled as if it were small
        return None
    wanted = [size for path, size in sizes if any(fnmatch.fnmatch(path, p) for p in WEIGHT_PATTERNS)]
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
