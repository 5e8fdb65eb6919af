"""Tiny models with planted super weights: ground truth for every architecture in the table.

A random model from a config knows nothing, so a planted super weight must be one the model
*needs*, as a real one is. The construction, per architecture:
- channel `k` of every token embedding is set to 1 (`steady`), so the normed input of each MLP has a steady
  positive component;
- at the plant's layer, the MLP's input rows for channel `col` read only channel `k`, so the down
  projection's input spikes at `col` on every token (and, for MoE, the router sends every token
  to the planted expert);
- the other entries of column `col` are zeroed (the spike feeds only the planted rows), and
  `W[row, col]` is set so that `W[row, col] * x[col]` is about 1000: the MLP's output spikes at
  `row`, the residual stream carries it to the final norm, where it dominates;
- the LM head's column `row` holds the byte unigram log-probabilities of English text, scaled to
  that final-norm value, so the model predicts bytes well *only* through the super activation.
  With several planted rows, each column gets the log-probabilities plus its share of a noise
  vector that cancels only when all rows are present: every row is needed.
Gemma-2/3 and OLMo-2 normalise the MLP output before the residual add; there the plant also
sets the post-norm gain of `row` to 100, as in the real Gemma models.
`planted=False` builds the same model (same embedding, LM head, seed) without the plant.
The ground truth is written to `planted.json` beside the weights.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .adapters import Unit, adapter_for, get, layers, matrix
from .measure.profile import tokens_first

VOCAB = 260  # 256 bytes + <bos> <eos> <pad> + 1 spare
BOS, EOS, PAD = 256, 257, 258
HIDDEN, D_MLP, LAYERS = 64, 128, 4

_COMMON = dict(hidden_size=HIDDEN, intermediate_size=D_MLP, num_hidden_layers=LAYERS, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
CONFIGS: dict[str, dict] = {
    "llama": _COMMON, "mistral": _COMMON, "qwen2": _COMMON, "qwen3": _COMMON, "gemma": _COMMON,
    "olmo": _COMMON, "olmo2": _COMMON, "phi3": _COMMON,
    "gemma2": {**_COMMON, "query_pre_attn_scalar": 16},
    "gemma3_text": {**_COMMON, "query_pre_attn_scalar": 16},
    "mixtral": {**_COMMON, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen3_moe": {**_COMMON, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": D_MLP},
    "qwen2_moe": {**_COMMON, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": D_MLP,
                  "shared_expert_intermediate_size": D_MLP},
    "gpt2": dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_inner=D_MLP, n_positions=2048),
    "gpt_neox": dict(hidden_size=HIDDEN, intermediate_size=D_MLP, num_hidden_layers=LAYERS,
                     num_attention_heads=4, max_position_embeddings=2048),
    "opt": dict(hidden_size=HIDDEN, ffn_dim=D_MLP, num_hidden_layers=LAYERS, num_attention_heads=4,
                word_embed_proj_dim=HIDDEN, max_position_embeddings=2048),
    "falcon": dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4),
}
BUILD = 3  # the construction's version: cached `planted:ARCH` models of another are built again (3: builds of
# version 2 made by threads at once may have interleaved their random draws; they are not reused)
TARGET = 1000.0  # size of the planted super activation, before any post-norm
GAIN = 100.0  # post-MLP norm gain of the planted row, where the architecture has that norm
ANTI = 1.0  # how strongly the model predicts the opposite of English bytes once its super activation is gone


@dataclass
class Plant:
    layer: int
    row: int
    col: int
    expert: int | None = None  # for MoE architectures: which expert holds the weight
    share: float = 1.0  # fraction of the super activation this weight makes (partners: 0.5 each)
    value: float = 0.0  # W[row, col] as planted (set by build)


def byte_tokenizer():
    """A byte-level tokenizer (token id = byte value), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    visible = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, n = {}, 0
    for b in range(256):  # GPT-2's byte-to-unicode table
        if b in visible:
            chars[b] = chr(b)
        else:
            chars[b], n = chr(256 + n), n + 1
    vocab = {chars[b]: b for b in range(256)} | {"<bos>": BOS, "<eos>": EOS, "<pad>": PAD}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _unigram_logp(text: str) -> torch.Tensor:
    counts = torch.ones(VOCAB)
    counts[256:] = 1e-3
    for b in text.encode():
        counts[b] += 1
    return (counts / counts.sum()).log()  # [vocab]


def _boost_input(model, adapter, layer: int, col: int, expert: int | None, k: int) -> None:
    """Make the MLP input channel `col` of `layer` read only residual channel `k`, strongly."""
    a = 4.0
    lay = layers(model, adapter)[layer]
    for path, layout in adapter.up:
        mod = get(lay, path)
        if layout == "experts":
            w = mod.gate_up_proj[expert]  # [2*d_mlp, hidden]
            rows = (col, col + w.shape[0] // 2)
        else:
            w = mod.weight if layout != "conv1d" else mod.weight.T  # [d_mlp(,x2), hidden]
            rows = (col, col + w.shape[0] // 2) if layout == "fused" else (col,)
            if getattr(mod, "bias", None) is not None:
                mod.bias[list(rows)] = 0
        for r in rows:
            w[r] = 0
            w[r, k] = a
    if expert is not None:  # route every token to the planted expert
        router = get(lay, adapter.experts.rsplit(".", 1)[0] + ".gate")
        router.weight[expert] = 0
        router.weight[expert, k] = 10.0


MOE = {"mixtral", "qwen2_moe", "qwen3_moe"}


def default_plants(model_type: str) -> list[Plant]:
    """The plant of `planted:ARCH` models: layer 1, W[10, 20] (expert 1 for MoE)."""
    return [Plant(1, 10, 20, 1 if model_type in MOE else None)]


def build(model_type: str, folder: str | Path, plants: list[Plant], planted: bool = True, seed: int = 0,
          max_shard_size: str = "100KB", config: dict | None = None, dtype: torch.dtype | None = None,
          calib_chars: int = 2000, predicts: str | None = None, steady: float = 1.0) -> Path:
    """Write a tiny sharded safetensors model (and tokenizer) with the plants to `folder`.

    `config` replaces the tiny sizes (benchmarks build billion-parameter models this way), `dtype` is
    the stored dtype, `calib_chars` the text the plant is measured on, `predicts` the text whose bytes the
    head predicts through the plant (default the prose: zeroing the plant then costs much on prose and lists,
    little on code and dialogue; the whole evaluation set makes it catastrophic on every kind, as real super
    weights are). `steady` is channel k's value in every embedding: deep, wide random stacks add noise of
    that order to the residual stream, and only a larger one keeps k steady there (the bench's 1.34 B model)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .texts import default_eval_text

    folder = Path(folder)
    adapter = adapter_for(model_type)
    cfg = AutoConfig.for_model(model_type, **(config or CONFIGS[model_type]), vocab_size=VOCAB,
                               tie_word_embeddings=False,
                               bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    k = model.get_input_embeddings().weight.shape[1] - 1  # the steady "bias" channel; plants use other rows
    assert all(p.row != k for p in plants)
    tok = byte_tokenizer()
    text = default_eval_text()
    ids = tok(text[:calib_chars], return_tensors="pt").input_ids
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.get_input_embeddings().weight[:, k] = steady
        stack = layers(model, adapter)
        for p in plants:
            _boost_input(model, adapter, p.layer, p.col, p.expert, k)
        _set_plants(model, adapter, stack, plants, ids, k)
        unigram = text if predicts is None else predicts
        rows = _set_head(model, adapter, stack, plants, ids, k, unigram)
        head, logp = model.get_output_embeddings().weight, _unigram_logp(unigram)
        if not planted:  # undo everything but the embedding channel; the head predicts the unigram from k
            emb, head_w = model.get_input_embeddings().weight, model.get_output_embeddings().weight
            for name, param in model.named_parameters():
                if param is not emb and param is not head_w:
                    param.copy_(saved[name])
            head[:, rows] = 0
            head[:, k] = logp / float(_final(model, ids)[:, k].mean())
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tok.save_pretrained(folder)
    truth = {"model_type": model_type, "planted": planted,
             "plants": [{**asdict(p), "module": adapter.experts + ".down_proj" if p.expert is not None
                         else adapter.down} for p in plants]}
    (folder / "planted.json").write_text(json.dumps(truth, indent=1))
    return folder


def _set_plants(model, adapter, stack, plants: list[Plant], ids, k: int) -> None:
    """Each planted weight set to make its share of TARGET of the spike, from its boosted input as measured."""
    xs = {}
    hooks = []
    for p in plants:
        if p.expert is None:
            unit_mod = get(stack[p.layer], adapter.down)

            def grab(mod, inp, out, p=p):
                xs[id(p)] = float(tokens_first(inp[0])[:, p.col].mean())
            hooks.append(unit_mod.register_forward_hook(grab))
    model(input_ids=ids)
    for h in hooks:
        h.remove()
    for p in plants:
        x = xs.get(id(p))
        if x is None:  # experts: compute the planted expert's input directly from its weights
            x = _expert_input(model, adapter, p, ids)
        w = matrix(adapter, stack[p.layer], _unit(adapter, p))
        # the spiking input feeds only the planted rows, so the tiny model has no side spikes
        others = [r for r in range(w.shape[0]) if r not in {q.row for q in plants if q.col == p.col} | {k}]
        w[others, p.col] = 0
        w[p.row, p.col] = p.share * TARGET / x
        if adapter.post_norm:
            # A norm after the MLP rescales any lone channel to the same size, so a weight only
            # matters if something else sets the scale: a 10% side output on channel k does.
            w[k, p.col] = 0.1 * TARGET / x
            get(stack[p.layer], adapter.post_norm).weight[p.row] = GAIN - adapter.norm_offset


def _set_head(model, adapter, stack, plants: list[Plant], ids, k: int, text: str) -> list[int]:
    """The head reads the planted rows (and their opposite from channel k); returns the planted rows."""
    # the LM head reads the unigram distribution from the planted rows; the steady channel k carries its
    # opposite, scaled to what k is once the super activation is gone: the planted model predicts bytes
    # well, and with its super weight zeroed predicts them badly (the catastrophe a real one causes)
    final = _final(model, ids)  # [tokens, hidden] after the final norm
    rows = sorted({p.row for p in plants})
    logp = _unigram_logp(text)
    noise = [torch.randn(VOCAB) * 10 for _ in rows[:-1]]  # each row needed: alone, it predicts noise
    noise.append(-sum(noise) if noise else torch.zeros(VOCAB))
    head = model.get_output_embeddings().weight  # [vocab, hidden]
    for r, n in zip(rows, noise):
        head[:, r] = (logp + n) / (len(rows) * float(final[:, r].mean()))
    for p in plants:  # as zeroed
        w = matrix(adapter, stack[p.layer], _unit(adapter, p))
        saved_w, w[p.row, p.col] = float(w[p.row, p.col]), 0.0
        p.value = saved_w
    head[:, k] = -ANTI * (logp - logp.mean()) / float(_final(model, ids)[:, k].mean())
    for p in plants:
        matrix(adapter, stack[p.layer], _unit(adapter, p))[p.row, p.col] = p.value
    return rows


def _unit(adapter, p: Plant) -> Unit:
    return Unit(adapter.experts + ".down_proj", p.expert) if p.expert is not None else Unit(adapter.down)


def _final(model, ids) -> torch.Tensor:
    """The last hidden states, after the final norm: [tokens, hidden]."""
    return model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]


def _expert_input(model, adapter, p: Plant, ids) -> float:
    """Mean x[col] of the planted expert, captured from its fused gate_up projection."""
    lay = layers(model, adapter)[p.layer]
    experts = get(lay, adapter.experts)
    seen = {}

    def pre(mod, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach()

    h = experts.register_forward_pre_hook(pre, with_kwargs=True)
    model(input_ids=ids)
    h.remove()
    hs = tokens_first(seen["h"])  # [tokens, hidden]
    gate, up = torch.nn.functional.linear(hs, experts.gate_up_proj[p.expert]).chunk(2, dim=-1)
    return float((experts.act_fn(gate) * up)[:, p.col].mean())
