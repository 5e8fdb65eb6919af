"""How a batch's jobs reach worker processes: Ray actors (`RayDispatch`: Ray started here or joined) or
processes of this machine (`LocalDispatch`: no Ray, ready in seconds). The run loop (`cluster.batch`) sees
only this seam: start, spawn, call, wait, result, kill. A worker runs one call at a time."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any

from .errors import WorkerDied


@dataclass(frozen=True)
class Resources:
    gpus: float
    cpus: float
    gpu_bytes: float | None  # memory of one GPU (None: no GPU)
    nodes: int  # machines: one means the workers share this machine's download cache


def _gpu_bytes() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # noqa: BLE001  a broken CUDA install counts as none
        return None
    return None


class RayDispatch:
    def __init__(self, address: str | None):
        self.address = address  # None: a Ray of its own, started in this process

    def start(self) -> Resources:
        import ray

        if not ray.is_initialized():
            # without --address a Ray of its own, as the help says: never a cluster that `ray start` left running
            ray.init(address=self.address or "local", log_to_driver=False, include_dashboard=False)
        res = ray.cluster_resources()
        gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
        mem = None
        if gpus:  # a head without a GPU of its own: assume 80 GB
            mem = _gpu_bytes() or float(os.environ.get("SUPERWEIGHTS_GPU_BYTES", 80e9))
        return Resources(gpus, cpus, mem, sum(n.get("Alive", False) for n in ray.nodes()))

    def spawn(self, share: float, cpus: float):
        import ray

        from .worker import ScanWorker

        return ray.remote(ScanWorker).options(num_gpus=share, num_cpus=cpus, max_restarts=0).remote()

    def call(self, worker, method: str, *args):
        return getattr(worker, method).remote(*args)

    def wait(self, handles: list, timeout: float) -> list:
        import ray

        return ray.wait(handles, num_returns=1, timeout=timeout)[0]

    def result(self, handle):
        import ray
        from ray.exceptions import RayActorError

        try:
            return ray.get(handle)
        except RayActorError as e:
            raise WorkerDied(str(e).splitlines()[0][:200]) from None

    def kill(self, worker) -> None:
        import ray

        try:
            ray.kill(worker, no_restart=True)
        except Exception:  # noqa: BLE001  already dead
            pass

    def close(self) -> None:
        pass  # Ray stays up for this process's other batches; it ends with the process


class _Process:
    """A worker process of this machine and its end of the pipe. It is its own call's handle."""

    def __init__(self, device: int | None, share: float, cpus: float):
        env = {"OMP_NUM_THREADS": str(max(1, int(cpus)))}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device)
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context("spawn").Process(target=_serve, args=(child, env), name="superweights-worker")
        self.proc.start()
        child.close()
        self.device, self.share = device, share


def _title(name: bytes) -> None:
    """The process name `ps` and `top` show (Linux): sw-scan while a call runs, sw-worker between, as Ray
    titles its actors' processes by the method they run."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _serve(conn, env: dict) -> None:
    """A worker's life: calls in, results out, until the pipe closes. Ctrl-C is the driver's to handle (it
    stops the workers); output goes where Ray's workers' goes when their logs are not shown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    from .worker import ScanWorker

    worker = ScanWorker()
    while True:
        _title(b"sw-worker")
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        _title(b"sw-" + method.encode())
        try:
            out = ("ok", getattr(worker, method)(*args))
        except Exception as e:  # noqa: BLE001  the driver raises it, as ray.get would
            out = ("error", e)
        try:
            conn.send(out)
        except (BrokenPipeError, OSError):
            return


class LocalDispatch:
    """Worker processes on this machine: one per GPU share's device, else on CPUs."""

    def __init__(self):
        self.used: dict[int, float] = {}  # GPU index -> share held by live workers
        self.live: set[_Process] = set()

    def start(self) -> Resources:
        # torch takes seconds to import: only where a GPU driver shows a device (NVIDIA, ROCm, WSL)
        mem = _gpu_bytes() if any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")) else None
        n = 0
        if mem:
            import torch

            n = torch.cuda.device_count()
        self.used = {i: 0.0 for i in range(n)}
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return Resources(float(n), float(cpus), mem, 1)

    def spawn(self, share: float, cpus: float):
        device = None
        if share:  # the least used GPU that has room for the share; none: wait for one to free up
            device = min((i for i, u in self.used.items() if u + share <= 1 + 1e-9), key=self.used.get, default=None)
            if device is None:
                return None
            self.used[device] += share
        p = _Process(device, share, cpus)
        self.live.add(p)
        return p

    def call(self, worker: _Process, method: str, *args):
        worker.conn.send((method, args))
        return worker

    def wait(self, handles: list, timeout: float) -> list:
        by = {h.conn: h for h in handles} | {h.proc.sentinel: h for h in handles}
        return list(dict.fromkeys(by[r] for r in wait_any(list(by), timeout)))

    def result(self, handle: _Process):
        try:
            status, value = handle.conn.recv()
        except (EOFError, OSError):
            handle.proc.join(5)
            raise WorkerDied(f"the worker process ended (exit code {handle.proc.exitcode})") from None
        if status == "error":
            raise value
        return value

    def kill(self, worker: _Process) -> None:
        if worker in self.live and worker.device is not None:
            self.used[worker.device] -= worker.share
        self.live.discard(worker)
        worker.conn.close()
        if worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join(5)

    def close(self) -> None:
        for worker in list(self.live):
            self.kill(worker)


def dispatch_for(cfg):
    """`cfg`: a BatchConfig."""
    return LocalDispatch() if cfg.local else RayDispatch(cfg.address)
