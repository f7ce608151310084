"""The pipeline end to end: `make demo` twice (the second reuses every stage), and labelling
on Dask with 1 vs 2 workers.

    python bench/chain.py            # the real demo (python -m flows.demo) on a fresh root
    python bench/chain.py --quick    # a smaller studio and shorter training (< 1-2 minutes)

Prints per-stage timings and the figures side by side; the last line is one JSON object:
{"demo_s", "cpu_utilisation", "cores", "threads", "rerun_s", "rerun_over_demo", "label_chunks_1w_s",
 "label_chunks_2w_s", "dask_speedup_2w", "stages": {stage: seconds}, "metrics": {model: {metric: value}},
 "step_ms": {case: ms}} (training_steps: the 3D network's step by threads, wait policy, layout, load).
cpu_utilisation = (user + system CPU seconds of the demo's processes) / wall seconds / cores:
how much of the machine the first run used. The demo's metrics sit beside its time, so that a
faster chain never hides a worse model. The demo runs without OMP_NUM_THREADS (every core given,
pipeline.training.threads) unless --threads N is passed. Time it on an otherwise idle machine.

(Named chain.py, not pipeline.py: a bench/pipeline.py would shadow the `pipeline` package
for every script run as `python bench/<name>.py`.)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results import save  # noqa: E402

QUICK = ["dataset.n_segments=4", "dataset.train_people=1", "dataset.renders_per_train_clip=1",
         # GT 2D: a detector trained for seconds labels nothing (the chain stops, rightly,
         # with "empty training set"); the quick run measures the chain and its cache
         "detect2d.detector=gt",
         "train3d.epochs=1", "train3d.iters_per_epoch=4", "train3d.lr_steps=[1]",
         "refine.epochs=2", "evaluate.stability_runs=0"]


def run_demo(root: Path, overrides: list[str], threads: int | None = None) -> tuple[float, str, float]:
    """(wall seconds, stdout, CPU seconds: user + system of the demo and every process it waited for)."""
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "flows.demo", f"store.root={root}", *overrides]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-5000:])
        raise SystemExit(f"demo failed ({p.returncode})")
    return dt, p.stdout, cpu


def demo_metrics(root: Path, overrides: list[str]) -> dict:
    """The evaluation's overall metrics per model ({model: {metric: value}}), read from its store."""
    from pipeline.orchestration import ArtifactStore, plan, resolve
    from pipeline.orchestration.artifacts import model_metrics
    A = plan(resolve("cpu", [f"store.root={root}", *overrides]), ArtifactStore(root))
    if "evaluate" not in A:
        return {}
    out = {}
    for model, m in model_metrics(A["evaluate"].open()).items():
        out[model] = {k: (round(float(v), 4) if isinstance(v, (int, float)) else v) for k, v in dict(m).items()}
    return out


def stage_seconds(stdout: str) -> dict:
    out, on = {}, False
    for line in stdout.splitlines():
        if line.startswith("stage"):
            on = True
            continue
        if on:
            parts = line.split()
            if len(parts) < 3:
                break
            out[parts[0]] = float(parts[2])
    return out


def label_speedup(root: Path, overrides: list[str], min_frames: int, repeats: int = 3,
                  chunk: int | None = None) -> dict:
    """Time the label stage's chunk mapping on LocalClusters of 1 and 2 workers (cluster start
    excluded), on the demo's own keypoints and calibrated rig, repeated to at least
    `min_frames` frames so the work outweighs Dask's per-task overhead."""
    import numpy as np
    from distributed import Client, LocalCluster

    from pipeline.camera import Cameras
    from pipeline.orchestration import ArtifactStore, plan, resolve
    from pipeline.orchestration.cluster import local_cluster_config, worker_setup
    from pipeline.orchestration.stages import label as label_stage

    cfg = resolve("cpu", [f"store.root={root}", *overrides])
    A = plan(cfg, ArtifactStore(root))
    ds, lab = A["dataset"].open(), A["label"].open()
    kp = np.asarray(A["detect2d"].open()["keypoints2d"][:])
    rig = np.asarray(ds["rig"][:], dtype=np.int64)
    reps = -(-min_frames // len(rig))
    kp, rig = np.concatenate([kp] * reps), np.concatenate([rig] * reps)
    cams = {g: Cameras.from_store(lab, g, "_est")
            for g in np.unique(rig)}
    chunk = int(chunk or cfg["label"]["chunk"])
    lcfg = {k: v for k, v in cfg["label"].items() if k not in label_stage.OWN}
    tasks = []
    for s in range(0, len(rig), chunk):
        seg = label_stage.segments(rig[s:s + chunk])
        tasks.append((kp[s:s + chunk], seg, {g: cams[g] for _, _, g in seg}))
    # Both clusters up at once and measured alternately (best of `repeats`), so a change in
    # the machine's other load hits both alike.
    import contextlib
    times = {1: float("inf"), 2: float("inf")}
    with contextlib.ExitStack() as stack:
        clients = {}
        for n in (1, 2):
            stack.enter_context(local_cluster_config())
            cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0", silence_logs=40))
            clients[n] = stack.enter_context(Client(cluster))
            clients[n].run(worker_setup)  # one thread per worker process
        for _ in range(repeats):
            for n, client in clients.items():
                t0 = time.perf_counter()
                futs = [client.submit(label_stage.label_task, k, sg, c, lcfg, label_stage.labelling.label_chunk,
                                      pure=False)
                        for k, sg, c in tasks]
                client.gather(futs)
                times[n] = min(times[n], time.perf_counter() - t0)
    return {"label_chunks_1w_s": round(times[1], 3), "label_chunks_2w_s": round(times[2], 3),
            "dask_speedup_2w": round(times[1] / times[2], 3), "label_chunks": len(tasks),
            "label_frames": int(len(rig))}


STEP = """
import os, sys, time, torch
import pipeline.training  # chooses the wait policy unless OMP_WAIT_POLICY is set
from pipeline.training.loop import build_model
from pipeline.training import pose3d
torch.set_num_threads(int(sys.argv[1]))
layout = torch.channels_last if sys.argv[2] == "channels_last" else torch.contiguous_format
c = pose3d.PRESETS["cpu"]
m = build_model(c, "3d").to(memory_format=layout)
opt = torch.optim.Adam(m.parameters(), 1e-3)
x = torch.randn(c["batch_size"], 3, c["input_size"], c["input_size"]).contiguous(memory_format=layout)
def step():
    loss = m(x).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(5):
    step()
t0 = time.perf_counter()
for _ in range(int(sys.argv[3])):
    step()
print((time.perf_counter() - t0) / int(sys.argv[3]) * 1000)
"""


FILL = """
import sys, time, numpy as np, torch
import torch.utils.deterministic as tud
import pipeline.training
from pipeline.training import augment as aug
from pipeline.training.loop import build_model
from pipeline.training import pose3d
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)
c = pose3d.PRESETS["cpu"]
m = build_model(c, "3d").to(memory_format=torch.channels_last)
opt = torch.optim.Adam(m.parameters(), 1e-3)
rng = np.random.default_rng(0)
S, B, cfg = c["input_size"], c["batch_size"], aug.resolve({})
crops = torch.from_numpy(rng.integers(0, 256, (B, S, S, 3), dtype=np.uint8))
def step():  # as the training loop's: augmented crops, the heatmaps kept
    x = aug.normalise(aug.augment_images(aug.to_float(crops), aug.sample_params(rng, B, cfg)))
    pred, prob = m(x.contiguous(memory_format=torch.channels_last), return_prob=True)
    loss = pred.pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
ms = {True: [], False: []}
for _ in range(3):
    step()
for r in range(int(sys.argv[1])):
    for fill in (True, False):  # alternated, so the machine's drift falls on both
        tud.fill_uninitialized_memory = fill
        step()
        t0 = time.perf_counter()
        for _ in range(4):
            step()
        ms[fill].append((time.perf_counter() - t0) / 4 * 1000)
print(sorted(ms[True])[len(ms[True]) // 2], sorted(ms[False])[len(ms[False]) // 2])
"""


def fill_steps(rounds: int = 12) -> dict:
    """Median milliseconds per 3D training step (1 thread, deterministic algorithms) with torch's
    NaN fill of uninitialised memory and without it (loop.deterministic turns it off), blocks of
    4 steps alternated in one process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    p = subprocess.run([sys.executable, "-c", FILL, str(rounds)], cwd=REPO, env=env, capture_output=True,
                       text=True, check=True)
    fill, nofill = (float(v) for v in p.stdout.strip().splitlines()[-1].split())
    return {"1 thread, deterministic, NaN fill": round(fill, 1), "1 thread, deterministic, no fill": round(nofill, 1)}


def training_steps(iters: int = 25) -> dict:
    """Milliseconds per training step of the cpu preset's 3D network (batch 32, one fresh
    process each, since OpenMP reads its wait policy once): threads 1 and 2, waiting threads
    spinning or sleeping (OMP_WAIT_POLICY=PASSIVE), channels_last or not, on the otherwise idle
    machine and beside one busy process (another job on the machine)."""
    cases = [("1 thread", "1", "channels_last", None), ("2 threads, spin", "2", "channels_last", ""),
             ("2 threads, passive", "2", "channels_last", "PASSIVE"),
             ("2 threads, spin, NCHW", "2", "contiguous", "")]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = {}
    for load in ("idle", "busy"):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
        try:
            for name, th, layout, policy in cases:
                # "": the library's default (spin, then sleep); None: pipeline.training chooses
                e = dict(env, **({"OMP_WAIT_POLICY": policy} if policy is not None else {}))
                p = subprocess.run([sys.executable, "-c", STEP, th, layout, str(iters)], cwd=REPO, env=e,
                                   capture_output=True, text=True, check=True)
                out[f"{name}, {load}"] = round(float(p.stdout.strip().splitlines()[-1]), 1)
        finally:
            if hog is not None:
                hog.kill()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller studio, shorter training")
    ap.add_argument("--root", default=None, help="artifact root (default: a fresh temporary folder)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for the demo (default: unset, every core given)")
    a = ap.parse_args()
    overrides = QUICK if a.quick else []
    root = Path(a.root or tempfile.mkdtemp(prefix="epipose-bench-"))
    from pipeline.cores import available_cores
    cores = available_cores()
    demo_s, out1, cpu_s = run_demo(root, overrides, a.threads)
    util = cpu_s / demo_s / cores
    st = stage_seconds(out1)
    print(out1)
    metrics = demo_metrics(root, overrides)
    rerun_s, out2, _ = run_demo(root, overrides, a.threads)
    reused = stage_seconds(out2)
    print(f"{'stage':<14}{'first run s':>12}{'second run s':>14}")
    for k in st:
        print(f"{k:<14}{st[k]:>12.1f}{reused.get(k, float('nan')):>14.2f}")
    print(f"{'whole demo':<14}{demo_s:>12.1f}{rerun_s:>14.1f}   (second / first = {rerun_s / demo_s:.3f})")
    print(f"first run: {cpu_s:.0f} CPU s over {demo_s:.0f} s on {cores} cores = {util:.2f} of the machine")
    steps = {**training_steps(10 if a.quick else 25), **fill_steps(4 if a.quick else 12)}
    print("training step of the cpu preset's 3D network, ms (one process each):")
    for k, v in steps.items():
        print(f"  {k:<32}{v:>8.1f}")
    print(f"  2 threads: spin / passive on the idle machine {steps['2 threads, spin, idle'] / steps['2 threads, passive, idle']:.2f}, "
          f"beside a busy process {steps['2 threads, spin, busy'] / steps['2 threads, passive, busy']:.2f}; "
          f"channels_last / NCHW {steps['2 threads, spin, idle'] / steps['2 threads, spin, NCHW, idle']:.2f}; "
          f"NaN fill / none {steps['1 thread, deterministic, NaN fill'] / steps['1 thread, deterministic, no fill']:.2f}")
    sp = label_speedup(root, overrides, 20_000 if a.quick else 100_000)
    print(f"labelling {sp['label_frames']} frames in {sp['label_chunks']} chunks on Dask: 1 worker {sp['label_chunks_1w_s']:.2f} s, "
          f"2 workers {sp['label_chunks_2w_s']:.2f} s, speed-up {sp['dask_speedup_2w']:.2f}x "
          f"(on {os.cpu_count()} cores)")
    save("chain", {"demo_s": round(demo_s, 1), "cpu_utilisation": round(util, 3), "cores": cores,
                   "threads": a.threads or cores, "cpu_s": round(cpu_s, 1),
                   "metrics": metrics, "rerun_s": round(rerun_s, 1),
                      "rerun_over_demo": round(rerun_s / demo_s, 4), **sp, "quick": a.quick,
                      "step_ms": steps,
                      "stages": st}, a.quick)


if __name__ == "__main__":  # Dask's LocalCluster starts worker processes that re-import __main__
    main()
