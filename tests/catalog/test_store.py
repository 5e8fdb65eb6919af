"""Durable writes on Delta tables, tolerant reads, supersession, compaction and concurrent writers."""
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import query, store, views
from catalog.errors import CatalogUnavailable
from catalog.rows import failed_row, ok_row
from words.tables import NESTED, SCAN_COLUMNS, SCHEMA_VERSION
from catalog.store import Catalog
from tests.fixtures.synthetic import VERSION, result

from tests.cluster.test_cli import run_cli

from .writers import in_processes


def rows(cat, sql, params=None):
    cols, data = query.run(cat, sql, params)
    return [dict(zip(cols, r)) for r in data]


def test_round_trip_every_table(cat, planted_result):
    """One vocabulary: every column of every table is the scan result's key of the same name."""
    r = planted_result
    cat.write_scan(ok_row(r))
    [scan] = rows(cat, "SELECT * FROM scans")
    assert scan["status"] == "ok" and scan["schema_version"] == SCHEMA_VERSION
    for key in SCAN_COLUMNS:
        if key not in ("schema_version", "scan_id", "host", "started", "config", "error_type", "error"):
            assert scan[key] == r[key], key
    assert scan["started"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == r["started"]
    assert scan["n_super_weights"] == sum(s["verdict"] in ("super_weight", "super_set")
                                         for s in r["candidates"]) >= 1
    assert scan["finding"] == "super_weights" and scan["validated"] and len(scan["config_fingerprint"]) == 12
    assert json.loads(scan["config"]) == r["config"] and r["config"]["validate"]["min_ppl_ratio"] == 1.5

    for table, order in (("candidates", "rank"), ("spikes", "layer, row"), ("layer_profiles", "layer")):
        got = rows(cat, f"SELECT * FROM {table} ORDER BY {order}")
        want = sorted(r[table], key=lambda x: [x[k.strip()] for k in order.split(",")])
        assert len(got) == len(want) >= 1, table
        for g, w in zip(got, want):
            for f in NESTED[table]:
                assert g[f.name] == w[f.name], (table, f.name)
            assert g["scan_id"] == scan["scan_id"] and g["model"] == r["model"]
    sw = rows(cat, "SELECT * FROM super_weights WHERE verdict = 'super_weight'")[0]
    groups = {g["id"]: g for g in r["groups"]}
    assert sw["group_ppl_ratio"] == groups[sw["group"]]["ppl_ratio"]
    assert sw["random_ppl_ratio"] == max(c["ppl_ratio"] for c in groups[sw["group"]]["controls"]
                                         if c["kind"] in ("random", "union"))  # union: all draws together
    assert sw["ppl_ratio_lo"] <= sw["ppl_ratio"] <= sw["ppl_ratio_hi"] and sw["windows"] >= 4 and sw["decided"]
    # positions and vocabulary ids are told apart: the planted byte tokenizer's id is the byte at that position
    prompt = r["prompts"][sw["prompt"]].encode()
    assert sw["token_pos"] > 0 and sw["token_id"] == prompt[sw["token_pos"]] != sw["token_pos"]


def test_failed_scan_row(cat):
    cat.write_scan(failed_row("org/missing", ValueError("no such\nrepository"), time.time() - 2, revision="main", scanner_version=VERSION))
    [s] = rows(cat, "SELECT * FROM scans")
    assert (s["status"], s["error_type"], s["error"], s["model"]) == ("failed", "ValueError", "no such repository",
                                                                     "org/missing")
    assert s["duration_s"] >= 2
    assert rows(cat, "SELECT * FROM candidates") == []


def test_empty_catalog_queries_empty(cat):
    for view in views.views():
        assert rows(cat, f"SELECT * FROM {view}") == []


def test_four_delta_tables_and_nothing_else(cat):
    """A scan is one row of `scans` (its candidates, spikes and profiles in it); the other three tables hold
    claims, studies and comparisons."""
    from deltalake import DeltaTable

    names = {"scans", "reference", "quant_results", "lineage"}
    cat.write_scan(ok_row(result("org/a", 1)))
    for name in names:
        dt = DeltaTable(cat.uri(name))
        assert dt.metadata().description == f"superweights catalog, schema {SCHEMA_VERSION}"
    files = {str(p.relative_to(cat.root)).split("/")[0] for p in Path(cat.root).rglob("*") if p.is_file()}
    assert files == names
    assert not [p for p in Path(cat.root).rglob("*") if p.is_file() and not
                (p.suffix == ".parquet" or "_delta_log" in p.parts)]  # no temporary left behind
    assert rows(cat, "SELECT count(*) AS n FROM candidates")[0]["n"] == 10


def _data_file(cat, table: str, model: str) -> Path:
    """The data file of `table` that holds `model`'s rows (each write appends its own file; a scan's
    candidates are in its row of `scans`)."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    [scan_id] = [r["scan_id"] for r in rows(cat, "SELECT scan_id, model FROM scans") if r["model"] == model]
    for f in DeltaTable(cat.uri(table)).file_uris():
        path = Path(f.removeprefix("file://"))
        if scan_id in pq.read_table(path, columns=["scan_id"])["scan_id"].to_pylist():
            return path
    raise AssertionError("no such file")


def test_a_corrupt_page_a_link_and_a_foreign_file_block_nothing(cat, caplog, tmp_path):
    """Bit rot in one data file (its footer intact), a data file replaced by a link to a file outside the
    catalog, and a foreign file in a table's folder: queries skip them, name them, and answer."""
    for model in ("org/m0", "org/m1", "org/victim", "org/linked"):
        cat.write_scan(ok_row(result(model, 1, coords=[(1, 2, 3, "super_weight"), (4, 5, 6, "negligible")])))
    rotten = _data_file(cat, "scans", "org/victim")
    data = bytearray(rotten.read_bytes())
    for k in range(8, len(data) // 2, 7):  # the data pages, not the footer at the end
        data[k] ^= 0x5A
    rotten.write_bytes(bytes(data))
    linked = _data_file(cat, "scans", "org/linked")
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(linked.read_bytes())
    linked.unlink()
    linked.symlink_to(secret)
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({"superweights.schema_version": "3"}),
                   Path(cat.uri("scans")) / "part-00000-forged.parquet")
    with caplog.at_level(logging.WARNING, logger="superweights"):
        # the two scans in the bad files are skipped whole (a scan is one row); the foreign file is not in the log
        assert rows(cat, "SELECT count(*) AS n FROM scans")[0]["n"] == 2
        got = rows(cat, "SELECT model, count(*) AS n FROM candidates GROUP BY model ORDER BY model")
    assert got == [{"model": "org/m0", "n": 2}, {"model": "org/m1", "n": 2}]
    assert str(rotten) in caplog.text and str(linked) in caplog.text and "forged" not in caplog.text
    from catalog.publish import publish

    assert publish(cat, tmp_path / "index").models == 2  # publish too: the index of what could be read
    # `catalog check --repair` sets the two bad files aside and takes them out of the table; the foreign file,
    # which no entry names, once it is older than a writer's work in progress
    os.utime(Path(cat.uri("scans")) / "part-00000-forged.parquet", (0, 0))
    fixed = run_cli("catalog", "check", "--repair", "--catalog", str(cat.root))
    assert fixed.returncode == 0 and "2 unreadable data file(s) set aside" in fixed.stdout, fixed.stdout + fixed.stderr
    assert "1 data file(s) no entry names set aside" in fixed.stdout
    assert fixed.stdout.rstrip().endswith("sound")
    again = Catalog(cat.root)
    assert rows(again, "SELECT count(*) AS n FROM scans")[0]["n"] == 2 and again.warnings == []
    assert secret.exists() and len(list((Path(cat.root) / "_set_aside").rglob("*.parquet"))) == 3


def test_a_table_of_a_newer_schema_is_refused_in_one_line(cat):
    from deltalake import DeltaTable

    cat.write_scan(ok_row(result("org/a", 1)))
    DeltaTable.create(cat.uri("lineage") + "-new", schema=pa.schema([("x", pa.int64())]),
                      description="superweights catalog, schema 99")
    os.rename(cat.uri("lineage"), cat.uri("lineage") + "-old")
    os.rename(cat.uri("lineage") + "-new", cat.uri("lineage"))
    with pytest.raises(CatalogUnavailable, match="newer superweights"):
        rows(Catalog(cat.root), "SELECT 1")


def test_rescan_supersedes_without_deleting(cat):
    old = ok_row(result("org/a", 1, revision="r1", started=1_000_000, coords=[(1, 2, 3, "super_weight")]))
    new = ok_row(result("org/a", 2, revision="r1", started=2_000_000, coords=[(1, 2, 4, "super_weight")]))
    cat.write_scan(new)
    cat.write_scan(old)  # written later, but started earlier: still superseded
    cat.write_scan(failed_row("org/a", RuntimeError("out of memory"), 3_000_000, revision="r1", scanner_version=VERSION,
                              config_fingerprint="synthetic000"))  # the same configuration as the scans above
    other_version = ok_row(result("org/a", 3, revision="r1", scanner_version="0.0.9", started=500_000))
    cat.write_scan(other_version)
    cur = rows(cat, "SELECT scan_id, scanner_version FROM scans ORDER BY scanner_version")
    assert {c["scan_id"] for c in cur} == {new["scan_id"], other_version["scan_id"]}
    assert [w["col"] for w in rows(cat, "SELECT col FROM candidates WHERE scanner_version <> '0.0.9'")] == [4]
    everything = rows(cat, "SELECT scan_id, current, status FROM scans_all")
    assert len(everything) == 4 and sum(e["current"] for e in everything) == 2
    assert len(rows(cat, "SELECT * FROM candidates_all WHERE NOT current AND col = 3")) == 1
    [latest] = rows(cat, "SELECT scan_id FROM latest_scans")
    assert latest["scan_id"] == new["scan_id"]
    # a failure is current while nothing of that key succeeded
    cat.write_scan(failed_row("org/b", RuntimeError("x"), 1_000_000, revision="r", scanner_version=VERSION))
    assert rows(cat, "SELECT status FROM latest_scans WHERE model = 'org/b'") == [{"status": "failed"}]


def test_compaction_keeps_every_scan_and_bounds_files(cat, monkeypatch):
    from deltalake import DeltaTable

    n = 12
    ids = [cat.write_scan(ok_row(result("org/same", i))) for i in range(n)]
    assert len(DeltaTable(cat.uri("scans")).file_uris()) == n  # writers never compact (see Catalog.compact)
    cat.compact()  # a week's retention: merged, nothing a recent snapshot reads deleted
    assert len(DeltaTable(cat.uri("scans")).file_uris()) == 1
    got = rows(cat, "SELECT count(*) AS n, count(DISTINCT scan_id) AS d FROM scans_all")[0]
    assert got == {"n": n, "d": n} and len(set(ids)) == n
    assert rows(cat, "SELECT count(*) AS n FROM candidates_all")[0]["n"] == 10 * n
    cat.compact(retention_hours=0, force=True)  # and by hand (nothing else at work): one file per table
    assert len(DeltaTable(cat.uri("scans")).file_uris()) == 1
    assert len(list(Path(cat.uri("scans")).glob("*.parquet"))) == 1
    assert rows(cat, "SELECT count(*) AS n FROM candidates_all")[0]["n"] == 10 * n


def test_eight_processes_write_twenty_five_scans_each(tmp_path):
    location = str(tmp_path / "catalog")
    in_processes(location, 8, 25)
    cat = Catalog(location)
    got = rows(cat, "SELECT count(*) AS n, count(DISTINCT scan_id) AS d FROM scans_all")[0]
    assert got == {"n": 200, "d": 200}
    assert rows(cat, "SELECT count(*) AS n FROM candidates_all")[0]["n"] == 2000
    assert cat.warnings == []


def test_file_uri_location(tmp_path):
    cat = Catalog(f"file://{tmp_path}/uri-catalog")
    assert not cat.local or cat.root == f"{tmp_path}/uri-catalog"
    cat.write_scan(ok_row(result("org/a", 1)))
    assert rows(Catalog(f"file://{tmp_path}/uri-catalog"), "SELECT count(*) AS n FROM scans")[0]["n"] == 1


def test_catalog_needs_neither_torch_nor_transformers(tmp_path):
    code = ("import sys; from catalog import store, query, publish, rows; from tests.fixtures import synthetic; "
            "from catalog import cli; "
            "c = store.Catalog(sys.argv[1]); c.write_scan(rows.ok_row(synthetic.result('a/b', 1))); "
            "publish.publish(c, sys.argv[1] + '-out'); "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], check=True, cwd=Path(__file__).parents[2])


def test_a_catalog_of_schema_3_is_read_and_takes_schema_4_rows(tmp_path, planted_result):
    """Delta tables written by this release's first schema (tests/catalog/data/v3-catalog): read with the new
    columns empty, extended on the first write, both kinds of row queried together."""
    import shutil

    from deltalake import DeltaTable

    shutil.copytree(Path(__file__).parent / "data" / "v3-catalog", tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    old = rows(cat, "SELECT model, finding, config_fingerprint, ppl_base FROM scans ORDER BY model")
    assert [(r["model"], r["finding"], r["config_fingerprint"]) for r in old] == \
        [("huggyllama/llama-7b", None, None), ("planted:llama", None, None)]
    cat.write_scan(ok_row(planted_result))
    assert DeltaTable(cat.uri("scans")).metadata().description == f"superweights catalog, schema {SCHEMA_VERSION}"
    got = rows(cat, "SELECT count(*) AS n, count(finding) AS f, count(ppl_base) AS p FROM scans_all")
    assert got == [{"n": 3, "f": 1, "p": 3}]
    sw = rows(cat, "SELECT count(*) AS n, count(ppl_ratio_lo) AS lo FROM candidates_all")[0]
    assert sw["n"] > sw["lo"] >= 1


def test_a_catalog_of_schema_4_is_read_under_schema_5_names_and_keeps_its_folders(tmp_path, planted_result):
    """Delta tables written by the release before the vocabulary (tests/catalog/data/v4-catalog: every candidate
    in `super_weights/`, spikes of kind `super_activation`): read as `candidates`, `super_weights` is the
    catastrophic view, spike kinds shown with today's name; rows a killed writer left there are in no relation a
    query holds, raw or not; a new scan is one row of `scans`, the old tables only read."""
    import shutil

    from deltalake import DeltaTable, write_deltalake

    shutil.copytree(Path(__file__).parent / "data" / "v4-catalog", tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    # a writer of schema 4 killed between its commits: candidate rows whose scan never came
    orphan = DeltaTable(cat.uri("candidates")).to_pyarrow_table().slice(0, 1)
    write_deltalake(cat.uri("candidates"), orphan.set_column(0, "scan_id", pa.array(["never-committed"])),
                    mode="append")
    assert query.run(cat, "SELECT count(*) FROM _candidates WHERE scan_id = 'never-committed'")[1] == [(0,)]
    every = rows(cat, "SELECT verdict FROM candidates WHERE model = 'org/v4-model' ORDER BY layer, col")
    assert [r["verdict"] for r in every] == ["super_weight", "super_set", "mild", "negligible", "unvalidated"]
    top = rows(cat, "SELECT layer, row, col, verdict FROM super_weights ORDER BY col")
    assert [(r["layer"], r["row"], r["col"], r["verdict"]) for r in top] == \
        [(2, 100, 300, "super_weight"), (2, 100, 301, "super_set")]
    assert {r["kind"] for r in rows(cat, "SELECT DISTINCT kind FROM spikes")} == {"massive"}
    assert rows(cat, "SELECT model, status FROM scans WHERE status = 'failed'") == \
        [{"model": "org/v4-broken", "status": "failed"}]
    cat.write_scan(ok_row(planted_result))  # one row of `scans`, its lists in it; the old tables only read
    assert not (tmp_path / "cat" / "candidates").exists()
    assert DeltaTable(cat.uri("scans")).metadata().description == f"superweights catalog, schema {SCHEMA_VERSION}"
    again = Catalog(tmp_path / "cat")
    assert rows(again, "SELECT count(DISTINCT scan_id) AS n FROM candidates")[0]["n"] == 2
    assert {r["model"] for r in rows(again, "SELECT model FROM super_weights")} == {"org/v4-model", planted_result["model"]}
    assert {r["kind"] for r in rows(again, "SELECT DISTINCT kind FROM spikes_all")} <= {"massive", "cancellation"}


def test_a_file_of_other_column_types_is_skipped_named_and_its_scan_marked_incomplete(tmp_path, caplog):
    """A commit naming a data file whose columns have other types than the table's (a list where text is
    due) failed every query and publish; now it is skipped and named like an unreadable one. In a catalog of
    schema 4, whose candidates are a table of their own, the scan is then incomplete: the index says so rather
    than drawing a verdict (`none`) from the rows that are missing. In schema 5 a scan is one row: skipped
    whole."""
    import json
    import shutil

    shutil.copytree(Path(__file__).parent / "data" / "v4-catalog", tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    from deltalake import DeltaTable

    [victim] = [Path(u.removeprefix("file://")) for u in DeltaTable(cat.uri("candidates")).file_uris()]
    t = pq.read_table(victim)
    t = t.set_column(t.schema.get_field_index("module"), "module", pa.array([[1, 2]] * len(t), pa.list_(pa.int64())))
    pq.write_table(t, victim)
    cat.write_scan(ok_row(result("org/kept", 1, coords=[(1, 2, 3, "super_weight"), (4, 5, 6, "negligible")])))
    with caplog.at_level(logging.WARNING, logger="superweights"):
        got = rows(cat, "SELECT model, count(module) AS n FROM candidates GROUP BY model")
    assert got == [{"model": "org/kept", "n": 2}] and str(victim) in caplog.text
    from catalog.publish import publish

    publish(cat, tmp_path / "index")
    index = json.loads((tmp_path / "index" / "index.json").read_text())
    by_model = {m["model"]: m for m in index["models"]}
    assert by_model["org/v4-model"]["incomplete"] is True and by_model["org/kept"]["incomplete"] is False
    csv_rows = (tmp_path / "index" / "index.csv").read_text().splitlines()
    assert any(r.startswith("org/v4-model,") and ",incomplete," in r for r in csv_rows)
    assert not any(r.startswith("org/v4-model,") and ",none," in r for r in csv_rows)
    md = (tmp_path / "index" / "index.md").read_text()
    assert "## Incomplete" in md and "org/v4-model" in md.split("## Incomplete")[1].split("##")[0]
    # schema 5: the new scan's row, with a list where its architecture's text is due, is skipped whole and named
    newer = _data_file(cat, "scans", "org/kept")
    t = pq.read_table(newer)
    t = t.set_column(t.schema.get_field_index("architecture"), "architecture", pa.array([[1]] * len(t)))
    pq.write_table(t, newer)
    again = Catalog(tmp_path / "cat")
    assert {r["model"] for r in rows(again, "SELECT model, architecture FROM scans")} == {"org/v4-model",
                                                                                      "org/v4-broken"}
    assert any(str(newer) in w for w in again.warnings)
