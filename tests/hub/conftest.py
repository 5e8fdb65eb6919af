"""The hub tests' server (tests/fixtures/hub_server.py), started once per module on a free loopback port, and the
repositories of the batch tests. The hub tests are two files so that `make test`'s parallel run takes them
side by side."""
import shutil

import pytest

from tests.fixtures.hub_server import Hub, free_port
from tests.scanner.helpers import planted


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = Hub(tmp_path_factory.mktemp("hub"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def repos(hub, tmp_path_factory):
    """org/tiny-llama: the planted model (tagged v1), then a card on main; org/tiny-llama-ft: a copy whose card
    names org/tiny-llama as its base; org/later: a repository the batch meets only once the server is back."""
    work = tmp_path_factory.mktemp("repos")
    folder = planted("llama", work / "m")
    v1 = hub.commit("org/tiny-llama", folder, "weights")
    hub.tag("org/tiny-llama", "v1", v1)
    main = hub.commit("org/tiny-llama", {"README.md": "---\nlicense: mit\n---\n# tiny llama\n"}, "card")
    ft = work / "ft"
    shutil.copytree(folder, ft)
    (ft / "README.md").write_text("---\nbase_model: org/tiny-llama\nlicense: mit\n---\n# fine-tuned\n")
    hub.commit("org/tiny-llama-ft", ft, "fine-tune")
    later = [hub.commit("org/later", folder, "weights")]
    return {"v1": v1, "main": main, "later": later}
