"""A planted Llama in the regime real models live in: several plants of known kind and size in one model,
near the thresholds, for tests that move a threshold across a plant's value and see exactly that plant's
verdict change (`scanner.planted` builds one catastrophic plant per architecture; this builds a scene).

Layers 8, hidden 64; channel 63 of every token embedding is 1 (the steady channel `k`), so quiet layers
are quiet and the median layer is one of them. The plants, by `planted.json` name:
- `catastrophic`: layer 1, W[10, 20], a spike of about 1000 (as `planted`): zeroed, the model predicts the
  opposite of English bytes;
- `mild`: layer 0, W[30, 40], a spike about 30x the median layer, whose row carries `MILD_SHARE` of the
  head's knowledge of English: zeroed, perplexity rises a few-fold, well below catastrophic (before the
  catastrophic plant: its activation, once there, shrinks every later MLP's normalised input);
- `side`: layer 1, W[11, 20] and W[11, 21]: the catastrophic plant's column also feeds row 11, a spike
  about 15x the median of which W[11, 20] makes 0.3 and W[11, 21] 0.7; the head ignores row 11;
- `silent`: layer 4, W[5, 99] = 50, the largest weight of the model, whose input channel never fires: no
  spike, never a candidate, harmless when zeroed;
- `first_token`: layer 2, W[35, 70]: its input channel reads an embedding channel only the BOS token has
  (this model's tokenizer puts BOS first, as most real ones do), so row 35 spikes on the first token and
  nowhere else, as real super activations do; the head ignores row 35.
(A pair that is catastrophic only together is `planted`'s "pair" kind: its two weights make one massive
activation, which here would compete with the catastrophic plant's in the final norm.)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapters import Unit, adapter_for, get, layers, matrix
from .planted import BOS, EOS, PAD, TARGET, VOCAB, _boost_input, _final, _unigram_logp, byte_tokenizer
from .profile import tokens_first

CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
K = 63
FIRST = 62  # the embedding channel only the BOS token has
MILD_SHARE = 0.85  # of the head's unigram logits that row 30 carries: zeroing it costs about x4.5
PLANTS = {"catastrophic": [(1, 10, 20)], "mild": [(0, 30, 40)], "side": [(1, 11, 20), (1, 11, 21)],
          "silent": [(4, 5, 99)], "first_token": [(2, 35, 70)]}


def _inputs(model, layer: int, ids) -> torch.Tensor:
    """The down projection's input at `layer`, [tokens, d_mlp]."""
    got = {}

    def keep(_m, i, _o):
        got["x"] = tokens_first(i[0]).detach()
    h = get(layers(model, adapter_for("llama"))[layer], "mlp.down_proj").register_forward_hook(keep)
    model(input_ids=ids)
    h.remove()
    return got["x"]


def _quiet_median(model, ids) -> float:
    """The median over layers of the largest |MLP output|: the yardstick detection measures spikes by."""
    outs = []
    hooks = [get(layer, "mlp.down_proj").register_forward_hook(lambda m, i, o: outs.append(float(o.abs().max())))
             for layer in layers(model, adapter_for("llama"))]
    model(input_ids=ids)
    for h in hooks:
        h.remove()
    return sorted(outs)[len(outs) // 2]


def build(folder: str | Path, seed: int = 0, calib_chars: int = 2000, mild_share: float = MILD_SHARE) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    from .texts import default_eval_text

    folder = Path(folder)
    adapter = adapter_for("llama")
    cfg = AutoConfig.for_model("llama", **CONFIG, vocab_size=VOCAB, tie_word_embeddings=False,
                               bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    tok = byte_tokenizer()
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                                         special_tokens=[("<bos>", BOS)])
    text = default_eval_text()
    ids = tok(text[:calib_chars], return_tensors="pt").input_ids
    stack = layers(model, adapter)

    def w(layer):
        return matrix(adapter, stack[layer], Unit(adapter.down))  # [hidden, d_mlp]

    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, K] = 1.0
        emb[:, FIRST] = 0
        emb[BOS, FIRST] = 1.0
        median = _quiet_median(model, ids)
        for layer, col, reads in ((0, 40, K), (1, 20, K), (1, 21, K), (2, 70, FIRST)):
            _boost_input(model, adapter, layer, col, None, reads)
        # layer by layer: each plant's input is measured with the earlier plants in place (a massive
        # activation, once there, shrinks every later MLP's normalised input)
        for layer, row, col, size, alone in ((0, 30, 40, 30 * median, True), (1, 10, 20, TARGET, True),
                                             (1, 11, 20, 0.3 * 15 * median, False),
                                             (1, 11, 21, 0.7 * 15 * median, True), (2, 35, 70, 60 * median, True)):
            xs = _inputs(model, layer, ids)[:, col]
            x = float(xs[0] if row == 35 else xs.mean())  # the first-token plant: its one token
            if alone:  # the column feeds its rows only (the side plant shares the catastrophic one's)
                w(layer)[:, col] = 0
            w(layer)[row, col] = size / x
        silent = stack[4].mlp
        silent.gate_proj.weight[99] = 0
        silent.up_proj.weight[99] = 0  # its input is silu(0) * 0 = 0 on every token
        w(4)[5, 99] = 50.0
        # the head: row 10 carries (1 - MILD_SHARE) of the unigram logits, row 30 MILD_SHARE, the steady
        # channel the opposite, scaled to what it is once the catastrophic activation is gone
        final = _final(model, ids)
        centred = _unigram_logp(text) - _unigram_logp(text).mean()
        head = model.get_output_embeddings().weight  # [vocab, hidden]
        head[:, 10] = (1 - mild_share) * centred / float(final[:, 10].mean())
        head[:, 30] = mild_share * centred / float(final[:, 30].mean())
        head[:, [11, 35]] = 0
        kept = float(w(1)[10, 20])
        w(1)[10, 20] = 0
        head[:, K] = -centred / float(_final(model, ids)[:, K].mean())
        w(1)[10, 20] = kept
    model.save_pretrained(folder, max_shard_size="100KB")
    tok.save_pretrained(folder)
    truth = {"model_type": "llama", "planted": True, "scene": {
        name: [{"layer": layer, "module": adapter.down, "row": row, "col": col, "expert": None}
               for layer, row, col in coords] for name, coords in PLANTS.items()}}
    (folder / "planted.json").write_text(json.dumps(truth, indent=1))
    return folder
