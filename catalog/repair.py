"""`superweights catalog check [--repair]`: every table's log entries, checkpoints and data files verified, and
what can be repaired, repaired, saying what was done. Local catalogs (an object store's log is delta-rs's to
read; `check` says so).

Repairs: a checkpoint that cannot be read (or a `_last_checkpoint` naming one that is gone) is set aside and
written anew from the log; a log entry that cannot be read (garbage, truncated, emptied, deleted from the
middle) is set aside with every entry after it, and the rows of those later entries that can be read are
appended again (new commits: they come back); a live data file that cannot be read in the table's schema (bit
rot, other column types, a link) is set aside and its entry removed from the table (delta-rs's FSCK commit);
a data file no readable entry names (a killed writer's, or an emptied entry's) is set aside once older than
SAFE_RETENTION_HOURS (a writer at work writes its files before its commit). Nothing is deleted: what is set
aside goes to `_set_aside/<time>/<table>/` beside the tables.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads

from words.tables import SCHEMAS

from . import log
from .errors import CatalogUnavailable
from .store import SAFE_RETENTION_HOURS, Catalog, _line


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)  # what stops a reader, or hides rows from it
    notes: list[str] = field(default_factory=list)  # what compaction will clean up by itself
    repairs: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"problem: {f}" for f in self.findings] + [f"note: {n}" for n in self.notes] + \
            [f"repaired: {r}" for r in self.repairs]
        return "\n".join(lines) if lines else "the catalog's logs, checkpoints and data files are sound"


def check(catalog: Catalog, repair: bool = False) -> Report:
    if not catalog.local:
        raise CatalogUnavailable(f"catalog check reads local catalogs; {catalog.location} is on an object store")
    report = Report()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in SCHEMAS:
        uri = catalog.uri(name)
        if not os.path.isdir(os.path.join(uri, "_delta_log")):
            continue
        state = log.replay(uri)
        bad_checkpoints = log.checkpoints(uri)
        if state is not None and _delta_reads(uri) and not any(
                os.path.getsize(p) == 0 for v, p in log.entries(uri).items() if v >= (state.first_bad or 0)):
            state.problems, state.first_bad, state.after = [], None, {}  # gaps a checkpoint covers: log cleanup
        problems = (state.problems if state else []) + bad_checkpoints
        report.findings += [f"{name}: {p}" for p in problems]
        unreadable, orphans = _data_files(name, uri, state, report)
        aside = os.path.join(catalog.root, "_set_aside", stamp, name)
        if repair and problems and state is not None:
            _repair(catalog, name, uri, state, bool(bad_checkpoints), aside, report)
        if repair and (unreadable or orphans):
            _set_files_aside(catalog, name, uri, unreadable, orphans, aside, report)
    return report


def _delta_reads(uri: str) -> bool:
    from deltalake import DeltaTable

    try:
        DeltaTable(uri)
    except Exception:  # noqa: BLE001  any failure: the log needs our own reading
        return False
    return True


def _data_files(name: str, uri: str, state: log.State | None, report: Report) -> tuple[list[str], list[str]]:
    """Live files that cannot be read in the table's schema, and files no readable entry names that are old
    enough to be no writer's work in progress (relative paths)."""
    if state is None:
        return [], []
    unreadable = []
    for f in sorted(state.files):
        path = os.path.join(uri, f)
        try:
            if os.path.islink(path):
                raise OSError("a link, not a file the catalog wrote")
            pads.dataset(path, schema=SCHEMAS[name], format="parquet").to_table()
        except (OSError, pa.ArrowException, ValueError, NotImplementedError) as e:
            unreadable.append(f)
            report.findings.append(f"{name}: data file {f} cannot be read as the table's ({_line(e)[:120]}); "
                                   "queries skip it")
    on_disk = {os.path.relpath(os.path.join(d, n), uri) for d, _, ns in os.walk(uri) if "_delta_log" not in d
               for n in ns if n.endswith(".parquet")}
    orphans = sorted(on_disk - state.named)
    old = [f for f in orphans if time.time() - os.lstat(os.path.join(uri, f)).st_mtime > SAFE_RETENTION_HOURS * 3600]
    if orphans:
        report.notes.append(f"{name}: {len(orphans)} data file(s) no readable log entry names (a killed "
                            f"writer's, or an unreadable entry's), {len(old)} older than {SAFE_RETENTION_HOURS:g} h: "
                            "`--repair` sets those aside, compaction removes them after the retention")
    return unreadable, old


def _set_files_aside(catalog: Catalog, name: str, uri: str, unreadable: list[str], orphans: list[str], aside: str,
                     report: Report) -> None:
    from deltalake import DeltaTable

    for f in unreadable + orphans:
        target = os.path.join(aside, "data", f)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(os.path.join(uri, f), target)
    if unreadable:  # their add actions now name missing files: delta-rs's FSCK commits their removal
        catalog._open.pop(name, None)
        DeltaTable(uri).repair()
        report.repairs.append(f"{name}: {len(unreadable)} unreadable data file(s) set aside in {aside}/data and "
                              "removed from the table (the rows they held are lost to queries; they were already)")
    if orphans:
        report.repairs.append(f"{name}: {len(orphans)} data file(s) no entry names set aside in {aside}/data")


def _repair(catalog: Catalog, name: str, uri: str, state: log.State, checkpoints: bool, aside: str,
            report: Report) -> None:
    from deltalake import DeltaTable, write_deltalake

    os.makedirs(aside, exist_ok=True)
    folder = os.path.join(uri, "_delta_log")
    moved = []
    if state.first_bad is not None:
        for v, path in sorted(log.entries(uri).items()):
            if v >= state.first_bad:
                shutil.move(path, os.path.join(aside, os.path.basename(path)))
                moved.append(v)
    if checkpoints or moved:  # a checkpoint of a version now set aside would bring it back
        for n in os.listdir(folder):
            if log.CHECKPOINT.match(n) or n == "_last_checkpoint":
                shutil.move(os.path.join(folder, n), os.path.join(aside, n))
    catalog._open.pop(name, None)
    dt = DeltaTable(uri)
    if moved:
        report.repairs.append(f"{name}: log entries {moved[0]}..{moved[-1]} set aside in {aside}; the table is at "
                              f"version {dt.version()}")
    again = [f for v in sorted(state.after) for f in state.after[v]]
    if again and state.rewrites_after:  # a compaction after the bad entry: its files hold older rows too
        report.repairs.append(f"{name}: the entries after the bad one include a compaction; their rows are set "
                              "aside with them, not appended again (they may repeat rows the table holds)")
        again = []
    if again:
        rows = pads.dataset([os.path.join(uri, f) for f in again], schema=SCHEMAS[name], format="parquet").to_table()
        write_deltalake(dt, rows, mode="append", schema_mode="merge")
        report.repairs.append(f"{name}: {len(rows)} row(s) of the readable entries after the bad one appended "
                              "again")
    dt.update_incremental()
    dt.create_checkpoint()
    report.repairs.append(f"{name}: a new checkpoint at version {dt.version()}")
