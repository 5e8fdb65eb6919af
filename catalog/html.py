"""index.html: a static page, no scripts from elsewhere, that shows the table and each model's plot."""
from __future__ import annotations

from html import escape

from words import COORDINATES, verdicts

from .lineage import change_cell
from .render import ci, cross_cell, families, verdict_ci

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sw td{background:#fdecea}section.model{border-top:1px solid #ddd;padding-top:.6em}
section.model img{max-width:100%;height:auto}code{background:#f6f6f6;padding:0 3px}
#filter{padding:4px;width:22em}.muted{color:#666}
"""
# filtering is a convenience; everything is readable without scripts
SCRIPT = """
document.getElementById('filter').addEventListener('input', e => {
  const q = e.target.value.toLowerCase();
  for (const s of document.querySelectorAll('section.model'))
    s.hidden = q && !s.dataset.model.toLowerCase().includes(q);
});
"""


def _num(v, spec=".3g") -> str:
    return "" if v is None else format(v, spec)


def _module(w: dict) -> str:
    return w["module"] + ("" if w["expert"] is None else f"[{w['expert']}]")


def _row(i: int, w: dict) -> str:
    module = _module(w)
    return (f"<tr class=\"{'sw' if verdicts.is_catastrophic(w['verdict']) else ''}\"><td class=num>{i + 1}</td>"
            f"<td class=num>{w['layer']}</td><td>{escape(module)}</td><td>[{w['row']}, {w['col']}]</td>"
            f"<td class=num>{_num(w['value'], '.4g')}</td><td class=num>{_num(w['spike_ratio'], '.0f')}x</td>"
            f"<td class=num>{escape(verdict_ci(w))}</td><td class=num>{ci(w, 'group_ppl_ratio')}</td>"
            f"<td>{escape(w['verdict'].replace('_', ' '))}</td><td>{escape(w['published'] or '')}</td></tr>")


def _model(m: dict) -> str:
    name = escape(m["model"])
    head = (f"<h3 id=\"{escape(m['scan_id'])}\">{name}</h3><p class=muted>revision <code>"
            f"{escape(m['revision'] or '')}</code> &middot; {escape(m['architecture'] or '')} &middot; "
            f"{m['num_layers']} layers &middot; perplexity {_num(m['ppl_base'], '.4g')} &middot; scanner "
            f"{escape(m['scanner_version'] or '')}, {escape(m['dtype'] or '')}"
            f"{', validated' if m['validated'] else ', not validated'}, configuration "
            f"<code>{escape(m['config_fingerprint'] or '-')}</code>"
            f"{'' if m.get('canonical', True) else ' (not the canonical one: ' + escape('; '.join(m['differs'])) + ')'}"
            f" &middot; scanned {escape(m['started'])}</p>")
    for o in m.get("other_configurations", []):
        head += (f"<p class=muted>Also scanned with configuration <code>{escape(o['config_fingerprint'] or '-')}</code>"
                 f" ({escape('; '.join(o['differs']) or 'same settings')}): "
                 f"{escape((o['finding'] or '').replace('_', ' '))}, {o['n_super_weights'] or 0} super weight(s); "
                 "not shown.</p>")
    if m["weights"]:
        rows = "".join(_row(i, w) for i, w in enumerate(m["weights"]))
        table = ("<table class=coords><tr><th>No.</th><th>Layer</th><th>Module</th><th>[row, col]</th><th>Weight</th>"
                 "<th>Spike</th><th>PPL x alone [95%]</th><th>PPL x set [95%]</th><th>Verdict</th>"
                 "<th>Published in</th></tr>" + rows + "</table>")
    else:
        table = f"<p>None found: {escape((m['finding'] or 'no super weight').replace('_', ' '))}" + \
            (f" (largest effect x{ci(m, 'largest_ppl_ratio')})" if m.get("largest_ppl_ratio") else "") + "</p>"
    marked = sorted({w["layer"] for w in m["weights"] if verdicts.is_catastrophic(w["verdict"])})
    red = f"; red: layer{'s' if len(marked) > 1 else ''} {', '.join(map(str, marked))}" if marked else ""
    img = (f"<img src=\"{escape(m['plot'])}\" width=640 height=280 loading=lazy "
           f"alt=\"spike profile of {name}{red}\">") if m.get("plot") else ""
    q = m.get("quant")
    if q:
        img += (f"<p><b>Quantization:</b> {escape(q['finding'])} (kept: {escape(', '.join(q['kept']) or 'nothing')}; "
                f"RTN form {escape(q['rtn'])}; clipping {escape(q['clip'])})</p>")
        if m.get("quant_plot"):
            img += (f"<img src=\"{escape(m['quant_plot'])}\" width=640 height=280 loading=lazy "
                    f"alt=\"perplexity under quantization of {name}\">")
    return f"<section class=model data-model=\"{name}\">{head}{table}{img}</section>"


def _rank(w: dict) -> tuple:
    """Within a model: by layer, a weight catastrophic alone before its set's members, then by coordinates."""
    return w["layer"], verdicts.TIERS.index(verdicts.of(w["verdict"])), w["row"], w["col"]


def _answer(models: list[dict]) -> str:
    """The top of the page: every catastrophic coordinate across models, one row each."""
    rows = [f"<tr class=sw><td><a href=\"#{escape(m['scan_id'])}\">{escape(m['model'])}</a></td>"
            f"<td class=num>{w['layer']}</td><td>{escape(_module(w))}</td>"
            f"<td>[{w['row']}, {w['col']}]</td><td>{escape(w['verdict'].replace('_', ' '))}</td>"
            f"<td class=num>{escape(verdict_ci(w))}</td><td class=num>{escape(ci(w, 'group_ppl_ratio'))}</td>"
            f"<td class=num>{w['windows'] or ''}</td></tr>"
            for m in models for w in sorted(m["weights"], key=_rank) if verdicts.is_catastrophic(w["verdict"])]
    if not rows:
        return "<h2>Super weights</h2><p>None found in the models indexed.</p>"
    return ("<h2>Super weights</h2><table id=answer><tr><th>Model</th><th>Layer</th><th>Module</th><th>[row, col]</th>"
            "<th>Verdict</th><th>PPL x alone [95%]</th><th>PPL x set [95%]</th><th>Windows</th></tr>"
            + "".join(rows) + "</table>")


def _family(root: str, members: list[dict]) -> str:
    rows = []
    for m in members:
        f = m["family"]
        counts = "" if f.get("kept") is None else " / ".join(str(f[k]) for k in ("kept", "moved", "lost", "new"))
        rows.append(f"<tr><td><a href=\"#{escape(m['scan_id'])}\">{escape(m['model'])}</a></td>"
                    f"<td>{escape(f['base_model'] or '(root)')}</td><td>{escape(f['base_model_from'] or '')}</td>"
                    f"<td>{counts}</td><td class=num>{escape(cross_cell(f, 'a_in_b'))}</td>"
                    f"<td class=num>{escape(cross_cell(f, 'b_in_a'))}</td>"
                    f"<td class=num>{escape(change_cell(f, 'a_set_change') if f.get('a_set_change') else '-')}</td></tr>")
    return (f"<section class=family data-root=\"{escape(root)}\"><h3>{escape(root)}</h3><table><tr><th>Model</th>"
            "<th>Base</th><th>Declared by</th><th>Kept / moved / lost / new</th><th>Base's set zeroed in it</th>"
            f"<th>Its set zeroed in the base</th><th>Base's set: here over in the base</th></tr>{''.join(rows)}"
            "</table></section>")


def render_html(models: list[dict], failed: list[dict], changes: dict, published: str) -> str:
    n_coords = sum(len(m["weights"]) for m in models)
    n_sw = sum(verdicts.is_catastrophic(w["verdict"]) for m in models for w in m["weights"])
    summary = (f"{len(models)} model(s), {n_sw} super weight(s) alone or in sets, {n_coords - n_sw} milder"
               + (f", {len(failed)} failed scan(s)" if failed else ""))
    change = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in changes.items() if v) or "no changes"
    groups = families(models)
    fam = "" if not groups else ("<h2>Families</h2><p class=muted>Each derivative against its base: where the base's "
                                 "weights that matter are, and cross-ablations with 95% intervals. A comparison is "
                                 "a measurement of its own: each set zeroed on the comparison's windows until a look "
                                 "decides its question, where a model's own table shows the look that decided its "
                                 "scan's verdict. One set may so show two intervals, resting on different windows; "
                                 "each holds the effect with 95% confidence.</p>"
                                 + "".join(_family(r, ms) for r, ms in groups.items()) + "<h2>Models</h2>")
    grouped = [m for ms in groups.values() for m in ms]  # family members together, each family's root first
    ordered = grouped + [m for m in models if not m.get("family")]
    fail = ""
    if failed:
        fail = ("<h2>Not indexed: scans that failed</h2><table><tr><th>Model</th><th>Error</th></tr>"
                + "".join(f"<tr><td>{escape(f['model'])}</td><td>{escape(f['error_type'] or '')}: "
                          f"{escape(f['error'] or '')}</td></tr>" for f in failed) + "</table>")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1">
<title>Super-weight coordinate index</title><style>{STYLE}</style></head><body>
<h1>Super-weight coordinate index</h1>
<p>Published {escape(published)}: {summary}. Since the previous index: {escape(change)}.
Download <a href="index.csv">CSV</a>, <a href="index.json">JSON</a>, <a href="index.md">Markdown</a>;
<a href="CHANGELOG.md">changelog</a>.</p>
<p class=muted>Coordinates: {escape(COORDINATES)}.</p>
{_answer(models)}
<p><input id=filter type=search placeholder="filter models" aria-label="filter models"></p>
{fam}
{"".join(_model(m) for m in ordered)}
{fail}
<script>{SCRIPT}</script>
</body></html>
"""
