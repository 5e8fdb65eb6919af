"""The scan worker: a long-lived process (a Ray actor) that keeps torch and transformers imported and
scans one model at a time, returning the catalog row (a failure of the model is a `failed` row)."""
from __future__ import annotations

import gc
import os
import socket

from scanner.config import ScanConfig


class ScanWorker:
    def __init__(self):
        from scanner.cpus import set_threads
        from scanner.scan import scan_source  # noqa: F401  (imports torch and transformers once, here)

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        set_threads()  # Ray (and local dispatch) set OMP_NUM_THREADS to the worker's CPUs: share, don't oversubscribe
        self.host = socket.gethostname()

    def pid(self) -> int:
        return os.getpid()

    def scan(self, spec: str, revision: str, cfg: ScanConfig, base: str | None = None,
             evict: tuple = ()) -> dict:
        """Exactly the pinned model, with the whole configuration -> one catalog row. Only the model's own
        failures become rows here; if this process dies (killed, out of host memory) the batch driver sees
        the actor die and retries elsewhere. `evict`: hub revisions (repo, sha) to remove from the cache after
        (--cache-limit)."""
        from .service import scan_to_row

        try:
            return scan_to_row(spec, revision, cfg, pinned=True, host=self.host, base=base, base_from="models_file")[0]
        finally:
            _free(evict)

    def compare(self, a, b, declared: str | None, cfg: ScanConfig, evict: tuple = ()) -> dict:
        """The `lineage` row of model B (a `cluster.lineage.Side`) against its base A; a failure is a row."""
        from .lineage import compare_sides

        try:
            return compare_sides(a, b, cfg, declared)
        finally:
            _free(evict)


def _free(evict: tuple = ()) -> None:
    """Return the model's memory before the next one (CUDA caches it otherwise), and its files to the disk."""
    from .cache import evict as remove

    for repo_id, sha in evict:
        remove(repo_id, sha)
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
