"""The cores this process may use, and work spread over them on threads or processes.

`available_cores()`: the process's CPU affinity bounded by its container's CPU quota (cgroup
v2 cpu.max, v1 cfs_quota/period). The networks' intra-op threads follow it
(pipeline.training.threads); so do the geometry's independent OpenCV fits (`thread_map`),
which release the GIL.

`thread_map(fn, items)` returns [fn(x) for x in items] in order, computed on up to
available_cores() threads; `thread_imap` yields them in order with at most that many in
flight (the memory of a few items' work, not of all). The results equal the sequential ones when each call depends only
on its item (OpenCV's random generator, which cv2.setRNGSeed seeds, is per thread).
`process_imap` does the same in spawned processes, for numpy work on small arrays that holds
the GIL (the studio's rendering).
"""
from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


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


def thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
    """[fn(x) for x in items], in order, on min(workers or available_cores(), len(items)) threads
    (thread_imap; inline when that is 1). An exception in a call is raised here."""
    items = list(items)
    return list(thread_imap(fn, items, min(int(workers or available_cores()), max(len(items), 1))))


def _in_order(ex, fn: Callable[[T], R], items: Iterable[T], in_flight: int) -> Iterator[R]:
    """fn(x) for x in items submitted to executor ex, yielded in order, at most in_flight pending."""
    pending: deque = deque()
    for x in items:
        pending.append(ex.submit(fn, x))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def thread_imap(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """fn(x) for x in items, yielded in order, computed on up to workers or available_cores()
    threads with at most that many calls in flight (inline when that is 1)."""
    n = int(workers or available_cores())
    if n <= 1:
        yield from (fn(x) for x in items)
        return
    with ThreadPoolExecutor(n) as ex:
        yield from _in_order(ex, fn, items, n)


def process_imap(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None,
                 initializer: Callable | None = None, initargs: tuple = ()) -> Iterator[R]:
    """fn(x) for x in items, yielded in order, computed in up to workers or available_cores()
    spawned processes (for work that holds the GIL) with at most twice that many calls in
    flight; inline when that is 1. fn, the items and the results must pickle; initializer(*initargs)
    runs once in each process (or here, inline) to hand it what every call shares. A script
    that calls this needs the `if __name__ == "__main__":` guard (spawned processes import it)."""
    n = int(workers or available_cores())
    if n <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                             initargs=initargs) as ex:
        yield from _in_order(ex, fn, items, 2 * n)
