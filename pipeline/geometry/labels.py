"""Pseudo-labels from multi-view 2D joints: the label stage's logic (EpipolarPose, Sec. 3.2).

Modes (cfg["mode"]):
- "known": extrinsics given (the paper's "with R"); labels also in mm.
- "per-frame": the paper's method. Every camera pair of every frame gets its own relative
  pose from that frame's ≤ 17 joints (robust E, cheirality), then polynomial triangulation;
  frames where no pair works are flagged with a FAILURES code. A pair fails on too few
  points or inliers, a degenerate configuration (collinear joints, or one homography
  explaining them: coplanar), an ambiguous cheirality, an implausible skeleton (left/right
  limbs differ by more than max_lr_ratio) or, with three or more cameras, rotations that
  do not close around camera triplets (max_loop_deg; measured on 200 synthetic frames at
  σ = 2 px: 14 % of frames flagged, label PMPJPE of the rest 18.9 mm vs 24.0 mm unchecked). cfg["estimator"] =
  "fundamental" is the paper's exact route (F by RANSAC on pixels, E = KᵀFK); the default
  "essential" (5-point on normalised points) uses the known K better: measured on synthetic
  σ = 2 px, 200 frames, label PMPJPE median 0.07 vs 0.34 mean bones.
- "rig": the cameras are static, so `calibrate` pools the joints of many frames, estimates
  each pair once, chains them into one rig and bundle-adjusts it; labelling then
  triangulates with that rig.

Triangulation (cfg["triangulation"]): "pairs" (default, the paper): optimal two-view
(Hartley–Sturm) triangulation for each selected pair, fused per joint by the vector median;
"dlt": confidence-weighted N-view DLT. Pair selection (cfg["pairs"]): "neighbours" (each
camera with its n_neighbours nearest by viewing direction, none wider than
max_pair_angle_deg unless a camera would be left alone: facing pairs triangulate badly) or
"all".

Bad input (calibrate, every mode): a keypoint farther outside its image than image_margin x
the image size is a wild point, treated as missing (counted, warned about per camera); a
camera that sees nobody, or shares fewer than 8 joints with every other camera, or (rig) cannot
be placed, is left out with a warning (its extrinsics NaN, its labels NaN; diag says why) and
the others are calibrated and labelled; fewer than 2 cameras left is an error naming each
camera and why. Two views without a baseline (identical keypoints, or rays one rotation maps
onto each other: a duplicated view or a camera only turned; rig mode: two cameras calibrated
at the same place) are refused with an error naming both: which of the two is the real view
cannot be told, and a duplicate's labels would be wrong for its images. A view out of sync
with the others (pipeline.geometry.sync, `sync` = "check") is refused with an error naming it and its
offset in frames ("correct" is not offered: a view's label at frame f would need the other
views' keypoints of other frames, which a chunk does not hold; the data must be aligned
upstream). known mode: camera.check_rig. Outliers inside the image (a detector's gross
errors, left/right swaps): the rig's pairs are estimated robustly (pipeline/rig.py), and in
known / rig mode with pair triangulation each joint's views are checked against the consensus
of the others (triangulate.consensus_outliers, outlier_px) and a view that disagrees is left
out of that joint (`outliers` counts them; per-frame mode relies on its per-frame RANSAC).

The canonical scale: a label is root-relative and divided by its pose's mean bone length
over the 16 bones of joints.BONES (`canonical_scale`), so it is in "mean bones" whatever
the rig's unknown scale. In "known" mode `labels_cam_mm` keeps millimetres as well.
"""
from __future__ import annotations

import itertools
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from .. import camera
from . import epipolar
from . import rig as rigmod
from . import sync as syncmod
from . import triangulate as tri
from .epipolar import FAILURES  # noqa: F401  (re-exported: the label contract's codes)
from ..joints import INDEX, J, PARENTS, ROOT, bone_lengths
from ..registry import check_choice, check_number, with_defaults

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
    "ba_frames": 400,
    "ba_loss": "linear",           # after trimming outliers (rig.bundle_adjust); huber, soft_l1 also work, slower
    "ba_f_scale_px": 3.0,
    "ba_max_nfev": 50,
    "chunk_frames": 20000,         # make_labels: frames per vectorised batch
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
}

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
    for key in ("n_neighbours", "min_joints", "seed", "max_pool_points", "ba_frames", "ba_max_nfev",
                "chunk_frames", "sync_max_lag", "sync_frames"):
        out[key] = int(out[key])
    return out


def _estimator(cfg: dict) -> tuple[str, int]:
    import cv2
    method = cfg["estimator"]
    return method, {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}[cfg["ransac"]]


def canonical_scale(poses: np.ndarray) -> np.ndarray:
    """Mean bone length over the 16 bones of joints.BONES. poses [...,J,3] -> [...].

    Bones with a missing (NaN) end are left out of the mean; NaN when no bone is complete.
    """
    lengths = bone_lengths(poses)
    ok = np.isfinite(lengths)
    n = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, lengths, 0).sum(-1) / n, np.nan)


def _limbs() -> list[tuple[list[int], list[int]]]:
    """(left, right) limbs as the joints whose bones to their parents make them: the legs
    below the hips and the arms below the shoulders (short hip/shoulder bones are too noisy
    to compare)."""
    tops = {"leg": ("l_hip", "r_hip"), "arm": ("l_shoulder", "r_shoulder")}
    out = []
    for lt, rt in tops.values():
        l0, r0 = INDEX[lt], INDEX[rt]
        out.append(([j for j in range(J) if _descends(j, l0)], [j for j in range(J) if _descends(j, r0)]))
    return out


def _descends(j: int, top: int) -> bool:
    """True if joint j lies strictly below `top` in the kinematic tree."""
    p = PARENTS[j]
    while p >= 0:
        if p == top:
            return True
        p = PARENTS[p]
    return False


def lr_ratio(poses: np.ndarray) -> np.ndarray:
    """Largest left/right length ratio (>= 1) of the limbs (legs below the hips, arms below
    the shoulders): a real body is nearly symmetric, a wrong relative pose stretches depth
    unevenly. poses [...,J,3] -> [...]; 1 where a limb is incomplete."""
    poses = np.asarray(poses, dtype=np.float64)
    ratios = []
    for left, right in _limbs():
        a = sum(np.linalg.norm(poses[..., j, :] - poses[..., PARENTS[j], :], axis=-1) for j in left)
        b = sum(np.linalg.norm(poses[..., j, :] - poses[..., PARENTS[j], :], axis=-1) for j in right)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(np.maximum(a, b) / np.minimum(a, b))
    rr = np.stack(ratios, -1)
    rr = np.where(np.isfinite(rr), rr, 1.0)
    return rr.max(-1)


# --------------------------------------------------------------------------- input checks

def _check_inputs(kp2d: np.ndarray, cams: camera.Cameras) -> np.ndarray:
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
    uv = kp2d[..., :2]
    with np.errstate(invalid="ignore"):
        out = (uv < lo[None, :, None]) | (uv > hi[None, :, None])
    return np.any(out & np.isfinite(uv), -1)


def _normalised(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict):
    """Undistorted normalised points xn [F,V,J,2] and weights w [F,V,J] (0 = unusable; wild
    points, outside_image, are unusable)."""
    xn, w, _ = _screened(kp2d, cams, cfg)
    return xn, w


def _screened(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict):
    """_normalised's xn [F,V,J,2], w [F,V,J] and the wild points [F,V,J] bool (outside_image)."""
    F, V = kp2d.shape[:2]
    uv = kp2d[..., :2]
    conf = kp2d[..., 2]
    wild = outside_image(kp2d, cams.size, cfg["image_margin"])
    with np.errstate(invalid="ignore"):
        w = np.where(np.all(np.isfinite(uv), -1) & np.isfinite(conf) & (conf >= cfg["min_confidence"]) & ~wild,
                     conf, 0.0)
    uv = np.where((w > 0)[..., None], uv, np.nan)  # a wild point must not reach cv2.undistortPoints
    xn = np.empty(uv.shape)
    for v in range(V):
        if np.any(cams.dist[v] != 0):
            xn[:, v] = camera.undistort_points(uv[:, v].reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, J, 2)
        else:
            xn[:, v] = camera.normalise_points(uv[:, v], cams.K[v])
    xn[w <= 0] = np.nan
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
    c = np.einsum("pa,pa->p", z[pairs[:, 0]], z[pairs[:, 1]])
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


# --------------------------------------------------------------------------- calibration

def _names(names, V: int) -> list[str]:
    names = [f"camera {v}" for v in range(V)] if names is None else [str(n) for n in names]
    if len(names) != V:
        raise ValueError(f"labels: {len(names)} camera names for {V} cameras")
    return names


def _warn(msg: str) -> None:
    warnings.warn(msg, LabelWarning, stacklevel=3)


def _too_few_cameras(names: list[str], status: list[str], what: str) -> ValueError:
    left = [f"{names[v]}: {st}" for v, st in enumerate(status) if st != "ok"]
    n = sum(st == "ok" for st in status)
    return ValueError(f"labels: no camera pair can be {what}: {n} of {len(names)} cameras remain, at least 2 are "
                      f"needed. Left out: {'; '.join(left)}")


def calibrate(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict | None = None, *,
              names=None) -> tuple[camera.Cameras, dict]:
    """Cameras for labelling. known: cams as given (extrinsics required; camera.check_rig);
    per-frame: cams without extrinsics; rig: R, t estimated from the pooled joints of kp2d
    [F,V,J,3] (the frame of camera 0, or of the first placed camera; unit baseline between the
    first two placed cameras), bundle-adjusted. names [V]: camera names for messages.

    Every mode first screens the keypoints (module docstring): wild points are treated as
    missing; a camera that sees nobody or shares fewer than 8 joints with every other camera
    (rig: or cannot be placed) is left out with a LabelWarning, its R, t NaN in the returned
    Cameras (so label_chunk gives it no labels); two views without a baseline and (sync =
    "check") a view clearly out of sync are refused. ValueError names the cameras.

    Returns (Cameras, diag): cameras_used [V] bool, camera_status [V] ("ok" or why it was left
    out), usable_joints [V], keypoints_outside [V] (wild points), baseline_pairs [P,2] with
    baseline_points, baseline_coincide, baseline_rotation_px, baseline_epipolar_px [P]
    (rig.baseline_evidence), sync_* (pipeline.geometry.sync.estimate_offsets: sync_offsets [V],
    sync_relative [V], sync_ratio [V], sync_sharpness [V], sync_clear [V], sync_cost_px
    [P',L], sync_pairs [P',2], sync_lags [L], sync_skipped, sync_seconds); in rig mode also
    per-pair arrays over rig.all_pairs(V) (`rig_pair_*`), R_est, t_est, chain_order and the
    bundle-adjustment figures.
    """
    cfg = resolve_cfg(cfg)
    kp2d = _check_inputs(kp2d, cams)
    names = _names(names, cams.V)
    F, V = kp2d.shape[:2]
    if cfg["mode"] == "known":
        camera.check_rig(cams, names, "labels (known mode)")
        if not cams.has_extrinsics:
            raise ValueError("labels: mode 'known' needs finite extrinsics R, t; use mode 'rig' or 'per-frame'")
    xn, w, wild = _screened(kp2d, cams, cfg)
    diag: dict = {}
    # 1. wild points: counted and named per camera
    n_wild = wild.sum((0, 2))
    diag["keypoints_outside"] = n_wild
    for v in np.flatnonzero(n_wild):
        f, j = np.argwhere(wild[:, v])[0]
        x, y = kp2d[f, v, j, :2]
        _warn(f"labels: {names[v]}: {n_wild[v]} keypoint(s) lie more than {cfg['image_margin']:g} x the image size "
              f"outside its {cams.size[v, 0]:g}x{cams.size[v, 1]:g} image (first: frame {f}, joint {j} at "
              f"({x:.4g}, {y:.4g})); treated as missing")
    # 2. cameras that see nobody, or share too few joints with every other camera
    seen = w > 0
    usable = seen.sum((0, 2))
    diag["usable_joints"] = usable
    status = ["ok"] * V
    for v in range(V):
        if usable[v] == 0:
            n_low = int((np.isfinite(kp2d[:, v, :, 2]) & (kp2d[:, v, :, 2] < cfg["min_confidence"])).sum())
            status[v] = (f"sees nobody: none of its {F * J} keypoints is usable ({n_low} below min_confidence "
                         f"{cfg['min_confidence']:g}, {int(wild[:, v].sum())} outside the image, the rest missing)")
    shared = np.einsum("fvj,fuj->vu", seen.astype(np.float64), seen.astype(np.float64))
    np.fill_diagonal(shared, 0)
    for v in range(V) if sum(st == "ok" for st in status) >= 2 else ():
        if status[v] == "ok":
            best = int(max((shared[v, u] for u in range(V) if u != v and status[u] == "ok"), default=0))
            if best < epipolar.MIN_POINTS:
                status[v] = (f"shares at most {best} joints with any other camera (fewer than "
                             f"{epipolar.MIN_POINTS} correspondences: nothing to place or triangulate it with)")
    keep = np.array([st == "ok" for st in status])
    if keep.sum() < 2:
        raise _too_few_cameras(names, status, "calibrated")
    wk = np.where(keep[None, :, None], w, 0.0)
    # 3. views without a baseline: refused (which of the two is real cannot be told)
    pairs = rigmod.all_pairs(V)
    kp_pairs = pairs[keep[pairs[:, 0]] & keep[pairs[:, 1]]]
    ev = rigmod.baseline_evidence(kp2d[..., :2], xn, wk, cams.K, kp_pairs, threshold_px=cfg["threshold_px"],
                                  seed=cfg["seed"])
    diag.update({"baseline_pairs": kp_pairs, **{f"baseline_{k}": a for k, a in ev.items()}})
    for p, (i, j) in enumerate(kp_pairs):
        if ev["coincide"][p] >= 0.5:
            raise ValueError(
                f"labels: {names[i]} and {names[j]} show the same keypoints ({100 * ev['coincide'][p]:.0f} % of the "
                f"{ev['points'][p]} joints both see are within 1 px): a duplicated view (copied keypoint files?) has "
                "no baseline and one of them is not what its images show; remove the duplicate or fix its keypoints")
        rot, e = ev["rotation_px"][p], ev["epipolar_px"][p]
        ratio = cfg["no_baseline_ratio"]
        if ratio > 0 and np.isfinite(rot) and np.isfinite(e) and rot <= ratio * max(e, 0.25):
            raise ValueError(
                f"labels: {names[i]} and {names[j]} have no baseline: one rotation maps the rays of their "
                f"{ev['points'][p]} pooled joints onto each other (median {rot:.2f} px, vs {e:.2f} px epipolar "
                "error): the same camera centre (a duplicated view, or a camera only turned). Such a pair cannot "
                "triangulate; remove one of the two views (or set label.no_baseline_ratio=0 if they are "
                "genuinely apart)")
    # 4. synchronisation
    diag.update(_sync_check(kp2d, wk, cams, cfg, keep, names))
    # 5. the cameras
    if cfg["mode"] == "known":
        R, t = cams.R.copy(), cams.t.copy()
    elif cfg["mode"] == "per-frame":
        R, t = np.full((V, 3, 3), np.nan), np.full((V, 3), np.nan)
    else:
        method, robust = _estimator(cfg)
        try:
            R, t, info = rigmod.calibrate_rig(
                xn, wk, cams.K, method=method, threshold_px=cfg["threshold_px"], max_points=cfg["max_pool_points"],
                seed=cfg["seed"], ba=cfg["ba"], ba_frames=cfg["ba_frames"], ba_loss=cfg["ba_loss"],
                ba_f_scale_px=cfg["ba_f_scale_px"], ba_max_nfev=cfg["ba_max_nfev"],
                min_inlier_ratio=cfg["min_inlier_ratio"], robust=robust, names=names)
        except ValueError as err:
            raise ValueError(f"labels: {err}") from None
        for v, why in info.pop("unplaced").items():
            if keep[v]:
                status[v] = f"cannot be placed in the rig: {why}"
        info.pop("placed")
        diag.update({f"rig_{k}" if k.startswith("pair") else k: a for k, a in info.items()})
        keep = np.array([st == "ok" for st in status])
        if keep.sum() < 2:
            raise _too_few_cameras(names, status, "calibrated")
        _check_estimated_baselines(R, t, keep, names)
    R[~keep], t[~keep] = np.nan, np.nan
    if cfg["mode"] != "per-frame":
        camera.check_rig(camera.Cameras(cams.K[keep], R[keep], t[keep], cams.dist[keep], cams.size[keep]),
                         [names[v] for v in np.flatnonzero(keep)], f"labels ({cfg['mode']} mode)")
    for v in np.flatnonzero(~keep):
        _warn(f"labels: {names[v]} is left out ({status[v]}); its extrinsics and labels are NaN, "
              f"the other {int(keep.sum())} cameras are calibrated and labelled")
    diag["cameras_used"] = keep
    diag["camera_status"] = status
    if cfg["mode"] == "rig":
        diag["R_est"], diag["t_est"] = R, t
    return camera.Cameras(cams.K, R, t, cams.dist, cams.size), diag


def _check_estimated_baselines(R: np.ndarray, t: np.ndarray, keep: np.ndarray, names: list[str],
                               min_ratio: float = 0.02) -> None:
    """The estimated rig's safety net for a view the keypoint test let through: two placed
    cameras whose centres lie closer than min_ratio x the rig's median baseline are refused."""
    idx = np.flatnonzero(keep)
    if len(idx) < 3:  # the gauge fixes the only baseline of a two-camera rig to 1
        return
    C = camera.camera_center(R[idx], t[idx])
    d = np.linalg.norm(C[:, None] - C[None], axis=-1)
    iu = np.triu_indices(len(idx), 1)
    med = float(np.median(d[iu]))
    for a, b in zip(*iu):
        if d[a, b] < min_ratio * med:
            raise ValueError(
                f"labels: {names[idx[a]]} and {names[idx[b]]} were calibrated at the same place (estimated baseline "
                f"{d[a, b] / med:.3f} x the rig's median): a duplicated view or a camera only turned cannot "
                "triangulate; remove one of the two views")


def _sync_check(kp2d, w, cams: camera.Cameras, cfg: dict, keep: np.ndarray, names: list[str]) -> dict:
    """pipeline.geometry.sync on the usable keypoints; sync = "check": ValueError for a view clearly off."""
    if cfg["sync"] == "off":
        return {"sync_skipped": "label.sync is off"}
    kp = np.where((w > 0)[..., None], kp2d, np.nan)
    t0 = time.perf_counter()
    off, d = syncmod.estimate_offsets(kp, cams.K, cams.dist, max_lag=cfg["sync_max_lag"],
                                      n_frames=cfg["sync_frames"], min_confidence=cfg["min_confidence"],
                                      threshold_px=cfg["threshold_px"], min_ratio=cfg["sync_min_ratio"],
                                      cameras=keep, seed=cfg["seed"])
    out = {"sync_offsets": off, "sync_relative": d["relative"], "sync_ratio": d["ratio"],
           "sync_sharpness": d["sharpness"], "sync_clear": d["clear"], "sync_cost_px": d["cost_px"],
           "sync_pairs": d["pairs"], "sync_lags": d["lags"], "sync_skipped": d["skipped"],
           "sync_seconds": time.perf_counter() - t0}
    bad = np.flatnonzero(d["clear"])
    if len(bad):
        msgs = []
        for v in bad:
            o = int(d["relative"][v])
            later = "later" if o > 0 else "earlier"
            fix = (f"drop its first {o} frames" if o > 0 else f"drop the first {-o} frames of the other views")
            msgs.append(f"{names[v]} is out of sync by about {o:+d} frames: its keypoints match the other views' "
                        f"best {abs(o)} frame(s) {later} (its frame f{o:+d} shows what they show at frame f; "
                        f"epipolar error {d['cost_at_offset_px'][v]:.2f} px there vs "
                        f"{d['cost_at_reference_px'][v]:.2f} px in step); {fix}")
        raise ValueError("labels: " + "; ".join(msgs) + ". Fix the recording's synchronisation (or set "
                         "label.sync=off to label anyway)")
    return out


# --------------------------------------------------------------------------- labelling

def _empty(F: int, V: int, P: int, known: bool) -> dict:
    out = {
        "labels_cam": np.full((F, V, J, 3), np.nan, np.float32),
        "valid": np.zeros((F, V, J), bool),
        "frame_ok": np.zeros(F, bool),
        "failure": np.zeros(F, np.int8),
        "scale": np.full(F, np.nan, np.float32),
        "pair_used": np.zeros((F, P), bool),
        "pair_inliers": np.zeros((F, P), np.int16),
        "pair_reproj_px": np.full((F, P), np.nan, np.float32),
        "pair_rot_deg": np.full((F, P), np.nan, np.float32),
        "pair_failure": np.zeros((F, P), np.int8),
        "pair_loop_deg": np.full((F, P), np.nan, np.float32),
        "outliers": np.zeros((F, V), np.int16),
    }
    if known:
        out["labels_cam_mm"] = np.full((F, V, J, 3), np.nan, np.float32)
    return out


def _finish(out: dict, Xw: np.ndarray, okJ: np.ndarray, R, t, cfg: dict, failure: np.ndarray) -> dict:
    """World joints Xw [F,J,3] (ok [F,J]) -> per-camera canonical labels, checks, flags."""
    Xw = np.where(okJ[..., None], Xw, np.nan)
    n_ok = okJ.sum(-1)
    scale = canonical_scale(Xw)
    fail = failure.copy()
    fail[(fail == 0) & ((~okJ[:, ROOT]) | (n_ok < cfg["min_joints"]) | ~np.isfinite(scale))] = epipolar.TRIANGULATION
    fail[(fail == 0) & (lr_ratio(Xw) > cfg["max_lr_ratio"])] = epipolar.IMPLAUSIBLE
    good = fail == 0
    Xc = camera.world_to_camera(Xw[:, None], R[None], t[None])  # [F,V,J,3]
    rel = Xc - Xc[:, :, ROOT:ROOT + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        lab = rel / scale[:, None, None, None]
    valid = np.broadcast_to((okJ & good[:, None])[:, None], rel.shape[:3])
    out["labels_cam"] = np.where(valid[..., None], lab, np.nan).astype(np.float32)
    if "labels_cam_mm" in out:
        out["labels_cam_mm"] = np.where(valid[..., None], rel, np.nan).astype(np.float32)
    out["valid"] = valid.copy()
    out["frame_ok"] = good
    out["failure"] = fail.astype(np.int8)
    out["scale"] = np.where(good, scale, np.nan).astype(np.float32)
    return out


def _label_with_rig(xn, w, cams: camera.Cameras, cfg: dict, known: bool) -> dict:
    """known / rig mode: fixed cameras, fully vectorised over frames x joints. With pair
    triangulation and outlier_px > 0, a view's joint that the other views' consensus puts
    farther than the outlier threshold (triangulate.consensus_outliers) is left out of that joint and
    the frames concerned are triangulated again; `outliers` [F,V] counts them."""
    F, V = xn.shape[:2]
    pairs = rigmod.all_pairs(V)
    P = len(pairs)
    out = _empty(F, V, P, known)
    R, t = cams.R, cams.t
    focal = 0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1])
    angles = viewing_angles(R)
    used = select_pairs(angles, cfg["pairs"], cfg["n_neighbours"], cfg["max_pair_angle_deg"])
    Rrel, trel = tri.relative_pose(R[pairs[:, 0]], t[pairs[:, 0]], R[pairs[:, 1]], t[pairs[:, 1]])
    rot = np.degrees(np.arccos(np.clip((np.trace(Rrel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    geo = (pairs, used, Rrel, trel, rot, R, t, focal)
    Xw, okJ, cand, cok = _triangulate_frames(xn, w, geo, cfg, out)
    outliers = np.zeros((F, V, J), bool)
    if cfg["triangulation"] == "pairs" and cfg["outlier_px"] > 0 and V >= 3:
        # only frames where the fused joints miss some observation by half the threshold can
        # hold an outlier (the fused point lies between the candidates): the rest skip the test
        Xc = Xw[:, None] @ np.swapaxes(R, 1, 2)[None] + t[None, :, None, :]  # [F,V,J,3]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = Xc[..., :2] / Xc[..., 2:3] - xn
            r0 = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2) * focal[None, :, None]
        suspect = np.flatnonzero(np.any((w > 0) & ~(r0 <= 0.5 * cfg["outlier_px"]), axis=(1, 2)))
        for a in range(0, len(suspect), 2048):  # blocks bound the [f,Q,V,J,3] temporaries
            b = suspect[a:a + 2048]
            outliers[b] = tri.consensus_outliers(cand[b], cok[b], xn[b], w[b], R, t, focal, cfg["outlier_px"])
        redo = np.flatnonzero(outliers.any((1, 2)))
        if len(redo):
            w2 = np.where(outliers[redo], 0.0, w[redo])
            sub = {k: a[redo].copy() for k, a in out.items()}
            X2, ok2, _, _ = _triangulate_frames(np.where((w2 > 0)[..., None], xn[redo], np.nan), w2, geo, cfg, sub)
            Xw[redo], okJ[redo] = X2, ok2
            for k in sub:
                out[k][redo] = sub[k]
    nvis = (w > 0).sum(-1)  # [F,V]
    failure = np.zeros(F, np.int8)
    failure[(w > 0).sum((1, 2)) == 0] = epipolar.NO_JOINTS
    failure[(failure == 0) & ((nvis > 0).sum(-1) < 2)] = epipolar.TOO_FEW_POINTS
    out = _finish(out, Xw, okJ, R, t, cfg, failure)
    out["outliers"] = outliers.sum(-1).astype(np.int16)
    return out


def _triangulate_frames(xn, w, geo, cfg: dict, out: dict):
    """World joints of every frame from fixed cameras: selected pairs (Hartley-Sturm) fused by
    the vector median, or N-view DLT; fills out's pair_* diagnostics. -> Xw [F,J,3], ok [F,J],
    the pair candidates [F,Q,J,3] and their ok [F,Q,J] (None with DLT)."""
    pairs, used, Rrel, trel, rot, R, t, focal = geo
    F = xn.shape[0]
    if cfg["triangulation"] == "dlt":
        Xw, okJ = tri.triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), R, t)  # [F,J,3]
        for p in np.flatnonzero(used):
            i, j = pairs[p]
            both = (w[:, i] > 0) & (w[:, j] > 0)
            out["pair_used"][:, p] = both.any(-1)
            out["pair_rot_deg"][:, p] = rot[p]
        return Xw, okJ, None, None
    up = np.flatnonzero(used)
    cand = np.full((F, len(up), J, 3), np.nan)  # only the selected pairs are candidates
    cok = np.zeros((F, len(up), J), bool)
    for q, p in enumerate(up):
        i, j = pairs[p]
        both = (w[:, i] > 0) & (w[:, j] > 0)
        X, err, ok = tri.triangulate_pair(np.where(both[..., None], xn[:, i], 0.0),
                                          np.where(both[..., None], xn[:, j], 0.0),
                                          Rrel[p], trel[p], focal[i], focal[j])
        ok &= both
        cand[:, q] = camera.camera_to_world(X, R[i], t[i])
        cok[:, q] = ok
        n = ok.sum(-1)
        out["pair_used"][:, p] = n > 0
        out["pair_inliers"][:, p] = (ok & (err <= cfg["inlier_px"])).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["pair_reproj_px"][:, p] = np.where(n > 0, np.where(ok, err, 0).sum(-1) / n, np.nan)
        out["pair_rot_deg"][:, p] = rot[p]
    Xw, n = tri.vector_median(cand.transpose(0, 2, 1, 3), cok.transpose(0, 2, 1))  # [F,J,3]
    okJ = n > 0
    # a joint seen only by cameras that are not a selected pair: N-view DLT instead
    fill = ~okJ & ((w > 0).sum(1) >= 2)
    if fill.any():
        fi, ji = np.nonzero(fill)
        Xd, okd = tri.triangulate_dlt(xn[fi, :, ji], w[fi, :, ji], R, t)
        Xw[fi[okd], ji[okd]] = Xd[okd]
        okJ[fi[okd], ji[okd]] = True
    return Xw, okJ, cand, cok


def _label_per_frame(xn, w, cams: camera.Cameras, cfg: dict, progress: bool) -> dict:
    """The paper's per-frame mode: a relative pose per frame and pair, then triangulation,
    fusion per camera by the vector median of the pairwise (normalised) reconstructions."""
    F, V = xn.shape[:2]
    pairs = rigmod.all_pairs(V)
    P = len(pairs)
    out = _empty(F, V, P, False)
    method, robust = _estimator(cfg)
    focal = 0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1])
    for f in tqdm(range(F), disable=not progress, desc="per-frame labels", leave=False):
        if not (w[f] > 0).any():
            out["failure"][f] = epipolar.NO_JOINTS
            continue
        ests = []
        for p, (i, j) in enumerate(pairs):
            both = (w[f, i] > 0) & (w[f, j] > 0)
            e = epipolar.estimate_pair(np.where(both[:, None], xn[f, i], np.nan), np.where(both[:, None], xn[f, j], np.nan),
                                       cams.K[i], cams.K[j], method=method, robust=robust,
                                       threshold_px=cfg["threshold_px"], min_inlier_ratio=cfg["min_inlier_ratio"],
                                       seed=cfg["seed"] + p)
            ests.append(e)
            out["pair_failure"][f, p] = e.failure
            out["pair_inliers"][f, p] = e.n_inliers
            out["pair_rot_deg"][f, p] = e.rot_deg
            out["pair_reproj_px"][f, p] = e.reproj_px
        loop = _loop_closure(ests, pairs, V)
        out["pair_loop_deg"][f] = loop
        for p in np.flatnonzero(loop > cfg["max_loop_deg"]):
            ests[p] = epipolar.failed(epipolar.INCONSISTENT, ests[p].n_points, ests[p].n_inliers)
            out["pair_failure"][f, p] = epipolar.INCONSISTENT
        angles = np.array([e.rot_deg if e.ok else np.nan for e in ests])
        sel = select_pairs(angles, cfg["pairs"], cfg["n_neighbours"], cfg["max_pair_angle_deg"])
        cand = np.full((V, P, J, 3), np.nan)
        pair_fail = []
        for p in np.flatnonzero(sel):
            i, j = pairs[p]
            e = ests[p]
            both = (w[f, i] > 0) & (w[f, j] > 0)
            X, err, ok = tri.triangulate_pair(np.where(both[:, None], xn[f, i], 0.0),
                                              np.where(both[:, None], xn[f, j], 0.0), e.R, e.t, focal[i], focal[j])
            ok &= both
            X = np.where(ok[:, None], X, np.nan)
            s = canonical_scale(X)
            if not ok[ROOT] or ok.sum() < cfg["min_joints"] or not np.isfinite(s):
                pair_fail.append(epipolar.TRIANGULATION)
                continue
            if lr_ratio(X) > cfg["max_lr_ratio"]:
                pair_fail.append(epipolar.IMPLAUSIBLE)
                continue
            Xj = X @ e.R.T + e.t
            cand[i, p] = (X - X[ROOT]) / s
            cand[j, p] = (Xj - Xj[ROOT]) / s
            out["pair_used"][f, p] = True
        if not out["pair_used"][f].any():
            codes = [e.failure for e in ests if not e.ok] + pair_fail
            # report the most frequent reason (ties: the later stage of the pipeline)
            out["failure"][f] = max(set(codes), key=lambda c: (codes.count(c), c)) if codes else epipolar.NO_PAIR
            continue
        cand = cand.transpose(0, 2, 1, 3)  # [V,J,P,3]: candidates on axis -2
        lab, n = tri.vector_median(cand, np.all(np.isfinite(cand), -1))  # [V,J,3]
        ok = (n > 0)
        ok &= ok[:, ROOT:ROOT + 1]
        out["labels_cam"][f] = np.where(ok[..., None], lab, np.nan)
        out["valid"][f] = ok
        out["frame_ok"][f] = ok.any()
        # scale stays NaN: every pair has its own unit baseline, only the normalised shape is fused
        if not ok.any():
            out["failure"][f] = epipolar.TRIANGULATION
    return out


def _loop_closure(ests: list, pairs: np.ndarray, V: int) -> np.ndarray:
    """Per pair, the smallest rotation loop-closure error (deg) over the camera triplets it
    belongs to: R_ik ≈ R_jk R_ij when all three pairs were estimated. NaN where no triplet
    closes (fewer than three cameras, or a pair failed). -> [P]."""
    index = {(int(a), int(b)): p for p, (a, b) in enumerate(pairs)}
    out = np.full(len(pairs), np.nan)
    for i, j, k in itertools.combinations(range(V), 3):
        pij, pjk, pik = index[(i, j)], index[(j, k)], index[(i, k)]
        if not (ests[pij].ok and ests[pjk].ok and ests[pik].ok):
            continue
        err = float(camera.rotation_angle_deg(ests[pjk].R @ ests[pij].R, ests[pik].R))
        for p in (pij, pjk, pik):
            out[p] = err if not np.isfinite(out[p]) else min(out[p], err)
    return out


def label_chunk(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict | None = None, progress: bool = False) -> dict:
    """Labels for a chunk of frames: a pure, deterministic function of its inputs.

    kp2d [f,V,J,3] (x, y, confidence; NaN missing) in original pixels; cams from `calibrate`
    (with extrinsics in known and rig modes; a camera whose R, t are NaN was left out by
    calibrate: it gets no labels and its keypoints are not used). Returns the label contract's
    arrays for these frames: labels_cam [f,V,J,3] float32 (canonical scale), valid [f,V,J],
    frame_ok [f], failure [f] int8 (FAILURES), scale [f] (canonical scale in the rig's units;
    mm when known), outside [f,V] int16 (wild keypoints treated as missing: outside_image),
    outliers [f,V] int16 (known/rig: joints the other views' consensus left out),
    and per-pair diagnostics over rig.all_pairs(V): pair_used, pair_inliers (joints
    reprojecting within inlier_px; per-frame mode: RANSAC inliers), pair_reproj_px,
    pair_rot_deg, pair_failure, pair_loop_deg (per-frame: rotation loop closure) [f,P]; in
    known mode also labels_cam_mm.
    """
    cfg = resolve_cfg(cfg)
    kp2d = _check_inputs(kp2d, cams)
    xn, w, wild = _screened(kp2d, cams, cfg)
    outside = wild.sum(-1).astype(np.int16)
    if cfg["mode"] == "per-frame":
        out = _label_per_frame(xn, w, cams, cfg, progress)
        out["outside"] = outside
        return out
    placed = np.all(np.isfinite(cams.R), axis=(1, 2)) & np.all(np.isfinite(cams.t), axis=1)
    if not placed.any():
        raise ValueError(f"labels: mode {cfg['mode']!r} needs cameras with extrinsics "
                         "(known: from the dataset; rig: from calibrate())")
    if placed.sum() < 2:
        raise ValueError(f"labels: mode {cfg['mode']!r} needs at least 2 cameras with extrinsics, "
                         f"got {int(placed.sum())} (the others were left out by calibrate())")
    known = cfg["mode"] == "known"
    idx = np.flatnonzero(placed)
    sub = camera.Cameras(cams.K[idx], cams.R[idx], cams.t[idx], cams.dist[idx], cams.size[idx])
    camera.check_rig(sub, [f"camera {v}" for v in idx], "labels")
    if placed.all():
        out = _label_with_rig(xn, w, sub, cfg, known=known)
    else:  # label with the placed cameras, then put their results in the full rig's places
        part = _label_with_rig(xn[:, idx], w[:, idx], sub, cfg, known=known)
        F, V = kp2d.shape[:2]
        pairs = rigmod.all_pairs(V)
        out = _empty(F, V, len(pairs), known)
        for k in ("frame_ok", "failure", "scale"):
            out[k] = part[k]
        for k in ("labels_cam", "labels_cam_mm", "valid", "outliers"):
            if k in part:
                out[k][:, idx] = part[k]
        index = {(int(a), int(b)): p for p, (a, b) in enumerate(pairs)}
        for q, (a, b) in enumerate(rigmod.all_pairs(len(idx))):
            p = index[(int(idx[a]), int(idx[b]))]
            for k in [k for k in part if k.startswith("pair_")]:
                out[k][:, p] = part[k][:, q]
    out["outside"] = outside
    return out


def make_labels(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict | None = None, progress: bool = False) -> dict:
    """calibrate + label_chunk over all frames (in chunks of cfg["chunk_frames"]).

    Returns label_chunk's frame-indexed arrays plus calibrate's info, which is not
    frame-indexed: in rig mode R_est [V,3,3], t_est [V,3], rig_pairs [P,2] and rig_pair_*
    [P] (points, inliers, rot_deg, reproj_px, failure, threshold_px), chain_order [V],
    ba_* scalars."""
    cfg = resolve_cfg(cfg)
    cams2, info = calibrate(kp2d, cams, cfg)
    F = len(kp2d)
    step = max(1, int(cfg["chunk_frames"])) if cfg["mode"] != "per-frame" else max(F, 1)
    parts = [label_chunk(kp2d[s:s + step], cams2, cfg, progress=progress)
             for s in tqdm(range(0, max(F, 1), step), disable=not progress or F <= step, desc="labels")]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out.update(info)
    return out
