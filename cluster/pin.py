"""Pin each model to a revision before scanning, without downloading weights.

Hub ids resolve to a commit sha through the hub API, or offline through the local cache's refs;
local folders, .gguf files and packaged models get the scanner's content fingerprint.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from scanner.errors import HubUnavailable, ModelNotFound, ScanError
from scanner.load.hub import RETRIES, cache_folder, hub_errors, transient

from .errors import InternalError
from .models import Entry

SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Pinned:
    entry: Entry
    model: str  # the catalog's model name (hub id, else as written)
    revision: str | None
    source: str | None = None
    repo_id: str | None = None
    path: Path | None = None  # local files (folder, or the .gguf file), where known
    params: int | None = None  # parameter count, where the hub's safetensors metadata gives it
    error: ScanError | None = None  # could not be pinned: the batch records it as a failed scan


def _cached_sha(repo_id: str, revision: str) -> str | None:
    ref = cache_folder(repo_id) / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if SHA.match(sha) else None


def _remember(repo_id: str, revision: str, sha: str) -> None:
    """The revision's commit in the cache's refs, as huggingface_hub keeps them when it downloads by a branch
    (a worker downloads by the sha): a later run pins from them while the hub does not answer."""
    if SHA.match(revision) or not SHA.match(sha or ""):
        return
    ref = cache_folder(repo_id) / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(sha)
        os.replace(tmp, ref)
    except OSError:
        pass  # a cache we may not write: pins need the hub then, nothing else changes


def hub_sha(repo_id: str, revision: str | None) -> tuple[str, int | None]:
    """The commit sha of a revision (branch, tag or sha), and the parameter count when the hub knows it. A hub
    that does not answer is tried RETRIES times with backoff; then the local cache's refs answer, or
    HubUnavailable names the endpoint."""
    rev = revision or "main"
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    why = "offline (HF_HUB_OFFLINE is set)"
    if not constants.HF_HUB_OFFLINE:
        for attempt in range(RETRIES):
            try:
                with hub_errors(repo_id, rev):
                    info = HfApi().model_info(repo_id, revision=rev)
                st = getattr(info, "safetensors", None)
                _remember(repo_id, rev, info.sha)
                return info.sha, (int(st.total) if st is not None and getattr(st, "total", None) else None)
            except HfHubHTTPError as e:  # the hub answered, with an error that names no missing model (5xx)
                why = f"{constants.ENDPOINT} answered {getattr(e.response, 'status_code', '?')}"
            except transient() as e:
                why = f"{constants.ENDPOINT} does not answer ({str(e).splitlines()[0][:80] or type(e).__name__})"
            if attempt + 1 < RETRIES:
                time.sleep(2 ** attempt)
        why += f" after {RETRIES} tries"
    sha = rev if SHA.match(rev) else _cached_sha(repo_id, rev)
    if sha is None:
        raise HubUnavailable(f"{repo_id}@{rev}: cannot be pinned: the hub {why}, and the local cache has no such "
                             "revision")
    return sha, None


def pin(entry: Entry) -> Pinned:
    """The revision a worker will scan: the hub's commit sha for hub ids, else the files' fingerprint
    (workers then scan exactly that, `scanner.load.sources.resolve_pinned`)."""
    from scanner.load.hub import hub_parts
    from scanner.load.sources import is_hub_id, model_name, resolve

    try:
        if is_hub_id(entry.spec):
            repo_id = hub_parts(entry.spec)[0]
            sha, params = hub_sha(repo_id, entry.revision)
            return Pinned(entry, model_name(entry.spec, repo_id, "hub"), sha, "hub", repo_id, params=params)
        src = resolve(entry.spec, entry.revision)
        return Pinned(entry, model_name(entry.spec, src.repo_id, src.kind), src.revision, src.kind,
                      src.repo_id, src.path / src.gguf_file if src.gguf_file else src.path)
    except ScanError as e:
        return Pinned(entry, entry.spec, entry.revision, error=e)
    except OSError as e:  # e.g. a folder we may not read
        return Pinned(entry, entry.spec, entry.revision, error=ModelNotFound(f"{entry.spec}: {e}"))
    except Exception as e:  # noqa: BLE001  a fault of this program: a failed row, and the batch goes on
        return Pinned(entry, entry.spec, entry.revision, error=InternalError(f"{type(e).__name__}: {e}"))




def pin_all(entries: list[Entry], progress: bool = True) -> list[Pinned]:
    """Every entry pinned, in order, several at a time (hub lookups wait on the network), with a bar."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=8) as pool, \
            tqdm(total=len(entries), desc="pinning", unit="model", disable=not progress or len(entries) < 2,
                 dynamic_ncols=True, leave=True) as bar:
        out = []
        for p in pool.map(pin, entries):
            out.append(p)
            bar.update(1)
    return out
