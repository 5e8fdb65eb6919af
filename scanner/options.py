"""The scan options on a command line: one set of flags, made from every field of `scanner.config`'s
configuration (its sections' fields and its own), for every command that scans (`scan`, `batch`, `submit`,
`diff`, `quantize-eval`), and the one function that turns them into a ScanConfig.

A flag the user did not give takes the ScanConfig default, or the value in `--scan-config FILE` (JSON
written by `ScanConfig.to_dict()`, as `submit` sends it to a cluster). Files named by flags (`from_file`
fields such as `--eval-text`, and `--prompts-file`) are read here, so their text travels inside the
configuration.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from .config import ScanConfig, flag_of, sections
from .errors import BadInput


def _default(f):
    return f.default_factory() if callable(f.default_factory) else f.default


def add_scan_options(parser: argparse.ArgumentParser, cls=ScanConfig, brief: bool = False,
                     leave_out: tuple[str, ...] = ()) -> None:
    """The scan options on `parser`. `brief`: taken, but their help is `scan --help`'s (one line here instead of
    thirty); `leave_out`: flags that make no sense for the command (their field keeps its default)."""
    g = parser.add_argument_group(
        "scan options", "how each model is loaded, searched and validated: every option of `superweights scan`"
        + (f" but {', '.join(leave_out)}" if leave_out else "") + (" (see `superweights scan --help`)" if brief else ""))
    hide = {"help": argparse.SUPPRESS} if brief else {}
    g.add_argument("--scan-config", metavar="FILE", type=Path, dest="scan_config_file", default=argparse.SUPPRESS,
                   help="a scan configuration as JSON (ScanConfig.to_dict()); flags given as well override it")
    inner = sections(cls)
    for section, scls in inner.items():
        for f in fields(scls):
            if flag_of(f) not in leave_out:
                _add(g, f, f"{section}.{f.name}", hide)
    for f in fields(cls):
        if f.name not in inner and flag_of(f) not in leave_out:
            _add(g, f, f.name, hide)
    g.add_argument("--prompts-file", type=Path, default=argparse.SUPPRESS,
                   **{"help": "more calibration prompts, one per line", **hide})


def _add(g, f, dest: str, hide: dict) -> None:
    default, flag, meta = _default(f), flag_of(f), f.metadata
    common = dict(dest=dest, default=argparse.SUPPRESS)
    if isinstance(default, bool):
        action = "store_false" if default else "store_true"
        g.add_argument(flag, action=action, **{"help": meta["help"], **common, **hide})
    elif isinstance(default, tuple):
        g.add_argument(flag, action="append", metavar="TEXT", **{"help": meta["help"], **common, **hide})
    elif meta.get("from_file"):
        g.add_argument(flag, metavar="FILE", type=Path, **{"help": meta["help"], **common, **hide})
    else:
        kind = type(default) if default is not None else str
        shown = "" if default is None else f" (default {default:g})" if isinstance(default, float) \
            else f" (default {default})"
        metavar = {int: "N", float: "X"}.get(kind) or {"max_memory": "SIZE", "offload_folder": "DIR"}.get(
            f.name, f.name.upper())
        g.add_argument(flag, type=kind, metavar=metavar, **{"help": meta["help"] + shown, **common, **hide})


def scan_config(args: argparse.Namespace, cls=ScanConfig) -> ScanConfig:
    """The configuration of the flags given (checked: a bad value is a BadInput naming its flag)."""
    given = vars(args)
    data = cls().to_dict()
    inner = sections(cls)
    if "scan_config_file" in given:
        loaded = _json(given["scan_config_file"])
        if not isinstance(loaded, dict):
            raise BadInput(f"{given['scan_config_file']}: a scan configuration is a JSON object")
        for key, value in loaded.items():
            if key in inner and isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
    own = {f.name: f for f in fields(cls) if f.name not in inner}
    for dest, value in given.items():
        section, _, name = dest.partition(".")
        if name and section in inner:
            data[section][name] = value
        elif dest in own:
            data[dest] = read_text(value) if own[dest].metadata.get("from_file") else value
    if "prompts_file" in given:  # more prompts for the `prompts` field, after those given by flag
        prompts = list(given.get("prompts") or [])
        data["prompts"] = prompts + [ln for ln in read_text(given["prompts_file"]).splitlines() if ln.strip()]
    return cls.from_dict(data)


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
