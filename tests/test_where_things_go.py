"""The README's "where things go", held true: a verdict tier, a catalog table and a top-level scan option are
each one edit of one file. The first two are made on a copy of the tree (one file changed) and exercised
end to end in a fresh process; the scan option is in tests/scanner/test_config.py."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for pkg in ("words", "scanner", "catalog", "cluster"):
        shutil.copytree(ROOT / pkg, tree / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "tests").mkdir()
    (tree / "tests" / "__init__.py").write_text("")
    shutil.copytree(ROOT / "tests" / "fixtures", tree / "tests" / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def _edit(path: Path, anchor: str, added: str) -> None:
    text = path.read_text()
    assert text.count(anchor) == 1, anchor
    path.write_text(text.replace(anchor, anchor + added))


def _run(tree: Path, code: str, *args) -> str:
    """`code` in a fresh process on the tree, with a Catalog `cat` at the first argument."""
    code = "import sys\nfrom catalog import query\nfrom catalog.store import Catalog\ncat = Catalog(sys.argv[1])\n" + code
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=tree, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "HOME": str(tree)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_new_verdict_tier_is_one_entry_of_words_verdicts(tmp_path):
    tree = _copy(tmp_path)
    _edit(tree / "words" / "verdicts.py", '"is not catastrophic"),\n',
          '    Tier("fragile", True, True, "a tier added by the test: catastrophic, and it matters"),\n')
    code = """
from catalog.rows import ok_row
from catalog import publish
from cluster.protect import protect_list
from tests.fixtures.synthetic import result
cat.write_scan(ok_row(dict(result("org/m", 1, architecture="llama", coords=[(2, 5, 6, "fragile"), (3, 1, 2, "negligible")]))))
print(query.run(cat, "SELECT layer, verdict FROM super_weights")[1])
print(query.run(cat, "SELECT n_super_weights, finding FROM scans")[1])
print([w["verdict"] for w in protect_list(cat, "org/m")["weights"]])
publish.publish(cat, sys.argv[1] + "-index", workers=1)
"""
    out = _run(tree, code, tmp_path / "cat").splitlines()
    assert out[:3] == ["[(2, 'fragile')]", "[(1, 'super_weights')]", "['fragile']"]
    index = (tmp_path / "cat-index" / "index.md").read_text()
    table = index.split("## Super weights")[1].split("\n\n")[1]
    assert "| fragile |" in table and "fragile: a tier added by the test" in index


def test_a_new_catalog_table_is_one_entry_of_words_tables(tmp_path):
    tree = _copy(tmp_path)
    _edit(tree / "words" / "tables.py", '    "lineage": Table(LINEAGE, "comparison of two scans"),\n',
          '    "notes": Table(pa.schema([("model", _str), ("note", _str)]), "note on a model"),\n')
    code = """
from catalog.cli import QUERY
cat.write("notes", [{"model": "org/m", "note": "hello"}])
print(query.run(Catalog(sys.argv[1]), "SELECT model, note FROM notes")[1])
print("notes" in QUERY)
"""
    assert _run(tree, code, tmp_path / "cat").splitlines() == ["[('org/m', 'hello')]", "True"]
    assert (tmp_path / "cat" / "notes" / "_delta_log").is_dir()
