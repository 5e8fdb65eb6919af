"""The texts a scan reads by default: the paper's calibration prompt and the shipped evaluation text."""
from __future__ import annotations

from importlib import resources

PAPER_PROMPT = "Apple Inc. is a worldwide tech company."


def default_eval_text() -> str:
    """The prose of the evaluation set, written for this project (scanner/data/eval/prose.txt)."""
    return resources.files("scanner").joinpath("data/eval/prose.txt").read_text()
