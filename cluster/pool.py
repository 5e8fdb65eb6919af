"""Where a batch's work runs: Ray started here or joined, and a pool of scan actors sized by GPU share so that
the cluster is never asked for more than it has."""
from __future__ import annotations

import math
import os

from .errors import ClusterTooSmall
from .pin import Pinned


def weight_bytes(p: Pinned) -> int | None:
    """Bytes of weights where they are known without downloading: files on this machine, or the hub's
    parameter count (at 2 bytes each: workers compute in bfloat16 on GPUs)."""
    if p.path is None or not p.path.exists():
        return 2 * p.params if p.params else None
    files = [p.path] if p.path.is_file() else [f for f in p.path.iterdir()
                                               if f.suffix in (".safetensors", ".bin", ".gguf")]
    return sum(f.stat().st_size for f in files)


def gpus_for(p: Pinned, cfg, gpu_bytes: float | None) -> float:
    """`cfg`: a BatchConfig. A whole GPU by default; a quarter-GPU step above what the weights need (x2.5 for activations and
    the upcast layer) when their size is known; none when the cluster has no GPU."""
    if not gpu_bytes:
        return 0.0
    if cfg.gpus is not None:
        return cfg.gpus
    size = weight_bytes(p)
    if size is None:
        return 1.0
    return min(1.0, max(0.25, math.ceil(size * 2.5 / gpu_bytes * 4) / 4))


class Pool:
    """Actors by GPU share: at most `size` alive, and never more GPU or CPU asked for than the cluster has
    (an idle actor holds its share, so an actor that cannot be placed would wait forever). An idle actor
    of another share is stopped when its resources are needed."""

    def __init__(self, size: int, cfg, gpus: float, cpus: float):
        self.size, self.cfg, self.gpus, self.cpus = size, cfg, gpus, cpus
        self.idle: dict[float, list] = {}
        self.shares: dict = {}  # actor -> its GPU share, for every live actor

    def _fits(self, share: float) -> bool:
        used_gpu = sum(self.shares.values())
        return (len(self.shares) < self.size and used_gpu + share <= self.gpus + 1e-9
                and (len(self.shares) + 1) * self.cfg.cpus <= self.cpus + 1e-9)

    def take(self, share: float):
        import ray

        from .worker import ScanWorker

        if self.idle.get(share):
            return self.idle[share].pop()
        for other, actors in self.idle.items():  # make room by stopping idle actors of other shares
            while actors and not self._fits(share):
                self.kill(actors.pop())
        if not self._fits(share):
            if not self.shares:
                raise ClusterTooSmall(f"the cluster cannot hold one scan actor ({share:g} GPU, {self.cfg.cpus:g} CPU)")
            return None
        actor = ray.remote(ScanWorker).options(num_gpus=share, num_cpus=self.cfg.cpus, max_restarts=0).remote()
        self.shares[actor] = share
        return actor

    def give(self, actor, share: float) -> None:
        self.idle.setdefault(share, []).append(actor)

    def kill(self, actor) -> None:
        import ray

        self.shares.pop(actor, None)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001  already dead
            pass

    def close(self) -> None:
        for actors in self.idle.values():
            while actors:
                self.kill(actors.pop())


def init_ray(cfg) -> tuple[float, float, float | None]:
    """Start or join Ray; returns its GPUs, its CPUs and the memory of one GPU (None if unknown)."""
    import ray

    if not ray.is_initialized():
        # without --address a Ray of its own, as the help says: never a cluster that `ray start` left running
        ray.init(address=cfg.address or "local", log_to_driver=False, include_dashboard=False)
    res = ray.cluster_resources()
    gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
    mem = None
    if gpus:
        try:
            import torch

            mem = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001
            mem = None
        mem = mem or float(os.environ.get("SUPERWEIGHTS_GPU_BYTES", 80e9))  # a head without a GPU: assume 80 GB
    return gpus, cpus, mem
