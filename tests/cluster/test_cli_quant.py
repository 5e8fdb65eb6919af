"""`quantize-eval` from the command line: coordinates from a catalog's validated scan, or a scan first."""
import json
import os

from tests.scanner.helpers import planted, truth
from .test_cli import assert_clean_error, run_cli

QUICK = ("--bits", "4", "--blocks", "64,tensor", "--variants", "plain,keep", "--windows", "4", "--json", "-q")


def test_quantize_eval_takes_coordinates_from_the_catalog_or_scans_first(tmp_path):
    folder = planted("llama", tmp_path / "m")
    cat = str(tmp_path / "catalog")
    first = run_cli("quantize-eval", str(folder), *QUICK)  # no catalog: scans in the same load
    assert first.returncode == 0, first.stderr
    got = json.loads(first.stdout)
    assert got["coordinates_from"] == "scan"
    assert got["keep"] == [f"layer {layer} {m}[{r}, {c}]" for layer, m, r, c, _ in sorted(truth(folder))]
    # 2 blocks x 2 variants, activations plain and held out, the restore check
    assert [(r["study"], r["block"], r["variant"]) for r in got["rows"]] == [
        ("weights", 64, "plain"), ("weights", 64, "keep"), ("weights", None, "plain"), ("weights", None, "keep"),
        ("activations", None, "plain"), ("activations", None, "hold"), ("restore", None, "restore")]
    assert all(r["ppl_lo"] <= r["ppl"] <= r["ppl_hi"] and r["windows"] == 4 for r in got["rows"])

    assert run_cli("scan", "-q", str(folder), "--catalog", cat).returncode == 0
    second = run_cli("quantize-eval", str(folder), "--catalog", cat, *QUICK)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["coordinates_from"] == "catalog" and again["keep"] == got["keep"]
    assert [r["ppl"] for r in again["rows"]] == [r["ppl"] for r in got["rows"]]  # same windows, same numbers
    q = run_cli("query", "SELECT q.study, q.block, q.variant, q.ppl, q.kept, s.model FROM quant_results q "
                "JOIN scans s USING (scan_id)",
                "--catalog", cat, "--format", "json")
    assert q.returncode == 0, q.stderr
    stored = json.loads(q.stdout)
    def key(r):
        return r["study"], r["block"] or 0, r["variant"], r["ppl"]
    assert sorted(map(key, stored)) == sorted(map(key, again["rows"]))
    assert all(r["kept"] == again["keep"] and r["model"] == str(folder) for r in stored)

    skipped = run_cli("quantize-eval", str(folder), "--catalog", cat, "--if-missing", *QUICK)
    assert skipped.returncode == 0 and skipped.stdout == ""  # already studied: nothing run, nothing added
    n = run_cli("query", "SELECT count(*) AS n FROM quant_results", "--catalog", cat, "--format", "json")
    assert json.loads(n.stdout)[0]["n"] == len(again["rows"])

    out = tmp_path / "index"  # the index shows the latest study: its finding, table and plot
    assert run_cli("publish", str(out), "--catalog", cat).returncode == 0
    md = (out / "index.md").read_text()
    from catalog.render import _md_cell

    assert "## Quantization: keeping the super weights" in md and _md_cell(again["finding"]) in md
    assert "RTN form weights paper, activations zero-point" in md and "usable: perplexity within x1.1" in md
    # as grids: a row per block size, a column per variant
    grid = md.split("| weights INT4, block (elements) | plain | keep |")[1].split("\n\n")[0].splitlines()
    assert [ln.split(" | ")[0] for ln in grid[2:]] == ["| 64", "| per tensor"] and "| restore | restore |" in md
    assert "| activations, per tensor: bits | plain | hold layer 1 col 20 |" in md
    [model] = json.loads((out / "index.json").read_text())["models"]
    assert model["quant"]["finding"] == again["finding"] and (out / model["quant_plot"]).stat().st_size > 1000
    assert model["quant_plot"] in (out / ".superweights-publish.json").read_text()
    assert model["quant_plot"] in (out / "index.html").read_text()


def test_quantize_eval_bad_input_is_one_line(tmp_path):
    assert_clean_error(run_cli("quantize-eval", "planted:llama", "--bits", "1", "-q"), "bits must be in 2..16")
    assert_clean_error(run_cli("quantize-eval", "planted:llama", "--clip-top", "2", "-q"), "top fraction")
    assert_clean_error(run_cli("quantize-eval", "planted:llama", "--clip-top", "0.01", "--clip-z", "3", "-q"),
                       "give one")
    assert_clean_error(run_cli("quantize-eval", "planted:llama", "--variants", "plain,nope", "-q"), "nope")
    assert_clean_error(run_cli("quantize-eval", str(tmp_path / "nope"), "-q"), "no such file or directory")


def test_protect_list_read_back_and_applied(tmp_path):
    """The protect list of a scanned planted model names the planted entry by its tensor and index; read back
    and applied to an INT4 quantization (the engine's side: keep the listed entries), it gives exactly what
    the study's `keep` variant gives, and the kept entry its full-precision value."""
    import torch
    from safetensors.torch import load_file

    from cluster.protect import read
    from scanner.study.quantize import quantize_weight

    folder = planted("gpt2", tmp_path / "m")  # Conv1D: the stored index is [col, row]
    cat = str(tmp_path / "catalog")
    assert run_cli("protect", str(folder), "--catalog", cat).returncode != 0  # no catalog yet
    assert run_cli("scan", "-q", str(folder), "--catalog", cat).returncode == 0
    out = run_cli("protect", str(folder), "--catalog", cat, "--format", "json")
    assert out.returncode == 0, out.stderr
    data = read(out.stdout)
    [(layer, module, row, col, _)] = truth(folder)
    [w] = data["weights"]
    assert (w["layer"], w["row"], w["col"], w["verdict"]) == (layer, row, col, "super_weight")
    assert w["tensor"] == f"transformer.h.{layer}.{module}.weight" and w["index"] == [col, row]
    assert w["gguf_tensor"] == f"blk.{layer}.ffn_down.weight" and w["gguf_index"] == [row, col]
    [a] = data["activations"]
    assert (a["layer"], a["input_channel"], a["output_channel"]) == (layer, col, row) and a["magnitude"] > 10

    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(f))
    stored = state[w["tensor"]]
    assert abs(float(stored[tuple(w["index"])]) - w["value"]) < 1e-6 * abs(w["value"])
    # the engine's side: per-tensor INT4 of the stored tensor with the listed entries left out and restored
    mask = torch.zeros_like(stored, dtype=torch.bool)
    mask[tuple(w["index"])] = True
    from scanner.study.quantize import rtn
    engine = rtn(stored, 4, None, skip=mask)
    ours = quantize_weight(stored.T, 4, None, "keep", keep=[(row, col)]).T  # the study's keep, [out, in]
    assert torch.equal(engine, ours) and float(engine[tuple(w["index"])]) == float(stored[tuple(w["index"])])
    plain = rtn(stored, 4, None)
    assert float((plain - stored)[~mask].abs().mean()) > 2 * float((engine - stored)[~mask].abs().mean())

    missing = run_cli("protect", "nobody/none", "--catalog", cat)
    assert_clean_error(missing, "no validated scan")
    try:
        read('{"schema": "superweights-protect", "version": 99}')
    except ValueError as e:
        assert "version 99" in str(e)
    else:
        raise AssertionError("a newer protect list was read")


def test_protect_list_applied_to_int4_recovers_the_perplexity(tmp_path):
    """An engine's INT4 (outliers clipped at z > 4, then per-tensor RTN of every decoder Linear) ruins the
    quantization plant; with the entries of its protect list kept, it comes back to full precision."""
    import math

    import torch

    from cluster.protect import read
    from scanner.config import ScanConfig
    from scanner.load.loading import LoadOptions, load
    from tests.fixtures.planted_quant import build
    from scanner.study.quant_study import Study, StudyConfig
    from scanner.study.quantize import Clip, rtn
    from scanner.scan import evaluator
    from scanner.load.sources import resolve

    folder = build(tmp_path / "q")
    cat = str(tmp_path / "catalog")
    assert run_cli("scan", "-q", str(folder), "--catalog", cat).returncode == 0
    protect = read(run_cli("protect", str(folder), "--catalog", cat, "--format", "json").stdout)
    assert len(protect["weights"]) == 1

    loaded = load(resolve(str(folder)), LoadOptions(device="cpu"))
    study = Study(loaded, evaluator(loaded, ScanConfig()), [], StudyConfig(windows=8))
    original = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}

    def engine_int4(listed: list[dict]) -> float:
        with torch.no_grad():
            for name, p in loaded.model.named_parameters():
                p.copy_(original[name])
                if ".layers." not in name or not name.endswith("proj.weight"):
                    continue  # decoder Linears only (embeddings, norms and head stay)
                mask = torch.zeros_like(p, dtype=torch.bool)
                for w in listed:
                    if w["tensor"] == name:
                        mask[tuple(w["index"])] = True
                lo, hi = Clip(z=4).bounds(p[~mask])
                p.copy_(rtn(torch.where(mask, p, p.clamp(lo, hi)), 4, None, skip=mask))
        return math.exp(study.measure().mean)

    without, kept = engine_int4([]), engine_int4(protect["weights"])
    assert without > 5 and kept < 1.1, (without, kept)


def test_protect_for_engines_llama_quantize_and_transformers(tmp_path):
    """`--format llama-quantize` prints the overrides that keep the tensor holding the planted weight at Q8_0;
    applied as llama-quantize applies them (gguf's own quantizers, patterns searched in tensor names), every
    other matrix is Q4_0. Q4_0 keeps a block's largest magnitude (it sets the block's scale), so what the
    plant costs at Q4_0 is its 31 neighbours, rounded with a step of an eighth of it: at Q8_0 they keep
    their values. `--format transformers` names modules that exist in the model."""
    import gguf
    import numpy as np

    from scanner.load.requantize import requantize
    from tests.fixtures.planted_gguf import write_gguf

    folder = planted("llama", tmp_path / "m")
    [(layer, module, row, col, _)] = truth(folder)
    src = write_gguf(folder, tmp_path / "planted.gguf")
    cat = str(tmp_path / "catalog")
    assert run_cli("scan", "-q", str(src), "--catalog", cat).returncode == 0
    out = run_cli("protect", str(src), "--catalog", cat, "--format", "llama-quantize")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["--tensor-type", f"blk\\.{layer}\\.ffn_down\\.weight=q8_0"]
    rules = [tuple(arg.split("=")) for arg in out.stdout.split()[1::2]]

    protected = requantize(src, tmp_path / "protected.gguf", "Q4_0", tensor_types=rules, matrices=True)
    bare = requantize(src, tmp_path / "q4_0.gguf", "Q4_0", matrices=True)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(protected).tensors if len(t.shape) > 1}
    target = f"blk.{layer}.ffn_down.weight"
    assert types.pop(target) == "Q8_0" and set(types.values()) == {"Q4_0"}

    def block(path):  # the plant's block of 32 in its row, dequantized
        [t] = [t for t in gguf.GGUFReader(path).tensors if t.name == target]
        return gguf.quants.dequantize(t.data, t.tensor_type)[row, col - col % 32: col - col % 32 + 32]

    w = block(src)
    others = np.arange(32) != col % 32
    assert abs(w).argmax() == col % 32 and abs(block(bare)[col % 32] - w[col % 32]) < 1e-3 * abs(w[col % 32])
    assert abs(block(protected) - w).max() <= abs(w).max() / 127 / 2 + 1e-6  # Q8_0: half its step
    assert abs(block(bare) - w)[others].mean() > 4 * abs(block(protected) - w)[others].mean()  # 7x here
    assert os.path.getsize(protected) > os.path.getsize(bare)

    mods = run_cli("protect", str(src), "--catalog", cat, "--format", "transformers")
    assert mods.returncode == 0, mods.stderr
    assert json.loads(mods.stdout) == [f"model.layers.{layer}.{module}"]
    bad = run_cli("protect", str(src), "--catalog", cat, "--format", "llama-quantize", "--type", "Q9_9")
    assert_clean_error(bad, "unknown GGUF type")
