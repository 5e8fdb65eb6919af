"""A Delta table's log, read and checked entry by entry, for when delta-rs cannot read it (a log entry that is
garbage, truncated or empty, one deleted from the middle, a checkpoint that is garbage or gone): the table's
newest readable state, and what was left out. Local catalogs only (object stores: delta-rs's own reading).

A log entry is `_delta_log/NNNNNNNNNNNNNNNNNNNN.json`, one JSON action per line; the table at version v is
the data files added and not removed by entries 0..v. Entries before a checkpoint may have been cleaned up
(after 30 days): then the state can only come from delta-rs, at a version it can still read.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

ENTRY = re.compile(r"^(\d{20})\.json$")
CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet$")


@dataclass
class State:
    """What entries 0..version of a log say: the live data files (relative paths) and the entries left out."""

    version: int
    files: list[str]
    problems: list[str] = field(default_factory=list)  # entries (and checkpoints) not read, each with why
    first_bad: int | None = None  # the first entry that could not be read (a gap counts), if any
    after: dict[int, list[str]] = field(default_factory=dict)  # readable entries past it: version -> files added
    rewrites_after: bool = False  # one of those removes files (a compaction): their rows are not simply new
    named: set = field(default_factory=set)  # every file a readable entry adds


def entries(table: str) -> dict[int, str]:
    folder = os.path.join(table, "_delta_log")
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    return {int(m.group(1)): os.path.join(folder, n) for n in names if (m := ENTRY.match(n))}


def _actions(path: str) -> list[dict] | str:
    """The actions of one entry, or why it cannot be read."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable ({type(e).__name__})"
    if not text.strip():
        return "empty (a commit whose actions are lost)"
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError:
            return "not JSON (garbage or truncated)"
        if not isinstance(action, dict):
            return "not a log entry"
        out.append(action)
    return out


def replay(table: str) -> State | None:
    """The table's state from its JSON entries alone, up to the first that cannot be read (None when entry 0
    is gone: the log was cleaned up after a checkpoint, so only a checkpoint can say the state)."""
    found = entries(table)
    if 0 not in found:
        return None
    files: dict[str, None] = {}
    state = State(-1, [])
    for v in range(max(found) + 1):
        acts = _actions(found[v]) if v in found else "missing (deleted from the log)"
        if isinstance(acts, str):
            if state.first_bad is None:
                state.first_bad = v
            state.problems.append(f"log entry {v} {acts}")
            continue
        state.named |= {a["add"]["path"] for a in acts if "add" in a}
        if state.first_bad is not None:  # readable, but after a hole: its files are named, not read
            state.after[v] = [a["add"]["path"] for a in acts if "add" in a]
            state.rewrites_after |= any("remove" in a for a in acts)
            state.problems.append(f"log entry {v} comes after entry {state.first_bad}, which cannot be read")
            continue
        for a in acts:
            if "add" in a:
                files[a["add"]["path"]] = None
            elif "remove" in a:
                files.pop(a["remove"]["path"], None)
        state.version = v
    state.files = list(files)
    return state


def checkpoints(table: str) -> list[str]:
    """The problems of the table's checkpoints (unreadable parquet, a `_last_checkpoint` naming one that is
    missing or that is not JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = os.path.join(table, "_delta_log")
    out = []
    try:
        names = os.listdir(folder)
    except OSError:
        return out
    for n in sorted(names):
        if CHECKPOINT.match(n):
            try:
                pq.ParquetFile(os.path.join(folder, n)).metadata
            except (OSError, pa.ArrowException) as e:
                out.append(f"checkpoint {n} unreadable ({str(e).splitlines()[0][:80]})")
    last = os.path.join(folder, "_last_checkpoint")
    if os.path.exists(last):
        try:
            hint = json.loads(open(last).read())
            v = int(hint["version"])
            if not any(CHECKPOINT.match(n) and int(n[:20]) == v for n in names):
                out.append(f"_last_checkpoint names checkpoint {v}, which is missing")
        except (ValueError, KeyError, TypeError, OSError):
            out.append("_last_checkpoint is not a checkpoint hint")
    return out
