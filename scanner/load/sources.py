"""Resolve what the user named (a folder, a .gguf file, a hub id, a packaged model) to files on disk.

Nothing here imports torch or transformers: resolving and checking are cheap and happen before
any weights are read, so a bad input fails in milliseconds with a one-line message.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ..adapters import adapter_for
from ..errors import CorruptCheckpoint, ModelChanged, ModelNotFound, NotAModel
from . import shipped
from .gguf_header import gguf_architecture
from .hub import WEIGHT_PATTERNS, cached_ggufs, download, hub_files, hub_parts, hub_patterns, pick_gguf
from .shipped import DERIVED

# org/name[:FILE][@REVISION]; FILE picks one .gguf file of the repository (its name, or a tag in it: Q4_K_M)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.+-]+)?(@[\w./-]+)?$")


@dataclass(frozen=True)
class Source:
    spec: str  # what the user typed
    kind: str  # "local", "gguf", "hub" or "packaged"
    path: Path  # folder holding config/weights/tokenizer (for GGUF: the folder of the file)
    model_type: str
    revision: str  # hub commit sha, or "local-<hash>" fingerprint of the files
    gguf_file: str | None = None
    repo_id: str | None = None  # hub id (for packaged models: the upstream model)

    @property
    def model(self) -> str:
        """The model's name in results and the catalog (see `model_name`)."""
        return model_name(self.spec, self.repo_id, self.kind)


def model_name(spec: str, repo_id: str | None = None, kind: str | None = None) -> str:
    """A hub model is named by its repo id (and the GGUF file asked for), whatever revision syntax was typed;
    anything else as asked."""
    if kind == "hub" and repo_id:
        selector = hub_parts(spec)[1] if is_hub_id(spec) else None
        return repo_id + (f":{selector}" if selector else "")
    return spec.partition("@")[0] if is_hub_id(spec) else spec


def is_hub_id(spec: str) -> bool:
    """`org/name[@revision]` that is not a path on this machine."""
    return not spec.startswith(("pkg:", "planted:", "/", ".", "~")) and bool(HUB_ID.match(spec)) \
        and not Path(spec).expanduser().exists()


def resolve_pinned(spec: str, revision: str) -> Source:
    """Exactly what was pinned (`revision`: a hub commit, or the fingerprint of local files); an error if the
    files are no longer those."""
    if is_hub_id(spec):
        return resolve(spec, revision)
    src = resolve(spec)
    if src.revision != revision:
        raise ModelChanged(f"{spec} changed since it was pinned: its files are now {src.revision}, not {revision}")
    return src


def resolve(spec: str, revision: str | None = None) -> Source:
    """Find the model's files and check them, without loading any weights."""
    if spec.startswith("pkg:"):
        return _packaged(spec)
    if spec.startswith("planted:"):
        return _planted(spec)
    p = Path(spec).expanduser()
    if p.exists():
        if revision:
            raise NotAModel(f"--revision applies to hub ids, not to the local path {spec}")
        if p.is_file():
            if p.suffix != ".gguf":
                raise NotAModel(f"{spec} is a file but not a .gguf; give the model's folder instead")
            return _gguf(spec, p, kind="gguf")
        return _local(spec, p)
    if spec.startswith((".", "/", "~")) or not HUB_ID.match(spec):
        raise ModelNotFound(f"no such file or directory: {spec}")
    return _hub(spec, revision)


def _local(spec: str, folder: Path, kind: str = "local", revision: str | None = None,
           repo_id: str | None = None) -> Source:
    config = folder / "config.json"
    if not config.exists():
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf(spec, ggufs[0], kind=kind)
        raise NotAModel(f"{folder} is not a model folder: no config.json"
                        + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else ""))
    try:
        cfg = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotAModel(f"{config} is not valid JSON: {e}") from None
    except OSError as e:
        raise NotAModel(f"cannot read {config}: {e.strerror}") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if not isinstance(model_type, str):
        raise NotAModel(f"{config} names no model_type (a JSON object with \"model_type\": \"llama\", ...)")
    adapter_for(model_type)
    weights = sorted(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not weights and not bins:
        raise NotAModel(f"{folder} has a config.json but no weights (*.safetensors or pytorch_model*.bin)")
    for w in weights:
        check_safetensors(w)
    return Source(spec, kind, folder, model_type, revision or fingerprint([config, *weights, *bins]),
                  repo_id=repo_id)


def _gguf(spec: str, file: Path, kind: str, repo_id: str | None = None, revision: str | None = None) -> Source:
    model_type = gguf_architecture(file)
    model_type = {"gemma3": "gemma3_text"}.get(model_type, model_type)
    adapter_for(model_type)
    return Source(spec, kind, file.parent, model_type, revision or fingerprint([file]), gguf_file=file.name,
                  repo_id=repo_id)


def _packaged(spec: str) -> Source:
    name = spec[4:]
    if name in DERIVED:
        target = shipped.derived(name)
        return _local(spec, target, kind="packaged") if target.is_dir() else _gguf(spec, target, kind="packaged")
    file, repo_id = shipped.packaged_file(name)
    return _gguf(spec, file, kind="packaged", repo_id=repo_id)


def _planted(spec: str) -> Source:
    return _local(spec, shipped.planted(spec.removeprefix("planted:")), kind="planted")


def _hub(spec: str, revision: str | None) -> Source:
    repo_id, selector, at_rev = hub_parts(spec)
    if at_rev and revision and at_rev != revision:
        raise NotAModel(f"{spec}: revision given twice ({at_rev!r} and --revision {revision!r})")
    rev = at_rev or revision

    def fetch(patterns: list[str]) -> Path:
        return download(spec, repo_id, rev, patterns)

    # The snapshot folder is named by the commit sha the revision resolved to: that pins the scan.
    folder = fetch(cached_ggufs(repo_id, rev, selector) or
                   (hub_patterns(spec, hub_files(spec, repo_id, rev)) if selector else WEIGHT_PATTERNS))
    if not selector and not (folder / "config.json").exists():  # a repository of GGUF files: its only one
        folder = fetch(hub_patterns(spec, hub_files(spec, repo_id, rev)))
    ggufs = sorted(folder.glob("*.gguf")) if selector or not (folder / "config.json").exists() else []
    if ggufs:
        file = folder / pick_gguf(spec, [g.name for g in ggufs], selector)
        return _gguf(spec, file, kind="hub", repo_id=repo_id, revision=folder.name)
    return _local(spec, folder, kind="hub", revision=folder.name, repo_id=repo_id)


# bytes per element of each safetensors dtype
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                     "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


INTEGER_DTYPES = {"I64", "I32", "I16", "I8", "U8", "BOOL"}


def check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the data it describes: every
    tensor's bytes exactly its shape times its dtype's size, inside the data, none overlapping another (the
    streaming reader trusts these offsets)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError
            header = json.loads(f.read(n))
        spans = []
        for k, t in header.items():
            if k == "__metadata__":
                continue
            start, end = t["data_offsets"]
            shape, dtype = t["shape"], t["dtype"]
            if not all(type(v) is int and v >= 0 for v in (start, end, *shape)) or dtype not in SAFETENSORS_BYTES:
                raise CorruptCheckpoint(f"{path}: tensor {k} has a bad dtype, shape or offsets")
            if k.endswith(".weight") and dtype in INTEGER_DTYPES:
                raise CorruptCheckpoint(f"{path}: tensor {k} is stored as {dtype}, where a float weight is due "
                                        "(integer-quantized checkpoints are not read; a GGUF file of it is)")
            elements = 1
            for d in shape:
                elements *= d
            if end - start != elements * SAFETENSORS_BYTES[dtype]:
                raise CorruptCheckpoint(f"{path}: tensor {k} takes {end - start} bytes, its shape {shape} and dtype "
                                        f"{dtype} need {elements * SAFETENSORS_BYTES[dtype]}")
            spans.append((start, end, k))
    except (struct.error, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise CorruptCheckpoint(f"{path} is not a valid safetensors file (bad header)") from None
    end = 0  # the tensors tile the data, in order, as the format requires
    for start, stop, k in sorted(spans):
        if start != end:
            raise CorruptCheckpoint(f"{path}: tensor {k} " + ("overlaps the one before it" if start < end else
                                                              "leaves a hole before it"))
        end = stop
    if 8 + n + end != size:
        raise CorruptCheckpoint(f"{path} is truncated or padded: header describes {8 + n + end} bytes, "
                                f"file has {size}")


def fingerprint(files: list[Path]) -> str:
    """A content fingerprint for local files: names, sizes and the first and last MiB of each.

    Hashing whole checkpoints would cost seconds per GB; this catches any re-export or truncation.
    """
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with p.open("rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read())
    return "local-" + h.hexdigest()[:16]
