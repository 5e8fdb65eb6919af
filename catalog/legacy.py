"""Catalogs of superweights 0.1 (one Parquet file per scan, schema versions 1 and 2), read for migration
to the Delta tables (`superweights catalog migrate OLD NEW`). Read-only: the old folder is not changed.

That layout was `scans/bucket=XX/N-*.parquet` (scans, with their candidates, spikes and profiles nested in
each row; a scan could appear twice while a merge was in progress) and `reference/*.parquet`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from words.tables import REFERENCE_FILE, SCAN_FILE

log = logging.getLogger("superweights")
VERSIONS = (1, 2)
CHUNK = 5000  # scans per commit of a migration


def is_legacy(fs: pafs.FileSystem, root: str) -> bool:
    """Whether `root` holds a catalog in the old layout (bucket folders of Parquet files)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/scans", allow_not_found=True))
    except OSError:
        return False
    return any(i.type == pafs.FileType.Directory and i.base_name.startswith("bucket=") for i in infos)


@dataclass
class Legacy:
    scans: pa.Table  # SCAN_FILE: one row per scan, nested lists
    reference: pa.Table  # REFERENCE_FILE
    skipped: list[str] = field(default_factory=list)  # files left out, with why


def read(fs: pafs.FileSystem, root: str) -> Legacy:
    out = Legacy(SCAN_FILE.empty_table(), REFERENCE_FILE.empty_table())
    tables = {"scans": [], "reference": []}
    from tqdm import tqdm

    for kind, schema in (("scans", SCAN_FILE), ("reference", REFERENCE_FILE)):
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{kind}", recursive=True, allow_not_found=True))
        for info in tqdm(sorted(infos, key=lambda i: i.path), desc=f"reading {kind}", unit="file", leave=False,
                         disable=len(infos) < 100):
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet") \
                    or info.base_name.startswith((".", "_")):
                continue
            try:
                f = pq.ParquetFile(info.path, filesystem=fs)
                version = int((f.metadata.metadata or {}).get(b"superweights.schema_version", b"0"))
                if version not in VERSIONS:
                    raise ValueError(f"schema version {version} is not one of superweights 0.1's")
                tables[kind].append(upgrade(f.read(), version, schema))
            except (OSError, pa.ArrowException, ValueError) as e:
                out.skipped.append(f"{info.path}: {str(e).splitlines()[0][:200]}")
    if tables["scans"]:
        out.scans = _dedupe(pa.concat_tables(tables["scans"]))
    if tables["reference"]:
        out.reference = pa.concat_tables(tables["reference"])
    return out


def _dedupe(table: pa.Table) -> pa.Table:
    """One row per scan id (a scan seen twice while a merge was in progress is the same scan)."""
    if len(table) == 0 or pc.count_distinct(table["scan_id"]).as_py() == len(table):
        return table
    idx = pa.table({"scan_id": table["scan_id"], "i": pa.array(range(len(table)), pa.int64())})
    first = idx.group_by("scan_id", use_threads=False).aggregate([("i", "min")])["i_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))


def migrate(source: str, target) -> tuple[int, int, list[str]]:
    """Every scan and reference row of the old catalog at `source` into `target` (a new `store.Catalog`):
    (scans, reference rows, files left out with why). `source` is only read. Resumable: a marker in `target`
    names the source while the migration runs (each commit holds whole scans), and a run that finds its own
    marker there writes only what is missing."""
    from pathlib import Path

    from .errors import CatalogUnavailable

    try:
        if "://" in source:
            fs, root = pafs.FileSystem.from_uri(source)
        else:
            fs, root = pafs.LocalFileSystem(), str(Path(source).expanduser().absolute())
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CatalogUnavailable(f"cannot open catalog {source}: {str(e).splitlines()[0]}") from None
    if not is_legacy(fs, root):
        raise CatalogUnavailable(f"{source} is not a catalog of superweights 0.1 (no scans/bucket=* folders)")
    tfs, marker = _marker(target)
    resuming = target.exists()
    if resuming and _read(tfs, marker) != root:
        raise CatalogUnavailable(f"{target.location} already holds a catalog; migrate into a new location")
    old = read(fs, root)
    for why in old.skipped:
        target.warn(f"not migrated: {why}")
    target.ensure_writable()
    with tfs.open_output_stream(marker) as f:
        f.write(root.encode())
    scans = old.scans
    if resuming:  # a migration killed half way: the scans it wrote are whole; write the others
        done = target.table("scans").to_pyarrow_table(columns=["scan_id"])["scan_id"]
        scans = scans.filter(pc.invert(pc.is_in(scans["scan_id"], done.combine_chunks())))
        if target.table("reference").to_pyarrow_table(columns=["origin"]).num_rows:
            old.reference = old.reference.slice(0, 0)  # written, before the run was killed
    for start in range(0, len(scans), CHUNK):
        target.write_scans(scans.slice(start, CHUNK))
    if len(old.reference):
        target.write("reference", old.reference)
    tfs.delete_file(marker)
    return len(old.scans), len(old.reference), old.skipped


def _marker(target) -> tuple[pafs.FileSystem, str]:
    """Where a migration into `target` says what it is migrating from, while it runs."""
    if target.local:
        import os

        os.makedirs(target.root, exist_ok=True)
        return pafs.LocalFileSystem(), f"{target.root}/_migrating_from"
    fs, root = pafs.FileSystem.from_uri(target.root)
    return fs, f"{root}/_migrating_from"


def _read(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except (OSError, pa.ArrowException):
        return None


# What version-1 columns hold under version 2's names (`None`: new in version 2). In version 1,
# `token_id` held the token's position. Both held every candidate in a list named `super_weights`.
FROM_V2 = {"candidates": "super_weights"}
FROM_V1 = {**FROM_V2, "token_pos": "token_id", "token_id": None, "input_token_pos": "input_token_id",
           "input_token_id": None, "output_token_pos": "output_token_id", "output_token_id": None, "config": "config_json"}
V1_VALUES = {"level": "weight"}  # what a column new in version 2 holds for every version-1 row


def upgrade(table: pa.Table, version: int, schema: pa.Schema) -> pa.Table:
    """A table read from a file of `version` in the current `schema`: columns and nested fields renamed
    where version 1 named them otherwise, new ones null."""
    renames = FROM_V1 if version < 2 else FROM_V2
    cols = []
    for f in schema:
        src = renames.get(f.name, f.name)
        if src in table.column_names:
            cols.append(_conform(table[src], f.type, renames))
        elif version < 2 and f.name in V1_VALUES:
            cols.append(pa.array([V1_VALUES[f.name]] * len(table), f.type))
        else:
            cols.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _conform(col, typ: pa.DataType, renames: dict):
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_list(typ) and pa.types.is_struct(typ.value_type) and pa.types.is_list(col.type):
        values = _conform(col.values, typ.value_type, renames)  # the offsets index the whole child array
        return pa.ListArray.from_arrays(col.offsets, values, type=typ, mask=col.is_null())
    if pa.types.is_struct(typ) and pa.types.is_struct(col.type):
        have = dict(zip((col.type.field(i).name for i in range(col.type.num_fields)), col.flatten()))
        children = []
        for f in typ:
            src = renames.get(f.name, f.name)
            children.append(_conform(have[src], f.type, renames) if src in have else pa.nulls(len(col), f.type))
        return pa.StructArray.from_arrays(children, fields=list(typ), mask=col.is_null())
    return col.cast(typ)
