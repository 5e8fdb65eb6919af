"""What a query reads: the catalog's tables at one moment, as Arrow datasets over the files their Delta
logs name, with files that cannot be read left out and named ("skip it, name it, answer").

`scans` is loaded first: a scan's other rows are committed before its `scans` row, so every scan in
this snapshot has its rows in the tables loaded after it.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from words.tables import SCHEMAS, TABLES

from . import log
from .errors import CatalogUnavailable, UnreadableLog
from .store import Catalog, _line, _reraise_interrupts


class Snapshot:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        catalog._check_layout()
        self.versions: dict[str, int] = {}
        self.data: dict[str, pads.Dataset | pa.Table] = {}
        self.where: dict[str, str] = {}  # table -> its folder or URI, for naming files
        self.unfiltered: dict[str, pads.Dataset] = {}  # the old per-item tables before `_whole_only`
        for name in SCHEMAS:  # `scans` first (words.tables)
            try:
                dt = catalog.table(name)
            except UnreadableLog:
                if not catalog.local or (ds := self._replayed(name)) is None:
                    raise
                self.data[name] = ds
                continue
            if dt is None:
                self.data[name] = SCHEMAS[name].empty_table()
                continue
            self.versions[name] = dt.version()
            self.where[name] = catalog.uri(name)
            try:
                # read as this version's schema: columns a table of an older one lacks are empty
                if catalog.local:
                    self._empty_entries(name)
                    ds = dt.to_pyarrow_dataset(filesystem=self._fs(name), schema=SCHEMAS[name])
                    ds = self._without(name, ds, self._outside(name, ds))
                else:
                    ds = dt.to_pyarrow_dataset(schema=SCHEMAS[name])
            except BaseException as e:  # noqa: BLE001  a log delta-rs cannot read: the table, named, not a traceback
                _reraise_interrupts(e)
                raise CatalogUnavailable(f"cannot read catalog table {catalog.uri(name)}: {_line(e)}") from None
            self.data[name] = ds
        self._whole_only()

    def _whole_only(self) -> None:
        """The tables catalogs before schema 5 kept a scan's items in, cut to the rows of committed scans: a
        writer killed between its commits left rows there, which no relation of a query holds, raw or not."""
        old = [n for n in self.data if TABLES[n].of_scan and isinstance(self.data[n], pads.Dataset)]
        self.unfiltered.update({n: self.unfiltered.get(n, self.data[n]) for n in old})
        if not old:
            return
        try:
            ids = pa.array(self.data["scans"].to_table(columns=["scan_id"])["scan_id"].unique())
        except (OSError, pa.ArrowException, ValueError):
            return  # a scans file that cannot be read: the views still show only whole scans
        for n in old:
            self.data[n] = self.unfiltered[n].filter(pc.field("scan_id").isin(ids))

    def _fs(self, name: str) -> pafs.FileSystem:
        return pafs.SubTreeFileSystem(self.catalog.uri(name), pafs.LocalFileSystem())

    def _replayed(self, name: str) -> pads.Dataset | None:
        """A table whose log delta-rs cannot read, at its newest readable state (its JSON entries up to the
        first bad one), what was left out named; None when that cannot be said either."""
        state = log.replay(self.catalog.uri(name))
        if state is None:
            return None
        self.versions[name] = state.version
        self.where[name] = self.catalog.uri(name)
        problems = state.problems + log.checkpoints(self.catalog.uri(name))
        self.catalog.warn(f"catalog table {self.catalog.uri(name)} read at version {state.version}, its newest "
                          f"readable state ({'; '.join(problems)[:300]}); superweights catalog check --repair")
        ds = pads.dataset(state.files, schema=SCHEMAS[name], format="parquet", filesystem=self._fs(name))
        return self._without(name, ds, self._outside(name, ds))

    def _empty_entries(self, name: str) -> None:
        """delta-rs reads an emptied log entry as a commit of nothing: its rows vanish without a word."""
        found = log.entries(self.catalog.uri(name))
        empty = [v for v, p in found.items() if v > max(found) - 10 and os.path.getsize(p) == 0]
        for v in empty:
            self.catalog.warn(f"catalog table {self.catalog.uri(name)}: log entry {v} is empty, its rows lost "
                              "from view; superweights catalog check --repair")

    def _outside(self, name: str, ds: pads.Dataset) -> set[str]:
        """Local files that are links, or not inside the table's folder: never read (a catalog is shared,
        and a link in it could make queries read, or fail on, any file of the machine)."""
        top = os.path.realpath(self.catalog.uri(name))
        bad = set()
        for f in ds.files:
            path = os.path.join(self.catalog.uri(name), f)
            if os.path.islink(path) or not os.path.realpath(path).startswith(top + os.sep):
                bad.add(f)
                self.catalog.warn(f"skipping catalog file {path}: a link, or outside its table")
        return bad

    def _without(self, name: str, ds: pads.Dataset, bad: set[str]) -> pads.Dataset:
        if not bad:
            return ds
        keep = [f for f in ds.get_fragments() if f.path not in bad]
        return pads.FileSystemDataset(keep, ds.schema, ds.format, ds.filesystem)

    def drop_unreadable(self) -> bool:
        """Read every file whole, in the table's schema; leave out, and name, those that fail (a corrupt page, a
        file gone, columns of other types than the table's). Called only when a query failed reading: it costs
        one read of the catalog. True if any was left out."""
        found = False
        for name, ds in list(self.data.items()):
            if not isinstance(ds, pads.Dataset):
                continue
            ds = self.unfiltered.get(name, ds)
            bad = set()
            for frag in ds.get_fragments():
                try:  # as the table reads it: cast to its schema
                    pads.FileSystemDataset([frag], ds.schema, ds.format, ds.filesystem).to_table()
                except (OSError, pa.ArrowException, ValueError, NotImplementedError) as e:
                    bad.add(frag.path)
                    self.catalog.warn(f"skipping unreadable catalog file {self.where[name]}/{frag.path}: "
                                      f"{(str(e).splitlines() or [type(e).__name__])[0][:200]}")
            if bad:
                found = True
                self.data[name] = self._without(name, ds, bad)
                self.unfiltered.pop(name, None)
        if found:
            self._whole_only()
        return found
