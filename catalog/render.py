"""The index's texts: Table 1 in Markdown, CSV, the changelog against the previous index, the dataset card.
Everything a catalog row brings (model names are folder names users chose) is escaped for Markdown: no
HTML passes through, and no newline or `|` breaks a table row."""
from __future__ import annotations

import csv
import io

from words import COORDINATES, verdicts

from .canonical import differs
from .lineage import change_cell

CSV_COLUMNS = ("model", "revision", "architecture", "layer", "module", "expert", "row", "col", "value",
               "spike_ratio", "ppl_ratio", "ppl_ratio_lo", "ppl_ratio_hi", "windows", "group_ppl_ratio",
               "group_ppl_ratio_lo", "group_ppl_ratio_hi", "verdict", "near_threshold", "decided", "measured_in",
               "finding", "published", "dtype", "validated",
               "config_fingerprint", "scanner_version", "scan_id")
TIERS = "; ".join(f"{t.name.replace('_', ' ')}: {t.meaning}" for t in verdicts.TIERS if t.matters)


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def _md_cell(v) -> str:
    text = " ".join(str(v).split())  # newlines and tabs: one line, one row
    # `<` opens a tag, `&` an entity; `>` inside a cell is plain text ("z>4"), left as written
    for a, b in (("&", "&amp;"), ("<", "&lt;"), ("|", "\\|"), ("`", "\\`"), ("[", "\\["),
                 ("]", "\\]")):
        text = text.replace(a, b)
    return text


def _fmt(v, spec=".3g") -> str:
    return "" if v is None else format(v, spec)


def ci(w: dict, prefix: str = "ppl_ratio") -> str:
    """A ratio with its interval, "7.69 [6.08, 9.73]"; empty when not measured."""
    return "" if w.get(prefix) is None else \
        f"{_fmt(w[prefix])} [{_fmt(w.get(prefix + '_lo'))}, {_fmt(w.get(prefix + '_hi'))}]"


def verdict_ci(w: dict) -> str:
    """A weight's own ratio as its verdict rests on it: "1.46 [1.35, 1.58], at the x1.5 line", "undecided"."""
    text = ci(w)
    if text and w.get("near_threshold"):
        text += f", at the x{w['near_threshold']:g} line"
    if text and w.get("decided") is False:
        text += ", undecided"
    return text


def _name(m: dict) -> str:
    return f"{_md_cell(m['model'])} @ `{(m['revision'] or '')[:12]}`"


def markdown(models: list[dict], failed: list[dict], published: str) -> str:
    lines = ["# Super-weight coordinate index", "",
             f"Published {published}. {len(models)} model(s). Coordinates: {COORDINATES}.", "",
             f"Verdicts: {TIERS}. Ratios are perplexity with the weight(s) zeroed over the model's own, with "
             "the interval across evaluation windows that decided the verdict (95%, its error spent across the "
             "looks). Within a threshold's zone (x or / its factor) either verdict is right: such a row says it "
             "is at the line.", "",
             "## Super weights", "",
             "| Model | No. | Layer | Module | Coordinates [row, col] | Verdict | PPL x alone [95%] | "
             "PPL x set [95%] | Windows | Published in |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        top = [w for w in m["weights"] if verdicts.is_catastrophic(w["verdict"])]
        for i, w in enumerate(top):
            module = w["module"] + (f"[{w['expert']}]" if w["expert"] is not None else "")
            lines.append(f"| {_name(m) if i == 0 else ''} | {i + 1} | {w['layer']} | {_md_cell(module)} | "
                         f"[{w['row']}, {w['col']}] | {w['verdict'].replace('_', ' ')} | {verdict_ci(w)} | "
                         f"{ci(w, 'group_ppl_ratio')} | {w['windows'] or ''} | {_md_cell(w['published'] or '')} |")
    mild = [(m, w) for m in models for w in m["weights"] if not verdicts.is_catastrophic(w["verdict"])]
    if mild:
        lines += ["", "## Milder weights: significant, not catastrophic", "",
                  "| Model | Layer | Module | Coordinates [row, col] | PPL x alone [95%] | Published in |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {_name(m)} | {w['layer']} | {_md_cell(w['module'])} | [{w['row']}, {w['col']}] | {verdict_ci(w)} | "
                  f"{_md_cell(w['published'] or '')} |" for m, w in mild]
    incomplete = [m for m in models if m.get("incomplete")]
    if incomplete:
        lines += ["", "## Incomplete: rows of these scans could not be read", "",
                  "A file of the catalog was skipped (named in the warnings of `publish`): what is listed for "
                  "these models may be missing weights; no verdict is drawn from the absence.", ""]
        lines += [f"- {_name(m)}" for m in incomplete]
    none = [m for m in models if not m.get("incomplete")
            and not any(verdicts.is_catastrophic(w["verdict"]) for w in m["weights"])]
    if none:
        lines += ["", "## No super weight", "", "| Model | Finding | Largest effect [95%] |", "|---|---|---|"]
        lines += [f"| {_name(m)} | {_md_cell((m['finding'] or 'no super weight').replace('_', ' '))} | "
                  f"{ci(m, 'largest_ppl_ratio')} |" for m in none]
    studied = [m for m in models if m.get("quant")]
    if studied:
        lines += ["", "## Quantization: keeping the super weights", "",
                  "Perplexity under simulated round-to-nearest quantization (`superweights quantize-eval`): weights "
                  "per block of the flattened tensor (plain; super weights kept; other outliers clipped, super "
                  "weights kept; clipped without keeping them), down-projection inputs per tensor (plain; the "
                  "super activation's input channel held out, then with each partner's), and the super weights "
                  "zeroed with their activations restored. 95% intervals across evaluation windows, against the "
                  "unquantized model on the same windows. A setting is usable when its whole interval lies within "
                  "the tolerance; each finding names the largest usable block size per variant and whether "
                  "keeping the super weights moves it."]
        for m in studied:
            q = m["quant"]
            usable = f"; usable: perplexity within x{q['tolerance']:g} by its interval" if q["tolerance"] else ""
            lines += ["", f"### {_name(m)}", "", f"{_md_cell(q['finding'])}. Kept: "
                      f"{_md_cell(', '.join(q['kept']) or 'nothing')}; RTN form {_md_cell(q['rtn'])}; clipping "
                      f"{_md_cell(q['clip'])}{usable}; unquantized perplexity {q['ppl_base']:.4g}.", ""]
            if m.get("quant_plot"):
                lines += [f"![perplexity against block size]({m['quant_plot']})", ""]
            lines += quant_grid(q["rows"], q["clip"])
    lines += families_markdown(models)
    lines += ["", "## Scans", "", "Each model's scan made with the canonical configuration; where a model has "
              "none, its best other scan, with what its configuration changes.", "",
              "| Model | Precision | Validated | Windows | Configuration | Scanner |", "|---|---|---|---|---|---|"]
    lines += [f"| {_name(m)} | {_md_cell(m['dtype'] or '')} | {'yes' if m['validated'] else 'no'} | "
              f"{m['eval_windows'] or ''} | `{_md_cell(m['config_fingerprint'] or '-')}`"
              f"{'' if m.get('canonical', True) else ' not canonical: ' + _md_cell('; '.join(m['differs']))} | "
              f"{_md_cell(m['scanner_version'] or '')} |" for m in models]
    other = [(m, o) for m in models for o in m.get("other_configurations", [])]
    if other:
        lines += ["", "## Other configurations", "", "Scans of the same models with other settings, not shown "
                  "above: what each changes against the scan shown, and what it found.", "",
                  "| Model | Configuration | Changes | Finding | Super weights |", "|---|---|---|---|---|"]
        lines += [f"| {_name(m)} | `{_md_cell(o['config_fingerprint'] or '-')}` | {_md_cell('; '.join(o['differs']))}"
                  f" | {_md_cell((o['finding'] or '').replace('_', ' '))} | {o['n_super_weights'] or 0} |"
                  for m, o in other]
    if failed:
        lines += ["", "## Not indexed: scans that failed", "", "| Model | Error |", "|---|---|"]
        lines += [f"| {_md_cell(f['model'])} | {_md_cell(f['error_type'])}: {_md_cell(f['error'])} |" for f in failed]
    return "\n".join(lines) + "\n"


SHOWN = ("plain", "keep", "clip_keep", "clip", "hold")  # the study's variants, in the order of the question


def quant_grid(rows: list[dict], clip: str) -> list[str]:
    """A study's perplexities as grids: weights per bits, a row per block size and a column per variant;
    activations, a row per bits and a column per variant; then what else was measured."""
    def cell(r):
        return f"{r['ppl']:.4g} [{r['ppl_lo']:.4g}, {r['ppl_hi']:.4g}]"

    def name(r):  # activations held out: which channels
        return r["variant"] + (" " + ", ".join(r["held"]) if r.get("held") else "")

    lines: list[str] = []
    for study, key, label in (("weights", "block", "block (elements)"), ("activations", "bits", "bits")):
        mine = [{**r, "variant": name(r)} for r in rows if r["study"] == study]
        for bits in (sorted({r["bits"] for r in mine}) if study == "weights" else [None]):
            part = [r for r in mine if bits is None or r["bits"] == bits]
            variants = sorted(dict.fromkeys(r["variant"] for r in part), key=lambda v: (v not in SHOWN, SHOWN.index(v)
                                                                                          if v in SHOWN else v))
            keys = list(dict.fromkeys(r[key] for r in part))
            at = {(r[key], r["variant"]): r for r in part}
            head = f"{study} INT{bits}, {label}" if bits else f"{study}, per tensor: {label}"
            names = [v + (f" ({_md_cell(clip)})" if v.startswith("clip") else "") for v in variants]
            lines += [""] * bool(lines) + [f"| {head} | " + " | ".join(names) + " |", "|---" * (len(variants) + 1) + "|"]
            lines += [f"| {(f'{k:,}' if k else 'per tensor') if study == 'weights' else f'INT{k}'} | "
                      + " | ".join(cell(at[k, v]) if (k, v) in at else "-" for v in variants) + " |" for k in keys]
    rest = [r for r in rows if r["study"] not in ("weights", "activations")]
    if rest:
        lines += ["", "| Study | Variant | Perplexity [95%] |", "|---|---|---|"]
        lines += [f"| {r['study']} | {r['variant']} | {cell(r)} |" for r in rest]
    windows = sorted({r["windows"] for r in rows})
    lines += ["", f"Perplexity [95%] over {', '.join(map(str, windows))} evaluation window(s)."]
    return lines


def families(models: list[dict]) -> dict[str, list[dict]]:
    """Root model -> its indexed members, root first, then by generation and name."""
    out: dict[str, list[dict]] = {}
    for m in sorted((m for m in models if m.get("family")),
                    key=lambda m: (m["family"]["root"], m["family"]["generation"], m["model"])):
        out.setdefault(m["family"]["root"], []).append(m)
    return out


def cross_cell(f: dict, prefix: str) -> str:
    """A cross-ablation as "x1.02 [0.99, 1.05] negligible"."""
    if f.get(f"{prefix}_ppl_ratio") is None:
        return "-"
    return f"x{ci(f, f'{prefix}_ppl_ratio')} {(f.get(f'{prefix}_verdict') or '').replace('_', ' ')}"


def families_markdown(models: list[dict]) -> list[str]:
    groups = families(models)
    if not groups:
        return []
    lines = ["", "## Families", "",
             "Models grouped by the base they were made from (model card, GGUF metadata, models file or --base). "
             "Each derivative against its base (`superweights diff`): where the base's weights that matter are "
             "(kept / moved / lost / new), and cross-ablations with their intervals: the base's catastrophic set "
             "zeroed in the derivative, and the derivative's in the base; then how the base's set changed, its effect "
             "in the derivative over its effect in the base, paired on the same windows (a change only where the "
             "interval lies outside the zone). A comparison is a measurement of its own: each set zeroed on the "
             "comparison's windows until a look decides its question, where a model's own table shows the look that "
             "decided its scan's verdict. One set may so show two intervals, resting on different windows; each "
             "holds the effect with 95% confidence."]
    for root, members in groups.items():
        lines += ["", f"### {_md_cell(root)}", "",
                  "| Model | Base | Declared by | Kept / moved / lost / new | Base's set zeroed in it | "
                  "Its set zeroed in the base | Base's set: here over in the base |", "|---|---|---|---|---|---|---|"]
        for m in members:
            f = m["family"]
            counts = "-" if f.get("kept") is None else f"{f['kept']} / {f['moved']} / {f['lost']} / {f['new']}"
            lines.append(f"| {_name(m)} | {_md_cell(f['base_model'] or '(root)')} | {_md_cell(f['base_model_from'] or '')}"
                         f" | {counts} | {cross_cell(f, 'a_in_b')} | {cross_cell(f, 'b_in_a')} | "
                         f"{change_cell(f, 'a_set_change') if f.get('a_set_change') else '-'} |")
    return lines


def diff(previous: dict | None, models: list[dict]) -> dict:
    """Models and coordinates added, removed and changed against the previous index.json."""
    def coords(m):
        return {(w["layer"], w["module"], w["expert"], w["row"], w["col"]): w["verdict"]
                for w in m.get("weights", m.get("super_weights", []))}  # index.json before schema 5: super_weights

    old = {m["model"]: m for m in (previous or {}).get("models", [])}
    new = {m["model"]: m for m in models}
    ch = {"models_added": sorted(set(new) - set(old)), "models_removed": sorted(set(old) - set(new)),
          "coordinates_added": [], "coordinates_removed": [], "coordinates_changed": [], "revisions_changed": [],
          "configurations_changed": []}
    for name in sorted(set(new) & set(old)):
        a, b = coords(old[name]), coords(new[name])
        if old[name]["revision"] != new[name]["revision"]:
            ch["revisions_changed"].append({"model": name, "from": old[name]["revision"], "to": new[name]["revision"]})
        if old[name].get("config_fingerprint") != new[name].get("config_fingerprint"):
            ch["configurations_changed"].append({
                "model": name, "from": old[name].get("config_fingerprint"), "to": new[name].get("config_fingerprint"),
                "differs": differs(old[name].get("settings") or {}, new[name].get("settings") or {})})
        for k in sorted(set(b) - set(a), key=str):
            ch["coordinates_added"].append({"model": name, "layer": k[0], "row": k[3], "col": k[4], "verdict": b[k]})
        for k in sorted(set(a) - set(b), key=str):
            ch["coordinates_removed"].append({"model": name, "layer": k[0], "row": k[3], "col": k[4],
                                              "verdict": a[k]})
        for k in sorted(set(a) & set(b), key=str):
            if a[k] != b[k]:
                ch["coordinates_changed"].append({"model": name, "layer": k[0], "row": k[3], "col": k[4],
                                                  "from": a[k], "to": b[k]})
    return ch


def changelog_entry(ch: dict, published: str, first: bool) -> str:
    lines = [f"## {published}", ""]
    if first:
        lines.append("First index.")
    names = {"models_added": "Models added", "models_removed": "Models removed"}
    for key, title in names.items():
        if ch[key] and not (first and key == "models_added"):
            lines.append(f"- {title} ({len(ch[key])}): " + ", ".join(ch[key][:50])
                         + (" ..." if len(ch[key]) > 50 else ""))
    if first and ch["models_added"]:
        lines.append(f"- {len(ch['models_added'])} model(s) indexed.")
    for r in ch["revisions_changed"][:200]:
        lines.append(f"- {r['model']}: revision {r['from'][:12]} -> {r['to'][:12]}")
    for r in ch["configurations_changed"][:200]:
        lines.append(f"- {r['model']}: scan configuration {r['from']} -> {r['to']}"
                     + (f" ({'; '.join(r['differs'])})" if r["differs"] else ""))
    # a verdict that moved with its model's configuration is the configuration's doing, and says so
    why = {r["model"]: " (with the configuration change)" for r in ch["configurations_changed"]}
    for key, title in (("coordinates_added", "added"), ("coordinates_removed", "removed")):
        for c in ch[key][:200]:
            lines.append(f"- {c['model']}: layer {c['layer']} [{c['row']}, {c['col']}] {title} ({c['verdict']})"
                         + why.get(c["model"], ""))
    for c in ch["coordinates_changed"][:200]:
        lines.append(f"- {c['model']}: layer {c['layer']} [{c['row']}, {c['col']}] {c['from']} -> {c['to']}"
                     + why.get(c["model"], ""))
    return "\n".join(lines) + "\n"


def card_verdicts() -> str:
    """The verdicts index.csv holds, in the catalog's words (words.verdicts), and the two a model row may hold."""
    tiers = [f"`{t.name}` ({t.meaning})" for t in verdicts.TIERS if t.matters]
    return "; ".join(tiers + ["`none` (one row for a model whose scan found no weight that matters)",
                              "`incomplete` (one row for a model some of whose rows could not be read)"])


def dataset_card(models: list[dict], rows: int, published: str) -> str:
    n = rows
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M" \
        if n < 1_000_000 else "1M<n<10M"
    versions = sorted({m["scanner_version"] for m in models if m["scanner_version"]})
    return f"""---
pretty_name: Super-weight coordinate index
license: cc-by-4.0
tags:
- super-weights
- interpretability
- quantization
- llm
size_categories:
- {size}
configs:
- config_name: default
  data_files:
  - split: train
    path: index.csv
---
# Super-weight coordinate index

Coordinates of *super weights*, single scalars of an LLM's MLP down projection that create a huge
activation and without which the model falls apart (Yu et al., "The Super Weight in Large Language
Models", arXiv 2411.07191), found and validated by ablation with `superweights` (scanner
{", ".join(versions) or "-"}). Published {published}: {len(models)} model(s), {rows} row(s).

**Coordinates**: {COORDINATES}. In Hugging Face terms: `model.layers[layer].<module>.weight[row, col]`.

Files: `index.csv` (one row per coordinate; a model with none has one row with verdict `none`),
`index.json` (the same, grouped per model, with the scan ids), `index.md` (the paper's Table 1 form),
`index.html` with a spike-profile plot per model (`plots/`), `CHANGELOG.md`.

Verdicts (`verdict`): {card_verdicts()}.
`ppl_ratio` is the perplexity with the weight zeroed alone over the model's own, `ppl_ratio_lo`/`_hi` its 95%
interval across the `windows` evaluation windows that decided the verdict; `near_threshold` names the line
whose zone the interval cannot leave (either verdict is right there); `group_ppl_ratio` is the same for the
weight's whole set; `published` names a paper that lists the same coordinate.
"""
