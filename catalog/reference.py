"""Published claims, imported as reference rows beside the scans. Two levels, told apart by the columns:

- weight: a coordinate, `model, hub_id, layer, module, row, col, source` and optionally `expert`
  (`published_super_weights.csv`, `published_expert_weights.csv`);
- channel: a claim about a hidden channel (a down-projection row) only, `model, hub_id, layer, row, claim,
  effect, source`, where `effect` is the relative change in loss that the source measured when it zeroed
  the row (+3.01 = +301%), empty for a claim that massive activations first appear on that channel
  (`published_channels.csv`).
The disagreement query compares each claim at its own level.
"""
from __future__ import annotations

import csv
import io
from importlib import resources

from .errors import BadReference

SHIPPED = ("published_super_weights.csv", "published_expert_weights.csv", "published_channels.csv")
WEIGHT = ("model", "hub_id", "layer", "module", "row", "col", "source")
CHANNEL = ("model", "hub_id", "layer", "row", "claim", "effect", "source")
INTEGERS = ("layer", "expert", "row", "col")


def shipped() -> list[str]:
    """The copies shipped in catalog/data (from shared/reference, with their sources)."""
    return [str(resources.files("catalog") / "data" / name) for name in SHIPPED]


def parse(data: bytes, name: str) -> list[dict]:
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    except UnicodeDecodeError:
        raise BadReference(f"{name} is not UTF-8 text") from None
    have = set(reader.fieldnames or [])
    level, columns = ("weight", WEIGHT) if "col" in have or "claim" not in have else ("channel", CHANNEL)
    columns = columns + (("expert",) if level == "weight" and "expert" in have else ())
    missing = [c for c in columns if c not in have]
    if missing:
        raise BadReference(f"{name}: missing column(s) {', '.join(missing)}; expected {','.join(WEIGHT)}[,expert] "
                           f"(coordinates) or {','.join(CHANNEL)} (channels)")
    rows = []
    for n, r in enumerate(reader, start=2):
        try:
            rows.append(_row(r, columns, level))
        except (ValueError, TypeError) as e:
            raise BadReference(f"{name} line {n}: {e}") from None
    return rows


def _row(r: dict, columns: tuple, level: str) -> dict:
    row = {c: (r[c] or "").strip() for c in columns}
    for c in INTEGERS:
        if c in row:
            row[c] = int(row[c]) if row[c] or c != "expert" else None
            if row[c] is not None and row[c] < 0:
                raise ValueError(f"{c} is negative")
            if row[c] is not None and row[c] >= 1 << 31:
                raise ValueError(f"{c} {row[c]} is out of range (at most 2^31 - 1)")
    if "effect" in row:
        row["effect"] = float(row["effect"]) if row["effect"] else None
        if row["effect"] is not None and not abs(row["effect"]) < float("inf"):
            raise ValueError("effect must be a finite number")
    if not row["hub_id"] or (level == "weight" and not row["module"]):
        raise ValueError("hub_id" + (" and module are" if level == "weight" else " is") + " required")
    row["level"] = level
    return row
