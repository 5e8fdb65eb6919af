"""Families: two scans of related models compared (catalog.lineage) and cross-ablated (scanner.study.cross), as
one `lineage` row. Used by `superweights diff` and by batches whose models name a base.

A side is a model's latest validated scan in the catalog, or a scan id; a model the catalog does not hold is
scanned first, in the load that cross-ablates it. Each model is loaded once per direction it is measured in:
B (A's set zeroed, B's own beside it, W read at A's coordinates), then A (B's set, A's own, W at B's)."""
from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass

from catalog.lineage import compare, counts, mattering
from scanner import __version__ as SCANNER_VERSION
from scanner.adapters import Coord
from scanner.config import ScanConfig
from words import verdicts
from words.tables import LINEAGE

from .errors import BadOption

log = logging.getLogger("superweights")
SCAN = ("SELECT scan_id, model, spec, revision, validated, base_model, base_model_from, eval_ids_sha256 FROM scans_all "
        "WHERE status = 'ok' AND (scan_id = $1 OR (latest AND (model = $1 OR spec = $1)))")
WEIGHTS = ("SELECT layer, module, expert, \"row\", col, value, output_ratio, verdict, ppl_ratio, window_deltas "
           "FROM candidates_all "
           "WHERE scan_id = $1 ORDER BY layer, expert NULLS FIRST, \"row\", col")


@dataclass(frozen=True)
class Side:
    """One model of a comparison: its scan as the catalog (or a scan just run) holds it."""

    model: str
    spec: str
    revision: str
    scan_id: str | None
    weights: tuple  # candidates rows (dicts)
    validated: bool
    base_model: str | None = None  # the base its scan recorded
    base_model_from: str | None = None
    eval_ids_sha256: str | None = None  # its evaluation windows: effects pair with another side's when equal

    @property
    def catastrophic(self) -> list[Coord]:
        return [_coord(w) for w in self.weights if verdicts.is_catastrophic(w["verdict"])]

    @property
    def mattering(self) -> list[Coord]:
        return [_coord(w) for w in mattering(list(self.weights))]


def _coord(w: dict) -> Coord:
    return Coord(w["layer"], w["module"], w["row"], w["col"], w["expert"])


def _key(c: Coord) -> tuple:
    return (c.layer, c.module, c.expert, c.row, c.col)


def find(catalog, ident: str) -> Side | None:
    """The side `ident` names in the catalog (a scan id, or a model's latest scan), or None."""
    from catalog import query

    if catalog is None or not catalog.exists():
        return None
    scans = query.dicts(catalog, SCAN, [ident])
    if not scans:
        return None
    scan = scans[0]
    return Side(scan["model"], scan["spec"], scan["revision"], scan["scan_id"],
                tuple(query.dicts(catalog, WEIGHTS, [scan["scan_id"]])), bool(scan["validated"]), scan["base_model"],
                scan["base_model_from"], scan["eval_ids_sha256"])


def from_row(row: dict) -> Side:
    """A side from a scan's catalog row (`catalog.rows.ok_row`)."""
    return Side(row["model"], row["spec"], row["revision"], row["scan_id"], tuple(row["candidates"]),
                bool(row["validated"]), row.get("base_model"), row.get("base_model_from"), row.get("eval_ids_sha256"))


def _source(side_or_spec):
    from scanner.load.sources import resolve, resolve_pinned

    if isinstance(side_or_spec, Side):
        return resolve_pinned(side_or_spec.spec, side_or_spec.revision)
    return resolve(side_or_spec)


@dataclass
class Measured:
    """What the loads of a comparison found: both sides (scanned there when they were specs), the
    cross-ablations by name (a_in_b, b_in_b, b_in_a, a_in_a), W read in B at A's coordinates and in A at
    B's, and the scan rows made."""

    a: Side
    b: Side
    crosses: dict
    in_b: dict
    in_a: dict
    eval_text_sha256: str
    scanned: list
    paired: bool  # both loads evaluated the same windows: effects in A and in B pair window by window


def measure(a: Side | str, b: Side | str, cfg: ScanConfig, progress: bool = False) -> Measured:
    """Load B, then A; a side given as a spec is scanned in its load (A first on its own: its set is
    needed in B's)."""
    from catalog.rows import ok_row
    from scanner.study.cross import cross_source

    scanned = []

    def side_of(outcome) -> Side:
        row = ok_row(outcome.result.to_dict())
        scanned.append(row)
        return from_row(row)

    crosses = {}
    if not isinstance(a, Side):
        out = cross_source(_source(a), cfg, {}, scan_as="a_in_a", progress=progress)
        a, crosses = side_of(out), dict(out.crosses)
    b_scan = not isinstance(b, Side)
    sets = {"a_in_b": a.catastrophic} | ({} if b_scan else {"b_in_b": b.catastrophic})
    ob = cross_source(_source(b), cfg, sets, read=a.mattering, scan_as="b_in_b" if b_scan else None, progress=progress)
    if b_scan:
        b = side_of(ob)
    sets = {"b_in_a": b.catastrophic} | ({} if "a_in_a" in crosses else {"a_in_a": a.catastrophic})
    oa = cross_source(_source(a), cfg, sets, read=b.mattering, progress=progress)
    crosses.update(ob.crosses)
    crosses.update(oa.crosses)
    return Measured(a, b, crosses, ob.values, oa.values, ob.eval_text_sha256, scanned,
                    ob.eval_ids_sha256 == oa.eval_ids_sha256)


def lineage_row(a: Side, b: Side, m: Measured | None = None, declared: str | None = None,
                cfg: ScanConfig | None = None) -> dict:
    """The `lineage` row of A against B, with the cross-ablations and values of `m` when measured."""
    if declared is None and b.base_model == a.model:
        declared = b.base_model_from  # B's own scan names A as its base
    in_a, in_b = (m.in_a, m.in_b) if m else ({}, {})
    coords = compare(list(a.weights), list(b.weights), a_values={_key(c): v for c, v in in_a.items()},
                     b_values={_key(c): v for c, v in in_b.items()})
    row = {**dict.fromkeys(LINEAGE.names), "diff_id": uuid.uuid4().hex,
           "started": datetime.datetime.now(datetime.timezone.utc), "scanner_version": SCANNER_VERSION,
           "a_model": a.model, "a_scan_id": a.scan_id, "a_revision": a.revision,
           "b_model": b.model, "b_scan_id": b.scan_id, "b_revision": b.revision, "declared": declared,
           **counts(coords), "a_set": [c.label() for c in a.catastrophic],
           "b_set": [c.label() for c in b.catastrophic], "eval_text_sha256": m and m.eval_text_sha256,
           "status": "ok", "coordinates": coords}
    for name, cross in (m.crosses if m else {}).items():
        row.update(cross.to_dict(name))
    _changes(row, a, b, m, cfg or ScanConfig())
    return row


def _changes(row: dict, a: Side, b: Side, m: Measured | None, cfg: ScanConfig) -> None:
    """Each coordinate's change from A to B, and each set's (in the other model over in its own), from the
    paired per-window effects: a change only where the interval lies outside the zone."""
    from scanner.study.cross import change

    paired = a.eval_ids_sha256 is not None and a.eval_ids_sha256 == b.eval_ids_sha256
    deltas_a = {_wkey(w): w.get("window_deltas") for w in a.weights}
    deltas_b = {_wkey(w): w.get("window_deltas") for w in b.weights}
    for c in row["coordinates"]:
        at_b = (c["b_layer"], c["module"], c["expert"], c["b_row"], c["b_col"])
        before = deltas_a.get((c["layer"], c["module"], c["expert"], c["row"], c["col"])) if paired else None
        c.update(change(before, deltas_b.get(at_b) if paired else None, cfg).to_dict("change"))
    if m is None:
        return
    for side, own, other in (("a_set", "a_in_a", "a_in_b"), ("b_set", "b_in_b", "b_in_a")):
        x, y = m.crosses.get(own), m.crosses.get(other)
        ok = m.paired and x is not None and y is not None and x.estimate is not None and y.estimate is not None
        row.update(change(x.estimate.deltas if ok else None, y.estimate.deltas if ok else None, cfg).to_dict(
            f"{side}_change"))


def _wkey(w: dict) -> tuple:
    return (w["layer"], w["module"], w["expert"], w["row"], w["col"])


def failed_lineage(a_model: str, b_model: str, error: BaseException | str, declared: str | None = None,
                   a_scan_id: str | None = None, b_scan_id: str | None = None, error_type: str | None = None) -> dict:
    """The `lineage` row of a comparison that could not be made (a model that no longer loads, coordinates
    outside the other model, a worker that died)."""
    from scanner.errors import ScanError

    if isinstance(error, BaseException):
        error_type = error_type or (type(error).__name__ if isinstance(error, ScanError) else "InternalError")
    return {**dict.fromkeys(LINEAGE.names), "diff_id": uuid.uuid4().hex, "started": datetime.datetime.now(datetime.timezone.utc),
            "scanner_version": SCANNER_VERSION, "a_model": a_model, "b_model": b_model, "a_scan_id": a_scan_id,
            "b_scan_id": b_scan_id, "declared": declared, "status": "failed",
            "error_type": error_type or "Error",
            "error": " ".join(str(error).split())[:2000] or type(error).__name__, "coordinates": []}


def compare_sides(a: Side, b: Side, cfg: ScanConfig, declared: str | None = None) -> dict:
    """The lineage row of two scanned models (a batch's comparison of a model with its base): measured, or
    failed with the reason (a failure of one comparison never stops a batch)."""
    try:
        m = measure(a, b, cfg)
    except Exception as e:  # noqa: BLE001  recorded as a row, as failed scans are
        return failed_lineage(a.model, b.model, e, declared, a.scan_id, b.scan_id)
    return lineage_row(m.a, m.b, m, declared, cfg)


def diff(catalog, a_ident: str, b_ident: str, cfg: ScanConfig, ablate: bool = True, declared: str | None = None,
         progress: bool = False) -> dict:
    """Compare A and B (catalog sides, or specs scanned first); write new scans and the lineage row to the
    catalog when there is one. Returns the row."""
    from .service import scan_to_row

    a, b = find(catalog, a_ident), find(catalog, b_ident)
    if a is not None and b is not None and a.scan_id == b.scan_id:
        raise BadOption(f"{a_ident} and {b_ident} are the same scan ({a.scan_id}): compare two models")
    scanned = []
    if not ablate:
        sides = []
        for ident, side in ((a_ident, a), (b_ident, b)):
            if side is None:  # not in the catalog: scanned here
                row, _, error = scan_to_row(ident, None, cfg, progress=progress)
                if error is not None:
                    raise error
                scanned.append(row)
                side = from_row(row)
            sides.append(side)
        row = lineage_row(*sides, declared=declared, cfg=cfg)
    else:
        m = measure(a or a_ident, b or b_ident, cfg, progress)
        scanned, row = m.scanned, lineage_row(m.a, m.b, m, declared, cfg)
    if catalog is not None:
        for s in scanned:
            catalog.write_scan(s)
        catalog.write("lineage", [row])
    return row
