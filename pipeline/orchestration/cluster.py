"""Where labelling runs: an existing Dask scheduler, a LocalCluster sized to the machine, or
this process (`dask.n_workers: 0`)."""
from __future__ import annotations

import logging
import os


def worker_setup() -> None:
    """Run on each Dask worker of a LocalCluster: one OpenCV thread per single-threaded worker
    (Dask already sets OMP/MKL/OpenBLAS to 1), so n workers use n cores, not n x cores."""
    import cv2
    cv2.setNumThreads(1)


def local_cluster_config():
    """Dask settings for LocalCluster workers that label: without Dask's default
    MALLOC_TRIM_THRESHOLD_=65536, which makes the labeller's numpy temporaries slower."""
    import dask
    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def worth_a_cluster(d: dict, frames: int) -> bool:
    """Whether `frames` frames of labelling go to Dask: always to a configured scheduler; to a
    LocalCluster from `min_frames` frames on (below, its start costs more than it saves and
    the work stays in this process, on its threads), never with `n_workers` 0."""
    if d.get("address"):
        return True
    return d.get("n_workers") != 0 and frames >= int(d.get("min_frames") or 0)


def dask_client(d: dict):
    """A dask.distributed Client for the `dask` section: the configured scheduler, or a
    LocalCluster sized to the machine. Returns (client, close), or (None, noop) when
    `n_workers` is 0 (in-process)."""
    if d.get("address"):
        from distributed import Client
        client = Client(d["address"])
        return client, client.close
    n = d.get("n_workers")
    if n == 0:
        return None, lambda: None
    from distributed import Client, LocalCluster
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    n = n or os.cpu_count() or 1
    threads = int(d.get("threads_per_worker") or 1)
    with local_cluster_config():
        cluster = LocalCluster(n_workers=int(n), threads_per_worker=threads, processes=True,
                               dashboard_address=":0", silence_logs=logging.WARNING)
    client = Client(cluster)
    if threads == 1:
        client.run(worker_setup)

    def close():
        client.close()
        cluster.close()
    return client, close
