"""The published index: files, Table-1 Markdown, CSV/JSON, changelog, dataset card, plots, hub upload."""
import csv
import json
import time

import pytest
from PIL import Image

from catalog import publish as pub
from catalog.errors import PublishError
from catalog.rows import failed_row, ok_row
from tests.fixtures.synthetic import VERSION
from tests.fixtures.synthetic import result


def _first(cat):
    cat.import_reference("catalog/data/published_super_weights.csv")
    cat.write_scan(ok_row(result("huggyllama/llama-7b", 1, revision="a" * 40, coords=[
        (2, 3968, 7003, "super_weight"), (2, 3968, 7004, "super_set"), (9, 1, 1, "negligible")])))
    cat.write_scan(ok_row(result("org/nothing", 1, revision="b" * 40, coords=[(5, 1, 2, "negligible")])))
    cat.write_scan(ok_row(result("org/changes", 1, revision="c" * 40, coords=[(1, 4, 5, "super_weight"),
                                                                            (1, 4, 6, "super_set")])))
    cat.write_scan(failed_row("org/broken", RuntimeError("corrupt shard"), 1_000_000, scanner_version=VERSION))


def test_publish_writes_every_file(cat, tmp_path):
    _first(cat)
    out = tmp_path / "index"
    s = pub.publish(cat, out)
    assert (s.models, s.coordinates, s.failed, s.plots_drawn) == (3, 4, 1, 3)
    for name in pub.FILES:
        assert (out / name).stat().st_size > 0, name
    md = (out / "index.md").read_text()
    assert "| huggyllama/llama-7b @ `aaaaaaaaaaaa` | 1 | 2 | mlp.down_proj | [3968, 7003] | super weight |" in md
    assert "|  | 2 | 2 | mlp.down_proj | [3968, 7004] | super set |" in md  # grouped per model
    # intervals beside every ratio; a model without a super weight listed with what its scan found
    row = next(ln for ln in md.splitlines() if "[3968, 7003]" in ln)
    assert row.count("[") >= 3 and "paper Table 1" in row
    assert "## No super weight" in md and "| org/nothing @ `bbbbbbbbbbbb` | spikes harmless |" in md
    assert "## Scans" in md and "| bfloat16 | yes |" in md
    # the card's vocabulary is the CSV's: every verdict the CSV holds is named there, none it does not hold
    import re

    card = (out / "README.md").read_text()
    named = set(re.findall(r"`([a-z_]+)` \(", card.split("Verdicts (`verdict`):")[1].split("\n\n")[0]))
    held = {r["verdict"] for r in csv.DictReader((out / "index.csv").open())}
    assert held <= named and held == {"super_weight", "super_set", "none"} and "partner" not in card
    assert "org/broken" in md and "corrupt shard" in md
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert [(r["model"], r["layer"], r["row"], r["col"], r["verdict"]) for r in rows] == [
        ("huggyllama/llama-7b", "2", "3968", "7003", "super_weight"),
        ("huggyllama/llama-7b", "2", "3968", "7004", "super_set"),
        ("org/changes", "1", "4", "5", "super_weight"), ("org/changes", "1", "4", "6", "super_set"),
        ("org/nothing", "", "", "", "none")]
    index = json.loads((out / "index.json").read_text())
    assert [m["model"] for m in index["models"]] == ["huggyllama/llama-7b", "org/changes", "org/nothing"]
    assert index["failed"][0]["model"] == "org/broken" and "row = hidden" in index["coordinates"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "path: index.csv" in card and "license:" in card
    assert "First index." in (out / "CHANGELOG.md").read_text()
    plots = sorted((out / "plots").glob("*.png"))
    assert len(plots) == 3
    for p in plots:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (640, 280)
    html = (out / "index.html").read_text()
    assert html.count("<section class=model") == 3 and html.count("<img src=\"plots/") == 3


def test_changelog_against_the_previous_index(cat, tmp_path):
    _first(cat)
    out = tmp_path / "index"
    pub.publish(cat, out)
    # a new model, a model rescanned at a new revision with one coordinate moved and one verdict changed
    cat.write_scan(ok_row(result("org/new", 1, coords=[(3, 3, 3, "super_weight")])))
    cat.write_scan(ok_row(result("org/changes", 2, revision="d" * 40, started=time.time() + 1, coords=[(1, 4, 5, "super_set"),
                                                                            (1, 4, 7, "super_weight")])))
    s = pub.publish(cat, out)
    ch = s.changes
    assert ch["models_added"] == ["org/new"] and ch["models_removed"] == []
    assert ch["revisions_changed"] == [{"model": "org/changes", "from": "c" * 40, "to": "d" * 40}]
    assert [(c["model"], c["col"]) for c in ch["coordinates_added"]] == [("org/changes", 7)]
    assert [(c["model"], c["col"]) for c in ch["coordinates_removed"]] == [("org/changes", 6)]
    assert [(c["col"], c["from"], c["to"]) for c in ch["coordinates_changed"]] == [(5, "super_weight", "super_set")]
    assert s.plots_drawn == 2  # only the new and the rescanned model
    log = (out / "CHANGELOG.md").read_text()
    assert log.count("\n## ") == 2 and "Models added (1): org/new" in log and "First index." in log
    assert "layer 1 [4, 5] super_weight -> super_set" in log
    assert len(list((out / "plots").glob("*.png"))) == 4  # the superseded plot is gone
    again = pub.publish(cat, out)
    assert not any(again.changes.values()) and again.plots_drawn == 0
    assert (out / "CHANGELOG.md").read_text() == log


def test_unreadable_or_misshapen_previous_index_is_a_clear_error(cat, tmp_path):
    _first(cat)
    out = tmp_path / "index"
    pub.publish(cat, out)
    for text in ("{not json", "[]", '{"models": 3}', '{"models": [{"model": "a"}]}'):
        (out / "index.json").write_text(text)
        with pytest.raises(PublishError, match="not an index this tool wrote"):
            pub.publish(cat, out)


def test_publish_leaves_what_is_not_its_own(cat, tmp_path):
    """A user's files in OUT_DIR are never deleted or overwritten: only what a publish wrote there (its
    manifest) is replaced; a README.md of someone else's stops the publish before anything is written."""
    _first(cat)
    out = tmp_path / "index"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "mine.png").write_bytes(b"my own plot")
    (out / "notes.txt").write_text("mine")
    pub.publish(cat, out)
    cat.write_scan(ok_row(result("org/changes", 2, revision="d" * 40, started=time.time() + 1,
                                 coords=[(1, 4, 5, "super_weight")])))
    pub.publish(cat, out)  # org/changes' old plot is replaced: it was this tool's
    assert (out / "plots" / "mine.png").read_bytes() == b"my own plot" and (out / "notes.txt").read_text() == "mine"
    assert len(list((out / "plots").glob("*.png"))) == 4
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "README.md").write_text("# My project\n")
    with pytest.raises(PublishError, match="README.md, which superweights publish did not write"):
        pub.publish(cat, theirs)
    assert (theirs / "README.md").read_text() == "# My project\n" and sorted(p.name for p in theirs.iterdir()) == \
        ["README.md"]


def test_model_names_are_escaped_in_markdown(cat, tmp_path):
    """Folder names are chosen by users: no HTML reaches index.md, and no newline or | breaks its table."""
    for name in ("/data/<script>alert(1)</script>", "/data/<img src=x onerror=alert(1)>", "/data/two\nlines|x"):
        cat.write_scan(ok_row(dict(result(name, 1, coords=[(1, 2, 3, "super_weight")]), source="local")))
    pub.publish(cat, tmp_path / "index")
    md = (tmp_path / "index" / "index.md").read_text()
    assert "<script" not in md and "<img" not in md and "&lt;script>" in md
    table = md.split("## Super weights")[1].split("##")[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| /data/")]
    assert len(rows) == 3 and all(ln.count(" | ") == 9 for ln in rows)  # ten cells each, one line each


def test_push_to_hub_uploads_the_folder_as_a_dataset(cat, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], kw))
            return type("Info", (), {"commit_url": "https://hub/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    _first(cat)
    out = tmp_path / "index"
    pub.publish(cat, out)
    assert pub.push_to_hub(out, "me/super-weights") == "https://hub/commit/1"
    assert calls[0][:2] == ("create", "me/super-weights") and calls[0][2]["repo_type"] == "dataset"
    assert calls[1][2]["folder_path"] == str(out) and calls[1][2]["repo_type"] == "dataset"
    assert all("token" not in c[2] for c in calls)  # huggingface_hub finds the token itself
    for f in out.rglob("*"):
        if f.is_file():
            assert b"hf_secret_token_value" not in f.read_bytes()


def test_push_offline_is_a_clear_error(cat, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    out = tmp_path / "index"
    pub.publish(cat, out)
    with pytest.raises(PublishError, match="cannot push to me/x"):
        pub.push_to_hub(out, "me/x")
