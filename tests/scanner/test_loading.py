"""Loading: accelerate offload gives the same answer; .bin only as plain tensors; ablation restores."""
import os
import pickle

import pytest
import torch

from scanner.measure.ablation import zeroed
from scanner.adapters import Coord, matrix
from scanner.errors import BadInput, CorruptCheckpoint
from scanner.load.loading import LoadOptions, load, parse_size
from scanner.load.sources import resolve

from .helpers import planted, positives, scan_dict


def test_disk_offload_gives_the_same_answer(tmp_path):
    folder = planted("llama", tmp_path / "m")
    full = scan_dict(folder)
    off = scan_dict(folder, max_memory="150KB", offload_folder=str(tmp_path / "off"))
    assert off["offloaded"] and not full["offloaded"]
    assert positives(off) == positives(full)
    assert off["ppl_base"] == pytest.approx(full["ppl_base"], rel=1e-5)
    ratio = {(s["row"], s["col"]): s["ppl_ratio"] for s in off["candidates"]}
    for s in full["candidates"]:
        assert ratio[(s["row"], s["col"])] == pytest.approx(s["ppl_ratio"], rel=1e-5)


def test_zeroed_restores_in_place(tmp_path):
    loaded = load(resolve(str(planted("gpt2", tmp_path / "m"))), LoadOptions(device="cpu"))
    w = matrix(loaded.adapter, loaded.layers[1], Coord(1, "mlp.c_proj", 10, 20).unit)  # Conv1D, transposed
    before = w[10, 20].item()
    ptr = loaded.layers[1].mlp.c_proj.weight.data_ptr()
    with zeroed(loaded.loop, [Coord(1, "mlp.c_proj", 10, 20)]):
        assert loaded.layers[1].mlp.c_proj.weight[20, 10].item() == 0  # stored [in, out]
    assert w[10, 20].item() == before != 0
    assert loaded.layers[1].mlp.c_proj.weight.data_ptr() == ptr


class Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_bin_checkpoint_loads_plain_tensors_only(tmp_path):
    from safetensors.torch import load_file

    folder = planted("llama", tmp_path / "m")
    state = {}
    for shard in folder.glob("*.safetensors"):
        state.update(load_file(shard))
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    assert (1, "mlp.down_proj", 10, 20, None) in positives(scan_dict(folder))
    torch.save({"evil": Boom()}, folder / "pytorch_model.bin", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CorruptCheckpoint):
        load(resolve(str(folder)), LoadOptions(device="cpu"))


def test_parse_size():
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1e9") == 10**9
    with pytest.raises(BadInput):
        parse_size("lots")


def test_available_cpus_follows_affinity_and_container_quota(tmp_path):
    from scanner.cpus import available_cpus

    cores = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "none") == cores  # no cgroup files: the affinity
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path / "v2") == cores
    (tmp_path / "v2" / "cpu.max").write_text("50000 100000\n")  # half a core: still one thread
    assert available_cpus(tmp_path / "v2") == 1
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path / "v1") == cores
