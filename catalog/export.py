"""The index as one flat table for other engines: one row per weight that matters in each model's shown scan
(the catalog's names and types: words.tables), with its model, revision and configuration. `publish` writes it
beside the index, and `superweights export` alone: `coordinates.parquet` (pandas, polars, DuckDB read the file)
and `coordinates/` (the same rows as a Delta table: `deltalake`, polars' `read_delta`, DuckDB's `delta_scan`).

No join, no choice of scan is left to the reader: the model name is on every row, and the scan is the one the
index shows (catalog.canonical).
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from words.tables import CANDIDATE, SCAN_FIELDS

from .render import CSV_COLUMNS

NAME = "coordinates"
_TYPES = {**dict(SCAN_FIELDS), **{f.name: f.type for f in CANDIDATE}, "spike_ratio": pa.float64(),
          "published": pa.string(), "validated": pa.bool_()}
COLUMNS = CSV_COLUMNS + ("settings",)  # settings: the configuration's flags that change verdicts, as JSON
SCHEMA = pa.schema([(c, _TYPES.get(c, pa.string())) for c in COLUMNS])


def table(models: list[dict]) -> pa.Table:
    """The rows: each weight that matters (catastrophic and mild tiers) of each model the index shows."""
    import json

    rows = [{**{k: m.get(k) for k in COLUMNS}, **{k: w.get(k) for k in COLUMNS if k in w},
             "settings": json.dumps(m.get("settings") or {}, sort_keys=True)}
            for m in models for w in m["weights"]]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write(rows: pa.Table, out: Path) -> list[str]:
    """`coordinates.parquet` (replaced by a rename) and the Delta table `coordinates/` (a new version that
    overwrites the last: a reader sees the old rows or the new, never a mix). Returns the names written."""
    from deltalake import write_deltalake

    tmp = out / f".{NAME}.parquet.{os.getpid()}.tmp"
    pq.write_table(rows, tmp)
    os.replace(tmp, out / f"{NAME}.parquet")
    write_deltalake(str(out / NAME), rows, mode="overwrite", schema_mode="overwrite")
    return [f"{NAME}.parquet", NAME]
