"""The protect list: which entries of a model to keep in full precision when quantizing it, from the catalog's
latest validated scan of the model. Versioned JSON (README "Protect list"):

    {"schema": "superweights-protect", "version": 1, "model", "revision", "scan_id", "scanner_version",
     "dtype", "architecture", "gguf_file",
     "weights": [{"tensor", "gguf_tensor", "index", "gguf_index", "layer", "expert", "row", "col", "value",
                  "verdict", "ppl_ratio", "ppl_ratio_lo", "ppl_ratio_hi"}],
     "activations": [{"layer", "tensor", "input_channel", "magnitude", "output_channel", "output_magnitude"}]}

`tensor` is the weight's name in the transformers model (safetensors checkpoints store it so, except MoE
experts that transformers fuses on load), `index` its position there as stored (GPT-2's Conv1D: [col, row];
fused experts: [expert, row, col]); `gguf_tensor`/`gguf_index` the same in llama.cpp's naming and numpy
order. `activations`: the down projections' input channels to hold out of activation quantization, with the
magnitude seen at the spike (|x[col]|), and the residual channel they build (row, |y[row]|).
"""
from __future__ import annotations

import json
import re

SCHEMA, VERSION = "superweights-protect", 1
SCAN = ("SELECT scan_id, model, revision, scanner_version, dtype, architecture, layers_path, gguf_file, num_layers "
        "FROM latest_scans WHERE (model = $1 OR spec = $1) AND status = 'ok' AND validated")
WEIGHTS = ("SELECT layer, module, expert, \"row\", col, value, input, output, verdict, ppl_ratio, ppl_ratio_lo, "
           "ppl_ratio_hi FROM super_weights_all WHERE scan_id = $1 "
           "ORDER BY layer, expert NULLS FIRST, \"row\", col")


def latest_validated(catalog, model: str) -> dict | None:
    """`model`'s latest validated scan in `catalog` (the columns of SCAN), or None."""
    from catalog import query

    scans = query.dicts(catalog, SCAN, [model])
    return scans[0] if scans else None


def catastrophic(catalog, scan_id: str) -> list[dict]:
    """The scan's super_weight and super_set rows (the columns of WEIGHTS)."""
    from catalog import query

    return query.dicts(catalog, WEIGHTS, [scan_id])


def protect_list(catalog, model: str) -> dict:
    """The protect list of `model`'s latest validated scan in `catalog`."""
    from scanner.adapters import adapter_for, gguf_tensor

    from .errors import NotInCatalog

    scan = latest_validated(catalog, model)
    if scan is None:
        raise NotInCatalog(f"{model} has no validated scan in the catalog; scan it first "
                           f"(superweights scan {model} --catalog ...)")
    scan_id, arch, layers_path = scan["scan_id"], scan["architecture"], scan["layers_path"]
    conv1d = adapter_for(arch).conv1d
    weights, activations = [], {}
    for w in catastrophic(catalog, scan_id):
        layer, module, expert, row, col = w["layer"], w["module"], w["expert"], w["row"], w["col"]
        stored = [expert, row, col] if expert is not None else ([col, row] if conv1d else [row, col])
        tensor = f"{layers_path}.{layer}.{module}" + ("" if expert is not None else ".weight")
        weights.append({"tensor": tensor, "gguf_tensor": gguf_tensor(arch, layers_path, layer, module, scan["num_layers"]),
                        "index": stored, "gguf_index": [expert, row, col] if expert is not None else [row, col],
                        "layer": layer, "expert": expert, "row": row, "col": col,
                        **{k: w[k] for k in ("value", "verdict", "ppl_ratio", "ppl_ratio_lo", "ppl_ratio_hi")}})
        key = (layer, module, col)
        if expert is None and key not in activations:  # an expert's input is per token routed: not listed
            activations[key] = {"layer": layer, "tensor": f"{layers_path}.{layer}.{module}", "input_channel": col,
                                "magnitude": None if w["input"] is None else abs(w["input"]), "output_channel": row,
                                "output_magnitude": None if w["output"] is None else abs(w["output"])}
    return {"schema": SCHEMA, "version": VERSION,
            **{k: scan[k] for k in ("model", "revision", "scan_id", "scanner_version", "dtype", "architecture",
                                    "gguf_file")},
            "weights": weights, "activations": list(activations.values())}


def read(text: str) -> dict:
    """A protect list read back (checked: its schema and a version this code understands)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError("not a superweights protect list")
    if data.get("version") != VERSION:
        raise ValueError(f"protect list version {data.get('version')}; this superweights reads version {VERSION}")
    return data


def llama_quantize(data: dict, kind: str = "Q8_0") -> list[str]:
    """llama-quantize's per-tensor overrides for the GGUF tensors holding the list's weights: `--tensor-type
    PATTERN=TYPE` (its patterns are regular expressions searched in the tensor name: dots escaped). llama.cpp
    cannot keep single entries; a tensor at a wider type is what it can keep."""
    from .errors import NotInCatalog

    names = list(dict.fromkeys(w["gguf_tensor"] for w in data["weights"]))
    if None in names:
        raise NotInCatalog(f"{data['model']}: its architecture ({data['architecture']}) has no GGUF tensor names "
                           "here; use --format transformers or json")
    return [f"--tensor-type {re.escape(name)}={kind.lower()}" for name in names]


def transformers_modules(data: dict) -> list[str]:
    """The modules of the transformers model holding the list's weights, for a quantization config's list of
    modules left unquantized (`modules_to_not_convert`, bitsandbytes' `llm_int8_skip_modules`)."""
    return list(dict.fromkeys(w["tensor"].removesuffix(".weight") if w["expert"] is None
                              else w["tensor"].rpartition(".")[0] for w in data["weights"]))


def render(data: dict) -> str:
    lines = [f"{data['model']} @ {data['revision']} (scan {data['scan_id']}, {data['dtype']}): keep "
             f"{len(data['weights'])} weight(s), hold {len(data['activations'])} activation channel(s)", "",
             "| tensor | index | GGUF tensor | value | verdict | ppl ratio zeroed [95%] |", "|---|---|---|---|---|---|"]
    for w in data["weights"]:
        lines.append(f"| {w['tensor']} | {w['index']} | {w['gguf_tensor'] or '-'} | {w['value']:.4g} | {w['verdict']} "
                     f"| {w['ppl_ratio']:.3g} [{w['ppl_ratio_lo']:.3g}, {w['ppl_ratio_hi']:.3g}] |")
    if data["activations"]:
        lines += ["", "| down projection input | channel | magnitude | builds residual channel |", "|---|---|---|---|"]
        lines += [f"| {a['tensor']} | {a['input_channel']} | {a['magnitude']:.4g} | {a['output_channel']} |"
                  for a in data["activations"]]
    return "\n".join(lines)
