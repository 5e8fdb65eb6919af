"""`superweights catalog migrate`: catalogs of superweights 0.1 (one Parquet file per scan; schema versions 1
and 2, as tests/catalog/data holds them, written by that release's own code) into Delta tables."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from catalog import query
from catalog.errors import CatalogUnavailable
from catalog.legacy import migrate
from catalog.store import Catalog
from tests.cluster.test_cli import assert_clean_error, run_cli

DATA = Path(__file__).parent / "data"


def rows(cat, sql):
    cols, data = query.run(cat, sql)
    return [dict(zip(cols, r)) for r in data]


def _old_catalog(tmp_path) -> Path:
    """The version-2 catalog (a planted Llama scan, a failed scan, five synthetic ones, four of them merged,
    the three reference files), with the version-1 planted Llama scan and reference file added."""
    old = tmp_path / "old"
    shutil.copytree(DATA / "v2-catalog", old)
    shutil.copy(DATA / "v1-planted-llama.parquet", old / "scans" / "bucket=03" / "0-v1.parquet")
    shutil.copy(DATA / "v1-reference.parquet", old / "reference" / "v1.parquet")
    (old / "scans" / "bucket=03" / "0-truncated.parquet").write_bytes(b"PAR1 not really")
    return old


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_a_catalog_of_the_previous_release_is_migrated_whole(tmp_path):
    old = _old_catalog(tmp_path)
    before = _digest(old)
    new = Catalog(tmp_path / "new")
    scans, refs, skipped = migrate(str(old), new)
    assert (scans, refs) == (8, 57 + 28) and len(skipped) == 1 and "0-truncated.parquet" in skipped[0]
    assert _digest(old) == before  # only read
    got = rows(new, "SELECT schema_version, model, status, config FROM scans_all ORDER BY schema_version, model")
    assert [(r["schema_version"], r["model"], r["status"]) for r in got][:2] == \
        [(1, "planted:llama", "ok"), (2, "huggyllama/llama-7b", "ok")]
    assert len(got) == 8 and json.loads(got[0]["config"])["detect"]["spike_ratio"] == 10.0  # v1's config_json
    # version 1's token_id was a position: it is token_pos now, and the vocabulary id unknown
    old_sw, new_sw = rows(new, "SELECT s.schema_version, w.token_pos, w.token_id, w.layer, w.row, w.col FROM "
                               "super_weights_all w JOIN scans_all s USING (scan_id) WHERE s.model = 'planted:llama' "
                               "AND w.verdict = 'super_weight' ORDER BY s.schema_version")
    assert (old_sw["layer"], old_sw["row"], old_sw["col"]) == (new_sw["layer"], new_sw["row"], new_sw["col"]) == (1, 10, 20)
    assert old_sw["token_pos"] == new_sw["token_pos"] and old_sw["token_id"] is None and new_sw["token_id"] is not None
    assert rows(new, "SELECT count(*) AS n FROM scans WHERE status = 'failed'") == [{"n": 1}]
    ref = rows(new, "SELECT level, count(*) AS n FROM reference GROUP BY level ORDER BY level")
    assert ref == [{"level": "channel", "n": 26}, {"level": "weight", "n": 31}]  # the v1 import superseded by v2's
    with pytest.raises(CatalogUnavailable, match="already holds a catalog"):
        migrate(str(old), new)


def test_the_old_layout_is_named_and_migrated_from_the_command_line(tmp_path):
    old = _old_catalog(tmp_path)
    assert_clean_error(run_cli("query", "SELECT 1", "--catalog", str(old)), "superweights 0.1", "catalog migrate")
    assert_clean_error(run_cli("scan", "-q", "planted:llama", "--catalog", str(old)), "catalog migrate")
    p = run_cli("catalog", "migrate", str(old), str(tmp_path / "new"))
    assert p.returncode == 0, p.stderr
    assert "migrated 8 scan(s)" in p.stdout and "0-truncated.parquet" in p.stderr
    q = run_cli("query", "SELECT count(*) AS n FROM scans_all", "--catalog", str(tmp_path / "new"), "--format", "json")
    assert json.loads(q.stdout) == [{"n": 8}]
    assert_clean_error(run_cli("catalog", "migrate", str(tmp_path / "new"), str(tmp_path / "x")), "not a catalog of")


def test_a_killed_migration_is_resumed(tmp_path, monkeypatch):
    """A migration killed after its first commit leaves whole scans only (a scan is one row) and its marker;
    run again, it writes only the missing scans and the reference, and every scan is there once. Another
    catalog's contents are still refused."""
    import catalog.legacy as legacy
    import catalog.store as store

    old = _old_catalog(tmp_path)
    target = Catalog(tmp_path / "new")
    real, calls = store.Catalog.write_scans, []

    def dies_after_one(self, scans):
        if calls:
            raise KeyboardInterrupt  # killed
        calls.append(len(scans))
        return real(self, scans)  # the first commit: three whole scans

    monkeypatch.setattr(legacy, "CHUNK", 3)
    monkeypatch.setattr(store.Catalog, "write_scans", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        migrate(str(old), target)
    monkeypatch.undo()
    half = Catalog(tmp_path / "new")
    assert rows(half, "SELECT count(*) AS n FROM scans_all") == [{"n": 3}]
    from deltalake import DeltaTable

    raw = DeltaTable(half.uri("scans")).to_pyarrow_table()  # another engine, around the views: whole scans
    assert len(raw) == 3 and all(p for p in raw["layer_profiles"].to_pylist())
    assert (tmp_path / "new" / "_migrating_from").exists()
    scans, refs, _ = migrate(str(old), Catalog(tmp_path / "new"))
    done = Catalog(tmp_path / "new")
    assert rows(done, "SELECT count(*) AS n, count(DISTINCT scan_id) AS d FROM scans_all") == [{"n": 8, "d": 8}]
    migrate(str(old), Catalog(tmp_path / "clean"))  # the same migration, never killed
    assert rows(done, "SELECT count(*) AS n FROM reference") == rows(Catalog(tmp_path / "clean"),
                                                                  "SELECT count(*) AS n FROM reference")
    assert refs > 0
    assert not (tmp_path / "new" / "_migrating_from").exists()
    with pytest.raises(CatalogUnavailable, match="already holds a catalog"):
        migrate(str(old), Catalog(tmp_path / "new"))
