"""Publish the coordinate index: Markdown (the paper's Table 1 form), CSV, JSON, a changelog against the
previous index in the folder, a Hugging Face dataset card, one spike-profile plot per model and index.html.

The index holds each model's latest successful scan (the `latest_scans` view); failed-only models are
listed apart. Every file is written under a temporary name and renamed, plots are named by the scan
they show, so re-publishing redraws only what changed.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import query
from .errors import PublishError
from .html import render_html
from .schema import COORDINATES, SCHEMA_VERSION
from .store import Catalog

FILES = ("index.md", "index.csv", "index.json", "index.html", "README.md", "CHANGELOG.md")
CSV_COLUMNS = ("model", "revision", "architecture", "layer", "module", "expert", "row", "col", "value",
               "spike_ratio", "ppl_ratio", "verdict", "published", "scanner_version", "scan_id")


@dataclass
class Summary:
    out_dir: Path
    models: int = 0
    coordinates: int = 0
    failed: int = 0
    plots_drawn: int = 0
    changes: dict = field(default_factory=dict)
    seconds: float = 0.0


def _dicts(con, sql: str) -> list[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _models(catalog: Catalog) -> tuple[list[dict], list[dict]]:
    con = query.connect(catalog, {"latest_scans", "super_weights", "layer_profiles", "reference"})
    try:
        scans = _dicts(con, """
            SELECT scan_id, model, revision, architecture, num_layers, num_parameters, scanner_version, started,
                   ppl_base, status, error_type, error FROM latest_scans ORDER BY model""")
        coords = _dicts(con, f"""
            SELECT w.scan_id, w.layer, w.module, w.expert, w.row, w.col, w.value, w.output_ratio AS spike_ratio,
                   w.ppl_ratio, w.verdict, (SELECT string_agg(DISTINCT r.source, '; ') FROM reference r
                       WHERE r.level = 'weight' AND r.hub_id = w.model AND r.layer = w.layer AND r.module = w.module
                       AND r.expert IS NOT DISTINCT FROM w.expert AND r.row = w.row AND r.col = w.col) AS published
            FROM super_weights w WHERE w.scan_id IN (SELECT scan_id FROM latest_scans WHERE status = 'ok')
              AND w.verdict IN {query.FOUND}
            ORDER BY w.scan_id, w.layer, w.verdict <> 'super_weight', w.row, w.col""")
        profiles = _dicts(con, """
            SELECT scan_id, list(abs(input_value) ORDER BY layer) AS inputs,
                   list(abs(output_value) ORDER BY layer) AS outputs
            FROM layer_profiles WHERE scan_id IN (SELECT scan_id FROM latest_scans WHERE status = 'ok')
            GROUP BY scan_id""")
    finally:
        con.close()
    by_scan: dict[str, list[dict]] = {}
    for c in coords:
        by_scan.setdefault(c.pop("scan_id"), []).append(c)
    prof = {p["scan_id"]: (p["inputs"], p["outputs"]) for p in profiles}
    ok, failed = [], []
    for s in scans:
        s["started"] = s["started"].strftime("%Y-%m-%dT%H:%M:%SZ")
        if s["status"] != "ok":
            failed.append({k: s[k] for k in ("model", "revision", "scanner_version", "started", "error_type",
                                              "error")})
            continue
        for k in ("status", "error_type", "error"):
            s.pop(k)
        s["super_weights"] = by_scan.get(s["scan_id"], [])
        s["profile"] = prof.get(s["scan_id"], ([], []))
        ok.append(s)
    return ok, failed


def slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"


def _plot_name(m: dict) -> str:
    return f"plots/{slug(m['model'])}-{hashlib.sha1(m['scan_id'].encode()).hexdigest()[:10]}.png"


def _draw(jobs: list[tuple]) -> int:
    from .plots import render

    for title, inputs, outputs, marked, path in jobs:
        tmp = f"{path}.{os.getpid()}.tmp"
        render(title, inputs, outputs, marked, tmp)
        os.replace(tmp, path)
    return len(jobs)


def _plots(models: list[dict], out: Path, workers: int) -> int:
    (out / "plots").mkdir(parents=True, exist_ok=True)
    jobs = []
    for m in models:
        m["plot"] = _plot_name(m)
        if not (out / m["plot"]).exists():
            marked = {w["layer"] for w in m["super_weights"] if w["verdict"] == "super_weight"}
            jobs.append((f"{m['model']}  @ {(m['revision'] or '')[:12]}", *m["profile"], marked,
                         str(out / m["plot"])))
    keep = {m["plot"].split("/", 1)[1] for m in models}
    for old in (out / "plots").glob("*.png"):  # plots of scans no longer in the index
        if old.name not in keep:
            old.unlink()
    if len(jobs) < 64 or workers <= 1:
        return _draw(jobs)
    chunks = [jobs[i::workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(_draw, chunks))


def _rows(models: list[dict]) -> list[dict]:
    rows = []
    for m in models:
        base = {"model": m["model"], "revision": m["revision"], "architecture": m["architecture"],
                "scanner_version": m["scanner_version"], "scan_id": m["scan_id"]}
        if not m["super_weights"]:
            rows.append({**dict.fromkeys(CSV_COLUMNS), **base, "verdict": "none"})
        for w in m["super_weights"]:
            rows.append({**dict.fromkeys(CSV_COLUMNS), **base, **w})
    return rows


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|")


def _fmt(v, spec=".3g") -> str:
    return "" if v is None else format(v, spec)


def markdown(models: list[dict], failed: list[dict], published: str) -> str:
    lines = ["# Super-weight coordinate index", "",
             f"Published {published}. {len(models)} model(s). Coordinates: {COORDINATES}.", "",
             "| Model | No. | Layer | Module | Coordinates [row, col] | Verdict | PPL x (alone) | Published in |",
             "|---|---|---|---|---|---|---|---|"]
    for m in models:
        name = f"{_md_cell(m['model'])} @ `{(m['revision'] or '')[:12]}`"
        if not m["super_weights"]:
            lines.append(f"| {name} | - | - | - | - | none found | | |")
        for i, w in enumerate(m["super_weights"]):
            module = w["module"] + (f"[{w['expert']}]" if w["expert"] is not None else "")
            lines.append(f"| {name if i == 0 else ''} | {i + 1} | {w['layer']} | {_md_cell(module)} | "
                         f"[{w['row']}, {w['col']}] | {w['verdict'].replace('_', ' ')} | {_fmt(w['ppl_ratio'])} | "
                         f"{_md_cell(w['published'] or '')} |")
    if failed:
        lines += ["", "## Not indexed: scans that failed", "", "| Model | Error |", "|---|---|"]
        lines += [f"| {_md_cell(f['model'])} | {_md_cell(f['error_type'])}: {_md_cell(f['error'])} |" for f in failed]
    return "\n".join(lines) + "\n"


def diff(previous: dict | None, models: list[dict]) -> dict:
    """Models and coordinates added, removed and changed against the previous index.json."""
    def coords(m):
        return {(w["layer"], w["module"], w["expert"], w["row"], w["col"]): w["verdict"] for w in m["super_weights"]}

    old = {m["model"]: m for m in (previous or {}).get("models", [])}
    new = {m["model"]: m for m in models}
    ch = {"models_added": sorted(set(new) - set(old)), "models_removed": sorted(set(old) - set(new)),
          "coordinates_added": [], "coordinates_removed": [], "coordinates_changed": [], "revisions_changed": []}
    for name in sorted(set(new) & set(old)):
        a, b = coords(old[name]), coords(new[name])
        if old[name]["revision"] != new[name]["revision"]:
            ch["revisions_changed"].append({"model": name, "from": old[name]["revision"], "to": new[name]["revision"]})
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
    for key, title in (("coordinates_added", "added"), ("coordinates_removed", "removed")):
        for c in ch[key][:200]:
            lines.append(f"- {c['model']}: layer {c['layer']} [{c['row']}, {c['col']}] {title} ({c['verdict']})")
    for c in ch["coordinates_changed"][:200]:
        lines.append(f"- {c['model']}: layer {c['layer']} [{c['row']}, {c['col']}] {c['from']} -> {c['to']}")
    return "\n".join(lines) + "\n"


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

Verdicts: `super_weight` (zeroing it alone multiplies perplexity past the threshold, far above random and
largest-magnitude controls), `partner` (harmless alone, part of a spike whose weights together are).
`ppl_ratio` is the perplexity with the weight zeroed over the model's own; `published` names a paper that
lists the same coordinate.
"""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(catalog: Catalog, out_dir: str | os.PathLike, workers: int | None = None) -> Summary:
    t0 = time.time()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        previous = None
        if (out / "index.json").exists():
            try:
                previous = json.loads((out / "index.json").read_text())
            except (ValueError, OSError) as e:
                raise PublishError(f"{out / 'index.json'} is not a readable index ({e}); move it away") from None
        published = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        models, failed = _models(catalog)
        drawn = _plots(models, out, workers or min(8, os.cpu_count() or 1))
        rows = _rows(models)
        ch = diff(previous, models)
        index = {"schema_version": SCHEMA_VERSION, "published": published, "coordinates": COORDINATES,
                 "models": [{k: v for k, v in m.items() if k != "profile"} for m in models], "failed": failed}
        _write(out / "index.md", markdown(models, failed, published))
        _write(out / "index.csv", _csv(rows))
        _write(out / "index.html", render_html(models, failed, ch, published))
        _write(out / "README.md", dataset_card(models, len(rows), published))
        changed = any(ch.values())
        if changed or previous is None:
            old = (out / "CHANGELOG.md").read_text() if (out / "CHANGELOG.md").exists() else ""
            old = old.removeprefix("# Changelog\n\n")
            _write(out / "CHANGELOG.md", "# Changelog\n\n" + changelog_entry(ch, published, previous is None)
                   + ("\n" + old if old else ""))
        _write(out / "index.json", json.dumps(index, indent=1, default=str))  # last: the next diff's base
    except OSError as e:
        raise PublishError(f"cannot write the index to {out}: {e}") from None
    return Summary(out, len(models), sum(len(m["super_weights"]) for m in models), len(failed), drawn, ch,
                   time.time() - t0)


def push_to_hub(out_dir: str | os.PathLike, repo: str, private: bool = False) -> str:
    """Upload the folder as a dataset repo. The token comes from HF_TOKEN or `hf auth login`; never stored."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OfflineModeIsEnabled

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", exist_ok=True, private=private)
        info = api.upload_folder(folder_path=str(out_dir), repo_id=repo, repo_type="dataset",
                                 ignore_patterns=[".*", "**/.*"], commit_message="Update the super-weight index")
    except OfflineModeIsEnabled:
        raise PublishError(f"cannot push to {repo}: the hub is offline (HF_HUB_OFFLINE is set)") from None
    except LocalTokenNotFoundError:
        raise PublishError(f"cannot push to {repo}: no token; set HF_TOKEN or run `hf auth login`") from None
    except HFValidationError as e:
        raise PublishError(f"cannot push to {repo}: {str(e).splitlines()[0]}") from None
    except (HfHubHTTPError, OSError) as e:
        raise PublishError(f"cannot push to {repo}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return getattr(info, "commit_url", str(info))
