"""Publish the coordinate index: Markdown (the paper's Table 1 form), CSV, JSON, a changelog against the
previous index in the folder, a Hugging Face dataset card, one spike-profile plot per model and index.html.

The index holds each model's latest successful scan (the `latest_scans` view); failed-only models are
listed apart. Every file is written under a temporary name and renamed, plots are named by the scan
they show, so re-publishing redraws only what changed.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from words import COORDINATES, verdicts
from words.tables import SCHEMA_VERSION

from . import export, query, views
from .canonical import Canonical, differs, settings
from .errors import PublishError
from .html import render_html
from .render import CSV_COLUMNS, changelog_entry, csv_text, dataset_card, diff, markdown
from .store import Catalog

FILES = ("index.md", "index.csv", "index.json", "index.html", "README.md", "CHANGELOG.md", "coordinates.parquet",
         "coordinates")  # coordinates: the flat table for other engines (catalog.export), a Delta folder
MANIFEST = ".superweights-publish.json"  # what this tool wrote here: the only files it replaces or deletes


@dataclass
class Summary:
    out_dir: Path
    models: int = 0
    coordinates: int = 0
    failed: int = 0
    plots_drawn: int = 0
    changes: dict = field(default_factory=dict)
    seconds: float = 0.0


def _dicts(con, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


# per model, one current scan: a successful one before a failure, the canonical configuration's ($1) before
# any other, then as `latest_scans` chooses
PUBLISHED = (f"SELECT * EXCLUDE (current, latest) FROM scans_all WHERE current QUALIFY row_number() OVER "
             f"(PARTITION BY model ORDER BY status = 'ok' DESC, coalesce(config_fingerprint = $1, false) DESC, "
             f"{views.BEST}) = 1")
SHOWN = "(SELECT unnest($1::VARCHAR[]))"  # the scan ids of the scans shown


def _read_index(con, canonical: str | None) -> tuple[list[dict], ...]:
    """The scans shown, their weights that matter (catastrophic and mild), their layer profiles, each model's
    latest quantization study, its family, and its current scans of other configurations."""
    scans = _dicts(con, f"""
        SELECT scan_id, model, revision, architecture, num_layers, num_parameters, scanner_version, started,
               ppl_base, finding, largest_ppl_ratio, largest_ppl_ratio_lo, largest_ppl_ratio_hi, dtype,
               coalesce(validated, ppl_base IS NOT NULL) AS validated, config_fingerprint, eval_windows,
               status, error_type, error,
               -- a scan some of whose candidate rows could not be read (a file skipped) is incomplete: its
               -- index entry says so, never a verdict of what could be read
               n_candidates > (SELECT count(*) FROM candidates_all c WHERE c.scan_id = s.scan_id) AS incomplete,
               config
        FROM ({PUBLISHED}) s ORDER BY model""", [canonical])
    shown = [s["scan_id"] for s in scans]
    others = _dicts(con, f"""
        SELECT model, config_fingerprint, config, finding, n_super_weights, largest_ppl_ratio, started
        FROM scans WHERE status = 'ok' AND scan_id NOT IN {SHOWN}
        QUALIFY row_number() OVER (PARTITION BY model, config_fingerprint ORDER BY started DESC) = 1
        ORDER BY model, started DESC""", [shown])
    coords = _dicts(con, f"""
        SELECT w.scan_id, w.layer, w.module, w.expert, w.row, w.col, w.value, w.output_ratio AS spike_ratio,
               w.ppl_ratio, w.ppl_ratio_lo, w.ppl_ratio_hi, w.windows, w.group_ppl_ratio, w.group_ppl_ratio_lo,
               w.group_ppl_ratio_hi, w.rest_ppl_ratio, w.verdict, w.near_threshold, w.decided, w.measured_in,
               (SELECT string_agg(DISTINCT r.source, '; ')
                   FROM reference r WHERE r.level = 'weight' AND r.hub_id = w.model AND r.layer = w.layer
                   AND r.module = w.module AND r.expert IS NOT DISTINCT FROM w.expert AND r.row = w.row
                   AND r.col = w.col) AS published
        FROM candidates_all w WHERE w.scan_id IN {SHOWN} AND w.verdict IN {views.MATTERING}
        ORDER BY w.scan_id, w.layer, w.verdict NOT IN {views.FOUND}, w.row, w.col""", [shown])
    profiles = _dicts(con, f"""
        SELECT scan_id, list(abs(input_value) ORDER BY layer) AS inputs,
               list(abs(output_value) ORDER BY layer) AS outputs
        FROM layer_profiles_all WHERE scan_id IN {SHOWN} GROUP BY scan_id""", [shown])
    quant = _dicts(con, """
        SELECT model, study_id, started, study, bits, block, variant, ppl, ppl_lo, ppl_hi, ppl_ratio, ppl_base,
               windows, clip, kept, finding, CASE WHEN study = 'restore' THEN NULL ELSE coalesce(rtn, 'zero-point') END AS rtn, tolerance, held, held_gain,
               held_gain_lo, held_gain_hi FROM quant_results
        QUALIFY study_id = first_value(study_id) OVER (PARTITION BY model ORDER BY started DESC, study_id DESC)
        ORDER BY model, study DESC, bits, block NULLS LAST, variant, len(held) NULLS FIRST, held""")
    families = _dicts(con, f"""
        SELECT f.model, f.root, f.base_model, f.base_model_from, f.generation, l.kept, l.moved, l.lost, l.new,
               l.a_in_b_ppl_ratio, l.a_in_b_ppl_ratio_lo, l.a_in_b_ppl_ratio_hi, l.a_in_b_verdict,
               l.b_in_a_ppl_ratio, l.b_in_a_ppl_ratio_lo, l.b_in_a_ppl_ratio_hi, l.b_in_a_verdict,
               l.b_in_b_ppl_ratio, l.b_in_b_verdict, l.a_set_change, l.a_set_change_ratio,
               l.a_set_change_ratio_lo, l.a_set_change_ratio_hi
        FROM {views.FAMILY_LINEAGE}
        WHERE f.root IN (SELECT root FROM families WHERE generation > 0)""")
    return scans, coords, profiles, quant, families, others


def _models(catalog: Catalog, canonical: Canonical | None) -> tuple[list[dict], list[dict]]:
    scans, coords, profiles, quant, families, others = query.answer(
        catalog, lambda con: _read_index(con, canonical and canonical.fingerprint))
    flags = canonical.flags if canonical else {}
    other: dict[str, list[dict]] = {}
    for o in others:
        other.setdefault(o.pop("model"), []).append(o)
    family = {f.pop("model"): f for f in families}
    studies: dict[str, list[dict]] = {}
    for q in quant:
        studies.setdefault(q["model"], []).append(q)
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
        s["weights"] = by_scan.get(s["scan_id"], [])
        s["profile"] = prof.get(s["scan_id"], ([], []))
        rows = studies.get(s["model"])
        s["quant"] = None if not rows else {
            **{k: rows[0][k] for k in ("study_id", "finding", "clip", "kept", "ppl_base", "tolerance")},
            "rtn": ", ".join(dict.fromkeys(f"{r['study']} {r['rtn']}" for r in rows if r["study"] != "restore")),
            "started": rows[0]["started"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "rows": [{k: r[k] for k in ("study", "bits", "block", "variant", "ppl", "ppl_lo", "ppl_hi", "ppl_ratio",
                                        "windows", "held", "held_gain", "held_gain_lo", "held_gain_hi")}
                     for r in rows]}
        s["family"] = family.get(s["model"])  # None: no known base and no derivative
        s["settings"] = settings(s.pop("config"), flags)
        s["canonical"] = canonical is None or s["config_fingerprint"] == canonical.fingerprint
        s["differs"] = [] if s["canonical"] else differs(settings(canonical.config, flags), s["settings"])
        s["other_configurations"] = [
            {**{k: o[k] for k in ("config_fingerprint", "finding", "n_super_weights", "largest_ppl_ratio")},
             "started": o["started"].strftime("%Y-%m-%dT%H:%M:%SZ"),
             "differs": differs(s["settings"], settings(o["config"], flags))}
            for o in other.get(s["model"], []) if o["config_fingerprint"] != s["config_fingerprint"]]
        ok.append(s)
    return ok, failed


def slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._")[:80] or "model"


def _plot_name(m: dict) -> str:
    return f"plots/{slug(m['model'])}-{hashlib.sha1(m['scan_id'].encode()).hexdigest()[:10]}.png"


def _draw(jobs: list[tuple]) -> int:
    from .plots import render, render_quant

    for kind, *args, path in jobs:  # kind: "profile" (spikes per layer) or "quant" (a quantization study)
        tmp = f"{path}.{os.getpid()}.tmp"
        (render_quant if kind == "quant" else render)(*args, tmp)
        os.replace(tmp, path)
    return len(jobs)


def _plots(models: list[dict], out: Path, workers: int, owned: set[str]) -> int:
    (out / "plots").mkdir(parents=True, exist_ok=True)
    jobs = []
    for m in models:
        m["plot"] = _plot_name(m)
        if not (out / m["plot"]).exists():
            marked = {w["layer"] for w in m["weights"] if verdicts.is_catastrophic(w["verdict"])}
            jobs.append(("profile", f"{m['model']}  @ {(m['revision'] or '')[:12]}", *m["profile"], marked,
                         str(out / m["plot"])))
        if m["quant"]:
            m["quant_plot"] = m["plot"].removesuffix(".png") + f"-quant-{m['quant']['study_id'][:10]}.png"
            if not (out / m["quant_plot"]).exists():
                jobs.append(("quant", f"{m['model']}: perplexity under RTN", m["quant"]["rows"],
                             m["quant"]["ppl_base"], m["quant"]["tolerance"], str(out / m["quant_plot"])))
    keep = _plot_files(models)
    for old in owned - keep:  # plots this tool drew for scans no longer in the index; nothing else
        if old.startswith("plots/") and (out / old).is_file():
            (out / old).unlink()
    if len(jobs) < 64 or workers <= 1:
        return _draw(jobs)
    chunks = [jobs[i::workers * 4] for i in range(workers * 4)]
    # a fresh interpreter forks the drawers: this process runs delta-rs's threads, which a fork would not carry
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        return sum(pool.map(_draw, chunks))


def _plot_files(models: list[dict]) -> set[str]:
    """The plots the index shows (named by `_plots`)."""
    return {m["plot"] for m in models} | {m["quant_plot"] for m in models if m.get("quant_plot")}


def _rows(models: list[dict]) -> list[dict]:
    rows = []
    for m in models:
        base = {k: m[k] for k in ("model", "revision", "architecture", "finding", "dtype", "validated",
                                  "config_fingerprint", "scanner_version", "scan_id")}
        if not m["weights"]:
            rows.append({**dict.fromkeys(CSV_COLUMNS), **base, "verdict": "incomplete" if m["incomplete"] else "none"})
        for w in m["weights"]:
            rows.append({**dict.fromkeys(CSV_COLUMNS), **base, **w})
    return rows


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _owned(out: Path) -> set[str]:
    """The files a previous publish wrote here (its manifest). Any index file this tool would write that is
    not among them belongs to someone else: refuse rather than overwrite it."""
    try:
        owned = set(json.loads((out / MANIFEST).read_text())) if (out / MANIFEST).exists() else set()
    except (ValueError, TypeError, OSError) as e:
        raise PublishError(f"{out / MANIFEST} is not a list of files ({e}); move it away") from None
    foreign = [f for f in FILES if (out / f).exists() and f not in owned]
    if foreign:
        raise PublishError(f"{out} holds {', '.join(foreign)}, which superweights publish did not write there; "
                           "publish to another folder, or move them")
    return owned


def _previous(out: Path) -> dict | None:
    """The index published here before (the changelog's base), checked for the shape this tool writes."""
    if not (out / "index.json").exists():
        return None
    try:
        previous = json.loads((out / "index.json").read_text())
        for m in previous["models"]:
            (m["model"], m["revision"], [(w["layer"], w["module"], w["expert"], w["row"], w["col"], w["verdict"])
                                         for w in m.get("weights", m.get("super_weights"))])
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise PublishError(f"{out / 'index.json'} is not an index this tool wrote ({type(e).__name__}: {e}); "
                           "move it away") from None
    return previous


def publish(catalog: Catalog, out_dir: str | os.PathLike, workers: int | None = None,
            canonical: Canonical | None = None) -> Summary:
    """The index of each model's scan made with the `canonical` configuration (or, where it has none, its best
    other scan, marked so); without one, each model's latest scan (`latest_scans`)."""
    t0 = time.time()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        owned = _owned(out)
        previous = _previous(out) if "index.json" in owned else None
        published = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        models, failed = _models(catalog, canonical)
        drawn = _plots(models, out, workers or min(8, os.cpu_count() or 1), owned)
        rows = _rows(models)
        ch = diff(previous, models)
        index = {"schema_version": SCHEMA_VERSION, "published": published, "coordinates": COORDINATES,
                 "models": [{k: v for k, v in m.items() if k != "profile"} for m in models], "failed": failed}
        _write(out / "index.md", markdown(models, failed, published))
        _write(out / "index.csv", csv_text(rows))
        _write(out / "index.html", render_html(models, failed, ch, published))
        _write(out / "README.md", dataset_card(models, len(rows), published))
        changed = any(ch.values())
        if changed or previous is None:
            old = (out / "CHANGELOG.md").read_text() if (out / "CHANGELOG.md").exists() else ""
            old = old.removeprefix("# Changelog\n\n")
            _write(out / "CHANGELOG.md", "# Changelog\n\n" + changelog_entry(ch, published, previous is None)
                   + ("\n" + old if old else ""))
        export.write(export.table(models), out)
        _write(out / "index.json", json.dumps(index, indent=1, default=str))  # the next diff's base
        _write(out / MANIFEST, json.dumps(sorted(set(FILES) | _plot_files(models)), indent=0))
    except OSError as e:
        raise PublishError(f"cannot write the index to {out}: {e}") from None
    return Summary(out, len(models), sum(len(m["weights"]) for m in models), len(failed), drawn, ch,
                   time.time() - t0)


def export_coordinates(catalog: Catalog, out_dir: str | os.PathLike, canonical: Canonical | None = None) -> int:
    """Only the flat table of the index (catalog.export) into `out_dir`; returns its rows."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if (out / export.NAME).exists() and not (out / export.NAME / "_delta_log").is_dir():
            raise PublishError(f"{out / export.NAME} exists and is not a table this tool wrote; move it away")
        rows = export.table(_models(catalog, canonical)[0])
        export.write(rows, out)
    except OSError as e:
        raise PublishError(f"cannot write to {out}: {e}") from None
    return len(rows)


def push_to_hub(out_dir: str | os.PathLike, repo: str, private: bool = False) -> str:
    """Upload the folder as a dataset repo. The token comes from HF_TOKEN or `hf auth login`; never stored."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, LocalTokenNotFoundError, OfflineModeIsEnabled

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
    except Exception as e:  # noqa: BLE001  the hub's HTTP errors, and its client's for an unreachable host
        raise PublishError(f"cannot push to {repo}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}") \
            from None
    return getattr(info, "commit_url", str(info))
