"""The cores this process may use, and torch's threads set from them, without importing torch first: a
command calls `set_threads` before torch starts (torch reads OMP_NUM_THREADS then), so a bad input fails
before the seconds torch takes to import."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity (taskset, Ray), capped by a container's CPU quota
    (cgroup v2 cpu.max or v1 cfs quota), which affinity does not show."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    try:
        if (cgroup / "cpu.max").exists():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        else:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota not in ("max", "-1"):
            n = min(n, max(1, int(int(quota) / int(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def set_threads() -> None:
    """Torch's threads: OMP_NUM_THREADS where it is set (Ray and local batch workers set it to their CPUs), else
    the cores this process may run on, not the machine's count (containers, taskset). Before torch is
    imported it only sets OMP_NUM_THREADS, which torch reads when it starts."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    n = int(omp) if omp.isdigit() and int(omp) > 0 else available_cpus()
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
