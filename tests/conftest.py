import os

import pytest

# Tests never reach a hub: offline lookups fail at once instead of retrying for ~23 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def planted_cache(tmp_path_factory):
    """Planted models are built once into this cache; Ray workers inherit it from the environment."""
    path = tmp_path_factory.mktemp("sw-cache")
    os.environ["SUPERWEIGHTS_CACHE"] = str(path)
    return path
