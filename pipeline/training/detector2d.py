"""The 2D detector (the paper's lower branch): the integral network with a 2D soft-argmax,
trained on a dataset's 2D labels of its TRAINING split only, then frozen.

Targets are `keypoints2d_gt` mapped into each crop (docs/stores.md: crop pixel (u, v) ↔
original (x0 + u·w/S, y0 + v·h/S)) and normalised to [-1, 1]; joints with visibility 0 or
NaN are masked out of the loss. With `colour_permute` (on in both presets; see
images.ColourPermuted) every training crop also appears with its RGB channels in each of the 6
orders, so that left and right are told apart by cues every person shares rather than by the
training people's own colours. `evaluate` scores
a checkpoint on held-out frames: mean error in original pixels and PCK at `alpha` × the crop
box's longer side (alpha = 0.05 by default, ≈ 10 cm on a person filling 80 % of the box: a
strict PCK; 0.1 is also reported).
Confidence (what detect2d reports) is the heatmap's mass near its soft-argmax
(models.integral.heatmap_confidence). The soft-argmax loss trains only the heatmap's mean,
and the spread term (variance_weight) is minimised by a delta wherever the target is
uncertain, so with them alone that mass does not track the error. `heatmap_nll_weight` > 0
adds the heatmap's cross-entropy against the bilinearly split target
(models.integral.heatmap_nll), a proper scoring rule, so that the confidence ranks the error
(figures: docs/results.md, bench/train.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..joints import J
from .images import ImageSource, dataset_images, frame_indices, image_ok
from .loop import deterministic, fit, load_model, resolve_cfg as _resolve, run_network
from .pose3d import PRESETS as PRESETS_3D

PRESETS: dict[str, dict] = {
    name: {**p, "min_valid_joints": 4, "smooth_l1_beta": 0.01, "depth": 1, "variance_weight": 0.1,
           "colour_permute": True,
           # > 0 adds the heatmap's cross-entropy (models.integral.heatmap_nll) to the loss, which
           # makes the heatmap confidence track the error; see the module docstring
           "heatmap_nll_weight": 0.0}
    for name, p in PRESETS_3D.items()
}
# the 2D network trains faster (no volume); fewer iterations suffice on the CPU. 20 epochs,
# not 10: at 10 the detector had not yet learnt to tell left from right (each pair on one spot)
# heatmap_nll_weight 0.02: chosen on the studio (docs/results.md); the paper preset's
# 64x64 heatmaps are untested with it, so it keeps 0
PRESETS["cpu"].update({"epochs": 20, "iters_per_epoch": 60, "lr_steps": (16,), "heatmap_nll_weight": 0.02})


def resolve_cfg(cfg: dict | None) -> dict:
    """PRESETS[cfg['preset']] (default 'cpu') overridden by cfg, every key's type and range
    checked (loop.check_cfg; heatmap_nll_weight >= 0): a one-line ValueError naming the key."""
    return _resolve(cfg, PRESETS, "pretrain2d")


def crop_coords(kp: np.ndarray, boxes: np.ndarray, S: int) -> np.ndarray:
    """Original pixels kp [...,J,2] -> normalised crop coordinates [...,J,2] in [-1,1].

    boxes [...,4] (x0, y0, w, h) broadcast over joints; S the crop size."""
    b = boxes[..., None, :]
    u = (kp[..., 0] - b[..., 0]) * S / b[..., 2]
    v = (kp[..., 1] - b[..., 1]) * S / b[..., 3]
    return np.stack([(2 * u + 1) / S - 1, (2 * v + 1) / S - 1], -1)


def original_coords(n: np.ndarray, boxes: np.ndarray, S: int) -> np.ndarray:
    """Inverse of crop_coords: normalised [...,J,2] -> original pixels [...,J,2]."""
    b = boxes[..., None, :]
    u = ((n[..., 0] + 1) * S - 1) / 2
    v = ((n[..., 1] + 1) * S - 1) / 2
    return np.stack([b[..., 0] + u * b[..., 2] / S, b[..., 1] + v * b[..., 3] / S], -1)


def _labels(dataset, S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for name in ("keypoints2d_gt", "crop_boxes", "split"):
        if name not in dataset:
            raise ValueError(f"2D pre-training needs `{name}` in the dataset store; it is absent")
    kp = np.asarray(dataset["keypoints2d_gt"][:], dtype=np.float64)
    if kp.ndim != 4 or kp.shape[2:] != (J, 3):
        raise ValueError(f"keypoints2d_gt must be [F,V,{J},3], got {kp.shape}")
    boxes = np.asarray(dataset["crop_boxes"][:], dtype=np.float64)
    if boxes.shape != kp.shape[:2] + (4,):
        raise ValueError(f"crop_boxes must be [F,V,4] = {kp.shape[:2] + (4,)}, got {boxes.shape}")
    if np.any(boxes[..., 2:] <= 0):
        raise ValueError("crop_boxes have non-positive width or height")
    n = crop_coords(kp[..., :2], boxes, S)
    mask = np.all(np.isfinite(n), -1) & (np.nan_to_num(kp[..., 2]) > 0) & np.all(np.abs(n) < 1, -1)
    return np.where(mask[..., None], n, 0).astype(np.float32), mask, np.asarray(dataset["split"][:])


def train(cfg: dict, dataset, out_dir: Path, progress: bool = True) -> Path:
    """Train the 2D detector on the training split's 2D labels; returns out_dir/final.pt.

    (frame, view) samples whose image is missing (dataset `image_ok` False) are skipped."""
    cfg = resolve_cfg(cfg)
    im = dataset_images(dataset, cfg["input_size"])
    S = im.shape[2]
    n, mask, split = _labels(dataset, S)
    ok = (split[:, None] == 0) & (mask.sum(-1) >= int(cfg["min_valid_joints"])) & image_ok(dataset, im.shape[:2])
    samples = np.argwhere(ok).astype(np.int64)
    if len(samples) == 0:
        raise ValueError("empty training set: no training-split (frame, view) has a good image (image_ok) and "
                         "enough visible 2D labels")
    images = ImageSource(im, samples[:, 0], cfg["max_memory_mb"], progress)
    return fit(cfg, "2d", images, samples, n[samples[:, 0], samples[:, 1]], mask[samples[:, 0], samples[:, 1]],
               1.0, "crop", Path(out_dir), extra_meta={"trained_on": dataset.attrs.get("dataset", "?"),
                                                         "train_subjects": _subjects(dataset, split == 0)},
               progress=progress)


def _subjects(dataset, sel: np.ndarray) -> list:
    if "subject" not in dataset:
        return []
    names = list(dataset.attrs.get("subjects", []))
    ids = np.unique(np.asarray(dataset["subject"][:])[sel])
    return [names[i] if i < len(names) else int(i) for i in ids.tolist()]


def predict(ckpt: Path, dataset, frames, progress: bool = True) -> np.ndarray:
    """keypoints2d [f,V,J,3] (x, y, confidence) in original pixels for the frames' crops;
    NaN (x, y and confidence) for every joint of a (frame, view) whose image is missing
    (dataset `image_ok` False)."""
    model, meta = load_model(Path(ckpt), "2d")
    im = dataset_images(dataset, meta["arch"]["input_size"])
    if "crop_boxes" not in dataset:
        raise ValueError("the dataset store has no `crop_boxes`: crop pixels cannot be mapped to the original image")
    fr = frame_indices(frames, im.shape[0])
    with deterministic(meta["cfg"].get("num_threads"), meta["cfg"].get("deterministic", True)):
        coords, conf = run_network(model, im, fr, int(meta["cfg"].get("eval_batch_size", 128)), progress, True)
    boxes = np.asarray(dataset["crop_boxes"].oindex[fr], dtype=np.float64) if fr.size else np.zeros((0, im.shape[1], 4))
    xy = original_coords(coords.astype(np.float64), boxes, im.shape[2])
    kp = np.concatenate([xy, conf[..., None]], -1).astype(np.float32)
    kp[~image_ok(dataset, im.shape[:2])[fr]] = np.nan
    return kp


def evaluate(ckpt: Path, dataset, split: int = 1, alphas=(0.05, 0.1), max_frames: int | None = None,
             progress: bool = True) -> dict:
    """PCK and mean pixel error of the detector on the frames of `split` (1 = test subjects),
    over joints with ground-truth visibility 1 in (frame, view)s with a good image (image_ok).
    Returns a dict of figures."""
    sp = np.asarray(dataset["split"][:])
    fr = np.flatnonzero(sp == split)
    if fr.size == 0:
        raise ValueError(f"no frames with split == {split} to evaluate on")
    if max_frames and fr.size > max_frames:
        fr = fr[np.linspace(0, fr.size - 1, max_frames).round().astype(int)]
    pred = predict(ckpt, dataset, fr, progress)
    gt = np.asarray(dataset["keypoints2d_gt"].oindex[fr], dtype=np.float64)
    boxes = np.asarray(dataset["crop_boxes"].oindex[fr], dtype=np.float64)
    vis = np.all(np.isfinite(gt[..., :2]), -1) & (np.nan_to_num(gt[..., 2]) > 0)
    vis &= np.all(np.isfinite(pred[..., :2]), -1)  # no prediction where the image is missing
    if not vis.any():
        raise ValueError(f"no visible ground-truth joint with a good image in the {fr.size} frames of split {split}")
    err = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)[vis]
    side = np.max(boxes[..., 2:], -1)[..., None].repeat(J, -1)[vis]
    out = {"frames": int(fr.size), "joints": int(vis.sum()), "mean_px": float(err.mean()),
           "median_px": float(np.median(err)),
           "mean_crop_px": float((err / side * dataset["images"].shape[2]).mean())}
    for a in alphas:
        out[f"pck@{a:g}"] = float((err <= a * side).mean())
    return out
