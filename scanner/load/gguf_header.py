"""A GGUF file's header, walked without loading anything: its architecture, and whether the file holds all
the tensor data the header describes (a truncated download does not). Nothing here imports torch; the
walk reads the header through a memory map, so a large vocabulary costs milliseconds."""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

from ..errors import CorruptCheckpoint, NotAModel

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Walker:
    def __init__(self, buf):
        self.buf, self.at = buf, 0

    def take(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.at)
        self.at += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self) -> bytes:
        n = self.take("<Q")
        if self.at + n > len(self.buf):
            raise struct.error("string past the end")
        s = self.buf[self.at: self.at + n]
        self.at += n
        return s

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.string()
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _ARRAY:
            inner, n = self.take("<I"), self.take("<Q")
            if inner in _SCALARS:  # skipped whole: nothing here needs array values
                self.at += n * struct.calcsize(_SCALARS[inner])
                if self.at > len(self.buf):
                    raise struct.error("array past the end")
            else:
                for _ in range(n):
                    self.value(inner)
            return None
        raise ValueError(f"unknown value type {vtype}")


def _kvs(w: _Walker, n_kv: int):
    """The header's (key, value) pairs, the walker left after them (at the tensor infos)."""
    for _ in range(n_kv):
        key, vtype = w.string(), w.take("<I")
        yield key, w.value(vtype)


def read(path: Path) -> tuple[str, int]:
    """(general.architecture, bytes the file must have for all its tensor data)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise NotAModel(f"{path} is not a GGUF file (bad magic)")
            w = _Walker(buf)
            w.at = 4
            _version, n_tensors, n_kv = w.take("<IQQ")
            arch, alignment = None, 32
            for key, value in _kvs(w, n_kv):
                if key == b"general.architecture":
                    arch = value.decode()
                elif key == b"general.alignment":
                    alignment = int(value)
            end = 0
            for _ in range(n_tensors):
                w.string()
                dims = [w.take("<Q") for _ in range(w.take("<I"))]
                qtype, offset = w.take("<I"), w.take("<Q")
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
                elements = 1
                for d in dims:
                    elements *= d
                end = max(end, offset + elements // block * size)
            start = (w.at + alignment - 1) // alignment * alignment
    except (struct.error, ValueError, KeyError, UnicodeDecodeError, OverflowError, MemoryError):
        raise CorruptCheckpoint(f"{path} has a corrupt or truncated GGUF header") from None
    if arch is None:
        raise NotAModel(f"{path} has no general.architecture in its GGUF header")
    return arch, start + end if n_tensors else w.at  # no tensors: no aligned data section either


def gguf_architecture(path: Path) -> str:
    """The file's `general.architecture`, once its header and tensor data are known to be whole."""
    arch, need = read(path)
    have = path.stat().st_size
    if need > have:
        raise CorruptCheckpoint(f"{path} is truncated: its tensors need {need} bytes, the file has {have}")
    return arch


def strings(path: Path, prefix: str) -> dict[str, str]:
    """The header's text and number values whose keys start with `prefix` (e.g. "general.base_model.")."""
    out = {}
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            w = _Walker(buf)
            w.at = 8
            _n_tensors, n_kv = w.take("<QQ")
            want = prefix.encode()
            for key, value in _kvs(w, n_kv):
                if key.startswith(want) and value is not None:
                    out[key.decode()] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    except (struct.error, ValueError, UnicodeDecodeError, OverflowError, MemoryError):
        raise CorruptCheckpoint(f"{path} has a corrupt or truncated GGUF header") from None
    return out
