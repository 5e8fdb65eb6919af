"""Read-only SQL over the catalog: DuckDB in memory, views over the good Parquet files.

Views (the README documents their columns):
    scans, super_weights, spikes, layer_profiles   current scans only: per (model, revision, scanner version)
                                                   the newest successful scan, or the newest failure if none
                                                   succeeded; older scans are superseded, not deleted
    scans_all, super_weights_all, ...              every scan ever written, with a `current` flag
    latest_scans                                   one scan per model: its most recent current scan
    reference                                      published claims (the latest import of each file): weights
                                                   (coordinates) and channels (rows only), see catalog.reference
    disagreements                                  latest scans of referenced models against the reference, at
                                                   the level each claim was made
"""
from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .errors import QueryError
from .schema import NESTED, REFERENCE_FILE, SCAN_COLUMNS, SCAN_FILE, SCHEMA_VERSION
from .store import Catalog

FOUND = "('super_weight', 'partner')"
MATTERS = 0.1  # a channel claim whose measured loss change is at least +10% says the row matters
KEY = "model, coalesce(revision, ''), scanner_version"
NEWEST = "status = 'ok' DESC, started DESC, scan_id DESC"

VIEWS = {
    "scans_all": f"SELECT *, row_number() OVER (PARTITION BY {KEY} ORDER BY {NEWEST}) = 1 AS current FROM _scans",
    "scans": "SELECT * EXCLUDE (current) FROM scans_all WHERE current",
    "latest_scans": f"SELECT * FROM scans QUALIFY row_number() OVER (PARTITION BY model ORDER BY {NEWEST}) = 1",
    **{f"{t}_all": f"SELECT s.scan_id, s.model, s.revision, s.architecture, s.scanner_version, s.started, "
                   f"s.current, t.* EXCLUDE (scan_id) FROM _{t} t JOIN scans_all s USING (scan_id)"
       for t in NESTED},
    **{t: f"SELECT * EXCLUDE (current) FROM {t}_all WHERE current" for t in NESTED},
    "reference": "SELECT * FROM _reference QUALIFY imported = max(imported) OVER (PARTITION BY origin)",
    "disagreements": f"""
        WITH sc AS (SELECT scan_id, model, coalesce(repo_id, model) AS hub_id, revision FROM latest_scans
                    WHERE status = 'ok'),
        ref AS (SELECT sc.scan_id, r.layer, r.module, r.expert, r.row, r.col,
                       string_agg(DISTINCT r.source, '; ') AS source
                FROM reference r JOIN sc USING (hub_id) WHERE r.level = 'weight' GROUP BY ALL),
        cand AS (SELECT scan_id, layer, module, expert, row, col, verdict, ppl_ratio FROM super_weights
                 WHERE scan_id IN (SELECT scan_id FROM ref)),
        weights AS (
            SELECT coalesce(c.scan_id, r.scan_id) AS scan_id, 'weight' AS level,
                   coalesce(c.layer, r.layer) AS layer, coalesce(c.module, r.module) AS module,
                   coalesce(c.expert, r.expert) AS expert, coalesce(c.row, r.row) AS row, coalesce(c.col, r.col) AS col,
                   CASE WHEN r.scan_id IS NULL THEN 'found, not published'
                        WHEN c.scan_id IS NULL THEN 'published, not detected'
                        ELSE 'published, scan says ' || c.verdict END AS disagreement,
                   c.verdict, c.ppl_ratio, NULL::DOUBLE AS effect, NULL::VARCHAR AS claim, r.source
            FROM cand c FULL OUTER JOIN ref r ON c.scan_id = r.scan_id AND c.layer = r.layer AND c.module = r.module
                 AND c.expert IS NOT DISTINCT FROM r.expert AND c.row = r.row AND c.col = r.col
            WHERE (r.scan_id IS NULL AND c.verdict IN {FOUND}) OR (r.scan_id IS NOT NULL AND c.verdict IS NULL)
               OR (r.scan_id IS NOT NULL AND c.verdict NOT IN {FOUND})),
        chan AS (
            SELECT sc.scan_id, r.layer, r.row, r.effect, r.claim, r.source,
                   (SELECT max(w.group_ppl_ratio) FROM super_weights w WHERE w.scan_id = sc.scan_id
                    AND w.layer = r.layer AND w.row = r.row AND w.verdict IN {FOUND}) AS found_ratio,
                   (SELECT count(*) FROM spikes p WHERE p.scan_id = sc.scan_id AND p.layer = r.layer
                    AND p.row = r.row AND p.kind <> 'cancellation') AS spikes
            FROM reference r JOIN sc USING (hub_id) WHERE r.level = 'channel'),
        channels AS (
            SELECT scan_id, 'channel' AS level, layer, NULL::VARCHAR AS module, NULL::INTEGER AS expert, row,
                   NULL::INTEGER AS col,
                   CASE WHEN effect IS NULL THEN 'published massive activation, no spike there'
                        WHEN effect >= {MATTERS} THEN 'published channel matters, no super weight in it'
                        ELSE 'published channel near inert, super weight in it' END AS disagreement,
                   CASE WHEN found_ratio IS NOT NULL THEN 'super_weight' END AS verdict, found_ratio AS ppl_ratio,
                   effect, claim, source
            FROM chan
            WHERE (effect IS NULL AND spikes = 0) OR (effect >= {MATTERS} AND found_ratio IS NULL)
               OR (effect < {MATTERS} AND found_ratio IS NOT NULL))
        SELECT sc.model, sc.revision, d.level, d.layer, d.module, d.expert, d.row, d.col, d.disagreement, d.verdict,
               d.ppl_ratio, d.effect, d.claim, d.source, d.scan_id
        FROM (SELECT * FROM weights UNION ALL SELECT * FROM channels) d JOIN sc USING (scan_id)
        ORDER BY sc.model, d.level DESC, d.layer, d.row, d.col""",
}
# which stored data each view needs
NEEDS = {"reference": {"reference"}, "disagreements": {"scans", "super_weights", "spikes", "reference"}}
for _t in NESTED:
    NEEDS[_t] = NEEDS[f"{_t}_all"] = {"scans", _t}
READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _flatten(table: pa.Table, name: str) -> pa.Table:
    """The nested list column `name` -> one row per element, with its scan id."""
    lists = table[name].combine_chunks() if len(table) else pa.array([], SCAN_FILE.field(name).type)
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    flat = pa.Table.from_struct_array(values)
    return flat.add_column(0, "scan_id", pc.take(table["scan_id"], parents) if len(table) else
                           pa.array([], pa.string()))


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _local_sources(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    """Views straight over the good files: DuckDB reads only the columns and rows a query touches. Files of
    an older schema are read by pyarrow into the current one (`schema.upgrade`); references are small."""
    files = catalog.good_files("scans")
    current = [f for f, v in files.items() if v == SCHEMA_VERSION]
    con.execute("SET parquet_metadata_cache = true")  # each view binds the files again otherwise
    older = [_with_filename(catalog, f) for f, v in files.items() if v != SCHEMA_VERSION]
    con.register("_older", pa.concat_tables(older) if older else
                 SCAN_FILE.empty_table().append_column("filename", pa.array([], pa.string())))
    if current:
        con.execute(f"CREATE VIEW _files AS SELECT * FROM read_parquet({_sql_list(current)}, filename = true) "
                    "UNION ALL BY NAME SELECT * FROM _older")
    else:
        con.execute("CREATE VIEW _files AS SELECT * FROM _older")
    # a scan seen in two files (a merge was renamed but its inputs not yet deleted) is read from one of them;
    # deciding on two columns keeps DuckDB from reading the nested ones for it
    con.execute("CREATE VIEW _one AS SELECT scan_id, min(filename) AS filename FROM _files GROUP BY scan_id")
    con.execute(f"CREATE VIEW _scans AS SELECT {', '.join(SCAN_COLUMNS)} FROM _files "
                "SEMI JOIN _one USING (scan_id, filename)")
    for t in NESTED:
        con.execute(f"CREATE VIEW _{t} AS SELECT scan_id, UNNEST({t}, recursive := true) FROM _files "
                    "SEMI JOIN _one USING (scan_id, filename)")
    con.register("_reference", catalog.read("reference"))
    con.execute(f"SET allowed_directories = ['{catalog.root.replace(chr(39), chr(39) * 2)}/']")


def _with_filename(catalog: Catalog, path: str) -> pa.Table:
    t = catalog.read_file(path)
    return t.append_column("filename", pa.array([path] * len(t), pa.string()))


def _arrow_sources(con: duckdb.DuckDBPyConnection, catalog: Catalog, views: set[str] | None) -> None:
    """Object stores (DuckDB here has no network extensions): read with pyarrow, only what `views` need."""
    names = set(VIEWS) if views is None else {v for v in views if v in VIEWS}
    need = set().union(*(NEEDS.get(v, {"scans"}) for v in names)) if names else set()
    nested = [t for t in NESTED if t in need]
    scans = catalog.read("scans", columns=SCAN_COLUMNS + nested) if need - {"reference"} else None
    if scans is None:
        scans = pa.schema([SCAN_FILE.field(c) for c in SCAN_COLUMNS]).empty_table()
    con.register("_scans", scans.select(SCAN_COLUMNS))
    for t in NESTED:
        src = scans if t in nested else pa.schema([SCAN_FILE.field("scan_id"), SCAN_FILE.field(t)]).empty_table()
        con.register(f"_{t}", _flatten(src, t))
    con.register("_reference", catalog.read("reference") if "reference" in need else REFERENCE_FILE.empty_table())


def connect(catalog: Catalog, views: set[str] | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the catalog's views (`views`: those a query names; None: all)."""
    con = duckdb.connect(":memory:")
    if catalog.local:
        _local_sources(con, catalog)
    else:
        _arrow_sources(con, catalog, views)
    for name, sql in VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    # the user's SQL may read these views and nothing else: no other files, no extensions, no settings
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


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


def run(catalog: Catalog, sql: str, params: list | dict | None = None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of a read-only query over the catalog's views."""
    check_read_only(sql)
    try:
        views = duckdb.get_table_names(sql, qualified=False)
    except duckdb.Error:
        views = None
    for attempt in range(5):
        con = connect(catalog, views)
        try:
            cur = con.execute(sql, params) if params else con.execute(sql)
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()
        except duckdb.IOException as e:
            if attempt == 4 or "No files found" not in str(e) and "No such file" not in str(e):
                raise QueryError(" ".join(str(e).split())[:300]) from None
            # a merge replaced files after they were listed: list again
        except duckdb.Error as e:
            raise QueryError(" ".join(str(e).split())[:300]) from None
        finally:
            con.close()


# ---- short forms -----------------------------------------------------------------------------------------
SW_COLUMNS = ("model, revision, layer, module, expert, row, col, value, output_ratio AS spike_ratio, ppl_ratio, "
              "verdict, scanner_version")


def model_sql(model: str) -> tuple[str, list]:
    """The super weights and partners of one model's latest scan (its hub id, path or pkg:name)."""
    return (f"SELECT {SW_COLUMNS} FROM super_weights WHERE verdict IN {FOUND} AND scan_id IN "
            "(SELECT scan_id FROM latest_scans WHERE model = $1 OR spec = $1) ORDER BY layer, row, col", [model])


def where_sql(layer: int | None, architecture: str | None, verdicts: str = FOUND) -> tuple[str, list]:
    """Every model whose latest scan has a super weight (or partner) in a layer and/or architecture."""
    cond, params = [f"verdict IN {verdicts}", "scan_id IN (SELECT scan_id FROM latest_scans)"], []
    if layer is not None:
        params.append(layer)
        cond.append(f"layer = ${len(params)}")
    if architecture is not None:
        params.append(architecture)
        cond.append(f"architecture = ${len(params)}")
    return (f"SELECT {SW_COLUMNS.replace('model,', 'model, architecture,')} FROM super_weights "
            f"WHERE {' AND '.join(cond)} ORDER BY model, layer, row, col", params)


DISAGREEMENTS_SQL = "SELECT * EXCLUDE (scan_id) FROM disagreements"


# ---- output ----------------------------------------------------------------------------------------------
def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(v)


def _jsonable(v):
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{c: _jsonable(v) for c, v in zip(columns, r)} for r in rows], indent=1)
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
