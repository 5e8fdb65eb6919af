"""`query` cannot change the catalog or reach any file: the database refuses it (external access disabled
before the user's SQL runs), not only the statement check; a fuzzed list of statements leaves every file
of the catalog and of the working folder as it was."""
import hashlib
import itertools
from pathlib import Path

import duckdb
import pytest

from catalog import query
from catalog.errors import QueryError
from catalog.rows import ok_row
from catalog.snapshot import Snapshot
from catalog.store import Catalog
from tests.fixtures.synthetic import result
from tests.cluster.test_cli import assert_clean_error, run_cli


def digest(*folders: Path) -> dict:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture
def shared(tmp_path):
    """A team's catalog, and the working folder of someone who queries it (with DuckDB's default temp
    folder holding a private file)."""
    cat = Catalog(tmp_path / "catalog")
    for i in range(3):
        cat.write_scan(ok_row(result(f"org/m{i}", i)))
    work = tmp_path / "work"
    (work / ".tmp").mkdir(parents=True)
    (work / ".tmp" / "private.txt").write_text("the secret")
    return cat, work


def attacks(c: str) -> list[str]:
    """Writes and reads found by trying (issue: Hardening), as they would be typed against catalog `c`."""
    return [
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS a, 'x' AS p) TO '{c}/scans' (FORMAT parquet, PARTITION_BY (p), OVERWRITE)",
        f"EXPLAIN ANALYZE COPY (SELECT 42 AS junk) TO '{c}/scans/part-00000-x.parquet'",
        f"EXPLAIN (ANALYZE) COPY (SELECT 42 AS junk) TO '{c}/candidates/junk.parquet'",
        f"COPY (SELECT * FROM scans) TO '{c}/scans/forged.parquet' (KV_METADATA {{'superweights.schema_version': '3'}})",
        "SELECT * FROM read_text('.tmp/private.txt')",
        "EXPLAIN ANALYZE SELECT * FROM read_text('.tmp/private.txt')",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '.tmp/x.csv'",
        f"SELECT * FROM read_parquet('{c}/scans/*.parquet')",
        f"SELECT * FROM glob('{c}/**')",
    ]


def test_the_writes_found_are_refused_and_change_nothing(shared):
    cat, work = shared
    before = digest(Path(cat.root), work)
    for sql in attacks(cat.root):
        proc = run_cli("query", sql, "--catalog", cat.root, cwd=work)
        assert_clean_error(proc)
        assert "secret" not in proc.stdout + proc.stderr, sql
    assert digest(Path(cat.root), work) == before
    assert query.run(cat, "SELECT count(*) FROM scans")[1] == [(3,)]


def test_the_database_itself_refuses_them(shared, monkeypatch):
    """Past the statement check: the sealed connection refuses every file access by itself."""
    cat, work = shared
    monkeypatch.chdir(work)
    con = query.connect(Snapshot(cat))
    try:
        for sql in attacks(cat.root) + [f"COPY scans TO '{cat.root}/x.csv'", f"ATTACH '{cat.root}/x.db'",
                                         "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access = true",
                                         f"EXPORT DATABASE '{work}/dump'"]:
            with pytest.raises(duckdb.Error):
                con.execute(sql).fetchall()
    finally:
        con.close()
    assert not (work / "dump").exists() and not (work / ".tmp" / "x.csv").exists()


def test_no_folder_but_the_catalog(tmp_path):
    """`--catalog /` reads no file of the disk; a catalog named with glob characters reads itself only."""
    proc = run_cli("query", "SELECT * FROM read_text('/etc/hostname')", "--catalog", "/")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("superweights: error: Permission Error")
    q = run_cli("query", "SELECT count(*) AS n FROM scans", "--catalog", "/", "--format", "csv")
    assert q.returncode == 0 and q.stdout.split() == ["n", "0"]
    other = Catalog(tmp_path / "cat1")
    other.write_scan(ok_row(result("org/other", 1)))
    proc = run_cli("query", "SELECT model FROM scans", "--catalog", str(tmp_path / "cat[1]"))
    assert_clean_error(proc, "cannot use", "[ ]")  # never another folder's scans


def test_catalog_paths_are_taken_literally_or_refused(tmp_path):
    """A '%42' in a path is not 'B' (delta-rs would decode it, and read or write the folder next to it); an
    empty location is not the default catalog; '/' holds no tables, and says so."""
    beside = Catalog(tmp_path / "pct" / "ddB")
    beside.write_scan(ok_row(result("org/beside", 1)))
    before = sorted(p.name for p in (tmp_path / "pct" / "ddB" / "scans" / "_delta_log").iterdir())
    for argv in (("query", "SELECT model FROM scans"), ("scan", "planted:llama", "--no-validate")):
        proc = run_cli(*argv, "--catalog", str(tmp_path / "pct" / "dd%42"))
        assert_clean_error(proc, "cannot use", "%")
    assert sorted(p.name for p in (tmp_path / "pct" / "ddB" / "scans" / "_delta_log").iterdir()) == before
    assert not (tmp_path / "pct" / "dd%42").exists()
    assert_clean_error(run_cli("query", "SELECT 1", "--catalog", ""), "catalog location is empty")
    q = run_cli("query", "SELECT count(*) AS n FROM scans", "--catalog", "/", "--format", "csv")
    assert "holds no catalog tables" in q.stderr and "does not exist" not in q.stderr


WRAPPERS = [
    "{}", "EXPLAIN {}", "EXPLAIN ANALYZE {}", "EXPLAIN (ANALYZE) {}", "/* comment */ {}", "-- c\n{}",
    "WITH x AS (SELECT 1) {}", "SELECT 1; {}", "{}; SELECT 1",
]
PAYLOADS = [
    "COPY (SELECT 1) TO '{f}'", "COPY scans TO '{f}' (FORMAT parquet)", "EXPORT DATABASE '{d}'",
    "ATTACH '{d}.db' AS x", "CREATE TABLE t AS SELECT 1", "INSERT INTO scans SELECT * FROM scans",
    "DELETE FROM scans", "UPDATE scans SET model = 'x'", "DROP VIEW scans", "CREATE OR REPLACE VIEW scans AS SELECT 1",
    "SET threads = 1", "RESET threads", "PRAGMA enable_profiling", "INSTALL httpfs", "LOAD httpfs",
    "CALL pragma_version()", "CHECKPOINT", "SELECT * FROM read_text('{f}')", "SELECT * FROM read_blob('{f}')",
    "SELECT * FROM read_csv('{f}')", "SELECT * FROM read_parquet('{c}/scans/*.parquet')",
    "SELECT * FROM parquet_metadata('{c}/scans/*.parquet')", "SELECT * FROM glob('{c}/*')",
    "SELECT * FROM duckdb_settings()", "SELECT 'COPY (SELECT 1) TO ''{f}''' AS s",
    "SELECT * FROM query('COPY (SELECT 1) TO ''{f}''')", "SELECT * FROM sniff_csv('{f}')",
    "COPY (SELECT 1) TO '{c}/scans/_delta_log/00000000000000000999.json' (FORMAT csv)",
]


def test_fuzzed_statements_change_no_file(shared, monkeypatch):
    cat, work = shared
    monkeypatch.chdir(work)
    (work / "victim.txt").write_text("keep me")
    before = digest(Path(cat.root), work)
    ran = refused = 0
    for wrap, payload in itertools.product(WRAPPERS, PAYLOADS):
        sql = wrap.format(payload.format(f=work / "victim.txt", d=work / "dump", c=cat.root))
        try:
            query.run(cat, sql)
            ran += 1
        except QueryError:
            refused += 1
    assert refused > 0 and ran > 0  # harmless reads (version, settings, a string) do run
    assert digest(Path(cat.root), work) == before
    assert query.run(cat, "SELECT count(*) FROM scans_all")[1] == [(3,)]
