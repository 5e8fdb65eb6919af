"""Read-only SQL over the catalog: an in-memory DuckDB whose only data are the Arrow datasets of one snapshot
of the catalog's tables (`catalog.snapshot`), with the views of `catalog.views`, and external access disabled
before the user's SQL runs: no statement can read or write any file (COPY, EXPORT, ATTACH, read_* functions
and EXPLAIN ANALYZE of any of them are refused by DuckDB itself), load extensions or change settings.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime

from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from .errors import QueryError
from .store import Catalog
from .views import views

if TYPE_CHECKING:
    from .snapshot import Snapshot

READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
USER_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.PermissionException,
               duckdb.ConversionException, duckdb.OutOfRangeException)


@dataclass(frozen=True)
class Limits:
    """What one query may take: memory (DuckDB's own limit; its default is 80% of the machine) and time."""

    memory_bytes: int = field(default_factory=lambda: min(4 << 30, _physical_memory() // 4))
    seconds: float = 300.0


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def connect(snapshot: Snapshot, limits: Limits | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the snapshot's tables and the catalog's views, bounded and sealed."""
    limits = limits or Limits()
    con = duckdb.connect(":memory:", config={"temp_directory": "", "autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False,
                                              "memory_limit": f"{max(1, limits.memory_bytes >> 20)}MiB"})
    for name, data in snapshot.data.items():
        con.register(f"_{name}", data)
    for name, sql in views().items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    con.execute("SET enable_external_access = false")  # no file, URL or extension from here on
    con.execute("SET lock_configuration = true")
    return con


def answer(catalog: Catalog, fn, limits: Limits | None = None):
    """`fn(connection)` over a snapshot of the catalog, within `limits`. A failure reading the tables' files
    makes one pass over every file: those that cannot be read are left out, named in a warning, and `fn` runs
    again."""
    from .snapshot import Snapshot

    limits = limits or Limits()
    snapshot = Snapshot(catalog)
    for attempt in range(2):
        con = connect(snapshot, limits)
        timer = threading.Timer(limits.seconds, con.interrupt)
        timer.start()
        try:
            return fn(con)
        except duckdb.InterruptException:
            raise QueryError(f"the query ran past its time limit of {limits.seconds:g} s (--time-limit)") from None
        except duckdb.OutOfMemoryException:
            raise QueryError(f"the query needs more than its memory limit of {limits.memory_bytes / 2**20:.0f} MiB "
                             "(--memory-limit)") from None
        except USER_ERRORS as e:
            raise QueryError(" ".join(str(e).split())[:300]) from None
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            if attempt == 0 and snapshot.drop_unreadable():
                continue
            raise QueryError(" ".join(str(e).split())[:300]) from None
        finally:
            timer.cancel()
            con.close()


def check_read_only(sql: str) -> None:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"invalid SQL: {str(e).splitlines()[0]}") from None
    if not statements:
        raise QueryError("empty SQL")
    for s in statements:
        if s.type not in READ_ONLY:
            raise QueryError(f"refused: the catalog is queried read-only, and this is a {s.type.name} "
                             f"statement ({' '.join(s.query.split())[:60]})")


def run(catalog: Catalog, sql: str, params: list | dict | None = None, limits: Limits | None = None
        ) -> tuple[list[str], list[tuple]]:
    """Columns and rows of a read-only query over the catalog's views."""
    check_read_only(sql)

    def query(con):
        cur = con.execute(sql, params) if params else con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    return answer(catalog, query, limits)


def dicts(catalog: Catalog, sql: str, params: list | dict | None = None) -> list[dict]:
    """`run`'s rows as dicts keyed by column."""
    columns, rows = run(catalog, sql, params)
    return [dict(zip(columns, r)) for r in rows]


# ---- output ----------------------------------------------------------------------------------------------
def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(v)


def jsonable(v):
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{c: jsonable(v) for c, v in zip(columns, r)} for r in rows], indent=1)
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        w.writerows([[_cell(v) for v in r] for r in rows])
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
