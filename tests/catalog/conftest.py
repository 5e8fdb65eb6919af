import pytest

from catalog.store import Catalog


@pytest.fixture
def cat(tmp_path) -> Catalog:
    return Catalog(tmp_path / "catalog")


@pytest.fixture(scope="session")
def planted_result(tmp_path_factory) -> dict:
    """A real scan of a tiny planted Llama (the scanner's ground truth), as the catalog receives it."""
    from tests.scanner.helpers import planted, scan_dict

    folder = planted("llama", tmp_path_factory.mktemp("planted") / "llama")
    return scan_dict(folder)
