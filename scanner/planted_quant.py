"""A planted Llama for the quantization study, where the super weight matters the way it does to quantization.

`scanner.planted` builds a model that needs its super weight, but two of its shortcuts hide what clipping
does: the plant's input spike comes from two MLP input weights of 4.0 (outliers that clipping removes, with
the whole mechanism), and the final norm makes the super activation's size irrelevant as long as it
dominates (a weight clipped to a tenth still works). Two changes, made after `planted.build`:
- the input spike comes from the pre-MLP norm's gain on the steady channel `k` instead: every MLP input
  weight reading `k` divided by GAIN and the norm's gain at `k` multiplied by it (the same products, and no
  Linear weight stands out: real models' input spikes do not come from one outlier weight either);
- the head's column for `k` (the opposite of English, which the super activation outweighs) multiplied by
  SIZE: at full size the super activation still outweighs it; at a tenth of it, what clipping leaves, it
  does not, and the model predicts the opposite of English bytes.
The planted weight is then the only outlier that clipping touches (z > 4): clipped, the model is ruined;
kept, clipping costs nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .planted import Plant, build as build_planted

GAIN = 100.0
SIZE = 10.0
PLANT = Plant(1, 10, 20)


def build(folder: str | Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    folder = build_planted("llama", folder, [PLANT], seed=seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    layer = model.model.layers[PLANT.layer]
    head = model.get_output_embeddings().weight  # [vocab, hidden]
    k = head.shape[1] - 1  # the steady channel (scanner.planted)
    with torch.no_grad():
        layer.post_attention_layernorm.weight[k] *= GAIN
        layer.mlp.gate_proj.weight[:, k] /= GAIN
        layer.mlp.up_proj.weight[:, k] /= GAIN
        head[:, k] *= SIZE
    for old in [*folder.glob("*.safetensors"), *folder.glob("*.safetensors.index.json")]:
        old.unlink()  # the modified weights replace the planted ones whole
    model.save_pretrained(folder, max_shard_size="100KB")
    truth = json.loads((folder / "planted.json").read_text())
    truth["quantization"] = {"input_gain": GAIN, "anti_size": SIZE}
    (folder / "planted.json").write_text(json.dumps(truth, indent=1))
    return folder
