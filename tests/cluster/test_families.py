"""Families on planted ground truth: a base, its fine-tune (values drift, the super weight stays), a fine-tune
of a model planted at another column (moved), one trained hard enough that the weight only mildly matters,
its GGUF (base named in the metadata) and a model of another shape. `diff` and the batch must say which."""
import json

import pytest

from catalog import query, views
from catalog.store import Catalog
from cluster import batch
from cluster.errors import BadOption
from cluster.models import parse
from scanner.planted import CONFIGS, Plant, build
from tests.fixtures.planted_family import finetune
from tests.fixtures.planted_gguf import write_gguf
from scanner.load.requantize import requantize

from .test_cli import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    d = tmp_path_factory.mktemp("family")
    base = build("llama", d / "base", [Plant(1, 10, 20)])
    f = {"base": base, "ft": finetune(base, d / "ft")}  # its card names the base by this path
    f["moved"] = finetune(build("llama", d / "moved0", [Plant(1, 10, 33)]), d / "moved", base_name="org/unrelated")
    f["heavy"] = finetune(base, d / "heavy", steps=8, lr=1e-3)
    f["gguf"] = requantize(write_gguf(f["ft"], d / "ft.gguf"), d / "ft-requant.gguf", base_model=str(base))
    f["small"] = build("llama", d / "small", [Plant(1, 10, 5)], config={**CONFIGS["llama"], "intermediate_size": 16})
    return {k: str(v) for k, v in f.items()}


def diff(family, cat, a, b, *extra):
    p = run_cli("diff", family[a], family[b], "--catalog", str(cat), "--json", "-q", *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_diff_says_kept_moved_and_how_much_each_set_still_matters(family, tmp_path):
    cat = tmp_path / "cat"
    ft = diff(family, cat, "base", "ft")  # both scanned first, in the loads that cross-ablate them
    (c,) = ft["coordinates"]
    assert (c["status"], c["layer"], c["row"], c["col"], c["b_col"]) == ("kept", 1, 10, 20, 20)
    assert c["a_value"] != c["b_value"] and abs(c["a_value"] - c["b_value"]) < 1e-3  # drifted, stayed
    assert ft["declared"] == "card"  # the fine-tune's card names the base
    for k in ("a_in_b", "b_in_a", "a_in_a", "b_in_b"):
        assert ft[f"{k}_verdict"] == "super_weight" and ft[f"{k}_ppl_ratio_lo"] > 10, k

    moved = diff(family, cat, "base", "moved")
    (c,) = moved["coordinates"]
    assert (c["status"], c["b_layer"], c["b_row"], c["b_col"]) == ("moved", 1, 10, 33)
    assert (moved["kept"], moved["moved"], moved["lost"], moved["new"]) == (0, 1, 0, 0)
    assert moved["declared"] is None  # its card names another base: compared ad hoc
    # the base's coordinate does nothing in the derivative (their issue #4), while its own set is catastrophic
    assert moved["a_in_b_verdict"] == moved["b_in_a_verdict"] == "negligible"
    assert moved["a_in_b_ppl_ratio_hi"] < 1.5 and moved["b_in_a_ppl_ratio_hi"] < 1.5
    assert moved["b_in_b_verdict"] == "super_weight" and moved["b_in_b_ppl_ratio_lo"] > 10

    heavy = diff(family, cat, "base", "heavy")  # kept in place, but its effect fell from x2e4 to a few
    assert [c["status"] for c in heavy["coordinates"]] == ["kept"]
    assert heavy["coordinates"][0]["b_verdict"] == "mild"
    # mild: decided above x1.5 and below x10 at the zones' edges (x1.5 / 1.4 and x10 x 1.3)
    assert heavy["a_in_b_verdict"] == "mild"
    assert 1.5 / 1.4 < heavy["a_in_b_ppl_ratio_lo"] < heavy["a_in_b_ppl_ratio_hi"] < 10 * 1.3
    assert heavy["b_set"] == [] and heavy["b_in_a_ppl_ratio"] is None  # nothing catastrophic in B to zero in A
    # the catastrophic threshold moved below the effect flips the cross verdict
    low = diff(family, cat, "base", "heavy", "--catastrophic-ratio", "2")
    assert low["a_in_b_verdict"] == "super_weight"

    # every comparison is a lineage row; --no-ablate loads nothing and measures no cross-ablation; scan ids
    # name sides as models do
    p = run_cli("diff", ft["a_scan_id"], moved["b_scan_id"], "--catalog", str(cat), "--json", "-q", "--no-ablate")
    quick = json.loads(p.stdout)
    assert (quick["a_model"], quick["b_model"]) == (family["base"], family["moved"])
    assert quick["moved"] == 1 and quick["a_in_b_ppl_ratio"] is None
    _, rows = query.run(Catalog(cat), "SELECT b_model, count(*) FROM lineage_all GROUP BY ALL ORDER BY 1")
    assert [n for _, n in rows] == [1, 2, 2]
    p = run_cli("query", "--catalog", str(cat), "--family", family["ft"], "--format", "json")
    assert {r["model"] for r in json.loads(p.stdout)} == {family["base"], family["ft"], family["heavy"]}


def test_batch_scans_bases_first_and_compares_each_derivative(family, tmp_path, local_ray):
    cat = Catalog(tmp_path / "cat")
    text = "\n".join([f"{family['moved']} base={family['base']}", family["ft"], family["gguf"],
                      f"{family['small']} base={family['base']}", family["base"]])
    entries = parse(text)
    s = batch.run(entries, cat, batch.BatchConfig(workers=2, progress=False))
    assert len(s.done) == 5 and sorted(s.compared) == sorted(f"{family['base']} -> {family[k]}"
                                                             for k in ("moved", "ft", "gguf"))
    # another shape: the comparison fails, as a row, and the batch goes on
    assert [why.split(":")[0] for _, why in s.failed] == ["OutOfRange"]
    cols, rows = query.run(cat, "SELECT b_model, declared, status, kept, moved, lost, new, a_in_b_verdict "
                                "FROM lineage_all ORDER BY b_model")
    got = {r[0]: r[1:] for r in rows}
    assert got[family["ft"]] == ("card", "ok", 1, 0, 0, 0, "super_weight")
    assert got[family["gguf"]] == ("gguf", "ok", 1, 0, 0, 0, "super_weight")
    assert got[family["moved"]] == ("models_file", "ok", 0, 1, 0, 0, "negligible")
    assert got[family["small"]][:2] == ("models_file", "failed")
    # a base in the batch is scanned before its derivatives start
    _, rows = query.run(cat, "SELECT model, epoch(started), duration_s FROM scans")
    t = {m: (s0, s0 + d) for m, s0, d in rows}
    assert t[family["moved"]][0] >= t[family["base"]][1] - 0.5 and t[family["small"]][0] >= t[family["base"]][1] - 0.5
    cols, rows = query.run(cat, *views.family_sql(family["gguf"]))
    fam = [dict(zip(cols, r)) for r in rows]
    assert {f["model"] for f in fam} == {family[k] for k in ("base", "ft", "moved", "gguf", "small")}
    assert {f["root"] for f in fam} == {family["base"]}

    out = tmp_path / "index"
    p = run_cli("publish", str(out), "--catalog", str(cat.root))
    assert p.returncode == 0, p.stderr
    md = (out / "index.md").read_text()
    section = md[md.index("## Families"): md.index("## Scans")]
    assert f"### {family['base']}" in section and "| 0 / 1 / 0 / 0 | x1" in section and "negligible" in section
    html = (out / "index.html").read_text()
    assert html.count("<section class=family") == 1 and html.index("class=family") < html.index("class=model")

    # a re-run scans nothing, and compares only what failed before
    again = batch.run(entries, cat, batch.BatchConfig(workers=2, progress=False))
    assert len(again.skipped) == 5 and not again.done and not again.compared
    _, rows = query.run(cat, "SELECT status, count(*) FROM lineage_all GROUP BY ALL ORDER BY 1")
    assert rows == [("failed", 2), ("ok", 3)]


def test_scan_records_the_base_it_is_given(family):
    p = run_cli("scan", family["moved"], "--base", "org/base-model", "--json", "-q")
    out = json.loads(p.stdout)
    assert (out["base_model"], out["base_model_from"]) == ("org/base-model", "flag")  # in place of its card's


def test_bad_family_input(family, tmp_path):
    assert_clean_error(run_cli("diff", family["base"], family["base"]), "two models")
    assert_clean_error(run_cli("diff", family["base"], str(tmp_path / "nope"), "-q"), "no such file or directory")
    assert_clean_error(run_cli("scan", family["ft"], "--base", family["ft"], "-q"), "another model")
    with pytest.raises(BadOption, match="names no model"):
        parse("a/b base=")
    with pytest.raises(BadOption, match="its own base"):
        parse("org/a base=org/a@main")
    with pytest.raises(BadOption, match="the bases loop: org/a -> org/b -> org/a"):
        parse("org/a base=org/b\norg/b base=org/a")


def test_smollm2_requantized_with_the_gguf_library_keeps_its_super_weights(tmp_path):
    """A real quantization family: SmolLM2's Q4_1 file re-quantized to Q4_0 (detection only here; the README
    shows the validated comparison). The layer-11 pair stays where it is, its values nearly exact."""
    from cluster.lineage import diff as compare_models
    from scanner.config import ScanConfig
    from scanner.load.sources import resolve

    src = resolve("pkg:smollm2-135m")
    q = requantize(src.path / src.gguf_file, tmp_path / "q4_0.gguf", "Q4_0", base_model="pkg:smollm2-135m")
    row = compare_models(None, "pkg:smollm2-135m", str(q), ScanConfig(run_validation=False), ablate=False)
    assert row["declared"] == "gguf"  # the re-quantized file's metadata names its base
    pair = {(c["row"], c["col"]): c for c in row["coordinates"] if c["layer"] == 11 and c["row"] == 507}
    assert set(pair) == {(507, 1229), (507, 1487)}
    for c in pair.values():
        assert c["status"] == "kept" and c["b_spike"] > 100 and c["a_spike"] > 100
        # the largest magnitude of its block: Q4_0 keeps it up to its fp16 scale's rounding (plain RTN of a
        # value in the middle of the range would move it up to half a step, 1/16 of the block's maximum)
        assert c["a_value"] != c["b_value"] and abs(c["a_value"] - c["b_value"]) <= 2e-3 * abs(c["a_value"])


def test_smollm2_q4_0_keeps_its_pair_as_a_set_and_changes_come_from_paired_windows(tmp_path):
    """Validated: in the Q4_0 copy the layer-11 pair is still a catastrophic set, each weight in the protect
    tiers (the partner that costs little alone carries the set's effect, so it stays); a coordinate's change
    from SmolLM2 to its copy is the paired effect on the same windows, and it is called a change only where
    that interval lies outside the zone."""
    from cluster.lineage import diff as compare_models
    from scanner.config import ScanConfig
    from words import verdicts

    cfg = ScanConfig().replace(validate={"eval_tokens": 2048}, detect={"max_candidates": 4})
    row = compare_models(None, "pkg:smollm2-135m", "pkg:smollm2-135m-q4_0", cfg, ablate=False)
    pair = {(c["row"], c["col"]): c for c in row["coordinates"] if c["layer"] == 11 and c["row"] == 507}
    assert set(pair) == {(507, 1229), (507, 1487)}
    for c in pair.values():
        assert verdicts.is_catastrophic(c["a_verdict"]) and verdicts.is_catastrophic(c["b_verdict"])
        assert c["change"] in ("stronger", "weaker", "unchanged")  # same tokenizer: the windows pair
        lo, hi = c["change_ratio_lo"], c["change_ratio_hi"]
        assert (c["change"] == "unchanged") == (lo <= 1.3 and hi >= 1 / 1.3), c
    pair_labels = {"layer 11 mlp.down_proj[507, 1229]", "layer 11 mlp.down_proj[507, 1487]"}
    assert set(row["a_set"]) == set(row["b_set"]) == pair_labels  # kept as a set: both in both protect lists
