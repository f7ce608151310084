"""How many CPU threads the networks use, chosen at run time from the cores given.

`cpu_threads(requested)`: the number asked for (a configuration's num_threads) when set;
else OMP_NUM_THREADS when it is set (the usual way a user or a scheduler limits a process);
else the cores this process may run on (pipeline.cores.available_cores: its CPU affinity,
bounded by a container's CPU quota).

Bits and threads: torch's CPU kernels split reductions by thread, so a network trained or run
with another thread count differs in the last bits (about 1e-7 relative). The same thread
count gives the same bits; the checkpoints record the count (`cpu_threads`) and a resumed run
takes it from there, so a resumed run still ends bit-identical to an uninterrupted one.

Waiting threads (`wait_policy`): torch's OpenMP threads spin between parallel regions by
default, which pays when the process has its cores to itself (bench/chain.py prints the
training step under each policy) and stalls every region when another process shares the
cores. The policy is read once, when torch starts OpenMP, so `pipeline.training` sets
OMP_WAIT_POLICY before importing torch: PASSIVE (sleep) when the other processes keep at least
one core's worth of CPU busy, else the library's default; a user's setting wins. The policy
never changes the bits; the thread count does, which is why it never follows the load.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import time

from ..cores import available_cores  # noqa: F401 (cpu_threads' default; tests patch it here)

# how many trainings share the cores (shared_by): each gets its part of them
_SHARERS = contextvars.ContextVar("cpu_sharers", default=1)


def cpu_threads(requested: int | None = None) -> int:
    """Intra-op threads for torch on the CPU (module docstring): requested, else OMP_NUM_THREADS,
    else available_cores(); divided among the trainings that share the cores (shared_by), at
    least 1."""
    if requested:
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    base = int(env) if env.isdigit() and int(env) > 0 else available_cores()
    return max(1, base // _SHARERS.get())


@contextlib.contextmanager
def shared_by(n: int):
    """Within this block, cpu_threads() gives each of `n` trainings running side by side its
    part of the cores (a stage's outputs built in parallel: pipeline.orchestration.runner)."""
    token = _SHARERS.set(max(1, int(n)))
    try:
        yield
    finally:
        _SHARERS.reset(token)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def busy_cores(seconds: float = 0.2) -> float:
    """Cores kept busy by the whole machine over the next `seconds` (this process sleeps
    meanwhile, so it is the others' load); 0.0 where /proc/stat cannot be read."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    if a is None or b is None or b[1] <= a[1]:
        return 0.0
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def wait_policy(busy: float | None = None) -> str | None:
    """OMP_WAIT_POLICY for this process (module docstring): "PASSIVE" when other processes keep
    at least one core's worth busy (`busy`: measured by busy_cores() when None) or one thread
    is all it runs (nothing to spin for: no measuring then, as in a Dask worker), None (the
    library's default: spin, then sleep) otherwise."""
    if cpu_threads() < 2:
        return "PASSIVE"
    return "PASSIVE" if (busy_cores() if busy is None else busy) >= 0.75 else None
