"""The CLI: --help everywhere, clean one-line errors for user mistakes, JSON on stdout."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]

from tests.scanner.helpers import planted


def run_cli(*args, env=None, cwd=None):
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          env=e, timeout=300, cwd=cwd)


def commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in commands()])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: superweights" in out
    assert "%%" not in out  # argparse formats help strings, not descriptions: a doubled % shows as such
    if argv[0] in ("diff", "quantize-eval"):  # scan's thirty options: taken, their help is scan's
        assert "--eval-tokens" not in out and "superweights scan --help" in out


@pytest.mark.parametrize("command", ["diff", "quantize-eval"])
def test_commands_that_need_verdicts_refuse_no_validate(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "planted:llama", *(["planted:qwen2"] if command == "diff" else []), "--no-validate"])
    assert exc.value.code == 2 and "--no-validate" in capsys.readouterr().err


def assert_clean_error(proc, *needles):
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("superweights: error: ")
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_path(tmp_path):
    assert_clean_error(run_cli("scan", "-q", str(tmp_path / "nope")), "no such file or directory")


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_clean_error(run_cli("scan", "-q", str(tmp_path)), "not a model folder")


def test_truncated_safetensors(tmp_path):
    folder = planted("llama", tmp_path / "m")
    shard = sorted(folder.glob("*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert_clean_error(run_cli("scan", "-q", str(folder)), "truncated", shard.name)


def test_unsupported_architecture(tmp_path):
    folder = planted("llama", tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(cfg))
    assert_clean_error(run_cli("scan", "-q", str(folder)), "'bert' is not supported", "llama", "gpt2")


def test_unknown_hub_id_offline(tmp_path):
    proc = run_cli("scan", "-q", "no-such-org/no-such-model", env={"HF_HOME": str(tmp_path)})
    assert_clean_error(proc, "not in the local hub cache", "offline")


def test_bad_option_values(tmp_path):
    assert_clean_error(run_cli("scan", "-q", "--max-rounds", "0", str(tmp_path)), "--max-rounds")
    assert_clean_error(run_cli("scan", "-q", "--eval-text", str(tmp_path / "missing.txt"), str(tmp_path)),
                       "cannot read")


def test_json_on_stdout_progress_on_stderr(tmp_path):
    folder = planted("gpt2", tmp_path / "m")
    proc = run_cli("scan", str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("model", "revision", "architecture", "candidates", "groups", "spikes", "layer_profiles", "ppl_base"):
        assert key in result
    sw = result["candidates"][0]
    for key in ("layer", "row", "col", "module", "value", "verdict", "ppl_ratio"):
        assert key in sw
    assert (sw["layer"], sw["row"], sw["col"], sw["module"]) == (1, 10, 20, "mlp.c_proj")
    assert len(result["layer_profiles"]) == 4 and "input_value" in result["layer_profiles"][0]
    assert "round 1" in proc.stderr


def test_table_report(tmp_path):
    folder = planted("llama", tmp_path / "m")
    proc = run_cli("scan", "-q", str(folder))
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "[10, 20]" in ln)
    assert row.split()[0] == "1" and row.split()[-1] == "super_weight"
    assert "perplexity" in proc.stdout and proc.stderr == ""


def test_the_command_starts_without_torch():
    """Parsing, --help and catalog commands never import torch (a second of start-up each time)."""
    code = ("import sys; from cluster.cli import build_parser; build_parser().parse_args(['query', 'SELECT 1']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
