"""Which scan of a model an index shows: the one made with the canonical configuration (the default, or the one
`publish --config FILE` names), so that a one-off experiment never replaces a published verdict; and how another
configuration differs from it, in its flags' names.

The catalog stores each scan's configuration as JSON and its fingerprint, and knows nothing of the scanner:
the service layer fills a `Canonical` from the scanner's configuration (`cluster.service.canonical`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Canonical:
    fingerprint: str  # what the catalog's `config_fingerprint` holds for a scan of this configuration
    config: dict  # the configuration as the catalog stores it (`config`, parsed)
    flags: dict = field(default_factory=dict)  # fields that change verdicts: JSON path ("validate.zone") -> flag


def settings(config: str | dict | None, flags: dict) -> dict:
    """The fields of a stored configuration that change verdicts, by flag; long texts by their hash."""
    try:
        data = json.loads(config) if isinstance(config, str) else (config or {})
    except ValueError:
        return {}
    out = {}
    for path, flag in flags.items():
        value = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and len(value) > 40 or isinstance(value, list) and len(json.dumps(value)) > 60:
            value = "text " + hashlib.sha256(json.dumps(value).encode()).hexdigest()[:8]
        out[flag] = value
    return out


def differs(before: dict, after: dict) -> list[str]:
    """What changed between two `settings`: ["--catastrophic-ratio 10 -> 100000"]."""
    return [f"{flag} {_show(before.get(flag))} -> {_show(after.get(flag))}"
            for flag in sorted(set(before) | set(after)) if before.get(flag) != after.get(flag)]


def _show(v) -> str:
    return "default" if v is None else format(v, "g") if isinstance(v, float) else json.dumps(v) \
        if isinstance(v, list) else str(v)
