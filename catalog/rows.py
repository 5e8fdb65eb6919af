"""Scan results (the scanner's JSON dict) and failures -> one catalog row per scan."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from datetime import datetime, timezone

from scanner import __version__ as SCANNER_VERSION  # the package file only: no torch

from .schema import SCAN_COLUMNS, SCHEMA_VERSION


def new_scan_id(started: float) -> str:
    """Sortable by start time, unique across processes and hosts."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + uuid.uuid4().hex[:16]


def canonical_model(spec: str, repo_id: str | None, source: str | None) -> str:
    """A hub model is named by its repo id (whatever revision syntax was typed); anything else as asked."""
    return repo_id if source == "hub" and repo_id else spec


def _started(value) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def _base(scan_id: str | None, started) -> dict:
    start = _started(started)
    row = dict.fromkeys(SCAN_COLUMNS)
    row.update(schema_version=SCHEMA_VERSION, scan_id=scan_id or new_scan_id(start.timestamp()),
               started=start, host=host_name(), prompts=[], warnings=[],
               super_weights=[], spikes=[], layer_profiles=[])
    return row


def ok_row(result: dict, scan_id: str | None = None, host: str | None = None) -> dict:
    """One row from `ScanResult.to_dict()`."""
    r = result
    row = _base(scan_id, r["started"])
    for key in ("spec", "repo_id", "source", "revision", "gguf_file", "architecture", "layers_path", "num_layers",
                "hidden_size", "intermediate_size", "num_experts", "num_parameters", "dtype", "device",
                "offloaded", "scanner_version"):
        row[key] = r.get(key)
    ppl = r.get("perplexity") or {}
    groups = {g["id"]: g for g in r.get("groups", [])}
    sws = [_super_weight(s, groups.get(s["group"]), ppl.get("base")) for s in r["super_weights"]]
    row.update(
        spec=r["model"], model=canonical_model(r["model"], r.get("repo_id"), r.get("source")),
        prompts=list(r.get("prompts", [])), duration_s=(r.get("timings") or {}).get("total_s"), status="ok",
        ppl_base=ppl.get("base"), stopword_mass=ppl.get("stopword_mass"), eval_tokens=ppl.get("eval_tokens"),
        eval_text_sha256=ppl.get("eval_text_sha256"), rounds=r.get("rounds"), n_candidates=len(sws),
        n_super_weights=sum(s["verdict"] == "super_weight" for s in sws),
        config_json=json.dumps(r.get("config", {}), sort_keys=True), warnings=list(r.get("warnings", [])),
        super_weights=sws, spikes=[_spike(s) for s in r.get("detected_spikes", [])],
        layer_profiles=[_profile(p) for p in r.get("spikes", [])])
    if host:
        row["host"] = host
    return row


def failed_row(spec: str, error: BaseException | str, started: float, *, error_type: str | None = None,
               revision: str | None = None, repo_id: str | None = None, source: str | None = None,
               scanner_version: str = SCANNER_VERSION, prompts: list[str] | None = None,
               duration_s: float | None = None, scan_id: str | None = None, host: str | None = None) -> dict:
    """A scan that did not finish: the error's one-line text and its type name."""
    row = _base(scan_id, started)
    if isinstance(error, BaseException):
        error_type = error_type or type(error).__name__
        error = str(error) or type(error).__name__
    row.update(spec=spec, model=canonical_model(spec, repo_id, source), repo_id=repo_id, source=source,
               revision=revision, scanner_version=scanner_version, prompts=list(prompts or []), status="failed",
               error_type=error_type or "Error", error=" ".join(str(error).split())[:2000],
               duration_s=time.time() - started if duration_s is None else duration_s)
    if host:
        row["host"] = host
    return row


def _super_weight(s: dict, group: dict | None, ppl_base: float | None) -> dict:
    g = group or {}
    controls = g.get("controls") or {}
    return {
        "layer": s["layer"], "module": s["module"], "expert": s.get("expert"), "row": s["row"], "col": s["col"],
        "value": s["value"], "input": s.get("input"), "input_ratio": s.get("input_ratio"),
        "output": s.get("output"), "output_ratio": s.get("output_ratio"), "contribution": s.get("contribution"),
        "share": s.get("share"), "token_id": s.get("token"), "prompt": s.get("prompt"), "round": s.get("round"),
        "rank": s.get("rank"), "screen_kl": s.get("screen_kl"), "ppl": s.get("ppl"), "ppl_ratio": s.get("ppl_ratio"),
        "stopword_shift": s.get("stopword_shift"), "group": s.get("group"),
        "group_ppl_ratio": g.get("ppl_ratio"),
        "random_ppl_ratio": (controls.get("random") or {}).get("ppl_ratio"),
        "largest_ppl_ratio": (controls.get("largest") or {}).get("ppl_ratio"),
        "verdict": s["verdict"]}


def _spike(s: dict) -> dict:
    return {"layer": s["layer"], "module": s["module"], "expert": s.get("expert"), "row": s["row"],
            "token_id": s.get("token"), "prompt": s.get("prompt"), "value": s.get("value"), "raw": s.get("raw"),
            "ratio": s.get("ratio"), "kind": s.get("kind"), "round": s.get("round")}


def _profile(p: dict) -> dict:
    i, o, post = p["input"], p["output"], p.get("post_norm") or {}
    return {"layer": p["layer"],
            "input_value": i["value"], "input_channel": i["channel"], "input_token_id": i.get("token"),
            "input_expert": i.get("expert"),
            "output_value": o["value"], "output_channel": o["channel"], "output_token_id": o.get("token"),
            "output_expert": o.get("expert"),
            "post_norm_value": post.get("value"), "post_norm_channel": post.get("channel")}


def host_name() -> str:
    return os.environ.get("SUPERWEIGHTS_HOST") or socket.gethostname()
