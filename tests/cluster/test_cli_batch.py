"""`batch`, `submit`, `status`, `logs`: user mistakes are one line, before Ray starts."""
from .test_cli import assert_clean_error, run_cli


def test_batch_input_errors(tmp_path):
    assert_clean_error(run_cli("batch", str(tmp_path / "missing.txt"), "--catalog", str(tmp_path / "c")),
                       "cannot read")
    bad = tmp_path / "models.txt"
    bad.write_text("org/a\norg/b colour=red\n")
    assert_clean_error(run_cli("batch", str(bad), "--catalog", str(tmp_path / "c")), "line 2", "colour=red")
    bad.write_text("org/a\n")
    assert_clean_error(run_cli("batch", str(bad), "--workers", "0"), "--workers")
    assert_clean_error(run_cli("batch", str(bad), "--timeout", "-5"), "--timeout")
    assert_clean_error(run_cli("submit", str(tmp_path / "missing.txt"), "--catalog", "s3://b/c"), "cannot read")


def test_default_models_file_is_shipped():
    from cluster.models import read
    from cluster.cli_batch import default_models_file

    names = [e.spec for e in read(default_models_file())]
    assert names[:2] == ["pkg:smollm2-135m", "pkg:gemma3-270m"] and all(n.startswith(("pkg:", "planted:"))
                                                                        for n in names)
