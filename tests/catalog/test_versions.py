"""Files of schema version 1, written by the previous release (tests/catalog/data, made by its code from a
planted Llama scan and the shipped reference file), read beside version-2 files, queried and merged."""
import json
import shutil
from pathlib import Path

import fsspec
from pyarrow.fs import FSSpecHandler, PyFileSystem

from catalog import query, store
from catalog.rows import ok_row
from catalog.store import Catalog

DATA = Path(__file__).parent / "data"
OLD_SQL = ("SELECT s.schema_version, w.token_pos, w.token_id, w.layer, w.row, w.col FROM super_weights_all w "
           "JOIN scans_all s USING (scan_id) WHERE w.verdict = 'super_weight' ORDER BY s.schema_version")


def rows(cat, sql):
    cols, data = query.run(cat, sql)
    return [dict(zip(cols, r)) for r in data]


def _with_v1_files(root: Path, fs=None) -> None:
    bucket = f"scans/bucket={store.bucket_of('planted:llama')}/0-v1.parquet"
    for name, target in (("v1-planted-llama.parquet", bucket), ("v1-reference.parquet", "reference/v1.parquet")):
        if fs is None:
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / name, root / target)
        else:
            fs.pipe(f"{root}/{target}", (DATA / name).read_bytes())


def _v2(planted_result: dict) -> dict:
    """The same planted Llama scanned by this release, named as the version-1 scan was."""
    return dict(planted_result, model="planted:llama", spec="planted:llama")


def _check(cat: Catalog) -> None:
    scans = rows(cat, "SELECT schema_version, model, config, prompts FROM scans_all ORDER BY schema_version")
    assert [s["schema_version"] for s in scans] == [1, 2] and {s["model"] for s in scans} == {"planted:llama"}
    assert json.loads(scans[0]["config"])["detect"]["spike_ratio"] == 10.0  # config_json, read as config
    old, new = rows(cat, OLD_SQL)
    assert (old["layer"], old["row"], old["col"]) == (new["layer"], new["row"], new["col"]) == (1, 10, 20)
    # version 1's token_id was the position: it reads as token_pos; the vocabulary id is not known
    assert (old["token_pos"], old["token_id"]) == (new["token_pos"], None) and new["token_id"] is not None
    prof = rows(cat, "SELECT input_token_pos, input_token_id FROM layer_profiles_all WHERE layer = 1 "
                     "ORDER BY input_token_id NULLS FIRST")
    assert prof[0]["input_token_pos"] == prof[1]["input_token_pos"] and prof[0]["input_token_id"] is None
    ref = rows(cat, "SELECT level, count(*) AS n, count(expert) AS experts FROM reference GROUP BY level")
    assert ref == [{"level": "weight", "n": 28, "experts": 0}]
    assert cat.warnings == []


def test_version_1_files_read_beside_version_2(tmp_path, planted_result):
    _with_v1_files(tmp_path / "cat")
    cat = Catalog(tmp_path / "cat")
    cat.write_scan(ok_row(_v2(planted_result)))
    _check(cat)


def test_version_1_files_through_pyarrow_and_merged(tmp_path, planted_result):
    mem = fsspec.filesystem("memory")
    remote = Catalog("/bucket/v1", filesystem=PyFileSystem(FSSpecHandler(mem)))
    _with_v1_files("/bucket/v1", mem)
    remote.write_scan(ok_row(_v2(planted_result)))
    _check(remote)
    _with_v1_files(tmp_path / "cat")
    local = Catalog(tmp_path / "cat")
    local.write_scan(ok_row(_v2(planted_result)))
    for i in range(store.FANOUT - 2):  # the bucket's level-0 files are merged into one version-2 file
        local.write_scan(ok_row(_v2(planted_result)))
    files = list((tmp_path / "cat" / "scans").rglob("*.parquet"))
    assert [f.name[:2] for f in files] == ["1-"]
    old, *new = rows(local, OLD_SQL)
    assert old["schema_version"] == 1 and old["token_pos"] == new[0]["token_pos"] and old["token_id"] is None
