"""The batch's list of models: one per line, `#` comments, an optional `@revision`, optional options.

    HuggingFaceTB/SmolLM2-135M@main
    pkg:gemma3-270m              # a packaged model
    /data/checkpoints/my-model   timeout=3600 trust_remote_code=true
    "/data/my models/gpt2.gguf"  # a path with spaces, quoted as in a shell

    HuggingFaceTB/SmolLM2-135M-Instruct    base=HuggingFaceTB/SmolLM2-135M

Options after the model: `timeout=SECONDS` (this model's time limit), `trust_remote_code=true`
(only for models you trust: nothing runs remote code unless its line says so), `base=MODEL` (the model
this one was made from, as the catalog names it: a hub id, or a path or pkg:name as written on its own
line; it takes the place of what the model's card or GGUF metadata declares). A base listed in the same
file is scanned first; once both are scanned, the batch compares them (`superweights diff`).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import BadOption

OPTIONS = {"timeout", "trust_remote_code", "base"}


@dataclass(frozen=True)
class Entry:
    spec: str  # as written, without @revision
    revision: str | None
    line: int
    timeout: float | None = None
    trust_remote_code: bool = False
    base: str | None = None  # the base model's name (sources.model_name of what was written)

    @property
    def name(self) -> str:
        return self.spec + (f"@{self.revision}" if self.revision else "")


def _split_revision(token: str) -> tuple[str, str | None]:
    if token.startswith(("pkg:", "planted:", "/", ".", "~")) or "/" not in token:
        return token, None  # paths and packaged names may contain '@'
    spec, at, rev = token.partition("@")
    return spec, (rev or None) if at else None


def _uncommented(line: str) -> str:
    """The line up to a `#` that starts a word outside quotes (one inside a path, or quoted, is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse(text: str, source: str = "models file") -> list[Entry]:
    entries, seen = [], set()
    for n, raw in enumerate(text.splitlines(), start=1):
        try:
            words = shlex.split(_uncommented(raw))
        except ValueError as e:
            raise BadOption(f"{source} line {n}: {e} (quote a path with spaces as in a shell)") from None
        if not words:
            continue
        first, *opts = words
        spec, rev = _split_revision(first)
        kw = {}
        for o in opts:
            key, eq, value = o.partition("=")
            if not eq or key not in OPTIONS:
                raise BadOption(f"{source} line {n}: unknown option {o!r} (known: "
                               + ", ".join(f"{k}=..." for k in sorted(OPTIONS)) + ")")
            if key == "timeout":
                try:
                    kw["timeout"] = float(value)
                except ValueError:
                    raise BadOption(f"{source} line {n}: timeout must be a number of seconds, got {value!r}") from None
                if not 0 < kw["timeout"] < float("inf"):
                    raise BadOption(f"{source} line {n}: timeout must be a positive number of seconds")
            elif key == "base":
                from scanner.load.sources import model_name

                if not value.strip():
                    raise BadOption(f"{source} line {n}: base= names no model")
                kw["base"] = model_name(value)
                if kw["base"] == model_name(spec):
                    raise BadOption(f"{source} line {n}: a model cannot be its own base")
            else:
                if value.lower() not in ("true", "false"):
                    raise BadOption(f"{source} line {n}: trust_remote_code must be true or false")
                kw["trust_remote_code"] = value.lower() == "true"
        if (spec, rev) in seen:
            continue  # listed twice: scanned once
        seen.add((spec, rev))
        entries.append(Entry(spec, rev, n, **kw))
    _check_cycles(entries, source)
    return entries


def _check_cycles(entries: list[Entry], source: str) -> None:
    """Bases named in the file must not loop back (A's base B, B's base A): neither could be scanned first."""
    from scanner.load.sources import model_name

    base = {model_name(e.spec): e for e in entries if e.base}
    for e in base.values():
        seen, at = [model_name(e.spec)], e.base
        while at in base:
            if at in seen:
                raise BadOption(f"{source} line {e.line}: the bases loop: {' -> '.join(seen + [at])}")
            seen.append(at)
            at = base[at].base


def read(path: str | Path) -> list[Entry]:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadOption(f"cannot read {p}: {getattr(e, 'strerror', None) or e}") from None
    entries = parse(text, str(p))
    if not entries:
        raise BadOption(f"{p} lists no models")
    return entries
