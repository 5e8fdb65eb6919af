"""The faster GGUF reader and metadata parse give exactly what gguf's and transformers' own give."""
from pathlib import Path

import gguf
import numpy as np
import pytest
import transformers.modeling_gguf_pytorch_utils as tg

from scanner.load import gguf_once
from scanner.load.sources import resolve

from .helpers import planted


def _files(tmp_path) -> list[Path]:
    from tests.fixtures.planted_gguf import write_gguf

    files = [write_gguf(planted("llama", tmp_path / "m"), tmp_path / "planted-llama.gguf")]
    smol = resolve("pkg:smollm2-135m")  # a real vocabulary of 49,152 strings, merges, scores
    return files + [smol.path / smol.gguf_file]


def test_fast_reader_equals_gguf_reader(tmp_path):
    for file in _files(tmp_path):
        want, got = gguf.GGUFReader(file), gguf_once.FastReader(file)
        assert list(got.fields) == list(want.fields)
        for name, w in want.fields.items():
            g = got.fields[name]
            assert (g.offset, g.data, g.types, len(g.parts)) == (w.offset, w.data, w.types, len(w.parts)), name
            for gp, wp in zip(g.parts, w.parts):
                assert gp.dtype == wp.dtype and gp.shape == wp.shape and np.array_equal(gp, wp), name
        assert got.data_offset == want.data_offset and len(got.tensors) == len(want.tensors)
        for g, w in zip(got.tensors, want.tensors):
            assert (g.name, g.tensor_type, g.data_offset, g.n_bytes) == (w.name, w.tensor_type, w.data_offset, w.n_bytes)
            assert g.data.dtype == w.data.dtype and np.array_equal(g.data, w.data)


def test_parse_equals_transformers_and_originals_come_back(tmp_path):
    originals = (gguf.GGUFReader, tg.load_gguf_checkpoint, tg._gguf_parse_value)
    for file in _files(tmp_path):
        want = tg.load_gguf_checkpoint(str(file))
        reader = gguf.GGUFReader(file)
        for field in reader.fields.values():
            for i in field.data:
                assert gguf_once.parse_value(field.parts[i], field.types) == \
                    tg._gguf_parse_value(field.parts[i], field.types), field.name
        with gguf_once.parsed_once():
            first = tg.load_gguf_checkpoint(str(file))
            first["config"]["changed_by_a_caller"] = True  # a caller's change does not reach the next caller
            assert tg.load_gguf_checkpoint(str(file)) == want
            assert gguf.GGUFReader(file) is gguf.GGUFReader(file)
        first["config"].pop("changed_by_a_caller")
        assert first == want
    assert (gguf.GGUFReader, tg.load_gguf_checkpoint, tg._gguf_parse_value) == originals


def test_a_changed_file_is_parsed_again(tmp_path):
    file = _files(tmp_path)[0]
    with gguf_once.parsed_once():
        before = gguf.GGUFReader(file)
        data = file.read_bytes()
        file.write_bytes(data + b"\0" * 32)  # same metadata, another size: another key
        assert gguf.GGUFReader(file) is not before


@pytest.mark.parametrize("bad", [b"", b"GGUF", b"NOPE" + b"\0" * 64])
def test_bad_files_raise_as_before(tmp_path, bad):
    file = tmp_path / "bad.gguf"
    file.write_bytes(bad)
    with pytest.raises(Exception) as want:
        gguf.GGUFReader(file)
    with pytest.raises(type(want.value)):
        gguf_once.FastReader(file)
