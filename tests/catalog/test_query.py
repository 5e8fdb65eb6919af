"""Read-only SQL, short forms, output formats, reference rows and the disagreement query."""
import json

import pytest

from catalog import query
from catalog.errors import BadReference, QueryError
from catalog.rows import ok_row
from catalog.synthetic import result

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
                                                                               (2, 10, 21, "partner")])))
    cat.write_scan(ok_row(result("org/llama-b", 1, architecture="llama", coords=[(1, 5, 6, "super_weight")])))
    cat.write_scan(ok_row(result("org/mistral", 1, architecture="mistral", coords=[(2, 7, 8, "super_weight"),
                                                                                 (9, 1, 1, "negligible")])))


def test_short_forms(cat):
    _fill(cat)
    cols, data = query.run(cat, *query.model_sql("org/llama-a"))
    got = [dict(zip(cols, r)) for r in data]
    assert [(g["layer"], g["row"], g["col"], g["verdict"]) for g in got] == [(2, 10, 20, "super_weight"),
                                                                            (2, 10, 21, "partner")]
    cols, data = query.run(cat, *query.where_sql(2, None))
    assert sorted({r[cols.index("model")] for r in data}) == ["org/llama-a", "org/mistral"]
    cols, data = query.run(cat, *query.where_sql(None, "llama"))
    assert sorted({r[cols.index("model")] for r in data}) == ["org/llama-a", "org/llama-b"]
    cols, data = query.run(cat, *query.where_sql(2, "llama"))
    assert {r[cols.index("model")] for r in data} == {"org/llama-a"}
    # parameters are bound, not pasted: a quote in a model id is just a character
    assert query.run(cat, *query.model_sql("x' OR '1'='1"))[1] == []


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
    cols, data = query.run(cat, query.DISAGREEMENTS_SQL)
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
