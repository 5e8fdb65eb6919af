"""The hub side of resolving a model: hub ids' parts, what a scan downloads of a revision, the hub's answers
as named errors, and downloads that fail as HubUnavailable once the hub has not answered its retries (a
server that stops in the middle of a batch). Nothing here imports torch or transformers."""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import HubUnavailable, ModelNotFound, NotAModel

RETRIES = 3  # tries of the hub's API before a pin fails (or comes from the cache); waits 1 s, 2 s between

# README.md: the model card, whose metadata may name the base model
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "README.md"]


def hub_parts(spec: str) -> tuple[str, str | None, str | None]:
    """(repo id, GGUF file asked for, revision) of a hub id `org/name[:FILE][@REVISION]`."""
    head, _, revision = spec.partition("@")
    repo_id, _, selector = head.partition(":")
    return repo_id, selector or None, revision or None


def pick_gguf(spec: str, files: list[str], selector: str | None) -> str:
    """The .gguf file of a hub repository's `files` that `selector` names: its file name, else the one file
    whose name holds it (any case: `Q4_K_M`); without a selector, the repository's only .gguf file."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    named = [f for f in ggufs if selector in (f, f.rpartition("/")[2])] if selector else []
    hits = named or ([f for f in ggufs if selector.lower() in f.lower()] if selector else ggufs)
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(ggufs[:8]) + (f" and {len(ggufs) - 8} more" if len(ggufs) > 8 else "")
    if not ggufs:
        raise NotAModel(f"{spec}: the repository holds no .gguf file" + ("" if selector else " and no config.json"))
    if not hits:
        raise ModelNotFound(f"{spec}: no .gguf file of the repository matches {selector!r}; it holds {shown}")
    raise NotAModel(f"{spec}: {len(hits)} .gguf files {'match ' + repr(selector) if selector else 'and no config.json'}"
                    f" ({shown}); name one: {hub_parts(spec)[0]}:FILE")


@contextmanager
def hub_errors(repo_id: str, rev: str | None) -> Iterator[None]:
    """The hub's answers that mean "no such model" as ModelNotFound; anything else passes through."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except GatedRepoError:
        raise ModelNotFound(f"{repo_id} is gated: accept its conditions on its hub page with your account, then "
                            "give that account's token (HF_TOKEN, or `hf auth login`)") from None
    except RevisionNotFoundError:
        raise ModelNotFound(f"{repo_id} has no revision {rev!r}") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"no model {repo_id!r} on the hub (or it is private and you are not logged in)") from None


def hub_patterns(spec: str, files: list[str]) -> list[str]:
    """What a scan of hub id `spec` downloads of a revision holding `files`: its weights, tokenizer and card, or
    the GGUF file it names (a repository of GGUF files without config.json: its only one) and the card."""
    selector = hub_parts(spec)[1]
    if selector is None and "config.json" in files:
        return WEIGHT_PATTERNS
    return [pick_gguf(spec, files, selector), "README.md"]


def hub_files(spec: str, repo_id: str, rev: str | None) -> list[str]:
    """The file names of a hub revision, from the hub (HubUnavailable when it does not answer)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        with hub_errors(repo_id, rev):
            return HfApi().list_repo_files(repo_id, revision=rev)
    except HfHubHTTPError as e:
        raise HubUnavailable(f"{spec}: the hub answered {getattr(e.response, 'status_code', '?')}") from None
    except Exception as e:  # noqa: BLE001  transport errors of huggingface_hub's client are not OSError
        if isinstance(e, (ModelNotFound, NotAModel)):
            raise
        raise HubUnavailable(f"{spec}: cannot reach the hub ({str(e).splitlines()[0][:80] or type(e).__name__})") \
            from None


def cache_folder(repo_id: str) -> Path:
    """The model's folder in huggingface_hub's cache (refs/, snapshots/, blobs/)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def cached_ggufs(repo_id: str, rev: str | None, selector: str | None) -> list[str]:
    """A pinned GGUF already in the cache (workers resolve a sha the driver pinned): its file, no hub call."""
    if not selector or not rev or not re.fullmatch(r"[0-9a-f]{40}", rev):
        return []
    snap = cache_folder(repo_id) / "snapshots" / rev
    names = [g.name for g in snap.glob("*.gguf")]
    try:
        return [pick_gguf(repo_id, names, selector), "README.md"]
    except (ModelNotFound, NotAModel):
        return []


def transient() -> tuple[type, ...]:
    """The errors of a hub that did not answer (refused, reset, timed out): OSError, and huggingface_hub's HTTP
    client's transport errors, which are not OSError."""
    import huggingface_hub.utils._http as http

    client = getattr(http, "httpx2", None) or getattr(http, "httpx", None)
    return (OSError,) + ((client.TransportError,) if client is not None else ())


def download(spec: str, repo_id: str, rev: str | None, patterns: list[str]) -> Path:
    """The snapshot folder of `rev` holding `patterns`, downloaded where the cache lacks them (a cut download
    resumes from its partial file). huggingface_hub tries a hub that does not answer again with backoff (5
    retries over 23 s); then HubUnavailable. Offline (HF_HUB_OFFLINE) the cache alone answers."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        with hub_errors(repo_id, rev):
            return Path(snapshot_download(repo_id, revision=rev, allow_patterns=patterns))
    except LocalEntryNotFoundError:  # huggingface_hub's word for "no answer, and not in the cache"
        if constants.HF_HUB_OFFLINE:
            raise HubUnavailable(f"{spec} is not in the local hub cache and the hub may not be asked "
                                 "(offline: HF_HUB_OFFLINE is set)") from None
        why = "does not answer"
    except HfHubHTTPError as e:  # an answer that names no missing model
        why = f"answered {getattr(e.response, 'status_code', '?')}"
    except transient() as e:
        why = f"does not answer ({str(e).splitlines()[0][:80] or type(e).__name__})"
    raise HubUnavailable(f"{spec}: the hub at {constants.ENDPOINT} {why} after retries with backoff, and the local "
                         "cache lacks its files")
