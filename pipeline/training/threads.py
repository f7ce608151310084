"""How many CPU threads the networks use, chosen at run time from the cores given.

`cpu_threads(requested)`: the number asked for (a configuration's num_threads) when set;
else OMP_NUM_THREADS when it is set (the usual way a user or a scheduler limits a process);
else the cores this process may run on: its CPU affinity, bounded by a container's CPU quota
(cgroup v2 cpu.max, v1 cfs_quota/period).

Bits and threads: torch's CPU kernels split reductions by thread, so a network trained or run
with another thread count differs in the last bits (about 1e-7 relative). The same thread
count gives the same bits; the checkpoints record the count (`cpu_threads`) and a resumed run
takes it from there, so a resumed run still ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


def _quota(root: Path = Path("/sys/fs/cgroup")) -> float:
    """The cgroup's CPU quota in cores (inf when there is none or it cannot be read)."""
    try:
        q, p = (root / "cpu.max").read_text().split()[:2]
        return math.inf if q == "max" else int(q) / int(p)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return math.inf if q <= 0 else q / p
    except (OSError, ValueError):
        return math.inf


def available_cores() -> int:
    """Cores this process may use: its affinity, bounded by the cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    q = _quota()
    return max(1, min(n, math.floor(q) if math.isfinite(q) else n))


def cpu_threads(requested: int | None = None) -> int:
    """Intra-op threads for torch on the CPU (module docstring): requested, else OMP_NUM_THREADS,
    else available_cores()."""
    if requested:
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return available_cores()
