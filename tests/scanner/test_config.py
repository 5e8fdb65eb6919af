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


def test_a_new_top_level_option_is_one_field_and_reaches_the_stored_configuration():
    """A copy of the configuration with a field added at the top (and one that changes no verdict): its flag
    exists, is checked, reaches the configuration a catalog row stores, and only the marked one moves the
    fingerprint. Nothing else is touched."""
    from dataclasses import dataclass

    from catalog.rows import failed_row
    from scanner.config import option

    @dataclass(frozen=True)
    class Extended(ScanConfig):
        new_knob: int = option(7, "a knob a later release adds", low=0, verdicts=True)
        note: str | None = option(None, "a remark that changes no verdict")

    def parse_extended(*argv):
        p = argparse.ArgumentParser()
        add_scan_options(p, Extended)
        return scan_config(p.parse_args(list(argv)), Extended)

    cfg = parse_extended("--new-knob", "42", "--note", "hello", "--spike-ratio", "12")
    assert (cfg.new_knob, cfg.note, cfg.detect.spike_ratio) == (42, "hello", 12.0)
    row = failed_row("org/model", "stopped", 0.0, scanner_version="test", config=cfg.to_dict(),
                     config_fingerprint=cfg.fingerprint())
    stored = json.loads(row["config"])
    assert stored["new_knob"] == 42 and stored["note"] == "hello"
    assert Extended.from_dict(stored) == cfg
    assert parse_extended("--new-knob", "42", "--spike-ratio", "12").fingerprint() == cfg.fingerprint()  # note: none
    assert parse_extended().fingerprint() != parse_extended("--new-knob", "42").fingerprint()
    with pytest.raises(BadInput, match="--new-knob must be at least 0"):
        parse_extended("--new-knob", "-1")


def test_the_fingerprint_covers_exactly_the_fields_marked_as_changing_verdicts():
    base = ScanConfig()
    changed = [base.replace(detect={"spike_ratio": 11.0}), base.replace(validate={"seed": 1}),
               base.replace(load={"dtype": "bfloat16"}), base.replace(prompts=("other",)),
               base.replace(eval_text="some text"), base.replace(run_validation=False)]
    assert len({c.fingerprint() for c in changed} | {base.fingerprint()}) == len(changed) + 1
    same = [base.replace(load={"device": "cpu"}), base.replace(load={"max_memory": "2GiB"}),
            base.replace(load={"stream": True}), base.replace(load={"trust_remote_code": True})]
    assert {c.fingerprint() for c in same} == {base.fingerprint()}
