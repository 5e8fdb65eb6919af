"""Read-only SQL over the catalog: an in-memory DuckDB whose only data are the Arrow datasets of one snapshot
of the catalog's tables (`catalog.snapshot`), with external access disabled before the user's SQL runs: no
statement can read or write any file (COPY, EXPORT, ATTACH, read_* functions and EXPLAIN ANALYZE of any
of them are refused by DuckDB itself), load extensions or change settings.

Views (the README documents their columns):
    scans, super_weights, spikes, layer_profiles   current scans only: per (model, revision, scanner version)
                                                   the newest successful scan, or the newest failure if none
                                                   succeeded; older scans are superseded, not deleted
    scans_all, super_weights_all, ...              every scan ever written, with a `current` flag
    latest_scans                                   one scan per model: its most recent current scan
    quant_results                                  quantization studies: perplexity per setting (quantize-eval)
    lineage, lineage_all                           comparisons of two scans (diff): the latest per pair of models,
                                                   and every one
    families                                       every model of the latest scans with its base model, the root
                                                   of its family (the base of its base ..., scanned or not) and
                                                   its generation below the root
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

from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from .errors import QueryError
from .schema import NESTED
from .store import Catalog

if TYPE_CHECKING:
    from .snapshot import Snapshot

FOUND = "('super_weight', 'super_set', 'partner')"  # catastrophic (partner: catalogs of superweights 0.1)
MATTERING = "('super_weight', 'super_set', 'partner', 'mild')"  # catastrophic or significant
MATTERS = 0.1  # a channel claim whose measured loss change is at least +10% says the row matters
# scans of one key supersede each other; scans of different configurations (thresholds, evaluation set,
# validated or not) or precisions are different keys, and never replace each other. A failed scan may not
# know its precision (it failed before loading): any success of its configuration supersedes it.
KEY = "model, coalesce(revision, ''), scanner_version, coalesce(config_fingerprint, '')"
CURRENT = (f"CASE WHEN status = 'ok' THEN row_number() OVER (PARTITION BY {KEY}, dtype, status "
           f"ORDER BY started DESC, scan_id DESC) = 1 ELSE count_if(status = 'ok') OVER (PARTITION BY {KEY}) = 0 "
           f"AND row_number() OVER (PARTITION BY {KEY}, status ORDER BY started DESC, scan_id DESC) = 1 END")
# a model's latest scan: a validated one before any that is not, float32 before lower precision, then the newest
BEST = ("status = 'ok' DESC, coalesce(validated, ppl_base IS NOT NULL) DESC, dtype = 'float32' DESC, "
        "started DESC, scan_id DESC")

VIEWS = {
    # a model's latest scan is also current in its own key (scans of one key share their quality), so
    # `latest` needs no pass over `current`; a query that uses one flag computes only that window
    "scans_all": f"SELECT *, {CURRENT} AS current, "
                 f"row_number() OVER (PARTITION BY model ORDER BY {BEST}) = 1 AS latest FROM _scans",
    "scans": "SELECT * EXCLUDE (current, latest) FROM scans_all WHERE current",
    "latest_scans": "SELECT * EXCLUDE (current, latest) FROM scans_all WHERE latest",
    **{f"{t}_all": f"SELECT s.scan_id, s.model, s.revision, s.architecture, s.scanner_version, s.started, "
                   f"s.current, s.latest, t.* EXCLUDE (scan_id) FROM _{t} t JOIN scans_all s USING (scan_id)"
       for t in NESTED},
    **{t: f"SELECT * EXCLUDE (current, latest) FROM {t}_all WHERE current" for t in NESTED},
    "quant_results": "SELECT * FROM _quant_results",
    "lineage_all": "SELECT * FROM _lineage",
    "lineage": "SELECT * FROM _lineage QUALIFY row_number() OVER (PARTITION BY a_model, b_model "
               "ORDER BY status = 'ok' DESC, started DESC, diff_id DESC) = 1",
    # walk each model's base up to a model the catalog has no base for (a cycle stops where it closes)
    "families": """
        WITH RECURSIVE m AS (SELECT model, base_model, base_model_from FROM latest_scans),
        up(model, node, base, depth, path) AS (
            SELECT model, model, base_model, 0, [model] FROM m
            UNION ALL
            SELECT up.model, up.base, m.base_model, up.depth + 1, list_append(up.path, up.base)
            FROM up LEFT JOIN m ON m.model = up.base
            WHERE up.base IS NOT NULL AND NOT list_contains(up.path, up.base) AND up.depth < 64)
        SELECT up.node AS root, up.model, m.base_model, m.base_model_from, up.depth AS generation
        FROM up JOIN m USING (model)
        QUALIFY row_number() OVER (PARTITION BY up.model ORDER BY up.depth DESC) = 1""",
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
                    AND w.layer = r.layer AND w.row = r.row AND w.verdict IN {MATTERING}) AS found_ratio,
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
READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
USER_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.PermissionException,
               duckdb.ConversionException, duckdb.OutOfRangeException)


def connect(snapshot: Snapshot) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the snapshot's tables and the catalog's views, sealed."""
    con = duckdb.connect(":memory:", config={"temp_directory": "", "autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    for name, data in snapshot.data.items():
        con.register(f"_{name}", data)
    for name, sql in VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    con.execute("SET enable_external_access = false")  # no file, URL or extension from here on
    con.execute("SET lock_configuration = true")
    return con


def answer(catalog: Catalog, fn):
    """`fn(connection)` over a snapshot of the catalog. A failure reading the tables' files makes one pass over
    every file: those that cannot be read are left out, named in a warning, and `fn` runs again."""
    from .snapshot import Snapshot

    snapshot = Snapshot(catalog)
    for attempt in range(2):
        con = connect(snapshot)
        try:
            return fn(con)
        except USER_ERRORS as e:
            raise QueryError(" ".join(str(e).split())[:300]) from None
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            if attempt == 0 and snapshot.drop_unreadable():
                continue
            raise QueryError(" ".join(str(e).split())[:300]) from None
        finally:
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


def run(catalog: Catalog, sql: str, params: list | dict | None = None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of a read-only query over the catalog's views."""
    check_read_only(sql)

    def query(con):
        cur = con.execute(sql, params) if params else con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    return answer(catalog, query)


def dicts(catalog: Catalog, sql: str, params: list | dict | None = None) -> list[dict]:
    """`run`'s rows as dicts keyed by column."""
    columns, rows = run(catalog, sql, params)
    return [dict(zip(columns, r)) for r in rows]


# ---- short forms -----------------------------------------------------------------------------------------
SW_COLUMNS = ("model, revision, layer, module, expert, row, col, value, output_ratio AS spike_ratio, ppl_ratio, "
              "verdict, scanner_version")


def model_sql(model: str) -> tuple[str, list]:
    """The super weights and partners of one model's latest scan (its hub id, path or pkg:name)."""
    return (f"SELECT {SW_COLUMNS} FROM super_weights_all WHERE latest AND verdict IN {FOUND} AND scan_id IN "
            "(SELECT scan_id FROM latest_scans WHERE model = $1 OR spec = $1) ORDER BY layer, row, col", [model])


def where_sql(layer: int | None, architecture: str | None, verdicts: str = FOUND) -> tuple[str, list]:
    """Every model whose latest scan has a super weight (or partner) in a layer and/or architecture."""
    cond, params = [f"verdict IN {verdicts}", "latest"], []
    if layer is not None:
        params.append(layer)
        cond.append(f"layer = ${len(params)}")
    if architecture is not None:
        params.append(architecture)
        cond.append(f"architecture = ${len(params)}")
    return (f"SELECT {SW_COLUMNS.replace('model,', 'model, architecture,')} FROM super_weights_all "
            f"WHERE {' AND '.join(cond)} ORDER BY model, layer, row, col", params)


DISAGREEMENTS_SQL = "SELECT * EXCLUDE (scan_id) FROM disagreements"


# each model of a family with the latest successful comparison against its base (none for a root)
FAMILY_LINEAGE = ("families f LEFT JOIN lineage l ON l.a_model = f.base_model AND l.b_model = f.model "
                  "AND l.status = 'ok'")


def family_sql(model: str) -> tuple[str, list]:
    """Every model of the family `model` belongs to (any member, or its root): its base, generation, finding,
    and what the comparison with its base found (kept / moved / lost / new, the base's set zeroed in it)."""
    return ("""SELECT f.root, f.model, f.base_model, f.generation, s.finding, s.n_super_weights,
                      l.kept, l.moved, l.lost, l.new, l.a_in_b_ppl_ratio AS base_set_ppl_ratio,
                      l.a_in_b_ppl_ratio_lo AS base_set_ppl_ratio_lo, l.a_in_b_ppl_ratio_hi AS base_set_ppl_ratio_hi,
                      l.a_in_b_verdict AS base_set_verdict, l.b_in_b_ppl_ratio AS own_set_ppl_ratio
               FROM """ + FAMILY_LINEAGE + """ JOIN latest_scans s ON s.model = f.model
               WHERE f.root IN (SELECT root FROM families WHERE model = $1 OR root = $1)
               ORDER BY f.root, f.generation, f.model""", [model])


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
