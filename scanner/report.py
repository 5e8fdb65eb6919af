"""The scan result: one JSON object, and a Table-1-style text report.

The JSON object's keys are the catalog's names (README, "Schema"): a scan row's columns at the top, and
`super_weights`, `spikes` and `layer_profiles` lists whose items have the columns of those tables. It
carries a few things more that the catalog does not keep (`groups`, `baseline`, `timings`, ...)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

COORDINATES = ("(layer, row, col) of the down projection as a Linear weight W[out, in]: row = hidden/output "
               "channel, col = intermediate/input channel; layers from 0; experts.down_proj[expert, row, col]")


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
    groups: list  # [GroupResult]
    base_eval: object | None  # Evaluation
    singles: dict  # Coord -> Evaluation
    eval_tokens: int
    eval_passes: int
    eval_sha256: str
    config: dict
    rounds: int
    started: float
    timings: dict
    warnings: list = field(default_factory=list)

    def group_id(self, key: tuple) -> str:
        layer, module, expert, row = key
        return f"L{layer}" + (f"E{expert}" if expert is not None else "") + f"R{row}"

    def _eval(self, ev) -> dict:
        base = self.base_eval
        return {"ppl": ev.ppl, "ppl_ratio": ev.ratio(base),
                "stopword_shift": None if ev.stopword is None else ev.stopword - base.stopword}

    def to_dict(self) -> dict:
        groups = []
        for g in self.groups:
            layer, module, expert, row = g.key
            groups.append({
                "id": self.group_id(g.key), "layer": layer, "module": module, "expert": expert, "row": row,
                "members": [[m.coord.row, m.coord.col] for m in g.members], "verdict": g.verdict,
                **self._eval(g.ablated),
                "controls": {"random": {**self._eval(g.random), "weights": g.controls["random"]},
                             "largest": {**self._eval(g.largest), "weights": g.controls["largest"]}}})
        by_id = {g["id"]: g for g in groups}
        sws = [self._candidate(c, by_id.get(self.group_id(c.spike.key()), {})) for c in self.candidates]
        base = self.base_eval
        return {
            "spec": self.spec, "model": self.model, "repo_id": self.repo_id, "revision": self.revision,
            "source": self.source, "gguf_file": self.gguf_file, **self.info, "layers_path": self.layers_path,
            "coordinates": COORDINATES, "scanner_version": self.scanner_version, "prompts": self.prompts,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            + f".{int(self.started * 1000) % 1000:03d}Z",
            "duration_s": self.timings.get("total_s"), "status": "ok",
            "ppl_base": base.ppl if base else None, "stopword_mass": base.stopword if base else None,
            "eval_tokens": self.eval_tokens or None, "eval_text_sha256": self.eval_sha256 if base else None,
            "eval_passes": self.eval_passes, "rounds": self.rounds,
            "n_candidates": len(sws), "n_super_weights": sum(s["verdict"] == "super_weight" for s in sws),
            "config": self.config, "warnings": self.warnings,
            "super_weights": sws, "groups": groups,
            "spikes": [s.to_dict() for s in self.spikes],
            "layer_profiles": [p.to_dict() for p in self.profiles],
            "baseline": vars(self.baseline), "timings": self.timings,
        }

    def _candidate(self, c, group: dict) -> dict:
        ev = self.singles.get(c.coord)
        controls = group.get("controls") or {}
        return {
            "layer": c.coord.layer, "module": c.coord.module, "expert": c.coord.expert, "row": c.coord.row,
            "col": c.coord.col, "value": c.weight, "input": c.input, "input_ratio": c.input_ratio,
            "output": c.spike.raw, "output_ratio": c.spike.ratio, "contribution": c.contribution,
            "share": c.share, "token_pos": c.spike.token_pos, "token_id": c.spike.token_id,
            "prompt": c.spike.prompt, "round": c.round, "rank": c.rank, "screen_kl": c.screen_kl,
            "ppl": ev.ppl if ev else None, "ppl_ratio": ev.ratio(self.base_eval) if ev else None,
            "stopword_shift": self._eval(ev)["stopword_shift"] if ev else None,
            "group": self.group_id(c.spike.key()), "group_ppl_ratio": group.get("ppl_ratio"),
            "random_ppl_ratio": (controls.get("random") or {}).get("ppl_ratio"),
            "largest_ppl_ratio": (controls.get("largest") or {}).get("ppl_ratio"),
            "verdict": c.verdict}

    def render(self) -> str:
        d = self.to_dict()
        lines = [f"{self.spec}  ({d['architecture']}, {d['num_layers']} layers, "
                 f"{d['num_parameters'] / 1e6:.1f}M parameters)  revision {self.revision}"]
        if self.base_eval:
            lines.append(f"perplexity {self.base_eval.ppl:.3f} on {self.eval_tokens} tokens of the evaluation "
                         f"text; {self.rounds} detection round(s); spikes measured against the median "
                         f"layer maximum {self.baseline.value:.3g}")
        head = ("layer", "module", "[row, col]", "weight", "spike", "ppl ratio", "verdict")
        rows = []
        shown = [s for s in d["super_weights"] if s["verdict"] != "unvalidated"] or d["super_weights"]
        for s in shown:
            module = s["module"] + (f"[{s['expert']}]" if s["expert"] is not None else "")
            ratio = "-" if s["ppl_ratio"] is None else f"{s['ppl_ratio']:.3g}"
            rows.append((str(s["layer"]), module, f"[{s['row']}, {s['col']}]", f"{s['value']:.4g}",
                         f"{s['output_ratio']:.0f}x", ratio, s["verdict"]))
        if rows:
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            lines.append("")
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        else:
            lines.append("\nno super-weight candidates: no down-projection output spikes "
                         f"{self.config['detect']['spike_ratio']:g}x above the model's median layer")
        if len(shown) < len(d["super_weights"]):
            lines.append(f"(+{len(d['super_weights']) - len(shown)} unvalidated candidates of spikes that barely "
                         "move the output; see --json)")
        if d["groups"]:
            lines.append("\ngroups (candidates of one spike zeroed together) and controls:")
            for g in d["groups"]:
                c = g["controls"]
                lines.append(f"  {g['id']}: {len(g['members'])} weight(s) -> ppl x{g['ppl_ratio']:.3g}; "
                             f"random x{c['random']['ppl_ratio']:.3g}, largest others "
                             f"x{c['largest']['ppl_ratio']:.3g}: {g['verdict']}")
        other = [s for s in self.spikes if s.kind != "super_activation"]
        if other:
            lines.append("\nother spikes: " + "; ".join(
                f"layer {s.layer} row {s.row} {s.kind} ({s.ratio:.0f}x)" for s in other))
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)
