"""What a checkpoint says of its own lineage: the base model it was made from, where its files declare one.

- a model card (README.md beside the weights, as the hub serves it): `base_model` in its YAML metadata;
- a GGUF file: `general.base_model.0.repo_url` (a hub URL), else `.organization` / `.name`.
A base model is named as the catalog names models: a hub id. Nothing here imports torch."""
from __future__ import annotations

import re
from pathlib import Path

from .gguf_header import strings

HUB_URL = re.compile(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/(?:models/)?([\w.-]+/[\w.-]+)/?$")


def declared_base(folder: Path, gguf_file: str | None = None) -> tuple[str | None, str | None]:
    """(base model, where it was declared: "gguf" or "card"), or (None, None)."""
    if gguf_file:
        base = gguf_base(folder / gguf_file)
        if base:
            return base, "gguf"
    base = card_base(folder / "README.md")
    return (base, "card") if base else (None, None)


def gguf_base(path: Path) -> str | None:
    meta = strings(path, "general.base_model.0.")
    url = meta.get("general.base_model.0.repo_url", "").strip()
    m = HUB_URL.match(url)
    if m:
        return m.group(1)
    org, name = meta.get("general.base_model.0.organization"), meta.get("general.base_model.0.name")
    if org and name and "/" not in name:
        return f"{org.strip()}/{name.strip()}"
    return (name or url or "").strip() or None


def card_base(readme: Path) -> str | None:
    """The card's `base_model` (the first, when it names several: a merge)."""
    if not readme.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(readme) or {}
    except Exception:  # noqa: BLE001  a card whose YAML does not parse declares nothing
        return None
    base = meta.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    return base.strip() if isinstance(base, str) and base.strip() else None
