"""Synthetic scan results, shaped like `ScanResult.to_dict()`, for catalog tests and benchmarks.

They carry no science: real ground truth comes from the scanner's planted models. These exist so that
catalogs of any size can be built in seconds without torch.
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timezone

VERSION = "synthetic"  # the scanner version these results claim
ARCHS = ("llama", "mistral", "qwen2", "gemma2", "olmo", "phi3", "gpt2", "mixtral")


def result(model: str, seed: int = 0, *, revision: str | None = None, layers: int = 24, candidates: int = 10,
           architecture: str | None = None, started: float | None = None, scanner_version: str | None = None,
           coords: list[tuple[int, int, int, str]] | None = None) -> dict:
    """A scan result of `model`; `coords` = [(layer, row, col, verdict)] fixes the candidates."""
    rng = random.Random(f"{model}/{seed}")
    hidden, d_mlp = 1024, 4096
    if coords is None:
        sl = rng.randrange(1, 4)
        srow = rng.randrange(hidden)
        coords = [(sl, srow, rng.randrange(d_mlp), "super_weight")]
        coords += [(sl, srow, rng.randrange(d_mlp), "super_set") for _ in range(min(1, candidates - 1))]
        coords += [(rng.randrange(layers), rng.randrange(hidden), rng.randrange(d_mlp),
                    rng.choice(("negligible", "unvalidated"))) for _ in range(candidates - len(coords))]
    sws, groups = [], {}
    for rank, (layer, row, col, verdict) in enumerate(coords):
        gid = f"L{layer}R{row}"
        ratio = rng.uniform(50, 5000) if verdict == "super_weight" else rng.uniform(2, 5) if verdict == "mild" \
            else rng.uniform(1.0, 1.2)
        group_ratio = ratio * 10 if verdict == "super_set" else ratio
        groups.setdefault(gid, {"id": gid, "layer": layer, "module": "mlp.down_proj", "expert": None, "row": row,
                                "members": [], "verdict": verdict, "ppl_ratio": group_ratio,
                                "ppl_ratio_lo": group_ratio * 0.9, "ppl_ratio_hi": group_ratio * 1.1,
                                "windows": 4, "decided": True, "stopword_shift": 0.0,
                                "controls": [{"kind": "random", "weights": [[1, 2]], "ppl_ratio": 1.0,
                                              "ppl_ratio_lo": 0.99, "ppl_ratio_hi": 1.01},
                                             {"kind": "largest", "weights": [[3, 4]], "ppl_ratio": 1.01,
                                              "ppl_ratio_lo": 1.0, "ppl_ratio_hi": 1.02}], "rest": []})
        groups[gid]["members"].append([row, col])
        x = rng.uniform(100, 3000)
        sws.append({"layer": layer, "row": row, "col": col, "module": "mlp.down_proj", "expert": None,
                    "value": rng.uniform(-3, 3), "verdict": verdict, "ppl_ratio": ratio, "ppl": 10 * ratio,
                    "ppl_ratio_lo": ratio * 0.9, "ppl_ratio_hi": ratio * 1.1, "windows": 4, "decided": True,
                    "ppl_ratio_kinds": {"prose": ratio, "code": ratio},
                    "stopword_shift": rng.uniform(-0.1, 0.4), "input": x, "input_ratio": x / 5,
                    "output": x * 0.8, "output_ratio": x / 4, "contribution": x * 0.7, "share": 0.87,
                    "token_pos": 0, "token_id": rng.randrange(32000), "prompt": 0, "round": 1, "rank": rank,
                    "screen_kl": rng.uniform(0, 2), "group": gid})
    for s in sws:
        g = groups[s["group"]]
        s.update(group_ppl_ratio=g["ppl_ratio"], group_ppl_ratio_lo=g["ppl_ratio_lo"], group_ppl_ratio_hi=g["ppl_ratio_hi"],
                 random_ppl_ratio=1.0, random_ppl_ratio_hi=1.01, largest_ppl_ratio=1.01, largest_ppl_ratio_hi=1.02)
    spike_layers = {c[0] for c in coords if c[3] == "super_weight"}
    verdicts = [s["verdict"] for s in sws]
    catastrophic = sum(v in ("super_weight", "super_set") for v in verdicts)
    largest = max(groups.values(), key=lambda g: g["ppl_ratio"], default=None)
    profile = [{"layer": i,
                "input_value": rng.uniform(1, 50) * (100 if i in spike_layers else 1), "input_token_pos": 0,
                "input_token_id": 1, "input_channel": rng.randrange(d_mlp), "input_prompt": 0, "input_expert": None,
                "output_value": rng.uniform(1, 20) * (100 if i in spike_layers else 1), "output_token_pos": 0,
                "output_token_id": 1, "output_channel": rng.randrange(hidden), "output_prompt": 0,
                "output_expert": None, "post_norm_value": None, "post_norm_channel": None} for i in range(layers)]
    return {
        "spec": model, "model": model, "repo_id": model, "revision": revision or f"{rng.getrandbits(160):040x}",
        "source": "hub",
        "gguf_file": None, "architecture": architecture or rng.choice(ARCHS), "num_layers": layers,
        "hidden_size": hidden, "intermediate_size": d_mlp, "num_experts": None, "num_parameters": 10 ** 9,
        "dtype": "bfloat16", "device": "cuda:0", "offloaded": False, "layers_path": "model.layers",
        "scanner_version": scanner_version or VERSION, "prompts": ["Apple Inc. is a worldwide tech company."],
        "started": datetime.fromtimestamp(started or time.time(), timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "super_weights": sws, "groups": list(groups.values()), "layer_profiles": profile,
        "spikes": [{"layer": g["layer"], "module": "mlp.down_proj", "expert": None, "row": g["row"],
                    "token_pos": 0, "token_id": 1, "prompt": 0, "value": 900.0, "raw": 900.0, "residual_in": 1.0,
                    "ratio": 300.0, "kind": "super_activation", "round": 1,
                    "candidates": g["members"]} for g in groups.values()],
        "status": "ok", "duration_s": rng.uniform(5, 60),
        "ppl_base": 10.0, "stopword_mass": 0.3, "eval_tokens": 1024, "eval_text_sha256": "0" * 16, "eval_passes": 8,
        "eval_windows": 8, "window_tokens": 128, "eval_ablations": len(sws), "validated": True,
        "finding": "super_weights" if catastrophic else "mild_only" if "mild" in verdicts else "spikes_harmless",
        "largest_ppl_ratio": largest["ppl_ratio"] if largest else None,
        "largest_ppl_ratio_lo": largest["ppl_ratio_lo"] if largest else None,
        "largest_ppl_ratio_hi": largest["ppl_ratio_hi"] if largest else None,
        "detect_s": 1.0, "triage_s": 0.5, "validate_s": 4.0,
        "rounds": 2, "n_candidates": len(sws), "n_super_weights": catastrophic,
        "config": {"detect": {"spike_ratio": 10.0}}, "config_fingerprint": "synthetic000", "warnings": []}
