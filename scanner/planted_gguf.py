"""A planted Llama (`scanner.planted`) written as a GGUF file, the way llama.cpp's converter writes one:
llama.cpp's tensor names, query and key rows permuted for its rotary layout (transformers undoes that on
load), float32 tensors, and the byte-level vocabulary as a `gpt2` tokenizer. Ground truth for the GGUF
paths (a `.gguf` file given as the model, streamed GGUF layers) that loads in a second, not 30."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .planted import BOS, EOS, PAD, VOCAB


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's order of a query or key projection's rows (its converter's `permute`)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokens() -> tuple[list[str], list[int]]:
    visible = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars, n = [], 0
    for b in range(256):  # GPT-2's byte-to-unicode table, as planted.byte_tokenizer
        chars.append(chr(b) if b in visible else chr(256 + n))
        n += b not in visible
    specials = {BOS: "<bos>", EOS: "<eos>", PAD: "<pad>"}
    # the spare id is the merge of bytes 0 and 1, which text never holds: a BPE needs one merge
    tokens = chars + [specials.get(i, chars[0] + chars[1]) for i in range(256, VOCAB)]
    return tokens, [1] * 256 + [3 if i in specials else 1 for i in range(256, VOCAB)]  # 1: normal, 3: control


def write_gguf(folder: str | Path, path: str | Path) -> Path:
    """The planted Llama in `folder` (safetensors shards) as one GGUF file at `path`."""
    import gguf
    from safetensors.numpy import load_file

    folder, path = Path(folder), Path(path)
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise ValueError(f"write_gguf writes planted Llama models, not {cfg.get('model_type')!r}")
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(shard))
    layers, heads, kv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("planted-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    w.add_vocab_size(VOCAB)
    tokens, types = _tokens()
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{tokens[0]} {tokens[1]}"])  # none that text uses: every byte stays its own token
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_pad_token_id(PAD)
    for name, t in sorted(tensors.items()):
        if name.endswith("q_proj.weight"):
            t = _permute(t, heads)
        elif name.endswith("k_proj.weight"):
            t = _permute(t, kv)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), np.ascontiguousarray(t, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
