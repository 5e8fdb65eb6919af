"""`scan --catalog`, `query`, `publish`, `import-reference` from the command line."""
import json

from catalog.rows import ok_row
from catalog.store import Catalog
from tests.fixtures.synthetic import result

from tests.scanner.helpers import planted, truth
from .test_cli import assert_clean_error, run_cli


def test_scan_into_catalog_then_query_and_publish(tmp_path):
    folder = planted("llama", tmp_path / "m")
    cat = str(tmp_path / "catalog")
    ok = run_cli("scan", "-q", str(folder), "--catalog", cat)
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("scan", "-q", str(tmp_path / "nope"), "--catalog", cat)
    assert_clean_error(bad, "no such file or directory")

    q = run_cli("query", "SELECT model, status, error_type, error FROM scans ORDER BY status", "--catalog", cat,
                "--format", "json")
    assert q.returncode == 0, q.stderr
    scans = json.loads(q.stdout)
    assert [s["status"] for s in scans] == ["failed", "ok"]
    assert scans[0]["error_type"] == "ModelNotFound" and "no such file" in scans[0]["error"]

    q = run_cli("query", "--model", str(folder), "--catalog", cat, "--format", "json")
    found = {(r["layer"], r["module"], r["row"], r["col"], r["expert"]) for r in json.loads(q.stdout)
             if r["verdict"] == "super_weight"}
    assert found == truth(folder)
    q = run_cli("query", "--layer", "1", "--architecture", "llama", "--catalog", cat, "--format", "csv")
    assert q.returncode == 0 and q.stdout.count(str(folder)) >= 1

    out = tmp_path / "index"
    p = run_cli("publish", str(out), "--catalog", cat)
    assert p.returncode == 0, p.stderr
    assert "published 1 model(s)" in p.stdout and "1 failed scan(s)" in p.stdout
    assert "[10, 20]" in (out / "index.md").read_text()


def test_import_reference_and_disagreements(tmp_path):
    cat = str(tmp_path / "catalog")
    r = run_cli("import-reference", "--catalog", cat)
    assert r.returncode == 0 and "imported 28 reference row(s)" in r.stdout
    Catalog(cat).write_scan(ok_row(result("huggyllama/llama-7b", 1, coords=[(2, 3968, 7003, "negligible")])))
    q = run_cli("query", "--disagreements", "--catalog", cat, "--format", "json")
    assert json.loads(q.stdout)[0]["disagreement"] == "published, scan says negligible"


def test_query_errors_are_one_line(tmp_path):
    cat = str(tmp_path / "catalog")
    Catalog(cat).ensure_writable()
    assert_clean_error(run_cli("query", "DELETE FROM scans", "--catalog", cat), "refused")
    assert_clean_error(run_cli("query", "SELECT nope FROM scans", "--catalog", cat), "nope")
    assert_clean_error(run_cli("query", "--catalog", cat), "give either SQL")
    assert_clean_error(run_cli("query", "SELECT 1", "--model", "x", "--catalog", cat), "give either SQL")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert_clean_error(run_cli("import-reference", str(bad), "--catalog", cat), "missing column")
    assert_clean_error(run_cli("publish", str(tmp_path / "o"), "--workers", "0", "--catalog", cat), "--workers")


def test_empty_catalog_queries_as_empty_with_a_note(tmp_path):
    q = run_cli("query", "SELECT * FROM super_weights", "--catalog", str(tmp_path / "none"))
    assert q.returncode == 0 and q.stdout.strip().endswith("(0 rows)")
    assert "does not exist yet" in q.stderr


def test_scan_refuses_an_unwritable_catalog_before_scanning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    folder = planted("llama", tmp_path / "m")
    assert_clean_error(run_cli("scan", "-q", str(folder), "--catalog", str(blocker / "cat")), "cannot write")


def test_queries_are_bounded_in_memory_and_time(tmp_path):
    """DuckDB's default memory limit is 80% of the machine and it has no time limit: a query here has both,
    as flags with safe defaults, and passing either is a one-line error."""
    Catalog(tmp_path / "c").write_scan(ok_row(result("org/a", 1)))
    slow = run_cli("query", "SELECT count(*) FROM range(20000000000)", "--catalog", str(tmp_path / "c"),
                   "--time-limit", "1")
    assert_clean_error(slow, "time limit of 1 s")
    big = run_cli("query", "SELECT list(range) AS l FROM range(300000000)", "--catalog", str(tmp_path / "c"),
                  "--memory-limit", "50MB")
    assert_clean_error(big, "memory limit of 48 MiB")
    assert run_cli("query", "SELECT 1", "--memory-limit", "5KB").returncode == 2  # refused as it is typed
