import os

import pytest

# Tests never reach a hub: offline lookups fail at once instead of retrying for ~23 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # test processes share the cores: torch threads split among them,
    from scanner.cpus import available_cpus        # set before torch starts (OpenMP threads spin: two pools of
                                                   # two threads on two cores thrash)
    os.environ["OMP_NUM_THREADS"] = str(max(1, available_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(scope="session")
def planted_cache(tmp_path_factory):
    """Planted models are built once into this cache; Ray workers inherit it from the environment."""
    path = tmp_path_factory.mktemp("sw-cache")
    os.environ["SUPERWEIGHTS_CACHE"] = str(path)
    return path


# The longest files (minutes each on two cores) first: under `pytest -n` with `--dist loadfile
# --no-loadscope-reorder` (make test) each starts at once on a worker while the others take the many short
# files, instead of one of them running alone at the end. Serial runs keep the order within each file.
LONGEST = ["tests/scanner/test_real.py", "tests/cluster/test_families.py", "tests/scanner/test_real_more.py",
           "tests/hub/test_batches.py", "tests/hub/test_models.py",
           "tests/cluster/test_driver.py", "tests/cluster/test_batch.py",
           "tests/scanner/test_stream.py", "tests/cluster/test_cli_quant.py", "tests/cluster/test_jobs.py"]


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(LONGEST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONGEST)))
