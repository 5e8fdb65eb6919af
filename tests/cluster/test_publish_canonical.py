"""An index shows each model's scan made with the canonical configuration (the default, or `publish --config`):
a one-off experiment with other settings never replaces a published verdict (it did: `--catastrophic-ratio
100000` then `publish` turned planted:llama's super weight `mild`, and the changelog did not say why). Other
configurations are listed apart with what they change; when the canonical one changes, the changelog says so."""
import json

from tests.cluster.test_cli import run_cli


def test_a_one_off_experiment_does_not_change_the_published_verdict(tmp_path):
    cat, idx = str(tmp_path / "cat"), str(tmp_path / "idx")
    assert run_cli("scan", "planted:llama", "-q", "--catalog", cat).returncode == 0
    assert run_cli("publish", idx, "--catalog", cat).returncode == 0
    experiment = run_cli("scan", "planted:llama", "-q", "--catalog", cat, "--catastrophic-ratio", "100000", "--json")
    assert experiment.returncode == 0
    again = run_cli("publish", idx, "--catalog", cat)
    assert again.returncode == 0 and again.stdout.rstrip().endswith("no changes"), again.stdout
    index = json.loads((tmp_path / "idx" / "index.json").read_text())
    [m] = index["models"]
    assert m["canonical"] and [(w["layer"], w["row"], w["col"], w["verdict"]) for w in m["weights"]] == \
        [(1, 10, 20, "super_weight")]
    [other] = m["other_configurations"]
    assert other["differs"] == ["--catastrophic-ratio 10 -> 100000"] and other["n_super_weights"] == 0
    md = (tmp_path / "idx" / "index.md").read_text()
    assert "## Other configurations" in md and "--catastrophic-ratio 10 -> 100000" in md
    # the experiment's configuration made canonical: the verdict moves, and the changelog names the cause
    config = tmp_path / "experiment.json"
    config.write_text(json.dumps(json.loads(experiment.stdout)["config"]))
    moved = run_cli("publish", idx, "--catalog", cat, "--config", str(config))
    assert moved.returncode == 0, moved.stderr
    log = (tmp_path / "idx" / "CHANGELOG.md").read_text().split("\n## ")[1]
    assert "planted:llama: scan configuration" in log and "(--catastrophic-ratio 10 -> 100000)" in log
    assert "layer 1 [10, 20] super_weight -> mild (with the configuration change)" in log
    # the flat table for other engines holds the same choice, from `publish` and from `export`
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    shown = pq.read_table(tmp_path / "idx" / "coordinates.parquet").to_pylist()
    assert [(r["model"], r["verdict"], r["config_fingerprint"]) for r in shown] == \
        [("planted:llama", "mild", other["config_fingerprint"])]
    assert run_cli("export", str(tmp_path / "x"), "--catalog", cat).returncode == 0
    [row] = DeltaTable(str(tmp_path / "x" / "coordinates")).to_pyarrow_table().to_pylist()
    assert (row["layer"], row["row"], row["col"], row["verdict"]) == (1, 10, 20, "super_weight")
    assert json.loads(row["settings"])["--catastrophic-ratio"] == 10
    bad = run_cli("publish", idx, "--catalog", cat, "--config", str(tmp_path / "missing.json"))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "missing.json" in bad.stderr
