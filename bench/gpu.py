"""GPU benchmark: the paper-size networks' inference and training images/s, and a CUDA
correctness smoke, in one short run (estimated 2-4 min on one H100) for a lent GPU machine.

    python3 bench/gpu.py                      # full sizes, on CUDA
    .venv/bin/python bench/gpu.py --smoke     # tiny sizes, a few seconds on the CPU: the plumbing only
    python3 bench/gpu.py --compile            # also torch.compile the detector (about a minute more)

1. Detector inference (pretrain2d's paper preset: ResNet-50, 256x256, 2D head), eval, bf16:
   model only (inputs already on the GPU, channels_last, cudnn.benchmark) at batch 64/128/256,
   and at 128 with predict()'s settings (deterministic mode, no cudnn.benchmark); end to end
   from uint8 crops [F,V,S,S,3] in host memory through loop.run_network as predict() runs
   it, and the same loop with the uint8 batch moved to the GPU before its float conversion and
   channels_last input (a candidate change, measured; same settings).
2. Training images/s through loop.fit (bf16 AMP, channels_last) on synthetic crops and
   random normalised targets, deterministic: the 3D paper preset at batch 32 and 64, the 2D
   detector (its preset's colour permutation on) at 32; and 3D at 32 with `deterministic` off
   (cuDNN autotuning, the paper preset's default); the same number of images each (--iters at batch 32, two epochs).
   Each reports fit's own figure (both epochs, warm-up included) and the second epoch alone.
3. Correctness: the CUDA-trained 3D checkpoint loads on the CPU (load_model) and predict_crops
   is finite; the trained detector's bf16 and fp32 (TF32 off) coordinates agree within 1 crop
   pixel; the two end-to-end loops agree.
Progress goes to stdout; the last line is one JSON object, also written to $OUT/gpu.json (else
bench/out/gpu.json) after every section, so a run cut short still leaves what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save as save_result  # noqa: E402

from models.integral import soft_argmax_2d  # noqa: E402
from pipeline.training import detector2d, images, loop, pose3d  # noqa: E402
from pipeline.training import augment as aug  # noqa: E402
from pipeline.joints import J, ROOT  # noqa: E402

OUT = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "out")
RES: dict = {}
T0 = time.perf_counter()
TOL_PX = 1.0  # bf16 vs fp32 detector coordinates, max abs, in crop pixels


def say(msg: str) -> None:
    line = f"[{time.perf_counter() - T0:6.1f} s] {msg}"
    print(line, flush=True)
    with open(OUT / "gpu_progress.log", "a") as f:
        f.write(line + "\n")


def save() -> None:
    (OUT / "gpu.json").write_text(json.dumps(RES, indent=1, default=float))


def guarded(name: str, fn, *args):
    """fn(*args); an exception is logged and recorded, so one failing part costs only itself."""
    try:
        return fn(*args)
    except Exception as e:
        traceback.print_exc()
        RES.setdefault("errors", {})[name] = repr(e)[:500]
        say(f"FAILED {name}: {e!r}"[:500])
        save()


class NumpyStore:
    """A numpy array with the surface of a zarr array that ImageSource reads: shape, dtype,
    ndim, chunks, [] and .oindex[] (with one sorted frame-index array it is plain fancy indexing)."""

    def __init__(self, a: np.ndarray, chunk: int = 64):
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.chunks = (chunk,) + a.shape[1:]
        self.oindex = self

    def __getitem__(self, key):
        return self.a[key]


def crops(rng: np.random.Generator, n: int, S: int) -> np.ndarray:
    """n smooth random RGB crops uint8 [n,S,S,3]: 8x8 noise upsampled, so heatmaps are not flat."""
    small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (S, S), interpolation=cv2.INTER_CUBIC) for s in small])


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(step, n: int, seconds: float, dev: torch.device) -> float:
    """images/s of step() (n images each) after 3 warm-up calls (cudnn.benchmark tunes in the first)."""
    for _ in range(3):
        step()
    sync(dev)
    t, k = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:  # the GPU queue runs ahead; the final sync closes it
        step()
        k += 1
    sync(dev)
    return k * n / (time.perf_counter() - t)


def run_uploaded(model, store, frames, B: int, dev: torch.device) -> np.ndarray:
    """run_network's loop with the uint8 batch moved to the device before to_float/normalise
    (a quarter of the bytes over PCIe, the conversion on the GPU) and channels_last input."""
    V = store.shape[1]
    pairs = np.stack(np.meshgrid(frames, np.arange(V), indexing="ij"), -1).reshape(-1, 2)
    src = images.ImageSource(store, frames, max_memory_mb=0)
    outs = []
    with torch.inference_mode():
        for s in range(0, len(pairs), B):
            p = pairs[s:s + B]
            x = torch.from_numpy(src.get(p[:, 0], p[:, 1])).to(dev)
            x = aug.normalise(aug.to_float(x)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                outs.append(model(x).float().cpu().numpy())
    return np.concatenate(outs).reshape(len(frames), V, J, 2)


def detector(a, cfg2: dict, dev: torch.device, rng) -> None:
    S, B = int(cfg2["input_size"]), a.batches[len(a.batches) // 2]
    model = loop.build_model({k: cfg2[k] for k in loop.ARCH_KEYS}, "2d").to(dev).eval()
    model = model.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True  # the pipeline leaves it off; a serving loop would turn it on
    amp = {"device_type": dev.type, "dtype": torch.bfloat16, "enabled": dev.type == "cuda"}
    res = RES["detector"] = {"input": S, "model_only": {}}
    for b in a.batches:
        x = torch.randn(b, 3, S, S, device=dev).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(**amp):
            res["model_only"][str(b)] = r = rate(lambda: model(x), b, a.seconds, dev)
        say(f"detector model only, batch {b}: {r:,.0f} images/s")
    x = torch.randn(B, 3, S, S, device=dev).contiguous(memory_format=torch.channels_last)
    if a.compile:
        try:
            t = time.perf_counter()
            cm = torch.compile(model)
            with torch.inference_mode(), torch.autocast(**amp):
                cm(x)
                sync(dev)
                res["compile_s"] = time.perf_counter() - t
                res[f"model_only_compiled_{B}"] = r = rate(lambda: cm(x), B, a.seconds, dev)
            say(f"detector torch.compile: {res['compile_s']:.0f} s to compile, batch {B}: {r:,.0f} images/s")
        except Exception as e:  # a compile failure should not cost the rest of the run
            res["compile_error"] = repr(e)[:300]
            say(f"torch.compile failed: {e!r}"[:300])
    # from here on the pipeline's settings, as predict() runs: deterministic mode, no cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    with torch.inference_mode(), torch.autocast(**amp), loop.deterministic(None):
        res[f"model_only_predict_settings_{B}"] = r = rate(lambda: model(x), B, a.seconds, dev)
    say(f"detector model only, batch {B}, deterministic, no cudnn.benchmark: {r:,.0f} images/s")
    save()
    # end to end: uint8 crops in host memory, streamed as predict() streams a zarr store
    base = crops(rng, a.e2e_unique * a.views, S).reshape(a.e2e_unique, a.views, S, S, 3)
    store = NumpyStore(np.tile(base, (a.e2e_frames // a.e2e_unique, 1, 1, 1, 1)))
    fr = np.arange(store.shape[0])
    warm = fr[:max(1, 2 * B // a.views)]
    model = model.to(memory_format=torch.contiguous_format)  # as load_model returns it
    with loop.deterministic(None):
        ref = loop.run_network(model, store, warm, B, progress=False)
        t = time.perf_counter()
        loop.run_network(model, store, fr, B, progress=False)
        res[f"e2e_run_network_{B}"] = r = fr.size * a.views / (time.perf_counter() - t)
        say(f"detector end to end, run_network, batch {B}, {fr.size * a.views} images: {r:,.0f} images/s")
        model = model.to(memory_format=torch.channels_last)
        got = run_uploaded(model, store, warm, B, dev)
        t = time.perf_counter()
        run_uploaded(model, store, fr, B, dev)
        res[f"e2e_upload_uint8_{B}"] = r = fr.size * a.views / (time.perf_counter() - t)
    say(f"detector end to end, uint8 uploaded then converted, batch {B}: {r:,.0f} images/s")
    RES.setdefault("checks", {})["e2e_variants_max_px"] = float(np.abs(got - ref).max() * S / 2)
    save()


def train_runs(a, over: dict, S: int, dev: torch.device, rng, work: Path) -> dict[str, Path]:
    """fit() runs; returns each run's checkpoint (final.pt, or the last epoch's without zarr)."""
    V, Fr = a.views, a.train_frames
    cfg3 = lambda b: pose3d.resolve_cfg({"preset": "paper", **over, "depth": a.depth, "batch_size": b})
    cfg2 = lambda b: pose3d.resolve_cfg({"preset": "paper", **over, "batch_size": b}, detector2d.PRESETS)
    src = images.ImageSource(NumpyStore(crops(rng, Fr * V, S).reshape(Fr, V, S, S, 3), 16), np.arange(Fr), 1e9)
    samples = np.argwhere(np.ones((Fr, V), bool)).astype(np.int64)
    t3 = rng.uniform(-0.5, 0.5, (len(samples), J, 3)).astype(np.float32)
    t3 -= t3[:, ROOT:ROOT + 1]
    t2 = rng.uniform(-0.9, 0.9, (len(samples), J, 2)).astype(np.float32)
    ones = np.ones(t3.shape[:2], bool)
    # the 2D preset's colour_permute is on: fit() itself trains on the six channel orders, as in detector2d.train
    data = {"3d": (src, samples, t3, ones, 1.0, "label"), "2d": (src, samples, t2, ones, 1.0, "crop")}
    b1, b2 = a.train_batches
    runs = [(f"3d_b{b1}", cfg3(b1), False), (f"3d_b{b2}", cfg3(b2), False),
            (f"2d_b{b1}", cfg2(b1), False), (f"3d_b{b1}_fast", cfg3(b1), True)]
    paths = {}
    for tag, cfg, fast in runs:  # the same number of images per run, whatever the batch
        cfg = {**cfg, "epochs": 2, "iters_per_epoch": max(1, a.iters * b1 // cfg["batch_size"])}
        paths[tag] = guarded(f"train {tag}", train_one, tag, cfg, fast, data[tag[:2]], dev, work)
    torch.backends.cudnn.benchmark = False
    return paths


def train_one(tag: str, cfg: dict, fast: bool, data: tuple, dev: torch.device, work: Path) -> Path:
    """One fit(); its images/s over both epochs (fit's figure) and over the second alone."""
    cfg = {**cfg, "deterministic": not fast}  # fast: cuDNN autotuning, no deterministic algorithms
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t, err = time.perf_counter(), None
    try:
        path = loop.fit(cfg, tag[:2], *data, work / tag, extra_meta={"virtual_camera": False}, progress=False)
    except ModuleNotFoundError as e:  # no zarr: fit trained, then failed writing its loss curve
        err, path = repr(e), work / tag / "checkpoints" / "epoch-0002.pt"
    wall = time.perf_counter() - t
    from pipeline.training.checkpoint import load_checkpoint  # weights_only=True
    e1, e2 = (load_checkpoint(work / tag / "checkpoints" / f"epoch-000{i}.pt", "integral", mmap=True) for i in (1, 2))
    steady = (e2["images_seen"] - e1["images_seen"]) / (e2["train_seconds"] - e1["train_seconds"])
    ips = e2["images_seen"] / e2["train_seconds"]  # what fit stores as images_per_s
    r = RES.setdefault("train", {})[tag] = {
        "batch": cfg["batch_size"], "iters_per_epoch": cfg["iters_per_epoch"], "images_per_s": ips,
        "images_per_s_epoch2": steady, "wall_s": wall, "loss": e2["losses"], "cudnn_benchmark": fast,
        "deterministic": not fast, "error": err}
    if dev.type == "cuda":
        r["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    say(f"train {tag} (batch {cfg['batch_size']}): {ips:,.0f} images/s (epoch 2 alone {steady:,.0f}), "
        f"{wall:.0f} s wall" + (f"  ERROR {err}" if err else ""))
    save()
    return path


def checks(a, paths: dict, S: int, dev: torch.device, rng) -> None:
    res = RES.setdefault("checks", {})
    x = crops(rng, a.check_n, S)
    p3, p2 = paths.get(f"3d_b{a.train_batches[0]}"), paths.get(f"2d_b{a.train_batches[0]}")
    if p3 is None or p2 is None:
        raise RuntimeError("a training run these checks need failed")
    model, _ = loop.load_model(p3, "3d")  # on the CPU, whatever device trained it
    res["cpu_load_device"] = str(next(model.parameters()).device)
    res["cpu_predict_finite"] = bool(np.all(np.isfinite(pose3d.predict_crops(p3, x[:4]))))
    det, _ = loop.load_model(p2, "2d")
    det = det.to(dev).to(memory_format=torch.channels_last)
    xin = aug.normalise(aug.to_float(torch.from_numpy(x).to(dev))).contiguous(memory_format=torch.channels_last)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # a true fp32 reference
    with torch.inference_mode():  # the forward pass, split to see the logits too
        l32 = det.head(det.backbone(xin)).float()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            l16 = det.head(det.backbone(xin)).float()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    c32, c16 = soft_argmax_2d(l32)[0], soft_argmax_2d(l16)[0]
    d = (c16 - c32).abs().cpu().numpy() * S / 2
    res["bf16_vs_fp32_logits_max_rel"] = float((l16 - l32).abs().max() / l32.std())  # in logit std
    # how much the coordinates vary over the batch: a tiny difference means little if they barely move
    spread = float(c32.std(0).mean().cpu()) * S / 2
    res.update({"bf16_vs_fp32_max_px": float(d.max()), "bf16_vs_fp32_mean_px": float(d.mean()),
                "fp32_coord_spread_px": spread, "bf16_tolerance_px": TOL_PX, "bf16_ok": bool(d.max() <= TOL_PX)})
    say(f"checks: CPU load {res['cpu_load_device']}, predict_crops finite {res['cpu_predict_finite']}; "
        f"bf16 vs fp32 max {d.max():.3f} px, mean {d.mean():.3f} px (tolerance {TOL_PX} px; coordinates "
        f"spread {spread:.2f} px over the batch; logits max diff {res['bf16_vs_fp32_logits_max_rel']:.3f} std)")
    save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", "--quick", action="store_true", help="tiny sizes (CPU test of the plumbing)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the detector")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per model-only figure")
    ap.add_argument("--iters", type=int, default=150, help="training iterations per epoch (2 epochs)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_progress.log").unlink(missing_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # full: the paper's sizes; smoke: the CPU preset's narrow ResNet-18 at 64x64 and a few batches
    a.batches, a.train_batches, a.views, a.check_n, a.depth = (64, 128, 256), (32, 64), 4, 64, 64
    a.e2e_unique, a.e2e_frames, a.train_frames = 256, 2048, 256
    over = {}
    if a.smoke:
        a.batches, a.train_batches, a.views, a.check_n, a.depth = (4, 8, 16), (4, 8), 2, 8, 16
        a.e2e_unique, a.e2e_frames, a.train_frames, a.seconds, a.iters = 8, 16, 8, 0.3, 2
        over = {"resnet": 18, "width": 0.25, "deconv_channels": 64, "input_size": 64, "num_threads": 1}
        torch.set_num_threads(1)  # a shared 2-core machine
    try:  # an import, not a look-up: a wheel that is present but broken (numcodecs' ABI) shows here too
        import zarr
        zarr_ok = zarr.__version__
    except ImportError as e:
        zarr_ok = None
        RES["zarr_error"] = RES.setdefault("errors", {})["zarr"] = repr(e)
    RES.update({"smoke": a.smoke, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(), "zarr": zarr_ok})
    say(f"device {RES['device']}, torch {torch.__version__}, output {OUT}")
    if dev.type == "cpu":
        say("no CUDA: every part runs shrunk or as is on the CPU (fp32 end to end); timings mean nothing")
    if not zarr_ok:
        say(f"WARNING: zarr is not importable ({RES['zarr_error']}): fit() trains, then fails in _write_curve "
            "(no final.pt); images/s are read from the epoch checkpoints. Carry and install the .whl wheels.")
    rng = np.random.default_rng(0)
    cfg2 = pose3d.resolve_cfg({"preset": "paper", **over}, detector2d.PRESETS)
    S = int(cfg2["input_size"])
    guarded("detector", detector, a, cfg2, dev, rng)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))  # checkpoints (~0.4 GB each) stay out of $OUT
    try:
        paths = guarded("train", train_runs, a, over, S, dev, rng, work) or {}
        guarded("checks", checks, a, paths, S, dev, rng)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # the device has neither: an import of either would break the run there
    RES["imports_ok"] = not ({"prefect", "dask"} & {m.split(".")[0] for m in sys.modules})
    RES["total_s"] = time.perf_counter() - T0
    save()
    d, B = RES.get("detector", {}), a.batches[len(a.batches) // 2]
    say(f"detector goal >= 2,000 images/s: model only best {max(d.get('model_only', {}).values(), default=0):,.0f}, "
        f"end to end run_network {d.get(f'e2e_run_network_{B}', 0):,.0f}, uint8 uploaded "
        f"{d.get(f'e2e_upload_uint8_{B}', 0):,.0f}; {len(RES.get('errors', {}))} parts failed; "
        f"total {RES['total_s']:.0f} s")
    save_result("gpu", json.loads(json.dumps(RES, default=float)), a.smoke)
    sys.exit(1 if RES.get("errors") else 0)


if __name__ == "__main__":
    main()
