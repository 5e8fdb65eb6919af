"""The scan options reach every worker whole: `batch` with non-default prompts, thresholds and evaluation
text writes what `scan` with the same flags writes; bad options are refused before Ray starts."""
import json
import os
import subprocess
import sys

from catalog import query
from catalog.store import Catalog
from .test_cli import assert_clean_error

EVAL = ("The river rose in the night and the village woke to water in the streets. By morning the bakers "
        "had moved their ovens to the hill, and the school opened its doors to anyone who needed a dry floor. ") * 6


def _run(*args, cache):
    env = {**os.environ, "SUPERWEIGHTS_CACHE": str(cache), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _stored(location):
    cols, data = query.run(Catalog(location), "SELECT model, config, prompts, eval_tokens, eval_text_sha256 "
                                              "FROM scans ORDER BY model")
    scans = [dict(zip(cols, r)) for r in data]
    cols, data = query.run(Catalog(location), "SELECT model, layer, row, col, verdict, ppl_ratio FROM candidates "
                                              "ORDER BY model, layer, row, col")
    return scans, data


def test_batch_with_options_writes_what_scan_writes(tmp_path, planted_cache):
    (tmp_path / "eval.txt").write_text(EVAL)
    (tmp_path / "prompts.txt").write_text("In 1492, Columbus sailed the ocean blue.\n\n")
    options = ["--prompt", "The quick brown fox jumps over the lazy dog.", "--prompts-file", str(tmp_path / "prompts.txt"),
               "--spike-ratio", "50", "--min-ppl-ratio", "3", "--max-candidates", "3", "--eval-text",
               str(tmp_path / "eval.txt"), "--eval-tokens", "300", "--seed", "7", "--device", "cpu"]
    (tmp_path / "models.txt").write_text("planted:llama\nplanted:gpt2\n")
    b = _run("batch", str(tmp_path / "models.txt"), "--catalog", str(tmp_path / "b"), "-q", "--local", *options,
             cache=planted_cache)  # through a pipe to local workers; through Ray: tests/hub and test_batch
    assert b.returncode == 0, b.stderr
    for model in ("planted:llama", "planted:gpt2"):
        s = _run("scan", model, "-q", "--catalog", str(tmp_path / "s"), *options, cache=planted_cache)
        assert s.returncode == 0, s.stderr
    (b_scans, b_found), (s_scans, s_found) = _stored(tmp_path / "b"), _stored(tmp_path / "s")
    assert b_scans == s_scans and b_found == s_found
    for scan in b_scans:
        cfg = json.loads(scan["config"])
        assert cfg["detect"]["spike_ratio"] == 50 and cfg["validate"]["min_ppl_ratio"] == 3
        assert cfg["detect"]["max_candidates"] == 3 and cfg["validate"]["seed"] == 7
        assert cfg["eval_text"] == EVAL and cfg["load"]["device"] == "cpu"
        assert scan["prompts"] == ["The quick brown fox jumps over the lazy dog.",
                                   "In 1492, Columbus sailed the ocean blue."]
        assert scan["eval_tokens"] == 256  # whole windows of 128 tokens within the 300 asked for
    assert {(m, layer, row, col, v) for m, layer, row, col, v, _ in b_found if v == "super_weight"} == \
        {(m, 1, 10, 20, "super_weight") for m in ("planted:llama", "planted:gpt2")}


def test_bad_scan_options_are_refused_where_they_are_typed(tmp_path):
    models = tmp_path / "models.txt"
    models.write_text("planted:llama\n")
    cat = str(tmp_path / "c")
    for args, needle in ((["--spike-ratio", "nan"], "--spike-ratio"), (["--min-ppl-ratio", "0.5"], "--min-ppl-ratio"),
                         (["--dtype", "int3"], "dtype"), (["--max-memory", "lots"], "memory size"),
                         (["--eval-tokens", "1"], "--eval-tokens"), (["--trust-remote-code"], "models file")):
        for command in ("batch", "submit"):
            assert_clean_error(_run(command, str(models), "--catalog", cat, *args, cache=tmp_path), needle)
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"detect": {"spike_ratio": 10, "colour": "red"}}))
    assert_clean_error(_run("batch", str(models), "--catalog", cat, "--scan-config", str(bad), cache=tmp_path),
                       "unknown option 'colour'")
    assert not os.path.exists(cat) or not os.listdir(cat)  # refused before anything was written
