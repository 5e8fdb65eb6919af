"""A real quantization family from one GGUF file: the model exported to safetensors (transformers' GGUF
dequantization, saved in bfloat16), and the file re-quantized to another GGUF type with the gguf library
(every quantized tensor dequantized and quantized again; metadata copied, `general.base_model.*` added).
Used by the family tests and `bench/family_bench.py`; nothing here runs remote code."""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from .card import HUB_URL


def requantize(src: str | Path, dst: str | Path, qtype: str = "Q4_0", base_model: str | None = None,
               progress: bool = False, tensor_types: list[tuple[str, str]] = (), matrices: bool = False) -> Path:
    """`src` with its quantized tensors re-quantized to `qtype` (F32/F16 tensors copied as they are), written
    to `dst` (through a temporary file beside it). `base_model`: written as general.base_model.0 (a hub id
    becomes its repo_url). `tensor_types`: (pattern, type) overrides as llama-quantize's `--tensor-type
    PATTERN=TYPE` reads them (the first pattern found in the tensor's name wins); `matrices`: float matrices
    quantized to `qtype` too (as llama-quantize does from a float file)."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer announces every file at INFO
    target = Q[qtype]
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, arch=arch)
    for field in reader.fields.values():
        skip = field.name in ("general.architecture", "general.file_type")
        if skip or field.name.startswith(("GGUF.", "general.base_model.")):
            continue
        vtype = field.types[0]
        writer.add_key_value(field.name, field.contents(), vtype,
                             sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    if base_model:
        writer.add_uint32("general.base_model.count", 1)
        org, _, name = base_model.rpartition("/")
        writer.add_string("general.base_model.0.name", name)
        if org:
            writer.add_string("general.base_model.0.organization", org)
            url = f"https://huggingface.co/{base_model}"
            if HUB_URL.match(url):
                writer.add_string("general.base_model.0.repo_url", url)
    rules = [(re.compile(pattern.lower()), Q[kind.upper()]) for pattern, kind in tensor_types]
    for t in tqdm(reader.tensors, desc="re-quantizing", unit="tensor", disable=not progress, leave=False):
        to = next((kind for pattern, kind in rules if pattern.search(t.name.lower())), None)
        plain = t.tensor_type in (Q.F32, Q.F16, Q.BF16)
        if len(t.shape) < 2 or (to is None and plain and not matrices):
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type)  # float32, numpy order [rows, cols]
        writer.add_tensor(t.name, gguf.quants.quantize(values, to or target), raw_dtype=to or target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst


def export_safetensors(gguf_file: str | Path, dst: str | Path, base_model: str | None = None) -> Path:
    """The GGUF model as transformers dequantizes it, saved as safetensors in bfloat16 with its tokenizer;
    a model card naming `base_model` when given."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file, dst = Path(gguf_file), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(  # dequantized: transformers keeps GGUF weights packed otherwise
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=gguf_file.name, dequantize=True))
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).save_pretrained(tmp)
    if base_model:
        (tmp / "README.md").write_text(f"---\nbase_model: {base_model}\nbase_model_relation: quantized\n---\n"
                                       f"{gguf_file.name} dequantized to bfloat16.\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)
    return dst
