"""Scan results (the scanner's JSON dict, whose keys are the catalog's names) and failures -> one catalog
row per scan. Nothing here knows the scanner: what it needs (its version, the configuration) comes in
the result, or from the caller for a scan that failed."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone

from words.tables import NESTED, SCAN_COLUMNS, SCHEMA_VERSION


def new_scan_id(started: float) -> str:
    """Sortable by start time, unique across processes and hosts."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:16]


def _started(value) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def _base(scan_id: str | None, started, host: str | None) -> dict:
    start = _started(started)
    row = dict.fromkeys(SCAN_COLUMNS)
    row.update(schema_version=SCHEMA_VERSION, scan_id=scan_id or new_scan_id(start.timestamp()),
               started=start, host=host or host_name(), prompts=[], warnings=[],
               **{name: [] for name in NESTED})
    return row


def ok_row(result: dict, scan_id: str | None = None, host: str | None = None) -> dict:
    """One row from a scan result (`ScanResult.to_dict()`): its keys are the columns."""
    row = _base(scan_id, result["started"], host)
    for key in SCAN_COLUMNS:
        if key in result and key not in ("schema_version", "scan_id", "started", "host"):
            row[key] = result[key]
    row["config"] = json.dumps(result.get("config") or {}, sort_keys=True)
    for name, typ in NESTED.items():
        fields = [f.name for f in typ]
        row[name] = [{k: item.get(k) for k in fields} for item in result.get(name, [])]
    row["status"] = "ok"
    return clean(row)


def failed_row(spec: str, error: BaseException | str, started: float, *, scanner_version: str,
               model: str | None = None,
               error_type: str | None = None, revision: str | None = None, repo_id: str | None = None,
               source: str | None = None, config: dict | None = None, config_fingerprint: str | None = None,
               duration_s: float | None = None,
               scan_id: str | None = None, host: str | None = None) -> dict:
    """A scan that did not finish: the error's one-line text and its type name, and the configuration it
    was asked with. `model`: the catalog's name for it (default: the spec)."""
    row = _base(scan_id, started, host)
    if isinstance(error, BaseException):
        error_type = error_type or type(error).__name__
        error = str(error) or type(error).__name__
    row.update(spec=spec, model=model or spec, repo_id=repo_id, source=source, revision=revision,
               scanner_version=scanner_version, prompts=list((config or {}).get("prompts") or []),
               config=json.dumps(config or {}, sort_keys=True), config_fingerprint=config_fingerprint, status="failed",
               error_type=error_type or "Error", error=" ".join(str(error).split())[:2000],
               duration_s=time.time() - started if duration_s is None else duration_s)
    return clean(row)


def clean(row: dict) -> dict:
    """Text a catalog can store: a path with bytes that are not UTF-8 (Python keeps them as surrogates) is
    written with those bytes as \\x escapes, so the row is written rather than lost."""
    def text(v):
        if isinstance(v, str):
            return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if isinstance(v, list):
            return [text(x) for x in v]
        return v
    return {k: text(v) for k, v in row.items()}


def host_name() -> str:
    return os.environ.get("SUPERWEIGHTS_HOST") or socket.gethostname()
