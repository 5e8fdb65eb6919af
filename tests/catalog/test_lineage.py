"""Where each weight that matters in one scan is in another: the rules of kept / moved / lost / new."""
from catalog.lineage import compare, counts, render


def w(layer, row, col, verdict="super_weight", value=1.0, spike=100.0, expert=None, module="mlp.down_proj"):
    return {"layer": layer, "module": module, "expert": expert, "row": row, "col": col, "value": value,
            "output_ratio": spike, "verdict": verdict, "ppl_ratio": 50.0}


def status(a, b):
    return [(c["status"], (c["layer"], c["row"], c["col"]), (c["b_layer"], c["b_row"], c["b_col"]))
            for c in compare(a, b)]


def test_kept_moved_lost_new():
    a = [w(2, 10, 20), w(2, 30, 5), w(5, 7, 7), w(9, 1, 1)]
    b = [w(2, 10, 20, value=1.1), w(2, 30, 6), w(6, 7, 7), w(11, 3, 3)]
    assert status(a, b) == [("kept", (2, 10, 20), (2, 10, 20)), ("moved", (2, 30, 5), (2, 30, 6)),
                            ("moved", (5, 7, 7), (6, 7, 7)), ("lost", (9, 1, 1), (None, None, None)),
                            ("new", (11, 3, 3), (11, 3, 3))]
    rows = compare(a, b)
    assert (rows[0]["a_value"], rows[0]["b_value"]) == (1.0, 1.1)
    assert counts(rows) == {"kept": 1, "moved": 2, "lost": 1, "new": 1}


def test_moved_only_to_a_neighbouring_layer_and_the_same_row():
    a = [w(5, 7, 7)]
    assert status(a, [w(7, 7, 7)])[0][0] == "lost"  # two layers away: not the same weight
    assert status(a, [w(4, 7, 9)])[0][0] == "moved"  # one layer up, another col
    assert status(a, [w(5, 8, 7)])[0][0] == "lost"  # another row in the same layer: another spike
    assert status(a, [w(5, 7, 7, expert=1)])[0][0] == "lost"  # another expert


def test_a_weight_that_no_longer_matters_is_kept_with_its_new_verdict():
    rows = compare([w(1, 10, 20)], [w(1, 10, 20, verdict="negligible", spike=3.0)])
    assert [(r["status"], r["a_verdict"], r["b_verdict"], r["b_spike"]) for r in rows] == \
        [("kept", "super_weight", "negligible", 3.0)]
    # and one that matters only in B is kept too (it was a candidate in A), not new
    rows = compare([w(1, 10, 20, verdict="negligible")], [w(1, 10, 20, verdict="mild")])
    assert [(r["status"], r["a_verdict"], r["b_verdict"]) for r in rows] == [("kept", "negligible", "mild")]


def test_negligible_candidates_on_both_sides_are_not_listed():
    assert compare([w(1, 10, 20, verdict="negligible")], [w(1, 10, 21, verdict="negligible")]) == []


def test_unvalidated_scans_compare_every_candidate():
    rows = compare([w(1, 10, 20, verdict="unvalidated")], [w(1, 10, 20, verdict="unvalidated")])
    assert [r["status"] for r in rows] == ["kept"]


def test_lost_and_new_carry_the_value_read_in_the_other_model():
    key_a, key_b = (3, "mlp.down_proj", None, 4, 5), (8, "mlp.down_proj", None, 1, 2)
    rows = compare([w(3, 4, 5)], [w(8, 1, 2)], a_values={key_b: 0.01}, b_values={key_a: 0.5})
    assert [(r["status"], r["a_value"], r["b_value"]) for r in rows] == [("lost", 1.0, 0.5), ("new", 0.01, 1.0)]


def test_render_names_both_sides_and_every_cross_ablation():
    rows = compare([w(1, 10, 20)], [w(1, 10, 33)])
    row = {"a_model": "base", "b_model": "ft", "a_scan_id": "s1", "b_scan_id": "s2", "declared": "card",
           "status": "ok", **counts(rows), "coordinates": rows, "a_set": ["layer 1 mlp.down_proj[10, 20]"],
           "b_set": ["layer 1 mlp.down_proj[10, 33]"],
           "a_in_b_ppl_ratio": 1.01, "a_in_b_ppl_ratio_lo": 0.99, "a_in_b_ppl_ratio_hi": 1.03, "a_in_b_windows": 4,
           "a_in_b_verdict": "negligible"}
    text = render(row)
    assert "moved" in text and "1: 10, 20" in text and "1: 10, 33" in text and "whose base is A (card)" in text
    assert "A's set zeroed in B: ppl x1.01 [0.99, 1.03] on 4 windows: negligible" in text
