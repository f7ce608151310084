"""Ground-truth 2D as a detector, with an optional noise model (the paper's "GT 2D" rows).

Reads the dataset's `keypoints2d_gt` [F,V,J,3] (x, y, visibility) and returns keypoints2d
[f,V,J,3] (x, y, confidence). The noise model, applied in this order to each (frame, view):

- Gaussian jitter of `sigma_px` pixels on x and y;
- left/right swaps: with probability `swap_rate` a whole view's skeleton has its left and
  right labels exchanged (joints.FLIP), the detector failure that epipolar checks catch;
- outliers: each joint with probability `outlier_rate` is moved by a uniform offset of up to
  `outlier_px` pixels in x and y (a confident but wrong detection);
- dropped joints: each joint with probability `drop_rate` becomes NaN (not detected).

Random numbers come from a generator seeded by (seed, frame index in the store), so any
chunking of the frames gives bit-identical keypoints. Confidence = visibility (1 visible,
`invisible_conf` occluded), and `conf_outlier` for outliers when it is set.
"""
from __future__ import annotations

import numpy as np
import zarr

from ..joints import FLIP, J
from ..registry import check_number, with_defaults

DEFAULTS: dict = {
    "sigma_px": 0.0,        # Gaussian noise, pixels (per coordinate)
    "outlier_rate": 0.0,    # probability per joint of a gross error
    "outlier_px": 50.0,     # gross errors are uniform in [-outlier_px, outlier_px] per coordinate
    "swap_rate": 0.0,       # probability per (frame, view) of a left/right label swap
    "drop_rate": 0.0,       # probability per joint of a missing detection (NaN)
    "invisible_conf": 0.0,  # confidence given to joints whose ground-truth visibility is 0
    "drop_invisible": False,  # True: occluded joints become NaN (a detector that sees only visible ones)
    "conf_outlier": None,   # confidence of outliers (None: unchanged, i.e. confidently wrong)
    "seed": 0,
}


# The cpu preset's GT 2D places every joint, as a real detector does: self-occluded joints get
# confidence 0.5 instead of 0 (the paper's "GT 2D" rows).
PRESETS: dict[str, dict] = {"cpu": {"invisible_conf": 0.5}, "paper": {}}

def resolve_cfg(cfg: dict | None) -> dict:
    """DEFAULTS overridden by cfg; an unknown key, a wrong type or range is a one-line ValueError
    naming the key."""
    what = "gt detector"
    c = with_defaults(cfg, DEFAULTS, what)
    for k in ("outlier_rate", "swap_rate", "drop_rate", "invisible_conf"):
        check_number(c, k, what, lo=0.0, hi=1.0)
    for k in ("sigma_px", "outlier_px"):
        check_number(c, k, what, lo=0.0)
    check_number(c, "conf_outlier", what, lo=0.0, hi=1.0, allow_none=True)
    check_number(c, "seed", what, lo=0, integer=True)
    if not isinstance(c["drop_invisible"], bool):
        raise ValueError(f"{what}: drop_invisible must be true or false, got {c['drop_invisible']!r}")
    return c



def add_noise(kp: np.ndarray, frame_ids: np.ndarray, cfg: dict) -> np.ndarray:
    """Apply the noise model to ground truth kp [f,V,J,3] (x, y, visibility).

    frame_ids [f]: the frames' indices in the store (they seed the generators).
    Returns [f,V,J,3] float32 (x, y, confidence); NaN where unknown or dropped.
    """
    c = resolve_cfg(cfg)
    kp = np.asarray(kp, dtype=np.float64)
    if kp.ndim != 4 or kp.shape[2] != J or kp.shape[3] != 3:
        raise ValueError(f"gt detector: keypoints2d_gt must be [F,V,{J},3], got {kp.shape}")
    f, V = kp.shape[:2]
    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    if frame_ids.shape != (f,):
        raise ValueError(f"gt detector: frame_ids must be [{f}], got {frame_ids.shape}")
    # draws per frame are fixed in number and order so frames are independent of chunking
    normal = np.empty((f, V, J, 2))
    unif = np.empty((f, V, J, 5))
    for i, fid in enumerate(frame_ids):
        rng = np.random.default_rng([int(c["seed"]), int(fid)])
        normal[i] = rng.standard_normal((V, J, 2))
        unif[i] = rng.random((V, J, 5))
    xy = kp[..., :2].copy()
    vis = kp[..., 2]
    conf = np.where(vis > 0, 1.0, float(c["invisible_conf"]))
    xy += float(c["sigma_px"]) * normal
    swap = unif[:, :, 0, 0] < float(c["swap_rate"])                     # [f,V]
    xy = np.where(swap[..., None, None], xy[:, :, FLIP], xy)
    conf = np.where(swap[..., None], conf[:, :, FLIP], conf)
    outlier = unif[..., 1] < float(c["outlier_rate"])                     # [f,V,J]
    offset = (2.0 * unif[..., 2:4] - 1.0) * float(c["outlier_px"])
    xy = np.where(outlier[..., None], xy + offset, xy)
    if c["conf_outlier"] is not None:
        conf = np.where(outlier, float(c["conf_outlier"]), conf)
    drop = unif[..., 4] < float(c["drop_rate"])
    if c["drop_invisible"]:
        drop |= ~(vis > 0)
    missing = drop | ~np.all(np.isfinite(kp), axis=-1)
    out = np.concatenate([xy, conf[..., None]], axis=-1)
    out[missing] = np.nan
    return out.astype(np.float32)


def detect(cfg: dict, dataset: zarr.Group, frames: slice, context: dict) -> np.ndarray:
    """keypoints2d [f,V,J,3] for `frames` of the dataset, from its ground truth plus noise."""
    if "keypoints2d_gt" not in dataset:
        raise ValueError("gt detector: the dataset store has no 'keypoints2d_gt' array")
    arr = dataset["keypoints2d_gt"]
    F = arr.shape[0]
    start, stop, step = frames.indices(F)
    if step != 1:
        raise ValueError("gt detector: frames must be a contiguous slice (step 1)")
    kp = np.asarray(arr[start:stop])
    return add_noise(kp, np.arange(start, stop), cfg)
