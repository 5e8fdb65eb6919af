"""Read-only SQL, short forms, output formats, reference rows and the disagreement query."""
import json

import pytest

from catalog import query, views
from catalog.errors import BadReference, QueryError
from catalog.rows import ok_row
from tests.fixtures.synthetic import result

REFERENCE = "catalog/data/published_super_weights.csv"


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1", "INSERT INTO scans VALUES (1)", "DROP VIEW scans",
    "COPY (SELECT * FROM scans) TO '/tmp/out.csv'", "ATTACH '/tmp/x.duckdb'", "SET threads = 1",
    "INSTALL httpfs", "SELECT 1; DELETE FROM scans", "EXPORT DATABASE '/tmp/x'", "PRAGMA enable_profiling"])
def test_writing_sql_is_refused(cat, sql):
    with pytest.raises(QueryError, match="refused|read-only"):
        query.run(cat, sql)


def test_files_outside_the_catalog_cannot_be_read(cat, tmp_path):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with pytest.raises(QueryError):
        query.run(cat, f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")


def test_bad_sql_is_one_clear_error(cat):
    with pytest.raises(QueryError, match="invalid SQL|Parser"):
        query.run(cat, "SELEC * FROM scans")
    with pytest.raises(QueryError, match="no_such_table"):
        query.run(cat, "SELECT * FROM no_such_table")


def _fill(cat):
    cat.write_scan(ok_row(result("org/llama-a", 1, architecture="llama", coords=[(2, 10, 20, "super_weight"),
                                                                               (2, 10, 21, "super_set")])))
    cat.write_scan(ok_row(result("org/llama-b", 1, architecture="llama", coords=[(1, 5, 6, "super_weight")])))
    cat.write_scan(ok_row(result("org/mistral", 1, architecture="mistral", coords=[(2, 7, 8, "super_weight"),
                                                                                 (9, 1, 1, "negligible")])))


def test_short_forms(cat):
    _fill(cat)
    cols, data = query.run(cat, *views.model_sql("org/llama-a"))
    got = [dict(zip(cols, r)) for r in data]
    assert [(g["layer"], g["row"], g["col"], g["verdict"]) for g in got] == [(2, 10, 20, "super_weight"),
                                                                            (2, 10, 21, "super_set")]
    assert got[0]["ppl_ratio_lo"] < got[0]["ppl_ratio"] < got[0]["ppl_ratio_hi"]  # with its interval
    # every tier a measurement decided, catastrophic first; --tier filters
    got = query.run(cat, *views.model_sql("org/mistral"))[1]
    assert [(r[2], r[9]) for r in got] == [(2, "super_weight"), (9, "negligible")]
    assert [r[9] for r in query.run(cat, *views.model_sql("org/mistral", ("negligible",)))[1]] == ["negligible"]
    cols, data = query.run(cat, *views.where_sql(2, None))
    assert sorted({r[cols.index("model")] for r in data}) == ["org/llama-a", "org/mistral"]
    cols, data = query.run(cat, *views.where_sql(None, "llama"))
    assert sorted({r[cols.index("model")] for r in data}) == ["org/llama-a", "org/llama-b"]
    cols, data = query.run(cat, *views.where_sql(2, "llama"))
    assert {r[cols.index("model")] for r in data} == {"org/llama-a"}
    # parameters are bound, not pasted: a quote in a model id is just a character
    assert query.run(cat, *views.model_sql("x' OR '1'='1"))[1] == []


def test_formats(cat):
    _fill(cat)
    cols, data = query.run(cat, "SELECT model, layer, started FROM super_weights ORDER BY model, layer LIMIT 2")
    js = json.loads(query.render(cols, data, "json"))
    assert js[0]["model"] == "org/llama-a" and js[0]["started"].endswith("Z")
    csv_text = query.render(cols, data, "csv").splitlines()
    assert csv_text[0] == "model,layer,started" and len(csv_text) == 3
    assert query.render(cols, data, "table").splitlines()[-1] == "(2 rows)"


def test_reference_import_and_disagreements(cat, tmp_path):
    n, _ = cat.import_reference(REFERENCE)
    assert n == 28
    assert cat.import_reference(REFERENCE)[0] == 28  # importing the same file again adds nothing
    cols, data = query.run(cat, "SELECT count(*), count(DISTINCT hub_id), min(origin) FROM reference")
    assert data == [(28, 11, "published_super_weights.csv")]
    # Llama-7B scanned: the published weight found, plus one the paper does not list
    cat.write_scan(ok_row(result("huggyllama/llama-7b", 1, coords=[(2, 3968, 7003, "super_weight"),
                                                                   (4, 11, 12, "super_weight")])))
    # Llama-13B scanned: one published weight found, the other judged negligible
    cat.write_scan(ok_row(result("huggyllama/llama-13b", 1, coords=[(2, 2231, 2278, "super_weight"),
                                                                    (2, 2231, 6939, "negligible")])))
    # OLMo-1B scanned without the published coordinates at all
    cat.write_scan(ok_row(result("allenai/OLMo-1B-0724-hf", 1, coords=[(1, 1764, 1710, "super_weight")])))
    cols, data = query.run(cat, views.DISAGREEMENTS_SQL)
    got = {tuple(r[cols.index(c)] for c in ("model", "layer", "row", "col", "disagreement")) for r in data}
    assert got == {("huggyllama/llama-7b", 4, 11, 12, "found, not published"),
                   ("huggyllama/llama-13b", 2, 2231, 6939, "published, scan says negligible"),
                   ("allenai/OLMo-1B-0724-hf", 1, 1764, 8041, "published, not detected")}
    # models never scanned are not disagreements
    assert "mistralai/Mistral-7B-v0.1" not in {r[0] for r in data}


def test_a_changed_reference_file_supersedes_its_previous_import(cat, tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("model,hub_id,layer,module,row,col,source\nX,org/x,1,mlp.down_proj,2,3,me\n")
    cat.import_reference(f)
    f.write_text("model,hub_id,layer,module,row,col,source\nX,org/x,1,mlp.down_proj,2,4,me (fixed)\n")
    cat.import_reference(f)
    assert query.run(cat, "SELECT col, source FROM reference")[1] == [(4, "me (fixed)")]


@pytest.mark.parametrize("text, match", [
    ("model,hub_id,layer\nX,org/x,1\n", "missing column"),
    ("model,hub_id,layer,module,row,col,source\nX,org/x,one,mlp.down_proj,2,3,me\n", "line 2"),
    ("model,hub_id,layer,module,row,col,source\nX,org/x,1,mlp.down_proj,-2,3,me\n", "negative"),
])
def test_bad_reference_files(cat, tmp_path, text, match):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(BadReference, match=match):
        cat.import_reference(f)


def _scan(model, coords, experts=()):
    """A synthetic scan; `experts[i]` makes candidate i one of expert e's down projection (MoE)."""
    r = result(model, 1, coords=coords)
    for s, e in zip(r["candidates"], experts):
        s.update(module="mlp.experts.down_proj", expert=e)
    return ok_row(r)


def test_expert_and_channel_claims_compared_at_their_own_level(cat):
    from catalog import reference

    for path in reference.shipped():
        cat.import_reference(path)
    counts = query.run(cat, "SELECT level, count(*), count(expert), count(col), count(effect) FROM reference "
                            "GROUP BY level ORDER BY level")[1]
    assert counts == [("channel", 26, 0, 0, 11), ("weight", 31, 3, 31, 0)]
    # row 507 of layer 11 matters (census +313%): the scan's super weight in that row agrees, at any column
    cat.write_scan(_scan("HuggingFaceTB/SmolLM2-135M", [(11, 507, 1229, "super_weight"), (2, 507, 90, "negligible")]))
    # Mistral's row 2070 matters (+287%), the scan finds nothing there
    cat.write_scan(_scan("mistralai/Mistral-7B-v0.1", [(1, 100, 5, "super_weight")]))
    # Qwen2.5-7B's row 458 was near inert (+3%): a super weight there disagrees
    cat.write_scan(_scan("Qwen/Qwen2.5-7B", [(26, 458, 17, "super_weight")]))
    # massive activation channels: GPT-2's at layer 2 row 447 is seen as a spike; Gemma-7B's is not
    cat.write_scan(_scan("openai-community/gpt2", [(2, 447, 100, "negligible")]))
    cat.write_scan(_scan("google/gemma-7b", [(0, 5, 6, "negligible")]))
    # experts: layer 1 expert 68 found where published; layer 2's published expert 92 weight found in expert 5
    cat.write_scan(_scan("Qwen/Qwen3-30B-A3B", [(1, 940, 711, "super_weight"), (2, 940, 59, "super_weight")],
                         experts=[68, 5]))
    cols, data = query.run(cat, views.DISAGREEMENTS_SQL)
    got = {tuple(r[cols.index(c)] for c in ("model", "level", "layer", "expert", "row", "col", "disagreement"))
           for r in data}
    assert got == {
        ("mistralai/Mistral-7B-v0.1", "channel", 1, None, 2070, None, "published channel matters, no super weight in it"),
        ("mistralai/Mistral-7B-v0.1", "weight", 1, None, 2070, 7310, "published, not detected"),
        ("mistralai/Mistral-7B-v0.1", "weight", 1, None, 100, 5, "found, not published"),
        ("Qwen/Qwen2.5-7B", "channel", 26, None, 458, None, "published channel near inert, super weight in it"),
        ("google/gemma-7b", "channel", 0, None, 1995, None, "published massive activation, no spike there"),
        ("Qwen/Qwen3-30B-A3B", "weight", 2, 5, 940, 59, "found, not published"),
        ("Qwen/Qwen3-30B-A3B", "weight", 2, 92, 940, 59, "published, not detected"),
        ("Qwen/Qwen3-30B-A3B", "weight", 3, 82, 940, 423, "published, not detected"),
    }
