"""Inputs found to break things (issue: Hardening), from the command line: every one is a clear line or a
catalog row, never a traceback or a lost row."""
import json
import os
import time

from catalog import query
from catalog.store import Catalog

from .test_cli import assert_clean_error, run_cli


def test_a_folder_name_that_is_not_utf8_still_gets_its_failed_row(tmp_path):
    bad = os.path.join(os.fsencode(tmp_path), b"model-\xff")
    os.makedirs(bad)
    with open(os.path.join(bad, b"notes.txt"), "w") as f:
        f.write("not a model")
    cat = tmp_path / "catalog"
    proc = run_cli("scan", "-q", os.fsdecode(bad), "--catalog", str(cat))
    assert_clean_error(proc, "not a model folder")
    [(spec, status, kind)] = query.run(Catalog(cat), "SELECT spec, status, error_type FROM scans")[1]
    assert spec.endswith("model-\\xff") and (status, kind) == ("failed", "NotAModel")


def test_a_fault_of_this_program_is_an_internal_error_row(tmp_path, monkeypatch):
    """Errors that are not the project's own kinds (a bug) are recorded as InternalError with the Python type
    in the message, not as a bare AttributeError kind."""
    import scanner.scan

    from cluster.service import scan_to_row
    from scanner.config import ScanConfig

    def broken(*_a, **_k):
        raise AttributeError("'NoneType' object has no attribute 'weight'")

    monkeypatch.setattr(scanner.scan, "scan_source", broken)
    row, result, error = scan_to_row("planted:llama", None, ScanConfig())
    assert row["error_type"] == "InternalError" and row["error"].startswith("AttributeError: 'NoneType'")
    assert isinstance(error, AttributeError) and result is None


def test_a_long_models_file_shows_its_pinning_and_writes_its_failures_at_once(tmp_path):
    models = tmp_path / "models.txt"
    models.write_text("".join(f"{tmp_path}/missing-{i}\n" for i in range(3000)))
    t0 = time.time()
    proc = run_cli("batch", str(models), "--catalog", str(tmp_path / "catalog"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pinning" in proc.stderr and "3000/3000" in proc.stderr  # a bar with counts
    assert "0 scanned, 0 skipped (already in the catalog), 3000 failed" in proc.stdout
    assert query.run(Catalog(tmp_path / "catalog"), "SELECT count(*) FROM scans")[1] == [(3000,)]
    assert time.time() - t0 < 120


def test_reference_and_publish_errors_are_one_line(tmp_path):
    cat = str(tmp_path / "catalog")
    big = tmp_path / "big.csv"
    big.write_text("model,hub_id,layer,module,row,col,source\nX,org/x,99999999999,mlp.down_proj,1,2,me\n")
    assert_clean_error(run_cli("import-reference", str(big), "--catalog", cat), "line 2", "out of range")
    Catalog(cat).ensure_writable()
    out = tmp_path / "index"
    proc = run_cli("publish", str(out), "--catalog", cat, "--push-to-hub", "org/x",
                   env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_token"})
    assert proc.returncode == 1 and proc.stdout.startswith("published 0 model(s)")  # written, then not pushed
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "cannot push to org/x" in proc.stderr
    assert "hf_not_a_token" not in proc.stderr + proc.stdout  # the token is never shown
    (out / "index.json").write_text(json.dumps({"models": "not a list"}))
    assert_clean_error(run_cli("publish", str(out), "--catalog", cat), "not an index this tool wrote")
