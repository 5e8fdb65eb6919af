"""The scan options on a command line: one set of flags, made from `scanner.config`'s fields, for every
command that scans (`scan`, `batch`, `submit`), and the one function that turns them into a ScanConfig.

A flag the user did not give takes the ScanConfig default, or the value in `--scan-config FILE` (JSON
written by `ScanConfig.to_dict()`, as `submit` sends it to a cluster). Files named by flags
(`--eval-text`, `--prompts-file`) are read here, so their text travels inside the configuration.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from .config import SECTIONS, ScanConfig, flag_of
from .errors import BadInput

_KIND = {bool: "switch", int: int, float: float, str: str}


def _default(f):
    return f.default_factory() if callable(f.default_factory) else f.default


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("scan options", "how each model is loaded, searched and validated")
    g.add_argument("--scan-config", metavar="FILE", type=Path, dest="scan_config_file", default=argparse.SUPPRESS,
                   help="a scan configuration as JSON (ScanConfig.to_dict()); flags given as well override it")
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            _add(g, f, f"{section}.{f.name}")
    for f in fields(ScanConfig):
        if f.name not in SECTIONS:
            _add(g, f, f.name)
    g.add_argument("--prompts-file", type=Path, default=argparse.SUPPRESS,
                   help="more calibration prompts, one per line")


def _add(g, f, dest: str) -> None:
    default, flag, meta = _default(f), flag_of(f), f.metadata
    common = dict(dest=dest, default=argparse.SUPPRESS)
    if isinstance(default, bool):
        action = "store_false" if default else "store_true"
        g.add_argument(flag, action=action, help=meta["help"], **common)
    elif isinstance(default, tuple):
        g.add_argument(flag, action="append", metavar="TEXT", help=meta["help"], **common)
    elif f.name == "eval_text":
        g.add_argument(flag, metavar="FILE", type=Path, help=meta["help"], **common)
    else:
        kind = type(default) if default is not None else str
        shown = "" if default is None else f" (default {default:g})" if isinstance(default, float) \
            else f" (default {default})"
        metavar = {int: "N", float: "X"}.get(kind) or {"max_memory": "SIZE", "offload_folder": "DIR"}.get(
            f.name, f.name.upper())
        g.add_argument(flag, type=kind, metavar=metavar, help=meta["help"] + shown, **common)


def scan_config(args: argparse.Namespace) -> ScanConfig:
    """The ScanConfig of the flags given (checked: a bad value is a BadInput naming its flag)."""
    given = vars(args)
    data = ScanConfig().to_dict()
    if "scan_config_file" in given:
        loaded = _json(given["scan_config_file"])
        if not isinstance(loaded, dict):
            raise BadInput(f"{given['scan_config_file']}: a scan configuration is a JSON object")
        for key, value in loaded.items():
            if key in SECTIONS and isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
    for dest, value in given.items():
        section, _, name = dest.partition(".")
        if name and section in SECTIONS:
            data[section][name] = value
    if "prompts" in given or "prompts_file" in given:
        prompts = list(given.get("prompts") or [])
        if "prompts_file" in given:
            prompts += [ln for ln in read_text(given["prompts_file"]).splitlines() if ln.strip()]
        data["prompts"] = prompts
    if "eval_text" in given:
        data["eval_text"] = read_text(given["eval_text"])
    if "run_validation" in given:
        data["run_validation"] = given["run_validation"]
    return ScanConfig.from_dict(data)


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e.strerror if isinstance(e, OSError) else e}") from None


def _json(path: Path):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not valid JSON: {e}") from None
