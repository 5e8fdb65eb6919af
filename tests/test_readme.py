"""The README's commands are real: the quick block runs as written (in a scratch folder, on the planted
models), and every superweights command line in the README and docs/ parses with the real parser, so a
renamed flag breaks the build, not the reader."""
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.deploy.test_deploy import _check_command, _commands

ROOT = Path(__file__).resolve().parents[1]
MARK = "runs this block as it stands:"


def quick_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARK):], re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_quick_block_runs_as_written(tmp_path, planted_cache):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    outputs = []
    for line in quick_block():
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    scan, query_model, query_sql = outputs[0], outputs[3], outputs[4]
    assert re.search(r"\[10, 20\].*super_weight", scan)  # the planted coordinate, found and judged
    assert re.search(r"planted:llama .* 1 +mlp\.down_proj .* 10 +20 ", query_model)
    assert {"planted:llama", "planted:qwen2", "planted:gpt2"} <= set(re.findall(r"planted:\w+", query_sql))
    assert (tmp_path / "out" / "index" / "index.md").exists()
    # the lines for other engines, as written, on the index just published: pandas, polars, DuckDB
    text = (ROOT / "README.md").read_text()
    engines = re.search(r"```python\n(.*?)```", text[text.index("any engine reads it"):], re.S).group(1)
    done = subprocess.run([sys.executable, "-c", engines], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("planted:llama") >= 2 and "super_weight" in done.stdout and "(3,)" in done.stdout


def test_every_command_in_the_readme_and_docs_is_real():
    lines = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines += _commands(path.read_text())
    assert len(lines) >= 20
    for line in lines:  # a synopsis: optional parts kept (brackets dropped), placeholders and choices filled in
        line = line.replace("[SCAN OPTIONS]", "").replace("[", "").replace("]", "")
        line = re.sub(r"(--[\w-]+) \.\.\.", r"\1 x", line).replace("...", "")
        line = re.sub(r"(\S+?)\|\S+", r"\1", line)
        _check_command(re.sub(r"\b[A-Z][A-Z_]*\b(?!=)", "1", line).replace(" --help", ""))
