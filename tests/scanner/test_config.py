"""The typed scan configuration: checked where it is typed, read back whole, flags over a JSON file."""
import argparse
import json
import math

import pytest

from scanner.config import DetectConfig, ScanConfig, ValidateConfig
from scanner.errors import BadInput
from scanner.options import add_scan_options, scan_config


def parse(*argv):
    p = argparse.ArgumentParser()
    add_scan_options(p)
    return scan_config(p.parse_args(list(argv)))


def test_round_trip_and_defaults():
    cfg = ScanConfig(prompts=("a", "b"), detect=DetectConfig(spike_ratio=20.0), eval_text="text")
    assert ScanConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ScanConfig.from_dict({}) == ScanConfig() == parse()
    assert cfg.replace(validate={"seed": 3}).validate == ValidateConfig(seed=3)


@pytest.mark.parametrize("data, needle", [
    ({"detect": {"spike_ratio": math.nan}}, "--spike-ratio must be a finite number"),
    ({"detect": {"spike_ratio": 0.9}}, "--spike-ratio must be at least 1"),
    ({"validate": {"min_ppl_ratio": math.inf}}, "--min-ppl-ratio must be a finite number"),
    ({"validate": {"eval_tokens": 3.5}}, "--eval-tokens must be a whole number"),
    ({"detect": {"max_rounds": True}}, "--max-rounds must be a whole number"),
    ({"load": {"dtype": "int4"}}, "unknown dtype"),
    ({"load": {"max_memory": "0GB"}}, "--max-memory must be positive"),
    ({"prompts": "one prompt"}, "a list of texts"),
    ({"prompts": []}, "at least one"),
    ({"eval_text": "  \n"}, "evaluation text is empty"),
    ({"detect": {"spike_ratio": 10, "colour": "red"}}, "unknown option 'colour'"),
    ({"validation": {}}, "unknown option 'validation'"),
])
def test_bad_values_are_refused_with_their_name(data, needle):
    with pytest.raises(BadInput, match=needle):
        ScanConfig.from_dict(data)


def test_flags_over_a_json_file_and_files_read_into_the_configuration(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"detect": {"spike_ratio": 20, "max_rounds": 2},
                                                   "prompts": ["from the file"]}))
    (tmp_path / "prompts.txt").write_text("second\n\nthird\n")
    (tmp_path / "eval.txt").write_text("An evaluation text.")
    cfg = parse("--scan-config", str(tmp_path / "cfg.json"), "--max-rounds", "5", "--prompt", "first",
                "--prompts-file", str(tmp_path / "prompts.txt"), "--eval-text", str(tmp_path / "eval.txt"),
                "--no-validate", "--dtype", "bfloat16")
    assert (cfg.detect.spike_ratio, cfg.detect.max_rounds) == (20.0, 5)  # the file's value, then the flag's
    assert cfg.prompts == ("first", "second", "third") and cfg.eval_text == "An evaluation text."
    assert cfg.run_validation is False and cfg.load.dtype == "bfloat16"
    assert parse("--scan-config", str(tmp_path / "cfg.json")).prompts == ("from the file",)
    with pytest.raises(BadInput, match="cannot read"):
        parse("--eval-text", str(tmp_path / "missing.txt"))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(BadInput, match="not valid JSON"):
        parse("--scan-config", str(tmp_path / "bad.json"))
