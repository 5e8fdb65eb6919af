"""A catalog survives its own log: a log entry that is garbage, truncated, emptied or deleted, a checkpoint that
is garbage or gone. Queries answer from each table's newest readable state and name what they skipped (they
failed, or lost a scan without a word, before); `catalog check` finds each, `--repair` repairs it (the entries
set aside, never deleted; readable rows after a bad entry appended again), and delta-rs reads the tables again.
"""
import os
import shutil

import pytest

from catalog import query
from catalog.rows import ok_row
from catalog.store import Catalog
from tests.cluster.test_cli import run_cli
from tests.fixtures.synthetic import result


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Five scans, compacted (a checkpoint at version 6 of `scans`), then three more: versions 7, 8, 9."""
    root = tmp_path_factory.mktemp("log") / "cat"
    cat = Catalog(root)
    for i in range(5):
        cat.write_scan(ok_row(result(f"org/m{i}", i)))
    cat.compact()
    for i in range(5, 8):
        cat.write_scan(ok_row(result(f"org/m{i}", i)))
    return root


def _entry(root, v):
    return root / "scans" / "_delta_log" / f"{v:020d}.json"


def _checkpoint(root):
    return next((root / "scans" / "_delta_log").glob("*.checkpoint.parquet"))


CASES = {  # what is done to the `scans` log, the scans a reader sees, the scans after --repair, a warning's words
    "garbage latest entry": (lambda r: _entry(r, 9).write_text("garbage{"), 7, 7, "not JSON"),
    "truncated latest entry": (lambda r: _entry(r, 9).write_bytes(_entry(r, 9).read_bytes()[:50]), 7, 7, "not JSON"),
    "emptied latest entry": (lambda r: _entry(r, 9).write_text(""), 7, 7, "is empty"),
    "middle entry deleted": (lambda r: _entry(r, 8).unlink(), 6, 7, "missing"),
    "checkpoint garbage": (lambda r: _checkpoint(r).write_text("garbage"), 8, 8, "unreadable"),
    "checkpoint deleted": (lambda r: _checkpoint(r).unlink(), 8, 8, "is missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_log_is_read_at_its_newest_readable_state_and_repaired(made, tmp_path, case):
    from deltalake import DeltaTable

    damage, seen, repaired, words = CASES[case]
    root = shutil.copytree(made, tmp_path / "cat")
    damage(root)
    cat = Catalog(root)
    assert query.run(cat, "SELECT count(*) FROM scans")[1] == [(seen,)]
    assert any(words in w for w in cat.warnings), cat.warnings  # named, not silent
    # every view answers, whole scans only: the rows of a scan whose `scans` entry is lost are not shown
    assert query.run(cat, "SELECT count(DISTINCT scan_id) FROM candidates")[1] == [(seen,)]
    check = run_cli("catalog", "check", "--catalog", str(root))
    assert check.returncode == 1 and "problem: scans:" in check.stdout
    fixed = run_cli("catalog", "check", "--repair", "--catalog", str(root))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired: scans:" in fixed.stdout and "Traceback" not in fixed.stderr
    DeltaTable(str(root / "scans"))  # delta-rs reads it again
    again = Catalog(root)
    assert query.run(again, "SELECT count(*), count(DISTINCT scan_id) FROM scans")[1] == [(repaired, repaired)]
    assert again.warnings == []
    again.compact()  # and compaction works on it again
    assert query.run(Catalog(root), "SELECT count(*) FROM scans")[1] == [(repaired,)]
    if case.endswith("entry"):
        assert os.listdir(root / "_set_aside")  # set aside, never deleted


def test_a_deleted_latest_entry_leaves_files_check_names(made, tmp_path):
    """delta-rs reads the version before it, silently; `check` names the data file no entry names."""
    root = shutil.copytree(made, tmp_path / "cat")
    _entry(root, 9).unlink()
    assert query.run(Catalog(root), "SELECT count(*) FROM scans")[1] == [(7,)]
    check = run_cli("catalog", "check", "--catalog", str(root))
    assert "note: scans: 1 data file(s) no readable log entry names" in check.stdout
