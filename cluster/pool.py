"""A pool of scan workers sized by GPU share, so that the cluster (or this machine) is never asked for more
than it has; the workers come from a dispatch (`cluster.dispatch`: Ray actors or local processes)."""
from __future__ import annotations

import math

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
    """Workers by GPU share: at most `size` alive, and never more GPU or CPU asked for than the cluster has
    (an idle actor holds its share, so an actor that cannot be placed would wait forever). An idle actor
    of another share is stopped when its resources are needed."""

    def __init__(self, size: int, cfg, gpus: float, cpus: float, dispatch):
        self.size, self.cfg, self.gpus, self.cpus, self.dispatch = size, cfg, gpus, cpus, dispatch
        self.idle: dict[float, list] = {}
        self.shares: dict = {}  # actor -> its GPU share, for every live actor

    def _fits(self, share: float) -> bool:
        used_gpu = sum(self.shares.values())
        return (len(self.shares) < self.size and used_gpu + share <= self.gpus + 1e-9
                and (len(self.shares) + 1) * self.cfg.cpus <= self.cpus + 1e-9)

    def take(self, share: float):
        if self.idle.get(share):
            return self.idle[share].pop()
        for other, actors in self.idle.items():  # make room by stopping idle actors of other shares
            while actors and not self._fits(share):
                self.kill(actors.pop())
        if not self._fits(share):
            if not self.shares:
                raise ClusterTooSmall(f"the cluster cannot hold one scan actor ({share:g} GPU, {self.cfg.cpus:g} CPU)")
            return None
        actor = self.dispatch.spawn(share, self.cfg.cpus)
        if actor is None:  # no single GPU has room for the share yet
            return None
        self.shares[actor] = share
        return actor

    def give(self, actor, share: float) -> None:
        self.idle.setdefault(share, []).append(actor)

    def kill(self, actor) -> None:
        self.shares.pop(actor, None)
        self.dispatch.kill(actor)

    def close(self) -> None:
        for actors in self.idle.values():
            while actors:
                self.kill(actors.pop())

