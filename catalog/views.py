"""The catalog's views, as SQL over its tables (each registered as `_name`), and the common questions
(`superweights query --model/--layer/--architecture/--disagreements/--family`) as SQL with bound parameters.
No DuckDB here: the command line lists the views without loading it (`catalog.query` runs them).

Views (docs/catalog.md documents their columns):
    scans, candidates, spikes, layer_profiles      current scans only: per (model, revision, scanner version,
                                                   configuration) the newest successful scan, or the newest
                                                   failure if none succeeded; older scans are superseded
    super_weights                                  the candidates of the catastrophic tiers (words.verdicts)
    scans_all, candidates_all, super_weights_all, ...  every scan ever written, with `current` and `latest`
    latest_scans                                   one scan per model: its best current scan
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

from words import verdicts
from words.tables import NESTED, TABLES

FOUND = verdicts.sql_list(verdicts.CATASTROPHIC_STORED)  # catastrophic (older names included)
MATTERING = verdicts.sql_list(verdicts.MATTERING_STORED)  # catastrophic or significant
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

# values older schemas stored under other names, shown under today's
RENAMED = {"spikes": " REPLACE (CASE t.kind " + " ".join(f"WHEN '{a}' THEN '{n}'" for a, n in
                                                           verdicts.SPIKE_ALIASES.items()) + " ELSE t.kind END AS kind)"}

SCAN_KEYS = "s.scan_id, s.model, s.revision, s.architecture, s.scanner_version, s.started, s.current, s.latest"

VIEWS = {
    # a model's latest scan is also current in its own key (scans of one key share their quality), so
    # `latest` needs no pass over `current`; a query that uses one flag computes only that window
    "scans_all": f"SELECT * EXCLUDE ({', '.join(NESTED)}), {CURRENT} AS current, "
                 f"row_number() OVER (PARTITION BY model ORDER BY {BEST}) = 1 AS latest FROM _scans",
    "scans": "SELECT * EXCLUDE (current, latest) FROM scans_all WHERE current",
    "latest_scans": "SELECT * EXCLUDE (current, latest) FROM scans_all WHERE latest",
    # the lists in each scan's row, and the tables catalogs before schema 5 kept them in (joined to their scans:
    # rows a writer killed between its commits left there are never shown)
    **{f"{t}_all": f"SELECT {SCAN_KEYS}, unnest(r.item) FROM (SELECT scan_id, unnest({t}) AS item FROM _scans) r "
                   f"JOIN scans_all s USING (scan_id) UNION ALL BY NAME SELECT {SCAN_KEYS}, t.* EXCLUDE (scan_id)"
                   f"{RENAMED.get(t, '')} FROM _{t} t JOIN scans_all s USING (scan_id)"
       for t in NESTED},
    **{t: f"SELECT * EXCLUDE (current, latest) FROM {t}_all WHERE current" for t in NESTED},
    "super_weights_all": f"SELECT * FROM candidates_all WHERE verdict IN {FOUND}",
    "super_weights": f"SELECT * FROM candidates WHERE verdict IN {FOUND}",
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
        cand AS (SELECT scan_id, layer, module, expert, row, col, verdict, ppl_ratio FROM candidates
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
                   (SELECT max(w.group_ppl_ratio) FROM candidates w WHERE w.scan_id = sc.scan_id
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


def views() -> dict[str, str]:
    """Every view: those above, and each other table of words.tables as itself."""
    return {**VIEWS, **{t: f"SELECT * FROM _{t}" for t in TABLES if t not in VIEWS and f"{t}_all" not in VIEWS}}


# ---- short forms -----------------------------------------------------------------------------------------
SW_COLUMNS = ("model, revision, layer, module, expert, row, col, value, output_ratio AS spike_ratio, ppl_ratio, "
              "verdict, scanner_version")


VALIDATED = tuple(t.name for t in verdicts.TIERS if t.name != "unvalidated")  # tiers a measurement decided
MODEL_COLUMNS = ("model, revision, layer, module, expert, row, col, value, output_ratio AS spike_ratio, verdict, "
                 "ppl_ratio, ppl_ratio_lo, ppl_ratio_hi, windows, near_threshold, decided, group_ppl_ratio, "
                 "group_ppl_ratio_lo, group_ppl_ratio_hi, scanner_version")


def model_sql(model: str, tiers: tuple[str, ...] = VALIDATED) -> tuple[str, list]:
    """The weights of one model's latest scan (its hub id, path or pkg:name) whose verdict is one of `tiers`
    (default: every tier a measurement decided), each with its interval; catastrophic tiers first."""
    stored = tuple(a for a, n in verdicts.ALIASES.items() if n in tiers) + tuple(tiers)
    order = " ".join(f"WHEN '{t.name}' THEN {i}" for i, t in enumerate(verdicts.TIERS))
    return (f"SELECT {MODEL_COLUMNS} FROM candidates_all WHERE latest AND verdict IN {verdicts.sql_list(stored)} "
            "AND scan_id IN (SELECT scan_id FROM latest_scans WHERE model = $1 OR spec = $1) "
            f"ORDER BY CASE verdict {order} ELSE 0 END, layer, row, col", [model])


def where_sql(layer: int | None, architecture: str | None, tiers: str = FOUND) -> tuple[str, list]:
    """Every model whose latest scan has a super weight (catastrophic tier) in a layer and/or architecture."""
    cond, params = [f"verdict IN {tiers}", "latest"], []
    if layer is not None:
        params.append(layer)
        cond.append(f"layer = ${len(params)}")
    if architecture is not None:
        params.append(architecture)
        cond.append(f"architecture = ${len(params)}")
    return (f"SELECT {SW_COLUMNS.replace('model,', 'model, architecture,')} FROM candidates_all "
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
