"""What checkpoints declare of their base model: model cards and GGUF metadata."""
from scanner.load.card import card_base, declared_base, gguf_base
from tests.fixtures.planted_gguf import write_gguf
from scanner.load.requantize import requantize
from tests.scanner.helpers import planted


def test_model_card_base_model(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\nbase_model:\n- org/base-7b\n- org/other\n---\n# A merge\n")
    assert card_base(tmp_path / "README.md") == "org/base-7b"  # a merge: its first
    assert declared_base(tmp_path) == ("org/base-7b", "card")
    (tmp_path / "README.md").write_text("---\nbase_model: [unclosed\n---\n")
    assert declared_base(tmp_path) == (None, None)  # a card whose YAML does not parse declares nothing
    (tmp_path / "README.md").write_text("# no metadata\n")
    assert declared_base(tmp_path) == (None, None)


def test_gguf_base_model_written_by_the_gguf_library(tmp_path):
    folder = planted("llama", tmp_path / "m")
    plain = write_gguf(folder, tmp_path / "plain.gguf")
    assert gguf_base(plain) is None
    hub = requantize(plain, tmp_path / "hub.gguf", base_model="HuggingFaceTB/SmolLM2-135M")
    assert gguf_base(hub) == "HuggingFaceTB/SmolLM2-135M"  # from general.base_model.0.repo_url
    local = requantize(plain, tmp_path / "local.gguf", base_model="pkg:smollm2-135m")
    assert gguf_base(local) == "pkg:smollm2-135m"  # a name without an organisation
    # GGUF metadata comes before a card beside the file
    (tmp_path / "README.md").write_text("---\nbase_model: org/from-card\n---\n")
    assert declared_base(tmp_path, "hub.gguf") == ("HuggingFaceTB/SmolLM2-135M", "gguf")
    assert declared_base(tmp_path, "plain.gguf") == ("org/from-card", "card")
