"""How the hub tests run the command against the server, read a catalog, and the token they hand it."""
from catalog import query
from catalog.store import Catalog
from tests.cluster.test_cli import run_cli

SECRET = "hf_" + "s3cr3t" * 6


def rows(cat, sql):
    cols, values = query.run(Catalog(cat), sql)
    return [dict(zip(cols, v)) for v in values]


def batch(hub, tmp_path, lines, cat, *extra, ray=False, home=None):
    """Local worker processes unless `ray`: the hub is the same to both, and Ray takes ~10 s to start. `home`:
    the Hugging Face cache's home (default: the module's)."""
    models = tmp_path / "models.txt"
    models.write_text("\n".join(lines) + "\n")
    env = {**hub.env(home or tmp_path.parent / "hf-home"), "HF_TOKEN": SECRET}
    done = run_cli("batch", str(models), "--catalog", cat, "-q", "--workers", "2", *([] if ray else ["--local"]),
                   *extra, env=env)
    assert SECRET not in done.stdout + done.stderr
    return done
