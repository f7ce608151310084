"""The dataset contract of docs/stores.md: check a zarr group against it, read its ground truth.

`check_dataset(group)` returns a list of problems (empty when the store is valid); every
adapter's tests call it, and `assert_dataset` raises ValueError listing them.

Beyond docs/stores.md's table: a store with `images` has `image_ok` [F, V] bool
(dimension_names ("frame", "view")), False where the crop could not be decoded (its pixels
are black: training and detectors skip it); `people_count` [F, V] (integer, optional: people
in the keypoint file of each frame and view, -1 where no readable file).
"""
from __future__ import annotations

import numpy as np
import zarr

from ..camera import store_poses_in_cameras
from ..joints import J, JOINTS

REQUIRED_ATTRS = ("dataset", "subjects", "clips", "actions", "fps", "crop_size", "licence", "source", "joints")


def _dims(arr) -> tuple | None:
    try:
        return tuple(arr.metadata.dimension_names) if arr.metadata.dimension_names else None
    except AttributeError:
        return None


def check_dataset(g: zarr.Group, require_images: bool = True, require_3d: bool = False) -> list[str]:
    """Problems with `g` as a dataset store (docs/stores.md); [] when it conforms."""
    bad: list[str] = []
    names = set(g.array_keys())
    need = {"crop_boxes", "keypoints2d_gt", "rig", "K", "R", "t", "dist", "size", "subject", "clip", "split",
            "frame_index"}
    if require_images:
        need.add("images")
    if "images" in names:
        need.add("image_ok")
    if require_3d:
        need.add("poses3d_world")
    for n in sorted(need - names):
        bad.append(f"missing array {n!r}")
    for n in names:
        if not _dims(g[n]):
            bad.append(f"array {n!r} has no dimension_names")
    if bad:
        return bad
    kp = g["keypoints2d_gt"]
    if kp.ndim != 4 or kp.shape[2:] != (J, 3) or kp.dtype != np.float32:
        bad.append(f"keypoints2d_gt: want [F,V,{J},3] float32, got {kp.shape} {kp.dtype}")
        return bad
    F, V = kp.shape[:2]
    G = g["K"].shape[0]
    want = {"crop_boxes": ((F, V, 4), np.float32), "rig": ((F,), np.int16), "subject": ((F,), np.int16),
            "clip": ((F,), np.int16), "split": ((F,), np.int16), "frame_index": ((F,), np.int32),
            "K": ((G, V, 3, 3), np.float64), "R": ((G, V, 3, 3), np.float64), "t": ((G, V, 3), np.float64),
            "dist": ((G, V, 5), np.float64), "size": ((G, V, 2), np.float64),
            "poses3d_world": ((F, J, 3), np.float32), "image_ok": ((F, V), np.bool_)}
    for n, (shape, dt) in want.items():
        if n in names and (g[n].shape != shape or g[n].dtype != dt):
            bad.append(f"{n}: want {shape} {np.dtype(dt)}, got {g[n].shape} {g[n].dtype}")
    attrs = dict(g.attrs)
    for a in REQUIRED_ATTRS:
        if a not in attrs:
            bad.append(f"missing attribute {a!r}")
    if bad:
        return bad
    if "images" in names:
        S = int(attrs["crop_size"])
        im = g["images"]
        if im.shape != (F, V, S, S, 3) or im.dtype != np.uint8:
            bad.append(f"images: want {(F, V, S, S, 3)} uint8, got {im.shape} {im.dtype}")
        elif tuple(im.chunks[1:]) != (1, S, S, 3):
            bad.append(f"images: chunks should be (n, 1, S, S, 3), got {im.chunks}")
    if "people_count" in names and (g["people_count"].shape != (F, V) or g["people_count"].dtype.kind != "i"):
        bad.append(f"people_count: want {(F, V)} integers, got {g['people_count'].shape} {g['people_count'].dtype}")
    if "image_ok" in names and tuple(_dims(g["image_ok"]) or ()) != ("frame", "view"):
        bad.append(f"image_ok: dimension_names should be ('frame', 'view'), got {_dims(g['image_ok'])}")
    if list(attrs["joints"]) != list(JOINTS):
        bad.append("attribute 'joints' differs from pipeline/joints.py")
    rig, subj, clip, split = (g[n][:] for n in ("rig", "subject", "clip", "split"))
    if F and (rig.min() < 0 or rig.max() >= G):
        bad.append("rig index out of range")
    if F and (subj.min() < 0 or subj.max() >= len(attrs["subjects"])):
        bad.append("subject index out of range")
    if F and (clip.min() < 0 or clip.max() >= len(attrs["clips"])):
        bad.append("clip index out of range")
    if not set(np.unique(split)) <= {0, 1}:
        bad.append("split must be 0 (train) or 1 (test)")
    for c in np.unique(clip):
        if len(np.unique(split[clip == c])) > 1:
            bad.append(f"clip {attrs['clips'][c]!r} is in both train and test")
    missing_actions = set(attrs["clips"]) - set(attrs["actions"])
    if missing_actions:
        bad.append(f"attribute 'actions' lacks clips {sorted(missing_actions)[:5]}")
    boxes = g["crop_boxes"][:]
    if np.any(boxes[..., 2:] <= 0):
        bad.append("crop_boxes with non-positive size")
    vis = kp[..., 2][:] if F else np.zeros(0)
    if not np.all(np.isnan(vis) | (vis == 0) | (vis == 1)):
        bad.append("keypoints2d_gt visibility must be 0, 1 or NaN")
    return bad


def assert_dataset(g: zarr.Group, **kw) -> None:
    bad = check_dataset(g, **kw)
    if bad:
        raise ValueError("dataset store breaks the contract:\n  " + "\n  ".join(bad))


def ground_truth(dataset, frames=None) -> dict:
    """Ground truth of a dataset store (docs/stores.md) in each camera's frame.

    frames: slice, index array or bool mask over F (None: the test split, split == 1).
    Returns {"gt" [f,V,J,3] mm camera frame (NaN where unknown), "mask" [f,V,J] bool,
             "actions" [f] str, "subjects" [f] str, "frame_ids" [f] int, "mean_bone_mm" float|None}.
    Raises ValueError when the store has no 3D ground truth or no extrinsics.
    """
    if "poses3d_world" not in dataset:
        raise ValueError("dataset has no 3D ground truth (poses3d_world): nothing to evaluate against")
    n = dataset["rig"].shape[0]
    if frames is None:
        idx = np.flatnonzero(np.asarray(dataset["split"][...]) == 1)
    elif isinstance(frames, slice):
        idx = np.arange(n)[frames]
    else:
        frames = np.asarray(frames)
        idx = np.flatnonzero(frames) if frames.dtype == bool else frames.astype(np.int64)
    gt = store_poses_in_cameras(dataset, idx)  # [f,V,J,3]
    attrs = dict(dataset.attrs)
    clips = list(attrs.get("clips", []))
    act = attrs.get("actions", {})
    clip_idx = np.asarray(dataset["clip"][...])[idx]
    clip_names = [clips[c] if c < len(clips) else str(c) for c in clip_idx]
    if isinstance(act, dict):
        actions = [act.get(c, c) for c in clip_names]
    elif len(act) == len(clips):
        actions = [act[c] for c in clip_idx]
    else:
        actions = clip_names
    subs = list(attrs.get("subjects", []))
    s_idx = np.asarray(dataset["subject"][...])[idx]
    subjects = [subs[s] if s < len(subs) else str(s) for s in s_idx]
    mb = attrs.get("mean_bone_mm")
    return {"gt": gt, "mask": np.all(np.isfinite(gt), axis=-1), "actions": actions,
            "subjects": subjects, "frame_ids": idx, "mean_bone_mm": None if mb is None else float(mb)}
