"""GGUF without waste: parse a file's metadata once per process, and the tensor-name map once per
architecture.

transformers reads a GGUF file three times to load one model (config, tokenizer, weights), each time
building a `gguf.GGUFReader` that walks every metadata field in Python (the tokenizer arrays: 5 s each
for SmolLM2), and rebuilds gguf's tensor-name map once per tensor (~17 ms each, 272 tensors). Neither
has a caching hook, so while we load, the two constructors are swapped for cached versions: a reader
is a read-only memory map, a name map a pure function of (architecture, layer count). The readers of
the last few files stay cached, so a warm worker scanning the same file again parses nothing.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_readers: OrderedDict = OrderedDict()  # (path, size, mtime) -> GGUFReader
KEEP = 2


def _key(path) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


@contextmanager
def parsed_once() -> Iterator[None]:
    import gguf

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map

    class CachedReader:  # called as GGUFReader(path) inside transformers
        def __new__(cls, path, *args, **kwargs):
            if args or kwargs:
                return original_reader(path, *args, **kwargs)
            key = _key(path)
            with _lock:
                if key not in _readers:
                    _readers[key] = original_reader(path)
                    while len(_readers) > KEEP:
                        _readers.popitem(last=False)
                _readers.move_to_end(key)
                return _readers[key]

    cached_map = functools.lru_cache(maxsize=32)(original_map)
    with _lock:
        gguf.GGUFReader, gguf.get_tensor_name_map = CachedReader, cached_map
    try:
        yield
    finally:
        with _lock:
            gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map
