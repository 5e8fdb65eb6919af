"""The models file."""
import pytest

from cluster.models import parse, read
from cluster.errors import BadOption


def test_lines_comments_revisions_and_options():
    text = """# tonight
    org/a@v1.0        # pinned later to a sha
    org/b
    pkg:smollm2-135m
    /data/with@sign timeout=30 trust_remote_code=true

    org/b             # twice: once
    """
    e = parse(text)
    assert [(x.spec, x.revision) for x in e] == [("org/a", "v1.0"), ("org/b", None), ("pkg:smollm2-135m", None),
                                                ("/data/with@sign", None)]
    assert (e[3].timeout, e[3].trust_remote_code, e[3].line) == (30.0, True, 5)
    assert e[0].trust_remote_code is False and e[0].name == "org/a@v1.0"


def test_paths_with_spaces_are_quoted_as_in_a_shell():
    e = parse('''"/data/my models/gpt2.gguf" timeout=60   # a comment
    '/data/other model'
    ''')
    assert [(x.spec, x.timeout) for x in e] == [("/data/my models/gpt2.gguf", 60.0), ("/data/other model", None)]
    # a # inside a path is part of it; only one that starts a word starts a comment
    assert [x.spec for x in parse("/data/run#3/model  # run 3\norg/a # don't scan twice\n'/data/#x y'\n")] == \
        ["/data/run#3/model", "org/a", "/data/#x y"]


@pytest.mark.parametrize("line, match", [("org/a colour=blue", "unknown option"), ("org/a timeout=soon", "number"),
                                         ("org/a timeout=-1", "positive"), ("org/a timeout=nan", "positive"),
                                         ("org/a trust_remote_code=yes", "true or"),
                                         ('"/data/my models', "quote a path")])
def test_bad_lines_name_their_line(line, match):
    with pytest.raises(BadOption, match=match) as e:
        parse("org/ok\n" + line)
    assert "line 2" in str(e.value)


def test_empty_or_missing_file(tmp_path):
    (tmp_path / "m.txt").write_text("# nothing\n")
    with pytest.raises(BadOption, match="lists no models"):
        read(tmp_path / "m.txt")
    with pytest.raises(BadOption, match="cannot read"):
        read(tmp_path / "missing.txt")
