"""User mistakes and bad files found by trying (issue: Hardening): each is one line on stderr and a non-zero
exit, never a traceback, never a scan of something else, never unbounded work."""
import json
import struct
import time

import pytest

from tests.fixtures.planted_gguf import write_gguf
from tests.cluster.test_cli import assert_clean_error, run_cli

from .helpers import planted


def _rewrite_header(shard, edit) -> None:
    """Change a safetensors file's JSON header (its data stays as it is)."""
    data = shard.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    shard.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def _largest_shard(folder):
    return max(folder.glob("*.safetensors"), key=lambda p: p.stat().st_size)


def _overlap(header):
    """Two tensors of one size: the second made to read the first's bytes, the file still the same size."""
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    sized = {}
    for k in names:
        sized.setdefault(tuple(header[k]["shape"]), []).append(k)
    a, b = next(v for v in sized.values() if len(v) >= 2)[:2]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])


def _dtype(header):
    k = next(k for k in header if k != "__metadata__")
    header[k]["dtype"] = "F16"


def _shape(header):
    k = next(k for k in header if k != "__metadata__" and len(header[k]["shape"]) == 2)
    header[k]["shape"] = [header[k]["shape"][1], header[k]["shape"][0] * 2]


@pytest.mark.parametrize("lie, needle", [(_overlap, "overlaps"), (_dtype, "need"), (_shape, "need")])
def test_a_safetensors_header_that_lies_is_refused_in_memory_and_streamed(tmp_path, lie, needle):
    folder = planted("llama", tmp_path / "m")
    shard = _largest_shard(folder)
    _rewrite_header(shard, lie)
    for stream in ([], ["--stream"]):
        assert_clean_error(run_cli("scan", "-q", str(folder), *stream), shard.name, needle)


@pytest.mark.parametrize("config, needle", [("[]", "model_type"), ("null", "model_type"),
                                            ('{"model_type": [1]}', "model_type"), (None, "cannot read")])
def test_config_json_that_is_not_an_object(tmp_path, config, needle):
    folder = planted("llama", tmp_path / "m")
    (folder / "config.json").unlink()
    if config is None:
        (folder / "config.json").mkdir()
    else:
        (folder / "config.json").write_text(config)
    assert_clean_error(run_cli("scan", "-q", str(folder)), needle)


def test_a_truncated_gguf_file(tmp_path):
    whole = write_gguf(planted("llama", tmp_path / "m"), tmp_path / "whole.gguf")
    data = whole.read_bytes()
    for n, needle in ((100, "corrupt or truncated GGUF header"), (len(data) // 2, "is truncated"),
                      (len(data) - 1, "is truncated")):
        cut = tmp_path / f"cut-{n}.gguf"
        cut.write_bytes(data[:n])
        assert_clean_error(run_cli("scan", "-q", str(cut)), needle)


@pytest.mark.parametrize("args, needle", [
    (["--max-memory", "1e999"], "not a size"), (["--max-memory", "..."], "cannot read memory size"),
    (["--max-memory", "1.2.3GB"], "cannot read memory size"), (["--device", "foo"], "--device"),
    (["--device", "cuda:abc"], "--device"), (["--device", "meta"], "--device"), (["--spike-ratio", "nan"], "finite"),
    (["--min-ppl-ratio", "nan"], "finite"), (["--eval-tokens", "1"], "--eval-tokens")])
def test_bad_option_values_are_one_line(args, needle):
    assert_clean_error(run_cli("scan", "-q", "planted:llama", *args), needle)


def test_an_empty_evaluation_text(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    assert_clean_error(run_cli("scan", "-q", "planted:llama", "--eval-text", str(tmp_path / "empty.txt")),
                       "evaluation text is empty")


def test_a_prompt_longer_than_the_model_is_refused_at_once(tmp_path):
    t0 = time.time()
    proc = run_cli("scan", "-q", str(planted("llama", tmp_path / "m")), "--prompt", "x" * 100_000)
    assert_clean_error(proc, "100000 tokens", "at most 2048")
    assert time.time() - t0 < 60


def test_evaluation_windows_longer_than_the_model_are_cut_and_said(tmp_path):
    (tmp_path / "long.txt").write_text("ab " * 4000)  # 12,000 byte tokens; the planted model takes 2,048
    proc = run_cli("scan", "-q", "--json", str(planted("llama", tmp_path / "m")), "--window-tokens", "4096",
                   "--eval-tokens", "12000", "--eval-text", str(tmp_path / "long.txt"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["window_tokens"] == 2048 and result["eval_windows"] <= 5
    assert any("windows cut to 2048 tokens" in w for w in result["warnings"])
