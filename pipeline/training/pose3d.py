"""The 3D integral pose network: training on pseudo-labels or ground truth, and prediction.

Targets: root-relative 3D in each camera's frame, [F,V,J,3], with a mask [F,V,J]; from the
label store (self-supervised, SS: "mean bones" units) or, when `targets is None`, from the
dataset's ground truth (fully supervised, FS: millimetres). The network's volume is aligned
with the crop: its x, y axes run along the image's, z along depth, all in [-1, 1]. A pose in
target units is the soft-argmax output minus its root joint, times one scalar `scale`
(target units per normalised unit) fixed from the training targets so the poses fill
about `target_extent` of the volume. Loss: smooth L1 on root-relative joints, masked
(pipeline/training/loop.py trains it). Validation: the last `val_clips` clips of the training
split (training people, never test people) are left out of training and scored after every
epoch (loss, MPJPE, NMPJPE; pipeline/training/validation.py), in the checkpoint's `validation`.

Missing images: a dataset may hold `image_ok` [F,V] bool (False where a video frame could not
be decoded and the crop is black; absent = every crop is good). Training skips those
(frame, view) samples and `predict` gives NaN poses for them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..camera import store_poses_in_cameras
from ..joints import J, ROOT
from . import augment as aug
from . import loop, validation
from .images import ImageSource, dataset_images, frame_indices, image_ok
from .loop import deterministic, fit, load_model, run_network

log = logging.getLogger("pipeline")

PRESETS: dict[str, dict] = {
    # Fits the default demo on 2 CPU cores: a narrow ResNet-18 at 64x64, a 16-deep volume.
    # 6 epochs: started from the 2D network (the train3d stage's init), better than 12 from
    # scratch (FROM_SCRATCH) on the studio
    "cpu": {
        "resnet": 18, "width": 0.25, "deconv_channels": 64, "deconv_layers": 3, "depth": 16,
        "input_size": 64, "batch_size": 32, "epochs": 6, "iters_per_epoch": 100,
        "lr": 1e-3, "lr_steps": (5,), "lr_gamma": 0.1, "weight_decay": 0.0,
        "smooth_l1_beta": 0.02, "target_extent": 0.8, "min_valid_joints": 8,
        # num_threads None: every core given (pipeline.training.threads; OMP_NUM_THREADS limits it;
        # on a machine other jobs keep busy, fewer threads than cores run faster: set it there)
        "augment": {}, "pretrained": None, "seed": 0, "amp": True, "num_threads": None,
        # init: an integral network checkpoint to start from (loop.seed_weights); the train3d
        # stage sets it to the pretrain2d network when its plan trains one
        "init": None,
        "max_memory_mb": 4096, "eval_batch_size": 256, "variance_weight": 0.0, "virtual_camera": True,
        # six copies of every crop, one per RGB channel order (ColourPermuted): on the studio
        # with 3 training people, SS MPJPE on the unseen test person went from 174 to 163 mm
        "colour_permute": True, "deterministic": True, "keep_checkpoints": 2,
        # the last val_clips clips of the training split are held out and scored after every
        # epoch (pipeline/training/validation.py); 0: train on every training clip
        "val_clips": 1,
    },
    # The paper: ResNet-50, 256x256 input, a 64^3 volume, 140 epochs, lr x0.1 at 90 and 120.
    "paper": {
        "resnet": 50, "width": 1.0, "deconv_channels": 256, "deconv_layers": 3, "depth": 64,
        "input_size": 256, "batch_size": 32, "epochs": 140, "iters_per_epoch": None,
        "lr": 1e-3, "lr_steps": (90, 120), "lr_gamma": 0.1, "weight_decay": 0.0,
        "smooth_l1_beta": 0.02, "target_extent": 0.8, "min_valid_joints": 8,
        "augment": {}, "pretrained": None, "seed": 0, "amp": True, "num_threads": None, "init": None,
        "max_memory_mb": 16384, "eval_batch_size": 128, "variance_weight": 0.0, "virtual_camera": True,
        # off: cuDNN autotuning; at batch 32, 1,131 vs 796 images/s on an H200, 1,057 vs 876 on an
        # H100 (bench/gpu.py, second epoch)
        "colour_permute": False, "deterministic": False, "keep_checkpoints": 2,
        # the last val_clips clips of the training split are held out and scored after every
        # epoch (pipeline/training/validation.py); 0: train on every training clip
        "val_clips": 1,
    },
}


# A preset's schedule for a network that starts from scratch (no `init`): the cpu preset's
# 6 epochs are for one that starts from the 2D network (the train3d stage applies these when
# its plan has none, unless the user set the keys)
FROM_SCRATCH: dict[str, dict] = {"cpu": {"epochs": 12, "lr_steps": (9,)}, "paper": {}}


def resolve_cfg(cfg: dict | None) -> dict:
    """PRESETS[cfg['preset']] (default 'cpu') overridden by cfg's other keys, every key checked
    (loop.resolve_cfg): a one-line ValueError naming a bad key."""
    return loop.resolve_cfg(cfg, PRESETS, "train3d")


def gt_camera_poses(dataset) -> np.ndarray:
    """Ground-truth root-relative poses in each camera's frame, mm: [F,V,J,3] (NaN where unknown)."""
    try:
        Xc = store_poses_in_cameras(dataset)
    except ValueError as e:
        raise ValueError(f"fully supervised training: {e}") from e
    return (Xc - Xc[:, :, ROOT:ROOT + 1]).astype(np.float32)


def crop_rotations(dataset, frames: np.ndarray | None = None) -> np.ndarray:
    """Rotations [f,V,3,3] from each camera's frame to its crop's virtual camera: the camera
    turned (about its centre, by the smallest rotation) to look through the crop box's centre.

    A crop does not show where it sat in the image, and a person at the image's edge is seen
    at an angle: a camera-frame pose is ambiguous from the crop by that angle (up to ~15°
    on the studio's rig). In the virtual camera the crop is centred on the optical axis, so
    the in-crop appearance fixes the pose. Lens distortion is ignored (a small effect on the
    ray). Uses K [G,V,3,3], rig [F] and crop_boxes [F,V,4] of the dataset store."""
    from ..camera import rodrigues_to_matrix
    for name in ("crop_boxes", "K", "rig"):
        if name not in dataset:
            raise ValueError(f"the virtual crop camera needs `{name}` in the dataset store; it is absent")
    fr = np.arange(dataset["rig"].shape[0]) if frames is None else np.asarray(frames, dtype=np.int64)
    boxes = np.asarray(dataset["crop_boxes"].oindex[fr] if fr.size else np.zeros((0,) + dataset["crop_boxes"].shape[1:]),
                       dtype=np.float64)
    K = np.asarray(dataset["K"][:], dtype=np.float64)[np.asarray(dataset["rig"][:])[fr]]  # [f,V,3,3]
    c = boxes[..., :2] + boxes[..., 2:] / 2
    d = np.einsum("fvij,fvj->fvi", np.linalg.inv(K), np.concatenate([c, np.ones(c.shape[:-1] + (1,))], -1))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(d, z)
    sin = np.linalg.norm(axis, axis=-1, keepdims=True)
    ang = np.arctan2(sin, d @ z[:, None])
    rotvec = np.where(sin > 1e-12, axis / np.maximum(sin, 1e-12) * ang, 0.0)
    return rodrigues_to_matrix(rotvec)


def check_targets(targets: np.ndarray, mask: np.ndarray | None, F: int, V: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate targets [F,V,J,3] and mask [F,V,J]; returns float32 targets (0 where masked) and bool mask."""
    targets = np.asarray(targets, dtype=np.float32)
    if targets.shape != (F, V, J, 3):
        raise ValueError(f"targets must be [F,V,J,3] = {(F, V, J, 3)} to match the dataset, got {targets.shape}")
    finite = np.all(np.isfinite(targets), axis=-1)
    if mask is None:
        mask = finite
    mask = np.asarray(mask)
    if mask.shape != (F, V, J):
        raise ValueError(f"mask must be [F,V,J] = {(F, V, J)}, got {mask.shape}")
    mask = mask.astype(bool)
    bad = mask & ~finite
    if bad.any():
        raise ValueError(f"targets contain NaN/inf at {int(bad.sum())} joints the mask marks valid "
                         f"(first at frame {int(np.argwhere(bad)[0][0])})")
    return np.where(mask[..., None], targets, 0).astype(np.float32), mask


def train(cfg: dict, dataset, targets: np.ndarray | None, mask: np.ndarray | None, out_dir: Path,
          progress: bool = True) -> Path:
    """Train the 3D integral network on the training split (split == 0); returns out_dir/final.pt.

    targets [F,V,J,3] root-relative camera-frame poses (None: ground truth in mm, the FS
    baseline); mask [F,V,J] joints usable for the loss (None: where targets are finite).
    A (frame, view) trains when its root and at least `min_valid_joints` joints are valid and
    its image is good (the dataset's `image_ok`, when it has one).
    """
    cfg = resolve_cfg(cfg)
    im = dataset_images(dataset, cfg["input_size"])
    F, V = im.shape[:2]
    if targets is None:
        targets, units = gt_camera_poses(dataset), "mm"
        mask = np.all(np.isfinite(targets), axis=-1) if mask is None else mask
    else:
        units = "label"
    targets, mask = check_targets(targets, mask, F, V)
    if "split" not in dataset:
        raise ValueError("dataset store has no `split` array")
    split = np.asarray(dataset["split"][:])
    ok = (split[:, None] == 0) & mask[..., ROOT] & (mask.sum(-1) >= int(cfg["min_valid_joints"]))
    good = image_ok(dataset, (F, V))
    skipped = int((ok & ~good).sum())
    if skipped:
        log.info("train3d: %d training (frame, view) samples skipped: their image could not be decoded (image_ok)",
                 skipped)
    ok &= good
    held = np.zeros(F, bool)
    held[validation.validation_frames(dataset, int(cfg["val_clips"]))] = True
    val_ok, ok = ok & held[:, None], ok & ~held[:, None]
    samples = np.argwhere(ok).astype(np.int64)  # [N,2] (frame, view)
    if len(samples) == 0:
        raise ValueError("empty training set: no training-split (frame, view) has its root, "
                         f">= {cfg['min_valid_joints']} valid joints" + (" and a good image (image_ok)" if skipped else ""))
    rot = crop_rotations(dataset) if cfg["virtual_camera"] else None

    def pairs(sel):  # root-relative targets of (frame, view)s, in the crop's virtual camera
        t = targets[sel[:, 0], sel[:, 1]]
        t = t - t[:, ROOT:ROOT + 1]
        if rot is not None:  # learn poses in the crop's virtual camera; predict turns them back
            t = np.einsum("nij,nkj->nki", rot[sel[:, 0], sel[:, 1]], t).astype(np.float32)
        return t, mask[sel[:, 0], sel[:, 1]]
    t, m = pairs(samples)
    # one scalar so that the training poses fill about target_extent of the [-1,1] volume
    q = float(np.quantile(np.abs(t[m]), 0.99))
    if not q > 0:
        raise ValueError("targets are all zero: nothing to learn")
    scale = q / float(cfg["target_extent"])
    images = ImageSource(im, samples[:, 0], cfg["max_memory_mb"], progress)
    validate = None
    vs = np.argwhere(val_ok).astype(np.int64)
    if len(vs):
        vt, vm = pairs(vs)
        mb = dataset.attrs.get("mean_bone_mm")
        mm = scale * (1.0 if units == "mm" else (float(mb) if mb else float("nan")))
        val = validation.Validation(ImageSource(im, vs[:, 0], cfg["max_memory_mb"], False), vs, vt / scale, vm,
                                    mm if np.isfinite(mm) else None)
        validate = validation.scorer(val, float(cfg["smooth_l1_beta"]), int(cfg["eval_batch_size"]))
    return fit(cfg, "3d", images, samples, t / scale, m, scale, units, Path(out_dir),
               extra_meta={"virtual_camera": bool(cfg["virtual_camera"]), "val_samples": int(len(vs))},
               progress=progress, validate=validate)


def predict(ckpt: Path, dataset, frames: np.ndarray | slice, progress: bool = True) -> np.ndarray:
    """3D poses [f,V,J,3] for the given frames: root-relative, camera frame, in the units the
    network was trained on (checkpoint 'units': 'mm' for FS, 'label' = mean bones for SS).

    NaN for every joint of a (frame, view) whose image is missing (dataset `image_ok` False):
    callers leave those out (pipeline.evaluation.scoring refuses NaN at a scored joint: pass it
    mask = np.isfinite(pred).all(-1); refine.make_pairs drops such rows itself)."""
    model, meta = load_model(Path(ckpt), "3d")
    im = dataset_images(dataset, meta["arch"]["input_size"])
    fr = frame_indices(frames, im.shape[0])
    with deterministic(meta["cfg"].get("num_threads"), meta["cfg"].get("deterministic", True)):
        c = run_network(model, im, fr, int(meta["cfg"].get("eval_batch_size", 128)), progress)
    pose = (c - c[:, :, ROOT:ROOT + 1]) * meta["scale"]
    if meta.get("virtual_camera"):  # back from the crop's virtual camera to the real one
        pose = np.einsum("fvji,fvkj->fvki", crop_rotations(dataset, fr), pose)
    pose = pose.astype(np.float32)
    pose[~image_ok(dataset, im.shape[:2])[fr]] = np.nan
    return pose


def predict_crops(ckpt: Path, crops: np.ndarray) -> np.ndarray:
    """3D poses [N,J,3] for uint8 crops [N,S,S,3] (S = the network's input size), in the
    crops' virtual cameras when the network was trained so (see crop_rotations)."""
    model, meta = load_model(Path(ckpt), "3d")
    S = int(meta["arch"]["input_size"])
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (S, S, 3) or crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 [N,{S},{S},3], got {crops.shape} {crops.dtype}")
    with torch.inference_mode():
        c = model(aug.normalise(aug.to_float(torch.from_numpy(crops)))).numpy()
    return ((c - c[:, ROOT:ROOT + 1]) * meta["scale"]).astype(np.float32)
