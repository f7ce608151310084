"""The label stage's settings and the screening of its 2D input, shared by calibration
(pipeline/geometry/calibration.py) and labelling (pipeline/geometry/labels.py).

`resolve_cfg` checks every key (choices, types, ranges) in one line naming it. Screening: a
keypoint farther outside its image than image_margin x the image size is a wild point, treated
as missing; joints below min_confidence are missing; points are normalised with the cameras'
intrinsics and distortion.
"""
from __future__ import annotations

import numpy as np

from .. import camera
from ..joints import J
from ..registry import check_choice, check_number, with_defaults
from . import epipolar
from . import rig as rigmod



DEFAULTS: dict = {
    "mode": "rig",                 # known | per-frame | rig
    "triangulation": "pairs",      # pairs (two-view optimal + vector median) | dlt
    "pairs": "neighbours",         # neighbours | all
    "n_neighbours": 2,
    "max_pair_angle_deg": 120.0,
    "min_confidence": 0.05,        # joints below are treated as missing
    "estimator": "essential",      # essential (5-point on normalised points) | fundamental (the paper: F, E = KᵀFK)
    "ransac": "magsac",            # magsac (cv2.USAC_MAGSAC) | ransac (cv2.RANSAC)
    "threshold_px": 3.0,           # RANSAC inlier threshold, pixels
    "min_inlier_ratio": 0.5,
    "inlier_px": 6.0,              # diagnostics: a triangulated joint reprojecting within this is an inlier
    "min_joints": 8,               # fewer reconstructed joints -> the frame fails
    "max_lr_ratio": 1.3,           # left/right limb-length ratio beyond which a skeleton is implausible
    "max_loop_deg": 20.0,          # per-frame: a pair whose rotations do not close around a camera triplet fails
    "seed": 0,
    "max_pool_points": 20000,      # rig: correspondences per pair for the pooled RANSAC
    "ba": True,
    "ba_frames": 2000,             # rig: frames the refinement sees (every frame up to this, evenly spread beyond:
                                   # its error falls as 1/sqrt(frames); bench/labels.py prints the curve)
    "ba_loss": "linear",           # after trimming outliers (rig.bundle_adjust); huber, soft_l1 also work, slower
    "ba_f_scale_px": 3.0,
    "ba_max_nfev": 50,
    "ba_max_seconds": 20.0,        # the refinement stops after this long (a retry without a camera the gate
                                   # left out gets half)
    "chunk_frames": 10000,         # make_labels: frames per vectorised batch (its work holds several times its input)
    "outlier_px": 30.0,            # known/rig, pairs: a view's joint farther than this (or 5x the frame's median
                                   # error) from the consensus of the other views is left out of that joint; 0: off
    "image_margin": 0.5,           # a keypoint farther outside its image than this x the image's width
                                   # (height) is a wild point: treated as missing, counted and warned about
    "no_baseline_ratio": 3.0,      # two views have no baseline when one rotation maps their pooled joints'
                                   # rays within this x the epipolar (Sampson) error; 0 turns the test off
    "sync": "check",               # check: refuse a view whose frame offset (pipeline.geometry.sync) is clearly not 0 | off
    "sync_max_lag": 10,            # largest frame offset the sync check searches, frames
    "sync_frames": 64,             # anchor frames the sync check pairs at every lag
    "sync_min_ratio": 1.25,        # a clear offset: the view's epipolar error at offset 0 over that at its offset
    # rig mode's quality gate (pipeline/geometry/rig.py GATE; docs/calibration.md)
    "gate_loop_deg": 20.0,         # pair estimates whose rotations do not close within this (camera triplets) are not chained
    "gate_initial_px": 30.0,       # a camera the chained rig reprojects farther than this (median) is left out before refinement
    "gate_rms_px": 20.0,           # a camera above this reprojection RMS after refinement is left out (or the rig refused)
    "gate_min_kept": 0.5,          # ... as is a camera whose share of joints kept by the refinement is below this
    "gate_focal_ratio": 1.3,       # refused when a camera's focal length fitted in the refinement differs by more
                                   # than this factor (either way) from its intrinsics'
}


# the cpu preset's labels keep every joint the project's 2D network places: its heatmap
# confidences are low and do not rank its errors well enough to drop joints by them
PRESETS: dict[str, dict] = {"cpu": {"min_confidence": 0.0}, "paper": {}}

MODES = ("known", "per-frame", "rig")


BA_LOSSES = ("linear", "huber", "soft_l1", "cauchy", "arctan")  # scipy.optimize.least_squares


class LabelWarning(UserWarning):
    """A camera or keypoints left out of labelling (the rest is labelled)."""


def _positive(cfg: dict, key: str, what: str) -> None:
    check_number(cfg, key, what)
    if cfg[key] <= 0:
        raise ValueError(f"{what}: {key} must be > 0, got {cfg[key]!r}")


def resolve_cfg(cfg: dict | None) -> dict:
    """DEFAULTS overridden by cfg, every key checked (choice, type, range): unknown keys and bad
    values raise a one-line ValueError naming the key ("label: mode must be one of [...]")."""
    what = "label"
    out = with_defaults(cfg, DEFAULTS, what)
    check_choice(out, "mode", MODES, what)
    check_choice(out, "triangulation", ("pairs", "dlt"), what)
    check_choice(out, "pairs", ("neighbours", "all"), what)
    check_choice(out, "estimator", ("essential", "fundamental"), what)
    check_choice(out, "ransac", ("magsac", "ransac"), what)
    check_choice(out, "ba_loss", BA_LOSSES, what)
    check_choice(out, "sync", ("check", "off"), what)
    if not isinstance(out["ba"], bool):
        raise ValueError(f"{what}: ba must be true or false, got {out['ba']!r}")
    for key in ("threshold_px", "inlier_px", "ba_f_scale_px"):
        _positive(out, key, what)
    check_number(out, "n_neighbours", what, lo=1, integer=True)
    check_number(out, "max_pair_angle_deg", what, lo=0.0, hi=180.0)
    check_number(out, "min_confidence", what, lo=0.0)
    check_number(out, "min_inlier_ratio", what, lo=0.0, hi=1.0)
    check_number(out, "min_joints", what, lo=1, hi=J, integer=True)
    check_number(out, "max_lr_ratio", what, lo=1.0)
    check_number(out, "max_loop_deg", what, lo=0.0, hi=180.0)
    check_number(out, "seed", what, lo=0, integer=True)
    check_number(out, "max_pool_points", what, lo=epipolar.MIN_POINTS, integer=True)
    check_number(out, "ba_frames", what, lo=1, integer=True)
    check_number(out, "ba_max_nfev", what, lo=1, integer=True)
    check_number(out, "chunk_frames", what, lo=1, integer=True)
    check_number(out, "image_margin", what, lo=0.0)
    check_number(out, "outlier_px", what, lo=0.0)
    check_number(out, "no_baseline_ratio", what, lo=0.0)
    check_number(out, "sync_max_lag", what, lo=1, integer=True)
    check_number(out, "sync_frames", what, lo=8, integer=True)
    check_number(out, "sync_min_ratio", what, lo=1.0)
    for key in ("ba_max_seconds", "gate_loop_deg", "gate_initial_px", "gate_rms_px"):
        _positive(out, key, what)
    check_number(out, "gate_focal_ratio", what, lo=1.0)
    check_number(out, "gate_min_kept", what, lo=0.0, hi=1.0)
    for key in ("n_neighbours", "min_joints", "seed", "max_pool_points", "ba_frames", "ba_max_nfev",
                "chunk_frames", "sync_max_lag", "sync_frames"):
        out[key] = int(out[key])
    return out


def gate(cfg: dict) -> dict:
    """The configuration's gate_* keys as rig.calibrate_rig's `gate`."""
    return {"max_loop_deg": cfg["gate_loop_deg"], "max_initial_px": cfg["gate_initial_px"],
            "max_rms_px": cfg["gate_rms_px"], "min_kept": cfg["gate_min_kept"],
            "max_focal_ratio": cfg["gate_focal_ratio"]}


def estimator(cfg: dict) -> tuple[str, int]:
    import cv2
    method = cfg["estimator"]
    return method, {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}[cfg["ransac"]]


def check_inputs(kp2d: np.ndarray, cams: camera.Cameras) -> np.ndarray:
    if not isinstance(cams, camera.Cameras):
        raise ValueError(f"labels: cams must be pipeline.camera.Cameras, got {type(cams).__name__}")
    kp2d = np.asarray(kp2d, dtype=np.float64)
    if kp2d.ndim != 4 or kp2d.shape[2] != J or kp2d.shape[3] != 3:
        raise ValueError(f"labels: keypoints2d must be [F,V,{J},3] (x, y, confidence), got {kp2d.shape}")
    if kp2d.shape[1] != cams.V:
        raise ValueError(f"labels: keypoints2d has {kp2d.shape[1]} views but the rig has {cams.V} cameras")
    if cams.V < 2:
        raise ValueError(f"labels: need at least 2 views to triangulate, got {cams.V}")
    return kp2d


def outside_image(kp2d: np.ndarray, size: np.ndarray, margin: float) -> np.ndarray:
    """Wild points: finite keypoints farther outside their image than margin x its width
    (height). kp2d [F,V,J,>=2] pixels, size [V,2] (w, h; a view with no finite positive size
    is not checked). -> [F,V,J] bool."""
    size = np.asarray(size, dtype=np.float64)
    wh = np.where(np.isfinite(size) & (size > 0), size, np.nan)  # [V,2]
    lo = -margin * wh
    hi = (1 + margin) * wh
    out = np.zeros(kp2d.shape[:3], bool)
    # per coordinate on [F,V,J] views: a short last axis of 2 makes numpy's reductions slow.
    # NaN bounds or points compare False: unchecked views and missing points are not wild
    with np.errstate(invalid="ignore"):
        for k in range(2):
            c = kp2d[..., k]
            out |= ((c < lo[None, :, None, k]) | (c > hi[None, :, None, k])) & np.isfinite(c)
    return out


def normalised(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict):
    """Undistorted normalised points xn [F,V,J,2] and weights w [F,V,J] (0 = unusable; wild
    points, outside_image, are unusable)."""
    xn, w, _ = screened(kp2d, cams, cfg)
    return xn, w


def screened(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict):
    """normalised's xn [F,V,J,2], w [F,V,J] and the wild points [F,V,J] bool (outside_image)."""
    F, V = kp2d.shape[:2]
    conf = kp2d[..., 2]
    wild = outside_image(kp2d, cams.size, cfg["image_margin"])
    with np.errstate(invalid="ignore"):
        usable = (np.isfinite(kp2d[..., 0]) & np.isfinite(kp2d[..., 1]) & np.isfinite(conf)
                  & (conf >= cfg["min_confidence"]) & ~wild)
        w = np.where(usable, conf, 0.0)
    use = w > 0
    xn = np.empty(kp2d.shape[:3] + (2,))
    for v in range(V):
        if np.any(cams.dist[v] != 0):  # a wild point must not reach cv2.undistortPoints
            uv = np.where(use[:, v, :, None], kp2d[:, v, :, :2], np.nan)
            xn[:, v] = camera.undistort_points(uv.reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, J, 2)
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # unusable points are masked below
                xn[:, v] = camera.normalise_points(kp2d[:, v, :, :2], cams.K[v])
    xn[~use] = np.nan
    return xn, w, wild


def select_pairs(angles: np.ndarray, mode: str = "neighbours", n_neighbours: int = 2,
                 max_angle_deg: float = 120.0) -> np.ndarray:
    """Which of rig.all_pairs(V) to triangulate with. angles [...,P] degrees between the
    cameras' viewing directions (NaN = pair unusable). -> [...,P] bool.

    "all": every usable pair. "neighbours": each camera keeps its n_neighbours nearest
    cameras within max_angle_deg (its nearest one if none is that close).
    """
    angles = np.asarray(angles, dtype=np.float64)
    P = angles.shape[-1]
    V = int(round((1 + np.sqrt(1 + 8 * P)) / 2))
    pairs = rigmod.all_pairs(V)
    usable = np.isfinite(angles)
    if mode == "all":
        return usable
    A = np.full(angles.shape[:-1] + (V, V), np.inf)
    a = np.where(usable, angles, np.inf)
    A[..., pairs[:, 0], pairs[:, 1]] = a
    A[..., pairs[:, 1], pairs[:, 0]] = a
    rank = np.argsort(np.argsort(A, axis=-1, kind="stable"), axis=-1, kind="stable")  # 0 = nearest
    keep = np.isfinite(A) & (((rank < n_neighbours) & (A <= max_angle_deg)) | (rank == 0))
    sel = keep[..., pairs[:, 0], pairs[:, 1]] | keep[..., pairs[:, 1], pairs[:, 0]]
    return sel & usable


def viewing_angles(R: np.ndarray) -> np.ndarray:
    """Angles (deg) between the viewing directions of each pair of rig.all_pairs(V). R [V,3,3] -> [P]."""
    pairs = rigmod.all_pairs(len(R))
    z = R[:, 2, :]  # optical axis in world coordinates
    return np.degrees(camera.vector_angle(z[pairs[:, 0]], z[pairs[:, 1]]))
