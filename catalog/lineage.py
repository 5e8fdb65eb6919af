"""Two scans of one family compared coordinate by coordinate: where each weight that matters in one of them
is in the other. Pure data (rows of `candidates`); the ablations that say whether they still matter are
measured elsewhere (the service layer) and stored beside, in `lineage` rows.

For each coordinate that matters on either side (verdict super_weight, super_set or mild; every candidate
of a scan that was not validated), in the other scan's candidates:
    kept   the same (layer, module, expert, row, col)
    moved  the same layer and row, another col; else the same row in a neighbouring layer
    lost   (a coordinate of A) nowhere near in B;   new: (of B) nowhere near in A
"""
from __future__ import annotations

from words import verdicts

STATUSES = ("kept", "moved", "lost", "new")


def _key(w: dict) -> tuple:
    return (w["layer"], w["module"], w["expert"], w["row"], w["col"])


def mattering(weights: list[dict]) -> list[dict]:
    """The coordinates of a scan that matter: its significant ones, or all of an unvalidated scan's."""
    validated = any(verdicts.of(w.get("verdict")) not in (None, verdicts.BY_NAME["unvalidated"]) for w in weights)
    return [w for w in weights if verdicts.matters(w.get("verdict")) or not validated]


def _near(w: dict, others: list[dict]) -> tuple[str, dict] | None:
    """Where `w` is among `others`: ("kept", it), ("moved", the best match) or None."""
    exact = [o for o in others if _key(o) == _key(w)]
    if exact:
        return "kept", exact[0]
    same = [o for o in others if (o["module"], o["expert"], o["row"]) == (w["module"], w["expert"], w["row"])]
    moved = [o for o in same if o["layer"] == w["layer"]] or [o for o in same if abs(o["layer"] - w["layer"]) == 1]
    if not moved:
        return None
    # the one that matters most there, then the largest spike
    best = max(moved, key=lambda o: (verdicts.matters(o.get("verdict")), o.get("output_ratio") or 0.0))
    return "moved", best


def compare(a: list[dict], b: list[dict], a_values: dict | None = None, b_values: dict | None = None) -> list[dict]:
    """One row per coordinate that matters in A or B (A's first), with both sides' value, spike size (output
    ratio), verdict and ppl ratio. `a_values` / `b_values`: W at a coordinate key, read in model A / B, for
    coordinates the other scan did not list (lost ones in B, new ones in A)."""
    a_values, b_values = a_values or {}, b_values or {}
    out, paired = [], set()
    for w in sorted(mattering(a), key=_key):
        hit = _near(w, b)
        status, o = hit if hit else ("lost", None)
        if o is not None:
            paired.add(_key(o))
        out.append(_row(status, w, o, b_value=b_values.get(_key(w)) if o is None else None))
    for w in sorted(mattering(b), key=_key):
        if _key(w) in paired:
            continue
        hit = _near(w, a)
        status, o = hit if hit else ("new", None)
        out.append(_row(status, o, w, a_value=a_values.get(_key(w)) if o is None else None))
    return out


def _row(status: str, a: dict | None, b: dict | None, a_value=None, b_value=None) -> dict:
    at = a or b  # the coordinate named first: A's, or B's for a new one
    row = {"status": status, "layer": at["layer"], "module": at["module"], "expert": at["expert"],
           "row": at["row"], "col": at["col"],
           "b_layer": b and b["layer"], "b_row": b and b["row"], "b_col": b and b["col"]}
    for side, w, value in (("a", a, a_value), ("b", b, b_value)):
        row[f"{side}_value"] = w["value"] if w else value
        row[f"{side}_spike"] = w.get("output_ratio") if w else None
        row[f"{side}_verdict"] = w.get("verdict") if w else None
        row[f"{side}_ppl_ratio"] = w.get("ppl_ratio") if w else None
    return row


def counts(coords: list[dict]) -> dict[str, int]:
    return {s: sum(c["status"] == s for c in coords) for s in STATUSES}


CROSSES = (("a_in_b", "A's set zeroed in B"), ("b_in_a", "B's set zeroed in A"), ("a_in_a", "A's set in A (its own)"),
           ("b_in_b", "B's set in B (its own)"))


def _num(v, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def change_cell(row: dict, prefix: str) -> str:
    """A paired change as "unchanged x1.08 [0.93, 1.25]" (or "unpaired")."""
    r = row.get(f"{prefix}_ratio")
    label = row.get(prefix) or "-"
    return label if r is None else f"{label} x{r:.3g} [{row[f'{prefix}_ratio_lo']:.3g}, {row[f'{prefix}_ratio_hi']:.3g}]"


def render(row: dict) -> str:
    """A `lineage` row as text: the coordinates side by side, then the cross-ablations."""
    lines = [f"A: {row['a_model']}  (scan {row['a_scan_id']})", f"B: {row['b_model']}  (scan {row['b_scan_id']})"
             + (f", whose base is A ({row['declared']})" if row.get("declared") else "")]
    if row.get("status") == "failed":
        return "\n".join(lines + [f"failed: {row['error_type']}: {row['error']}"])
    lines.append(", ".join(f"{s} {row[s]}" for s in STATUSES))
    head = ("status", "A [layer: row, col]", "B [layer: row, col]", "value A -> B", "spike A -> B", "verdict A / B",
            "effect B / A [95%]")
    table = []
    for c in row["coordinates"]:
        a_at = "-" if c["status"] == "new" else f"{c['layer']}: {c['row']}, {c['col']}"
        b_at = "-" if c["b_layer"] is None else f"{c['b_layer']}: {c['b_row']}, {c['b_col']}"
        if c["expert"] is not None:
            a_at, b_at = (x if x == "-" else f"{x} (expert {c['expert']})" for x in (a_at, b_at))
        table.append((c["status"], a_at, b_at,
                      f"{_num(c['a_value'], '.6g')} -> {_num(c['b_value'], '.6g')}",
                      f"{_num(c['a_spike'], '.0f')} -> {_num(c['b_spike'], '.0f')}",
                      f"{c['a_verdict'] or '-'} / {c['b_verdict'] or '-'}", change_cell(c, "change")))
    if table:
        widths = [max(len(r[i]) for r in [head, *table]) for i in range(len(head))]
        lines += [""] + ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [head, *table]]
    measured = [(k, what) for k, what in CROSSES if row.get(f"{k}_verdict") is not None
                or row.get(f"{k}_ppl_ratio") is not None]
    if measured or row.get("a_set") or row.get("b_set"):
        lines.append(f"\ncross-ablation (A's set: {', '.join(row.get('a_set') or []) or 'none'}; "
                     f"B's set: {', '.join(row.get('b_set') or []) or 'none'}):")
        for k, what in CROSSES:
            r = row.get(f"{k}_ppl_ratio")
            if r is None:
                continue
            lines.append(f"  {what}: ppl x{r:.3g} [{row[f'{k}_ppl_ratio_lo']:.3g}, {row[f'{k}_ppl_ratio_hi']:.3g}] on "
                         f"{row[f'{k}_windows']} windows: {row[f'{k}_verdict']}")
        for side, what in (("a_set", "A's set, in B over in A"), ("b_set", "B's set, in A over in B")):
            if row.get(f"{side}_change"):
                lines.append(f"  {what}: {change_cell(row, f'{side}_change')}")
    return "\n".join(lines)
