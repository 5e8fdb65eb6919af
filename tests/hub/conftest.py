"""The hub tests' server: tests/fixtures/hub_server.py, started once per module on a free loopback port."""
import pytest

from tests.fixtures.hub_server import Hub, free_port


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = Hub(tmp_path_factory.mktemp("hub"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
