"""Durable Parquet storage: one file per scan, atomic writes, cheap listing, tolerant reads.

Layout under the catalog root (a local folder or any URI pyarrow's filesystems accept, e.g. s3://bucket/sw):
    scans/bucket=XX/0-<scan_id>.parquet   one scan, as written by the worker that ran it
    scans/bucket=XX/N-<id>.parquet        level N: FANOUT level N-1 files merged (N >= 1)
    reference/<origin>-<set_id>.parquet   one imported reference file
Buckets (a hash of the model id) keep directories small; merging level by level keeps the number of files
logarithmic in the number of scans while each row is rewritten at most a few times. A file is deleted only
after the merged file holding its rows has been renamed into place, so readers and concurrent writers
never lose a scan: at worst they see it twice, and scan ids are deduplicated on read.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import reference
from .errors import BadReference, CatalogUnavailable
from .schema import REFERENCE_FILE, SCAN_FILE, SCHEMA_VERSION, stored_names, upgrade

log = logging.getLogger("superweights")

BUCKETS = 4
FANOUT = 4  # files of one level merged into one file of the next
LOCK_STALE_S = 600


def default_location() -> str:
    return os.environ.get("SUPERWEIGHTS_CATALOG") or str(Path.home() / ".local/share/superweights/catalog")


def bucket_of(model: str) -> str:
    return f"{int(hashlib.sha1(model.encode()).hexdigest(), 16) % BUCKETS:02x}"


class Catalog:
    def __init__(self, location: str | os.PathLike | None = None, filesystem: pafs.FileSystem | None = None):
        """`location`: a folder or a URI; or a path inside `filesystem` (any pyarrow FileSystem)."""
        self.location = str(location or default_location())
        loc = self.location
        try:
            if filesystem is not None:
                self.fs, root = filesystem, loc
            elif "://" in loc:
                self.fs, root = pafs.FileSystem.from_uri(loc)
            else:
                self.fs, root = pafs.LocalFileSystem(), str(Path(loc).expanduser().absolute())
        except (pa.ArrowInvalid, OSError, ValueError) as e:
            raise CatalogUnavailable(f"cannot open catalog {loc}: {e}") from None
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.warnings: list[str] = []

    # ---- writing -------------------------------------------------------------------------------------
    def write_scan(self, row: dict) -> str:
        """Write one scan row (see catalog.rows) durably; returns the file's path."""
        table = pa.Table.from_pylist([row], schema=SCAN_FILE)
        bucket = bucket_of(row["model"])
        path = f"{self.root}/scans/bucket={bucket}/0-{row['scan_id']}.parquet"
        self._write_atomic(table, path)
        try:
            self.compact(bucket)
        except OSError as e:  # merging is an optimisation; the scan itself is already safe
            log.warning("catalog: could not merge files in bucket %s: %s", bucket, e)
        return path

    def write_scans(self, rows: list[dict]) -> str:
        """Many scans in one level-1 file (imports and benchmarks); same guarantees as write_scan."""
        table = pa.Table.from_pylist(rows, schema=SCAN_FILE)
        path = f"{self.root}/scans/bucket=bulk/1-{uuid.uuid4().hex}.parquet"
        self._write_atomic(table, path)
        return path

    def _write_atomic(self, table: pa.Table, path: str) -> None:
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # never matches *.parquet
        try:
            if self.local:
                os.makedirs(folder, exist_ok=True)
                try:
                    with open(tmp, "wb") as f:
                        pq.write_table(table, f, compression="zstd")
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                fd = os.open(folder, os.O_RDONLY)  # the rename itself survives a power cut
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:  # object stores: an object appears whole when its upload completes
                self.fs.create_dir(folder, recursive=True)
                with self.fs.open_output_stream(tmp) as out:
                    pq.write_table(table, out, compression="zstd")
                self.fs.move(tmp, path)
        except OSError as e:
            raise CatalogUnavailable(f"cannot write to catalog {self.location}: {e}") from None

    # ---- merging -------------------------------------------------------------------------------------
    def compact(self, bucket: str) -> None:
        folder = f"{self.root}/scans/bucket={bucket}"
        for level in range(8):
            files = [f for f in self._list(folder) if f.base_name.startswith(f"{level}-")]
            if len(files) < FANOUT:
                return
            with self._lock(folder) as held:
                if not held:  # another writer is merging this bucket
                    return
                self._merge(files, folder, level + 1)

    def _merge(self, files: list[pafs.FileInfo], folder: str, level: int) -> None:
        tables, merged = [], []
        for info in files:
            t = self._read_file(info.path, None)
            if isinstance(t, pa.Table):
                tables.append(t)
                merged.append(info.path)
        if len(merged) < 2:
            return
        table = dedupe(pa.concat_tables(tables))
        table = table.sort_by([("model", "ascending"), ("started", "ascending")])
        self._write_atomic(table.cast(SCAN_FILE), f"{folder}/{level}-{uuid.uuid4().hex}.parquet")
        for path in merged:  # only now: their rows are durable in the merged file
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass

    @contextmanager
    def _lock(self, folder: str):
        if not self.local:  # no exclusive create on object stores; concurrent merges only duplicate work
            yield True
            return
        lock = os.path.join(folder, ".merge.lock")
        try:
            if time.time() - os.path.getmtime(lock) > LOCK_STALE_S:
                os.unlink(lock)  # its owner died
        except OSError:
            pass
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            yield False
            return
        os.close(fd)
        try:
            yield True
        finally:
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass

    # ---- reading -------------------------------------------------------------------------------------
    def _list(self, folder: str) -> list[pafs.FileInfo]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        except OSError as e:
            raise CatalogUnavailable(f"cannot list catalog {self.location}: {e}") from None
        return [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                and not i.base_name.startswith((".", "_"))]

    def ensure_writable(self) -> None:
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
                if not os.access(self.root, os.W_OK):
                    raise PermissionError(f"{self.root} is not writable")
            else:
                self.fs.create_dir(self.root, recursive=True)
        except OSError as e:
            raise CatalogUnavailable(f"cannot write to catalog {self.location}: {e}") from None

    def exists(self) -> bool:
        try:
            return self.fs.get_file_info(self.root).type == pafs.FileType.Directory
        except OSError:
            return False

    def _check(self, path: str) -> int | str:
        """The file's schema version if it is a readable catalog file, "vanished" if merged away meanwhile,
        else why not (a sentence)."""
        try:
            meta = pq.read_metadata(path, filesystem=self.fs)  # reads and checks the footer
            version = int((meta.metadata or {}).get(b"superweights.schema_version", b"0"))
        except FileNotFoundError:
            return "vanished"
        except (OSError, pa.ArrowException, ValueError) as e:
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return "vanished"
            return f"skipping unreadable catalog file {path}: {str(e).splitlines()[0]}"
        if version > SCHEMA_VERSION:
            return f"skipping {path}: written by a newer superweights (schema {version})"
        if version < 1:
            return f"skipping {path}: not a superweights catalog file"
        return version

    def good_files(self, kind: str) -> dict[str, int]:
        """The readable files of `scans` or `reference`, each with its schema version; bad ones are warned
        about and left out."""
        for _ in range(10):
            files = [i.path for i in self._list(f"{self.root}/{kind}")]
            with ThreadPoolExecutor(max_workers=8) as pool:
                checks = list(pool.map(self._check, files))
            if "vanished" not in checks:
                break  # else a merge finished meanwhile: its output exists now, list again
        for c in checks:
            if isinstance(c, str) and c != "vanished":
                self._warn(c)
        return {f: c for f, c in zip(files, checks) if isinstance(c, int)}

    def read_file(self, path: str) -> pa.Table:
        """One scans file in the current schema (empty if it cannot be read: warned)."""
        t = self._read_file(path, None)
        return t if isinstance(t, pa.Table) else SCAN_FILE.empty_table()

    def _read_file(self, path: str, columns: list[str] | None, schema: pa.Schema = SCAN_FILE):
        """The table in the current schema, or "vanished" (merged away meanwhile), or None (unreadable:
        warned and skipped)."""
        version = self._check(path)
        if isinstance(version, str):
            if version != "vanished":
                self._warn(version)
            return version if version == "vanished" else None
        try:
            f = pq.ParquetFile(path, filesystem=self.fs)
            want = pa.schema([schema.field(c) for c in columns]) if columns else schema
            have = set(f.schema_arrow.names)
            return upgrade(f.read(columns=[c for c in stored_names(want.names, version) if c in have]), version, want)
        except FileNotFoundError:
            return "vanished"
        except (OSError, pa.ArrowException, ValueError) as e:
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return "vanished"
            self._warn(f"skipping unreadable catalog file {path}: {str(e).splitlines()[0]}")
            return None

    def _warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        log.warning("warning: %s", message)

    def read(self, kind: str, columns: list[str] | None = None, schema: pa.Schema = SCAN_FILE) -> pa.Table:
        """Every good file of `scans` or `reference`, concatenated (scans deduplicated by scan id)."""
        schema = REFERENCE_FILE if kind == "reference" else schema
        for _ in range(10):
            files = self._list(f"{self.root}/{kind}")
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda i: self._read_file(i.path, columns, schema), files))
            if "vanished" not in results:
                break  # else a merge finished meanwhile: its output exists now, list again
        tables = [t for t in results if isinstance(t, pa.Table)]
        want = pa.schema([schema.field(c) for c in columns]) if columns else schema
        if not tables:
            return want.empty_table()
        table = pa.concat_tables(tables)
        return dedupe(table) if kind == "scans" else table

    # ---- reference rows ------------------------------------------------------------------------------
    def import_reference(self, csv_path: str | os.PathLike, origin: str | None = None) -> tuple[int, str]:
        """Import published claims: coordinates or channels (`catalog.reference` says which columns)."""
        p = Path(csv_path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise BadReference(f"cannot read {p}: {e.strerror}") from None
        rows = reference.parse(data, str(p))
        origin = origin or p.name
        set_id = hashlib.sha256(data).hexdigest()[:12]
        now = datetime.now(timezone.utc)
        for r in rows:
            r.update(origin=origin, set_id=set_id, imported=now)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", origin).strip("._") or "reference"
        path = f"{self.root}/reference/{slug}-{set_id}.parquet"
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            return len(rows), path  # the same content was imported before
        self._write_atomic(pa.Table.from_pylist(rows, schema=REFERENCE_FILE), path)
        return len(rows), path


def dedupe(table: pa.Table) -> pa.Table:
    """One row per scan id (a scan seen twice while a merge was in progress is the same scan)."""
    if len(table) == 0 or pc.count_distinct(table["scan_id"]).as_py() == len(table):
        return table
    idx = pa.table({"scan_id": table["scan_id"], "i": pa.array(range(len(table)), pa.int64())})
    first = idx.group_by("scan_id", use_threads=False).aggregate([("i", "min")])["i_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))
