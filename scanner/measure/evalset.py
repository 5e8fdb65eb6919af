"""The evaluation set: texts of several kinds, written for this project (scanner/data/eval), cut into many
short independent windows, so that an ablation's effect comes with a spread across windows.

Kinds: prose, dialogue (rendered with the model's chat template when its tokenizer has one, else as
"User:/Assistant:" turns), code, and lists with numbers. A user's `--eval-text` is one kind, "text",
cut the same way. Windows are taken round-robin across kinds (the first four windows hold one of each),
each starts with the model's BOS token when its tokenizer adds one, and a kind's last piece shorter than
a window is left out.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import torch

KINDS = ("prose", "dialogue", "code", "lists")


@dataclass
class Windows:
    ids: torch.Tensor  # [windows, tokens]
    kinds: list[str]  # per window
    sha256: str  # of the texts the windows were cut from (before tokenizing)

    @property
    def ids_sha256(self) -> str:
        """Of the windows' token ids: two scans with the same one evaluated the same windows (their per-window
        effects can be paired)."""
        return hashlib.sha256(self.ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:16]

    @property
    def count(self) -> int:
        return self.ids.shape[0]

    @property
    def tokens(self) -> int:
        return self.ids.numel()


def shipped() -> dict[str, object]:
    """kind -> text (dialogue: a list of conversations, each a list of {role, content} turns)."""
    folder = resources.files("scanner") / "data" / "eval"
    out = {}
    for kind in KINDS:
        if kind == "dialogue":
            out[kind] = json.loads(folder.joinpath("dialogue.json").read_text())
        else:
            out[kind] = folder.joinpath(f"{kind}.txt").read_text()
    return out


def _render(tokenizer, conversations: list) -> str:
    if getattr(tokenizer, "chat_template", None):
        return "".join(tokenizer.apply_chat_template(c, tokenize=False) for c in conversations)
    return "\n\n".join("\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in c) for c in conversations)


def _bos(tokenizer) -> int | None:
    """The BOS id if the tokenizer puts one in front of a text by itself (as the model was trained)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return bos if ids and ids[0] == bos else None


def cut(tokenizer, texts: dict[str, object], window: int, max_tokens: int) -> Windows:
    """Windows of `window` tokens from each kind, round-robin, at most `max_tokens` tokens in all."""
    bos = _bos(tokenizer)
    body = window - (bos is not None)
    pieces: dict[str, list[list[int]]] = {}
    digest = hashlib.sha256()
    for kind, content in texts.items():
        text = _render(tokenizer, content) if isinstance(content, list) else content
        digest.update(kind.encode() + b"\0" + text.encode() + b"\0")
        # a token is rarely more than a few characters: the rest of a long text is never tokenized
        ids = tokenizer(text[: max_tokens * 64], add_special_tokens=False).input_ids
        pieces[kind] = [([bos] if bos is not None else []) + ids[i: i + body]
                        for i in range(0, len(ids) - body + 1, body)]
    order, kinds = [], []
    for i in range(max(map(len, pieces.values()), default=0)):
        for kind, ws in pieces.items():
            if i < len(ws) and (len(order) + 1) * window <= max_tokens:
                order.append(ws[i])
                kinds.append(kind)
    ids = torch.tensor(order, dtype=torch.long) if order else torch.zeros(0, window, dtype=torch.long)
    return Windows(ids, kinds, digest.hexdigest()[:16])
