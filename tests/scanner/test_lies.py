"""The loaders refuse what they cannot read (issue: a catalog that survives its own log, and a loader that
refuses what it cannot read): weights missing from the checkpoint (transformers would initialise them at
random), a float tensor relabelled as integers, a config with more layers than the weights, and a fuzz of
header lies over every field of a safetensors header (shape, dtype, offsets, names), in memory and streamed:
each a one-line error naming what is wrong, never a traceback, never a scan of invented weights."""
import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from scanner.config import ScanConfig
from scanner.errors import ScanError
from scanner.scan import scan
from tests.cluster.test_cli import assert_clean_error, run_cli

from .helpers import planted
from .test_bad_input import _rewrite_header

CFG = ScanConfig(run_validation=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return planted("llama", tmp_path_factory.mktemp("lies") / "m")


def _copy(model, tmp_path):
    return shutil.copytree(model, tmp_path / "m")


def _shard_of(folder, name):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder / index["weight_map"][name]


def _refused(folder, needle: str, stream: bool) -> None:
    with pytest.raises(ScanError) as err:
        scan(str(folder), CFG.replace(load={"device": "cpu", "stream": stream}))
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)


def test_weights_missing_from_the_checkpoint_are_named_not_made_up(model, tmp_path):
    """The down projections removed from their shards and from the index: transformers would give them
    random values and the scan would report on those."""
    folder = _copy(model, tmp_path)
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    gone = sorted(k for k in index["weight_map"] if k.endswith("mlp.down_proj.weight"))
    for shard in {folder / index["weight_map"][k] for k in gone}:
        tensors = load_file(shard)
        save_file({k: v for k, v in tensors.items() if k not in gone}, shard, metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k not in gone}
    index_file.write_text(json.dumps(index))
    _refused(folder, "lacks 4 weight(s)", stream=False)
    _refused(folder, "differ from the model", stream=True)
    assert_clean_error(run_cli("scan", "-q", str(folder)), "model.layers.0.mlp.down_proj.weight", "random")


def test_a_config_with_more_layers_than_weights(model, tmp_path):
    folder = _copy(model, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 400
    (folder / "config.json").write_text(json.dumps(cfg))
    _refused(folder, "its config asks for", stream=False)
    _refused(folder, "differ from the model", stream=True)


def test_a_float_tensor_relabelled_as_integers(model, tmp_path):
    """Same bytes, dtype I32: read as integers it would be a 'super weight' of about 1e9."""
    folder = _copy(model, tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    _rewrite_header(_shard_of(folder, name), lambda h: h[name].update(dtype="I32"))
    for stream in (False, True):
        _refused(folder, "stored as I32, where a float weight is due", stream)


def _set(name, **changes):
    return lambda h: h[name].update(changes)


def _swap(a, b):
    def edit(h):
        h[a], h[b] = h[b], h[a]
    return edit


def _rename(a, b):
    def edit(h):
        h[b] = h.pop(a)
    return edit


DOWN, UP = "model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.up_proj.weight"
NORM, EMBED = "model.layers.1.input_layernorm.weight", "model.embed_tokens.weight"


def _lies():
    """(name, which tensor's shard, the edit): every field of a header entry, on a projection, a norm and the
    embedding; each keeps the file's bytes consistent where a lie could (same byte count)."""
    out = []
    for t in (DOWN, EMBED):
        out += [(f"transposed {t}", t, lambda h, t=t: h[t].update(shape=h[t]["shape"][::-1])),
                (f"bf16 with a doubled shape {t}", t,
                 lambda h, t=t: h[t].update(dtype="BF16", shape=[h[t]["shape"][0] * 2, *h[t]["shape"][1:]])),
                (f"f64 with a halved shape {t}", t,
                 lambda h, t=t: h[t].update(dtype="F64", shape=[h[t]["shape"][0] // 2, *h[t]["shape"][1:]])),
                (f"shape of booleans {t}", t, lambda h, t=t: h[t].update(shape=[True, *h[t]["shape"][1:]])),
                (f"shape of text {t}", t, lambda h, t=t: h[t].update(shape=["64", *h[t]["shape"][1:]])),
                (f"unknown dtype {t}", t, _set(t, dtype="F12")),
                (f"offsets reversed {t}", t, lambda h, t=t: h[t].update(data_offsets=h[t]["data_offsets"][::-1])),
                (f"offsets past the end {t}", t,
                 lambda h, t=t: h[t].update(data_offsets=[x + 10 ** 9 for x in h[t]["data_offsets"]])),
                (f"renamed {t}", t, _rename(t, t.replace("weight", "weights")))]
    out += [("up and down swapped", DOWN, _swap(DOWN, UP)),
            ("a norm stored as U8 with four times the elements", NORM,
             lambda h: h[NORM].update(dtype="U8", shape=[h[NORM]["shape"][0] * 4])),
            ("a norm relabelled I32", NORM, _set(NORM, dtype="I32"))]
    return out


@pytest.mark.parametrize("what, tensor, lie", _lies(), ids=[x[0] for x in _lies()])
def test_header_lies_are_one_line_errors_in_both_loaders(model, tmp_path, what, tensor, lie):
    folder = _copy(model, tmp_path)
    shard = _shard_of(folder, tensor)
    if tensor in (DOWN,) and what == "up and down swapped" and _shard_of(folder, UP) != shard:
        pytest.fail("the planted model keeps a layer's projections in one shard; this lie needs them together")
    try:
        _rewrite_header(shard, lie)
    except KeyError:
        pytest.fail(f"{tensor} is not in {shard.name}")
    for stream in (False, True):
        with pytest.raises(ScanError) as err:
            scan(str(folder), CFG.replace(load={"device": "cpu", "stream": stream}))
        assert "\n" not in str(err.value) and str(err.value), (what, stream)
