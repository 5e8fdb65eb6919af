"""The units of work of a batch: a model's scan, or its comparison with its base; the order that scans each
base before its derivatives; and the comparisons a batch owes (`Family`)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from catalog.store import Catalog

from .pin import Pinned


class JobKind(enum.Enum):
    SCAN = "scan"
    COMPARE = "compare"


@dataclass(frozen=True)
class Comparison:
    """A model against its base: both sides as the catalog holds them (`cluster.lineage.Side`)."""

    base: object  # Side
    derivative: object  # Side
    declared: str | None  # how the derivative names its base: models_file | card | gguf | flag

    def sides(self) -> tuple:
        """The arguments of `ScanWorker.compare` before the configuration."""
        return self.base, self.derivative, self.declared


@dataclass
class Job:
    """One unit of work for an actor: a model's scan, or the comparison of a model with its base."""

    kind: JobKind
    model: Pinned  # the model it is for: its GPU share, time limit and name
    comparison: Comparison | None = None  # for JobKind.COMPARE
    waits_for: str | None = None  # a scan waits for its base's scan, when the batch holds both

    @property
    def name(self) -> str:
        if self.kind is JobKind.SCAN:
            return self.model.entry.name
        return f"{self.comparison.base.model} -> {self.model.entry.name}"


def bases_first(todo: list[Pinned]) -> list[Pinned]:
    """The scans in an order where each base the batch holds comes before its derivatives."""
    by_model = {p.model: p for p in todo}

    def depth(p: Pinned, seen=()) -> int:
        base = by_model.get(p.entry.base)
        return 0 if base is None or base.model in seen else 1 + depth(base, seen + (p.model,))
    return sorted(todo, key=depth)


class Family:
    """Which comparisons a batch owes: each of its models that has a base (its models-file line, else what its
    scan found declared) against that base, once both have a successful scan in the catalog and that scan of
    the model was not compared with the base yet (so a re-run resumes comparisons left undone)."""

    def __init__(self, pinned: list[Pinned], catalog: Catalog):
        self.pinned, self.catalog = pinned, catalog
        self.asked: set[tuple[str, str]] = set()  # (base model, model scan id) queued in this run
        self.named = {p.entry.base for p in pinned if p.entry.base}  # models that are some model's base
        # a base named without a revision is the one this batch pinned for its line without one (a batch may
        # also hold it at a tag): not whichever of its scans finished last
        self.plain = {p.model: p.revision for p in pinned if p.entry.revision is None and p.revision}

    def concerns(self, p: Pinned, row: dict) -> bool:
        """Whether a scan just written may complete a pair: it has a base, or is one (a catalog query per
        scan only where it can matter)."""
        base = p.entry.base or row.get("base_model")
        if base:
            self.named.add(base)
        return bool(base) or p.model in self.named

    def ready(self, pending: set[str]) -> list[Job]:
        from catalog import query

        from .lineage import find

        if not self.catalog.exists():
            return []
        done = [p for p in self.pinned if p.model not in pending]
        if not done:
            return []
        sql = ("SELECT model, scan_id, base_model FROM latest_scans WHERE status = 'ok' AND "
               "list_contains($1, model)")
        _, rows = query.run(self.catalog, sql, [[p.model for p in done]])
        scans = {m: (sid, base) for m, sid, base in rows}
        bases = {p.model: p.entry.base or scans[p.model][1] for p in done if p.model in scans}
        outside = sorted({b for b in bases.values() if b and b not in scans and b not in pending})
        if outside:  # bases the batch does not hold, scanned before
            _, rows = query.run(self.catalog, sql, [outside])
            scans.update({m: (sid, base) for m, sid, base in rows})
        pinned = {b: self.plain[b] for b in set(bases.values()) if b in self.plain}
        if pinned:
            _, rows = query.run(self.catalog, "SELECT model, revision, scan_id FROM scans WHERE status = 'ok' AND "
                                "list_contains($1, model) ORDER BY started", [sorted(pinned)])
            at = {m: sid for m, rev, sid in rows if rev == pinned[m]}
            for m in pinned:  # not scanned at that revision yet (or it failed): not compared with another
                if m in at:
                    scans[m] = (at[m], None)
                else:
                    scans.pop(m, None)
        # one comparison per scan of a derivative and its base model (a re-run resumes those left undone)
        _, rows = query.run(self.catalog, "SELECT a_model, b_scan_id FROM lineage_all WHERE status = 'ok'")
        owed = self.asked | set(rows)
        out = []
        for p in done:
            base = bases.get(p.model)
            if base is None or base in pending or base not in scans or (base, scans[p.model][0]) in owed:
                continue  # a base the catalog has never scanned is recorded, not compared
            a, b = find(self.catalog, scans[base][0]), find(self.catalog, p.model)
            self.asked.add((base, b.scan_id))
            declared = "models_file" if p.entry.base else b.base_model_from
            out.append(Job(JobKind.COMPARE, p, Comparison(a, b, declared)))
        return out
