"""The layout's one rule, kept: scanner and catalog import neither each other nor cluster, words imports none
of them (and all may import words), and no module of the four packages is in an import circle. The checker is proved able to fail on a copy of the tree
with a forbidden import, and a circle, added in temporary modules."""
import shutil
from pathlib import Path

from tests.layering import circles, graph, violations

ROOT = Path(__file__).resolve().parents[1]


def test_imports_run_one_way():
    g = graph(ROOT)
    assert {"scanner.scan", "catalog.store", "cluster.cli"} <= set(g)  # it sees the packages
    assert "catalog.rows" in g["cluster.service"] and "scanner.config" in g["cluster.service"]
    # the shared words are what both sides read their vocabulary from
    assert "words.verdicts" in g["scanner.measure.validate"] and "words.verdicts" in g["catalog.views"]
    assert "words.tables" in g["catalog.store"] and not any(d.split(".")[0] != "words" for d in g["words.tables"])
    assert violations(g) == []
    assert circles(g) == []


def test_the_checker_fails_on_a_forbidden_import_and_a_circle(tmp_path):
    for pkg in ("words", "scanner", "catalog", "cluster"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "data"))
    assert violations(graph(tmp_path)) == [] and circles(graph(tmp_path)) == []
    (tmp_path / "scanner" / "tmp_report.py").write_text("def f():\n    from catalog.rows import ok_row\n")
    (tmp_path / "catalog" / "tmp_uses_scanner.py").write_text("import scanner.config\n")
    (tmp_path / "catalog" / "tmp_uses_words.py").write_text("from words import verdicts\n")  # allowed
    (tmp_path / "words" / "tmp_uses_catalog.py").write_text("from catalog.views import VIEWS\n")
    assert violations(graph(tmp_path)) == ["catalog.tmp_uses_scanner imports scanner.config",
                                           "scanner.tmp_report imports catalog.rows",
                                           "words.tmp_uses_catalog imports catalog.views"]
    (tmp_path / "scanner" / "tmp_a.py").write_text("from . import tmp_b\n")
    (tmp_path / "scanner" / "tmp_b.py").write_text("def g():\n    from .tmp_a import x\n")
    assert circles(graph(tmp_path)) == [["scanner.tmp_a", "scanner.tmp_b", "scanner.tmp_a"]]
