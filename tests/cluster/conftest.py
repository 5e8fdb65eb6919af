import os

import pytest

ARCHS12 = ["llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "olmo2", "phi3", "gpt2", "gpt_neox", "opt",
           "falcon"]


@pytest.fixture(scope="module")
def local_ray(planted_cache):
    """Ray in this process, with a GPU declared so that the GPU scheduling path runs on a CPU machine."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # explicit (Ray 2.60 turns token auth on otherwise)
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
