"""The scan result: one JSON object, and a Table-1-style text report.

The JSON object's keys are the catalog's names (`words.tables`): a scan row's columns at the top, and
`candidates`, `spikes` and `layer_profiles` lists whose items have the columns of those tables. It
carries a few things more that the catalog does not keep (`groups`, `baseline`, `timings`, ...)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from words import COORDINATES, verdicts



def _ratios(e, prefix: str) -> dict:
    return {prefix: e.ratio, f"{prefix}_lo": e.lo, f"{prefix}_hi": e.hi} if e else \
        dict.fromkeys((prefix, f"{prefix}_lo", f"{prefix}_hi"))


@dataclass
class ScanResult:
    spec: str  # what was asked for
    model: str  # the catalog's name: the hub id for hub models, else the spec
    repo_id: str | None
    revision: str
    source: str
    gguf_file: str | None
    info: dict
    layers_path: str
    scanner_version: str
    prompts: list[str]
    profiles: list  # [LayerProfile]
    baseline: object  # Baseline
    spikes: list  # [Spike]
    candidates: list  # [Candidate], ranked
    groups: list  # [validate.GroupResult]
    evaluation: dict  # ppl_base, stopword_mass, eval_windows, window_tokens, eval_tokens, eval_text_sha256, ...
    finding: str  # a key of words.verdicts.FINDINGS
    config: dict
    config_fingerprint: str
    rounds: int
    started: float
    timings: dict
    warnings: list = field(default_factory=list)
    base_model: str | None = None  # what the checkpoint declares it was made from (scanner.load.card)
    base_model_from: str | None = None  # card | gguf

    def group_id(self, key: tuple) -> str:
        layer, module, expert, row = key
        return f"L{layer}" + (f"E{expert}" if expert is not None else "") + f"R{row}"

    def _group(self, g) -> dict:
        layer, module, expert, row = g.key
        e = g.ablated
        return {"id": self.group_id(g.key), "layer": layer, "module": module, "expert": expert, "row": row,
                "members": [[m.coord.row, m.coord.col] for m in g.members], "verdict": g.verdict,
                **_ratios(e, "ppl_ratio"), "windows": e.windows, "decided": e.decided,
                "stopword_shift": e.stopword_shift, "ppl_ratio_kinds": e.by_kind,
                "controls": [{"kind": kind, "weights": [[c.row, c.col] for c in coords], **_ratios(ce, "ppl_ratio"),
                              "windows": ce.windows} for kind, coords, ce in g.controls],
                "rest": [{"without": [c.row, c.col], **_ratios(re, "ppl_ratio"), "decided": re.decided,
                          "windows": re.windows,
                          **_ratios(g.carried.get(c), "carried_ratio")} for c, re in g.rest.items()],
                "near_threshold": e.near}

    def _candidate(self, c, group: dict, g) -> dict:
        e = c.estimate
        controls = group.get("controls") or []
        # controls zeroed together ("union": the random draws and the largest others at once) bound each of them
        worst = {kind: max((x for x in controls if x["kind"] in (kind, "union")), key=lambda x: x["ppl_ratio"],
                           default=None) for kind in ("random", "largest")}
        rest = g.rest.get(c.coord) if g else None
        base = self.evaluation.get("base_ppl_by_windows") or {}
        return {
            "layer": c.coord.layer, "module": c.coord.module, "expert": c.coord.expert, "row": c.coord.row,
            "col": c.coord.col, "value": c.weight, "input": c.input, "input_ratio": c.input_ratio,
            "output": c.spike.raw, "output_ratio": c.spike.ratio, "contribution": c.contribution,
            "share": c.share, "token_pos": c.spike.token_pos, "token_id": c.spike.token_id,
            "prompt": c.spike.prompt, "round": c.round, "rank": c.rank, "screen_kl": c.screen_kl,
            "ppl": e.ratio * base[e.windows] if e and e.windows in base else None, **_ratios(e, "ppl_ratio"),
            "windows": e.windows if e else None, "decided": e.decided if e else None,
            "near_threshold": e.near if e else None, "window_deltas": e.deltas if e else None,
            "measured_in": e.precision if e else None,
            "ppl_ratio_kinds": e.by_kind if e else None, "stopword_shift": e.stopword_shift if e else None,
            "group": self.group_id(c.spike.key()),
            **{f"group_{k}": group.get(k) for k in ("ppl_ratio", "ppl_ratio_lo", "ppl_ratio_hi")},
            "random_ppl_ratio": (worst["random"] or {}).get("ppl_ratio"),
            "random_ppl_ratio_hi": (worst["random"] or {}).get("ppl_ratio_hi"),
            "largest_ppl_ratio": (worst["largest"] or {}).get("ppl_ratio"),
            "largest_ppl_ratio_hi": (worst["largest"] or {}).get("ppl_ratio_hi"),
            **_ratios(rest, "rest_ppl_ratio"), **_ratios(g.carried.get(c.coord) if g else None, "carried_ratio"),
            "verdict": c.verdict}

    def to_dict(self) -> dict:
        groups = [self._group(g) for g in self.groups]
        by_id = {g["id"]: g for g in groups}
        objects = {self.group_id(g.key): g for g in self.groups}
        sws = [self._candidate(c, by_id.get(self.group_id(c.spike.key()), {}),
                               objects.get(self.group_id(c.spike.key()))) for c in self.candidates]
        largest = max(groups, key=lambda g: g["ppl_ratio"] or 0, default=None)
        ev = {k: v for k, v in self.evaluation.items() if k != "base_ppl_by_windows"}
        return {
            "spec": self.spec, "model": self.model, "repo_id": self.repo_id, "revision": self.revision,
            "source": self.source, "gguf_file": self.gguf_file, "base_model": self.base_model,
            "base_model_from": self.base_model_from, **self.info, "layers_path": self.layers_path,
            "coordinates": COORDINATES, "scanner_version": self.scanner_version, "prompts": self.prompts,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            + f".{int(self.started * 1000) % 1000:03d}Z",
            "duration_s": self.timings.get("total_s"), "status": "ok", **ev, "rounds": self.rounds,
            "validated": bool(self.evaluation.get("ppl_base")), "finding": self.finding,
            **{f"largest_{k}": (largest or {}).get(k) for k in ("ppl_ratio", "ppl_ratio_lo", "ppl_ratio_hi")},
            "n_candidates": len(sws), "n_super_weights": sum(verdicts.is_catastrophic(s["verdict"]) for s in sws),
            "config": self.config, "config_fingerprint": self.config_fingerprint, "warnings": self.warnings,
            **{k: v for k, v in self.timings.items() if k != "total_s"},
            "candidates": sws, "groups": groups,
            "spikes": [s.to_dict() for s in self.spikes],
            "layer_profiles": [p.to_dict() for p in self.profiles],
            "baseline": vars(self.baseline), "timings": self.timings,
        }

    def render(self) -> str:
        d = self.to_dict()
        lines = [f"{self.spec}  ({d['architecture']}, {d['num_layers']} layers, "
                 f"{d['num_parameters'] / 1e6:.1f}M parameters)  revision {self.revision}"]
        if d.get("ppl_base"):
            lines.append(f"perplexity {d['ppl_base']:.3f} on {d['eval_windows']} windows of {d['window_tokens']} "
                         f"tokens; {self.rounds} detection round(s); spikes measured against the median layer "
                         f"maximum {self.baseline.value:.3g}")
            lines.append("ablations decided at " + ", ".join(f"{n} windows: {k}" for n, k in d["decided_at"].items())
                         + f" ({d['window_evaluations']} window evaluations"
                         + (f", {d['screened']} screened in bfloat16)" if d.get("screened") else ")"))
        lines.append(f"finding: {verdicts.FINDINGS[self.finding]}")
        head = ("layer", "module", "[row, col]", "weight", "spike", "ppl ratio [95% interval]", "windows", "verdict")
        rows = []
        shown = [s for s in d["candidates"] if s["verdict"] != "unvalidated"] or d["candidates"]
        for s in shown:
            module = s["module"] + (f"[{s['expert']}]" if s["expert"] is not None else "")
            ratio = "-" if s["ppl_ratio"] is None else \
                f"{s['ppl_ratio']:.3g} [{s['ppl_ratio_lo']:.3g}, {s['ppl_ratio_hi']:.3g}]" + \
                (f" at the x{s['near_threshold']:g} line" if s["near_threshold"] else "") + \
                ("" if s["decided"] is not False else " undecided")
            rows.append((str(s["layer"]), module, f"[{s['row']}, {s['col']}]", f"{s['value']:.4g}",
                         f"{s['output_ratio']:.0f}x", ratio, str(s["windows"] or "-"), s["verdict"]))
        if rows:
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            lines.append("")
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        if len(shown) < len(d["candidates"]):
            lines.append(f"(+{len(d['candidates']) - len(shown)} unvalidated candidates of spikes that barely "
                         "move the output; see --json)")
        if d["groups"]:
            lines.append("\ngroups (candidates of one spike zeroed together) and controls:")
            for g in d["groups"]:
                c = max((x["ppl_ratio_hi"] for x in g["controls"]), default=None)
                lines.append(f"  {g['id']}: {len(g['members'])} weight(s) -> ppl x{g['ppl_ratio']:.3g} "
                             f"[{g['ppl_ratio_lo']:.3g}, {g['ppl_ratio_hi']:.3g}] on {g['windows']} windows"
                             + (f"; controls at most x{c:.3g}" if c else "") + f": {g['verdict']}")
        other = [s for s in self.spikes if s.kind != "massive"]
        if other:
            lines.append("\nother spikes: " + "; ".join(
                f"layer {s.layer} row {s.row} {s.kind} ({s.ratio:.0f}x)" for s in other))
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)
