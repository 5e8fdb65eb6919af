"""Ground truth for families: a planted model fine-tuned for a few optimizer steps on text, so that every
value drifts while the super weight stays (or, built from a plant at another column, has moved). The copy's
model card names its base (`base_model`), as a fine-tune on the hub does."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

STEPS, LR = 5, 2e-5


def finetune(base: str | Path, out: str | Path, base_name: str | None = None, steps: int = STEPS, lr: float = LR,
             seed: int = 0, chars: int = 4000) -> Path:
    """`base` (a planted folder) trained `steps` AdamW steps on a different stretch of text than the
    evaluation's first windows, written to `out` with the base's tokenizer and truth, and a model card whose
    `base_model` is `base_name` (default: the base's path)."""
    from transformers import AutoModelForCausalLM

    from .planted import byte_tokenizer
    from .texts import default_eval_text

    base, out = Path(base), Path(out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.train()
    text = default_eval_text()
    ids = byte_tokenizer()(text[-chars:], return_tensors="pt").input_ids[:, :512]  # [1, tokens]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(out, max_shard_size="100KB")
    for f in base.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "planted.json"):
            shutil.copy(f, out / f.name)
    truth = json.loads((base / "planted.json").read_text())
    truth["finetuned"] = {"steps": steps, "lr": lr, "from": str(base)}
    (out / "planted.json").write_text(json.dumps(truth, indent=1))
    (out / "README.md").write_text(f"---\nbase_model: {base_name or str(base)}\nbase_model_relation: finetune\n---\n"
                                   f"A planted model fine-tuned {steps} steps (superweights test fixture).\n")
    return out
