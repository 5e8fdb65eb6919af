"""Durable storage on Delta Lake tables (delta-rs): atomic appends with optimistic concurrency, readers on
a consistent snapshot, compaction and vacuum, any object store delta-rs reaches, and readers in any
engine that reads Delta (DuckDB, Polars, Spark, pandas).

Layout under the catalog root (a folder, or a URI: s3://bucket/path, gs://..., az://..., file://...): one
folder per table of `words.tables.TABLES` that is not part of a scan's row:
    scans/                                     one row per scan, its candidates, spikes and profiles as lists
    reference/  quant_results/  lineage/       one row per published claim / quantization setting / comparison
A scan is one append, one commit: every reader, of any engine, sees it whole or not at all; a writer killed
inside a commit leaves a data file the log never names, which no reader sees and `compact` removes after the
retention period. Catalogs begun before schema 5 also hold `super_weights/` (the candidates), `spikes/` and
`layer_profiles/`, one row per item of a scan written before: they are read (the views join them to their
scans, so rows a killed writer left there are never shown) and never written.
Credentials for object stores come from the environment (AWS_*, GOOGLE_*, AZURE_*), never from here.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from . import legacy, reference
from .errors import BadReference, CatalogUnavailable, UnreadableLog, UnsafeCompaction
from words.tables import REFERENCE_FILE, SCAN_FILE, SCHEMA_VERSION, SCHEMAS, TABLES

log = logging.getLogger("superweights")

COMMIT_TRIES = 5  # delta-rs retries plain conflicts itself; these are for commits it cannot rebase
ROW_GROUP = 64 * 1024  # rows
RETENTION_HOURS = 7 * 24  # files no snapshot needs are deleted after this long (readers of older snapshots)
# Below this, vacuum may delete the data file of a commit a writer is about to make (written, not yet in the
# log), or a file a running query reads: a scan acknowledged to one process and lost (seen: 1 of 356, with
# writers at work and a retention of 0). Queries stop after 300 s by default; a write takes seconds.
SAFE_RETENTION_HOURS = 1.0
DESCRIPTION = "superweights catalog, schema {}"


def default_location() -> str:
    return os.environ.get("SUPERWEIGHTS_CATALOG") or str(Path.home() / ".local/share/superweights/catalog")


def table_version(description: str | None) -> int | None:
    m = re.fullmatch(DESCRIPTION.format(r"(\d+)"), description or "")
    return int(m.group(1)) if m else None


class Catalog:
    def __init__(self, location: str | os.PathLike | None = None, storage_options: dict | None = None):
        """`location`: a folder or a URI; `storage_options`: delta-rs's object store options (default: the
        environment's)."""
        if location is not None and not str(location).strip():
            raise CatalogUnavailable("the catalog location is empty; give a folder or a URI")
        loc = str(location if location is not None else default_location())
        loc = loc.removeprefix("file://") if loc.startswith("file:///") else loc
        self.local = "://" not in loc
        self.location = loc
        self.root = str(Path(loc).expanduser().absolute()) if self.local else loc.rstrip("/")
        # delta-rs reads a local path as a URL: [ and ] as its host part, %XX decoded (so 'dd%42' would be
        # 'ddB', another folder's catalog): such a path is refused, never taken for another
        bad = sorted(set("[]%") & set(self.root)) if self.local else []
        if bad:
            raise CatalogUnavailable(f"cannot use {loc} as a catalog: delta-rs would not take its {' '.join(bad)} "
                                     "literally; choose a folder without them")
        self.options = storage_options
        self.warnings: list[str] = []
        self._open: dict = {}  # name -> DeltaTable, kept between appends (no log replay per write)
        self._folders: dict[str, str] = {}  # name -> its folder (an older schema's name, where the catalog has it)
        self._ready = False  # every table exists (checked once per Catalog)

    def uri(self, name: str) -> str:
        """Where table `name` lives: its folder, or the folder an older schema named it (a catalog keeps the
        folders it began with; a new one takes today's names)."""
        if name not in self._folders:
            self._folders[name] = name
            for old in TABLES[name].stored_as if name in TABLES else ():
                if self._has_log(old) and not self._has_log(name):
                    self._folders[name] = old
        return f"{self.root}/{self._folders[name]}"

    def _has_log(self, folder: str) -> bool:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if self.local:
            return os.path.isdir(f"{self.root}/{folder}/_delta_log")
        try:  # opening answers at once; is_deltatable waits on the object store's retries
            DeltaTable(f"{self.root}/{folder}", storage_options=self.options)
        except TableNotFoundError:
            return False
        except Exception:  # noqa: BLE001  unreachable store: open() names it
            return False
        return True

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning("warning: %s", message)

    # ---- tables --------------------------------------------------------------------------------------
    def is_legacy(self) -> bool:
        """A local folder in superweights 0.1's layout (object stores are not looked at: `catalog migrate`
        reads them when asked)."""
        import pyarrow.fs as pafs

        return self.local and legacy.is_legacy(pafs.LocalFileSystem(), self.root)

    def _check_layout(self) -> None:
        if self.is_legacy():
            raise CatalogUnavailable(f"{self.location} is a catalog of superweights 0.1 (Parquet files); migrate it "
                                     f"with: superweights catalog migrate {self.location} NEW_LOCATION")

    def table(self, name: str):
        """The Delta table `name` (its latest version), or None if it does not exist."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            if name in self._open:
                self._open[name].update_incremental()
                return self._open[name]
            dt = DeltaTable(self.uri(name), storage_options=self.options)
        except TableNotFoundError:  # (is_deltatable would say so too, but waits on object stores' retries)
            return None
        except BaseException as e:  # noqa: BLE001  delta-rs raises its own and the object store's errors
            _reraise_interrupts(e)
            raise UnreadableLog(f"cannot open catalog table {self.uri(name)}: {_line(e)}; superweights catalog "
                                "check --repair") from None
        version = table_version(dt.metadata().description)
        if version is not None and version > SCHEMA_VERSION:
            raise CatalogUnavailable(f"catalog table {self.uri(name)} was written by a newer superweights "
                                     f"(schema {version}; this one reads {SCHEMA_VERSION})")
        self._open[name] = dt
        return dt

    def exists(self) -> bool:
        self._check_layout()
        return any(self.table(n) is not None for n in TABLES)

    def ensure_writable(self) -> None:
        """Create the tables that do not exist yet (several writers may race: the log decides)."""
        from deltalake import DeltaTable

        if self._ready:
            return
        self._check_layout()
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
                if not os.access(self.root, os.W_OK):
                    raise PermissionError(f"{self.root} is not writable")
            for name, schema in SCHEMAS.items():
                if TABLES[name].of_scan or name in self._open or self.table(name) is not None:
                    continue
                try:
                    DeltaTable.create(self.uri(name), schema=schema, mode="ignore", name=name,
                                      description=DESCRIPTION.format(SCHEMA_VERSION), storage_options=self.options)
                except Exception as e:  # noqa: BLE001  another writer may have created it first
                    error = e
                else:
                    error = None
                if self.table(name) is None:
                    raise error or CatalogUnavailable(f"cannot create {self.uri(name)}")
        except CatalogUnavailable:
            raise
        except BaseException as e:  # noqa: BLE001
            _reraise_interrupts(e)
            raise CatalogUnavailable(f"cannot write to catalog {self.location}: {_line(e)}") from None
        self._ready = True

    # ---- writing -------------------------------------------------------------------------------------
    def write_scan(self, row: dict) -> str:
        """Write one scan row (see catalog.rows) durably; returns its scan id."""
        self.write_scans(pa.Table.from_pylist([row], schema=SCAN_FILE))
        return row["scan_id"]

    def write_scans(self, scans: pa.Table | list[dict]) -> int:
        """Scans (rows of SCAN_FILE, their candidates, spikes and profiles in them), appended in one commit: no
        reader, ours or any other engine's, ever sees part of a scan."""
        if not isinstance(scans, pa.Table):
            scans = pa.Table.from_pylist(scans, schema=SCAN_FILE)
        self.ensure_writable()
        if len(scans):
            self._append("scans", scans)
        return len(scans)

    def write(self, name: str, rows: pa.Table | list[dict]) -> int:
        """Rows of table `name` (its columns), appended in one commit. A scan's own tables go through
        `write_scans`, which keeps a scan whole."""
        if TABLES[name].of_scan or name == "scans":
            raise ValueError(f"{name} rows are written in their scan's row (write_scans)")
        if not isinstance(rows, pa.Table):
            rows = pa.Table.from_pylist(rows, schema=SCHEMAS[name])
        if len(rows):
            self.ensure_writable()
            self._append(name, rows)
        return len(rows)

    def _append(self, name: str, table: pa.Table) -> None:
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError

        data = table.cast(SCHEMAS[name])
        for attempt in range(COMMIT_TRIES):
            try:
                dt = self._open[name]
                write_deltalake(dt, data, mode="append", writer_properties=_zstd(), schema_mode="merge")
                if (table_version(dt.metadata().description) or 0) < SCHEMA_VERSION:  # its columns are ours now
                    dt.alter.set_table_description(DESCRIPTION.format(SCHEMA_VERSION))
                return
            except CommitFailedError as e:  # a commit this one cannot follow (two writers created the table at
                error = e                   # once): take the table as it is now and append again
                self._open.pop(name)
                self.table(name)
            except BaseException as e:  # noqa: BLE001
                _reraise_interrupts(e)
                raise CatalogUnavailable(f"cannot write to catalog {self.location}: {_line(e)}") from None
        raise CatalogUnavailable(f"cannot write to catalog {self.location}: {_line(error)}")

    def compact(self, retention_hours: float = RETENTION_HOURS, force: bool = False) -> dict[str, int]:
        """Small files merged, a checkpoint of the log, and files no snapshot younger than `retention_hours`
        needs deleted (those of killed writers too). Returns files removed per table. A retention below
        SAFE_RETENTION_HOURS is refused unless forced (no writer or reader may be at work then)."""
        if retention_hours < SAFE_RETENTION_HOURS and not force:
            raise UnsafeCompaction(f"a retention of {retention_hours:g} h may delete files that a writer is about "
                                   f"to commit or a query is reading (at least {SAFE_RETENTION_HOURS:g} h is safe); "
                                   "with no writer or reader at work, --force")
        removed = {}
        with self._one_compaction():
            for name in TABLES:
                dt = self.table(name)
                if dt is None:
                    continue
                try:
                    dt.optimize.compact(writer_properties=_zstd())
                    dt.create_checkpoint()
                    removed[name] = len(dt.vacuum(retention_hours=int(retention_hours), dry_run=False,
                                                  enforce_retention_duration=False, full=True))
                except BaseException as e:  # noqa: BLE001
                    _reraise_interrupts(e)
                    raise CatalogUnavailable(f"cannot compact {self.uri(name)}: {_line(e)}") from None
        return removed

    @contextmanager
    def _one_compaction(self):
        """One compaction at a time: two at once may both rewrite the same files and both commit (delta-rs
        lets removes by commits that only rearrange data pass its conflict check), and every row of those
        files is then there twice (seen here, with writers compacting by themselves). Writers therefore never
        compact; batches compact when they end, and `catalog compact` by hand. Compactions of a local catalog
        wait for each other on a lock file in the temporary folder; on an object store, compact from one
        place at a time."""
        if not self.local:
            yield
            return
        import fcntl
        import tempfile

        key = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        with open(Path(tempfile.gettempdir()) / f"superweights-compact-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

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
        self.ensure_writable()
        seen = self.table("reference").to_pyarrow_table(columns=["origin", "set_id"])
        if len(seen) and pc.any(pc.and_(pc.equal(seen["origin"], origin), pc.equal(seen["set_id"], set_id))).as_py():
            return len(rows), self.uri("reference")  # the same content was imported before
        now = datetime.now(timezone.utc)
        for r in rows:
            r.update(origin=origin, set_id=set_id, imported=now)
        self.write("reference", pa.Table.from_pylist(rows, schema=REFERENCE_FILE))
        return len(rows), self.uri("reference")


def _zstd():
    """zstd, and row groups small enough that readers skip most of a table for a few scans (scan ids start
    with their time, and rows are appended in about that order) and read the rest in parallel."""
    from deltalake.writer import WriterProperties

    return WriterProperties(compression="ZSTD", max_row_group_size=ROW_GROUP)


def _reraise_interrupts(e: BaseException) -> None:
    """delta-rs's Rust panics reach Python as a BaseException (pyo3's PanicException): a failure of the catalog,
    to report like its errors. A user's Ctrl-C and an exit are not."""
    if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
        raise e


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
