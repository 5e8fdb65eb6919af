"""Durable writes, tolerant reads, supersession, merging and concurrent writers."""
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq

from catalog import query, store
from catalog.rows import failed_row, ok_row
from catalog.synthetic import VERSION
from catalog.schema import NESTED, SCAN_COLUMNS, SCHEMA_VERSION
from catalog.store import Catalog
from catalog.synthetic import result


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
    assert scan["n_super_weights"] == sum(s["verdict"] == "super_weight" for s in r["super_weights"]) >= 1
    assert json.loads(scan["config"]) == r["config"] and r["config"]["validate"]["min_ppl_ratio"] == 1.5

    for table, order in (("super_weights", "rank"), ("spikes", "layer, row"), ("layer_profiles", "layer")):
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
    assert sw["random_ppl_ratio"] == groups[sw["group"]]["controls"]["random"]["ppl_ratio"]
    # positions and vocabulary ids are told apart: the planted byte tokenizer's id is the byte at that position
    prompt = r["prompts"][sw["prompt"]].encode()
    assert sw["token_pos"] > 0 and sw["token_id"] == prompt[sw["token_pos"]] != sw["token_pos"]


def test_failed_scan_row(cat):
    cat.write_scan(failed_row("org/missing", ValueError("no such\nrepository"), time.time() - 2, revision="main", scanner_version=VERSION))
    [s] = rows(cat, "SELECT * FROM scans")
    assert (s["status"], s["error_type"], s["error"], s["model"]) == ("failed", "ValueError", "no such repository",
                                                                     "org/missing")
    assert s["duration_s"] >= 2
    assert rows(cat, "SELECT * FROM super_weights") == []


def test_empty_catalog_queries_empty(cat):
    for view in query.VIEWS:
        assert rows(cat, f"SELECT * FROM {view}") == []


def test_atomic_file_names_and_layout(cat):
    path = cat.write_scan(ok_row(result("org/a", 1)))
    assert path.endswith(".parquet") and "/scans/bucket=" in path
    folder = os.path.dirname(path)
    assert not [f for f in os.listdir(folder) if not f.endswith(".parquet")]  # no temporary left behind
    assert pq.ParquetFile(path).schema_arrow.metadata[b"superweights.schema_version"] == str(SCHEMA_VERSION).encode()


def test_corrupt_truncated_and_empty_files_are_skipped_with_a_warning(cat, caplog):
    for i in range(3):
        cat.write_scan(ok_row(result(f"org/m{i}", i)))
    good = cat.write_scan(ok_row(result("org/victim", 9)))
    data = open(good, "rb").read()
    folder = os.path.dirname(good)
    truncated = os.path.join(folder, "0-truncated.parquet")
    open(truncated, "wb").write(data[: len(data) // 2])
    empty = os.path.join(folder, "0-empty.parquet")
    open(empty, "wb").close()
    half = os.path.join(folder, ".0-inflight.parquet.123-abc.tmp")  # a writer that has not renamed yet
    open(half, "wb").write(data[:100])
    with caplog.at_level(logging.WARNING, logger="superweights"):
        assert rows(cat, "SELECT count(*) AS n FROM scans")[0]["n"] == 4
        assert rows(cat, "SELECT count(DISTINCT scan_id) AS n FROM super_weights")[0]["n"] == 4
    text = caplog.text
    assert truncated in text and empty in text and ".tmp" not in text


def test_newer_schema_and_foreign_parquet_are_skipped(cat, caplog):
    import pyarrow as pa

    cat.write_scan(ok_row(result("org/a", 1)))
    folder = f"{cat.root}/scans/bucket=00"
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.table({"x": [1]}), f"{folder}/0-foreign.parquet")
    t = pa.table({"scan_id": ["z"]}).replace_schema_metadata({"superweights.schema_version": "99"})
    pq.write_table(t, f"{folder}/0-future.parquet")
    with caplog.at_level(logging.WARNING, logger="superweights"):
        assert rows(cat, "SELECT count(*) AS n FROM scans")[0]["n"] == 1
    assert "0-foreign.parquet" in caplog.text and "newer superweights" in caplog.text


def test_rescan_supersedes_without_deleting(cat):
    old = ok_row(result("org/a", 1, revision="r1", started=1_000_000, coords=[(1, 2, 3, "super_weight")]))
    new = ok_row(result("org/a", 2, revision="r1", started=2_000_000, coords=[(1, 2, 4, "super_weight")]))
    cat.write_scan(new)
    cat.write_scan(old)  # written later, but started earlier: still superseded
    cat.write_scan(failed_row("org/a", RuntimeError("out of memory"), 3_000_000, revision="r1", scanner_version=VERSION))
    other_version = ok_row(result("org/a", 3, revision="r1", scanner_version="0.0.9", started=500_000))
    cat.write_scan(other_version)
    cur = rows(cat, "SELECT scan_id, scanner_version FROM scans ORDER BY scanner_version")
    assert {c["scan_id"] for c in cur} == {new["scan_id"], other_version["scan_id"]}
    assert [w["col"] for w in rows(cat, "SELECT col FROM super_weights WHERE scanner_version <> '0.0.9'")] == [4]
    everything = rows(cat, "SELECT scan_id, current, status FROM scans_all")
    assert len(everything) == 4 and sum(e["current"] for e in everything) == 2
    assert len(rows(cat, "SELECT * FROM super_weights_all WHERE NOT current AND col = 3")) == 1
    [latest] = rows(cat, "SELECT scan_id FROM latest_scans")
    assert latest["scan_id"] == new["scan_id"]
    # a failure is current while nothing of that key succeeded
    cat.write_scan(failed_row("org/b", RuntimeError("x"), 1_000_000, revision="r", scanner_version=VERSION))
    assert rows(cat, "SELECT status FROM latest_scans WHERE model = 'org/b'") == [{"status": "failed"}]


def test_merging_keeps_every_scan_and_bounds_files(cat):
    n = store.FANOUT * 3
    ids = [cat.write_scan(ok_row(result("org/same-bucket", i))) for i in range(n)]
    files = cat._list(f"{cat.root}/scans")
    assert len(files) < n / 2, len(files)
    assert any(f.base_name.startswith("1-") for f in files)
    got = rows(cat, "SELECT count(*) AS n, count(DISTINCT scan_id) AS d FROM scans_all")[0]
    assert got == {"n": n, "d": n} and len(ids) == n


def _writer(location: str, worker: int, count: int) -> None:
    cat = Catalog(location)
    for i in range(count):
        cat.write_scan(ok_row(result(f"org/w{worker}-m{i % 7}", worker * 1000 + i)))


def test_eight_processes_write_fifty_scans_each(tmp_path):
    location = str(tmp_path / "catalog")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(location, w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cat = Catalog(location)
    got = rows(cat, "SELECT count(*) AS n, count(DISTINCT scan_id) AS d FROM scans_all")[0]
    assert got == {"n": 400, "d": 400}
    assert rows(cat, "SELECT count(*) AS n FROM super_weights_all")[0]["n"] == 4000
    assert cat.warnings == []


def test_file_uri_location(tmp_path):
    cat = Catalog(f"file://{tmp_path}/uri-catalog")
    assert not cat.local or cat.root == f"{tmp_path}/uri-catalog"
    cat.write_scan(ok_row(result("org/a", 1)))
    assert rows(Catalog(f"file://{tmp_path}/uri-catalog"), "SELECT count(*) AS n FROM scans")[0]["n"] == 1


def test_catalog_needs_neither_torch_nor_transformers(tmp_path):
    code = ("import sys; from catalog import store, query, publish, rows, synthetic; "
            "from catalog import cli; "
            "c = store.Catalog(sys.argv[1]); c.write_scan(rows.ok_row(synthetic.result('a/b', 1))); "
            "publish.publish(c, sys.argv[1] + '-out'); "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], check=True)


def test_object_store_path(tmp_path):
    """Any pyarrow filesystem that is not local (here fsspec's in-memory one, as S3 would be): written
    without rename, read with pyarrow, queried the same as a local catalog."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    mem = fsspec.filesystem("memory")
    remote = Catalog("/bucket/sw", filesystem=PyFileSystem(FSSpecHandler(mem)))
    local = Catalog(tmp_path / "local")
    assert not remote.local
    for cat in (remote, local):
        cat.import_reference("catalog/data/published_super_weights.csv")
        for i in range(store.FANOUT + 3):  # enough to merge
            cat.write_scan(ok_row(result("org/a" if i % 2 else "huggyllama/llama-7b", i, started=1_000_000 + i,
                                         revision="r", coords=[(2, 3968, 7003 + i, "super_weight")])))
        cat.write_scan(failed_row("org/b", RuntimeError("x"), 1_000_000, scanner_version=VERSION))
    mem.pipe("/bucket/sw/scans/bucket=00/0-broken.parquet", b"PAR1 not really")
    sqls = ["SELECT scan_id, current FROM scans_all ORDER BY scan_id", "SELECT * FROM disagreements",
            "SELECT model, status FROM latest_scans ORDER BY model", "SELECT count(*) FROM super_weights"]
    for sql in sqls:
        a, b = query.run(remote, sql), query.run(local, sql)
        assert a[0] == b[0] and len(a[1]) == len(b[1]), sql
    assert len(query.run(remote, sqls[0])[1]) == store.FANOUT + 4
    assert query.run(remote, "SELECT count(*) FROM super_weights_all")[1] == [(store.FANOUT + 3,)]
    assert any("0-broken.parquet" in w for w in remote.warnings)
    assert not [p for p in mem.find("/bucket") if not p.endswith(".parquet")]  # no temporaries left
