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

The canonical scale: a label is root-relative and divided by its pose's mean bone length
over the 16 bones of joints.BONES (`canonical_scale`), so it is in "mean bones" whatever
the rig's unknown scale. In "known" mode `labels_cam_mm` keeps millimetres as well.
"""
from __future__ import annotations

import itertools

import numpy as np
from tqdm.auto import tqdm

from . import camera
from . import epipolar
from . import rig as rigmod
from . import triangulate as tri
from .epipolar import FAILURES  # noqa: F401  (re-exported: the label contract's codes)
from .joints import INDEX, J, PARENTS, ROOT, bone_lengths
from .registry import with_defaults

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
}

MODES = ("known", "per-frame", "rig")


def resolve_cfg(cfg: dict | None) -> dict:
    """DEFAULTS overridden by cfg; unknown keys and bad values raise ValueError."""
    out = with_defaults(cfg, DEFAULTS, "labels")
    if out["mode"] not in MODES:
        raise ValueError(f"labels: mode must be one of {MODES}, got {out['mode']!r}")
    if out["triangulation"] not in ("pairs", "dlt"):
        raise ValueError(f"labels: triangulation must be 'pairs' or 'dlt', got {out['triangulation']!r}")
    if out["pairs"] not in ("neighbours", "all"):
        raise ValueError(f"labels: pairs must be 'neighbours' or 'all', got {out['pairs']!r}")
    if out["ransac"] not in ("magsac", "ransac"):
        raise ValueError(f"labels: ransac must be 'magsac' or 'ransac', got {out['ransac']!r}")
    return out


def _estimator(cfg: dict) -> tuple[str, int]:
    import cv2
    method = cfg["estimator"]
    if method not in ("essential", "fundamental"):
        raise ValueError(f"labels: estimator must be 'essential' or 'fundamental', got {method!r}")
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


def _normalised(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict):
    """Undistorted normalised points xn [F,V,J,2] and weights w [F,V,J] (0 = unusable)."""
    F, V = kp2d.shape[:2]
    uv = kp2d[..., :2]
    conf = kp2d[..., 2]
    w = np.where(np.all(np.isfinite(uv), -1) & np.isfinite(conf) & (conf >= cfg["min_confidence"]), conf, 0.0)
    xn = np.empty(uv.shape)
    for v in range(V):
        if np.any(cams.dist[v] != 0):
            xn[:, v] = camera.undistort_points(uv[:, v].reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, J, 2)
        else:
            xn[:, v] = camera.normalise_points(uv[:, v], cams.K[v])
    xn[w <= 0] = np.nan
    return xn, w


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

def calibrate(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict | None = None) -> tuple[camera.Cameras, dict]:
    """Cameras for labelling. known: cams as given (extrinsics required); per-frame: cams
    without extrinsics; rig: R, t estimated from the pooled joints of kp2d [F,V,J,3] (camera
    0's frame, unit baseline 0-1), bundle-adjusted. Returns (Cameras, info): info holds
    per-pair arrays over rig.all_pairs(V) (`rig_pair_*`), `R_est`, `t_est` and the
    bundle-adjustment figures in rig mode.
    """
    cfg = resolve_cfg(cfg)
    kp2d = _check_inputs(kp2d, cams)
    if cfg["mode"] == "known":
        if not cams.has_extrinsics:
            raise ValueError("labels: mode 'known' needs finite extrinsics R, t; use mode 'rig' or 'per-frame'")
        return cams, {}
    if cfg["mode"] == "per-frame":
        return cams.without_extrinsics(), {}
    xn, w = _normalised(kp2d, cams, cfg)
    method, robust = _estimator(cfg)
    R, t, info = rigmod.calibrate_rig(
        xn, w, cams.K, method=method, threshold_px=cfg["threshold_px"], max_points=cfg["max_pool_points"],
        seed=cfg["seed"], ba=cfg["ba"], ba_frames=cfg["ba_frames"], ba_loss=cfg["ba_loss"],
        ba_f_scale_px=cfg["ba_f_scale_px"], ba_max_nfev=cfg["ba_max_nfev"],
        min_inlier_ratio=cfg["min_inlier_ratio"], robust=robust)
    out = {f"rig_{k}" if k.startswith("pair") else k: v for k, v in info.items()}
    out["R_est"], out["t_est"] = R, t
    return camera.Cameras(cams.K, R, t, cams.dist, cams.size), out


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
    """known / rig mode: fixed cameras, fully vectorised over frames x joints."""
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
    nvis = (w > 0).sum(-1)  # [F,V]
    failure = np.zeros(F, np.int8)
    failure[(w > 0).sum((1, 2)) == 0] = epipolar.NO_JOINTS
    if cfg["triangulation"] == "dlt":
        Xw, okJ = tri.triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), R, t)  # [F,J,3]
        for p in np.flatnonzero(used):
            i, j = pairs[p]
            both = (w[:, i] > 0) & (w[:, j] > 0)
            out["pair_used"][:, p] = both.any(-1)
            out["pair_rot_deg"][:, p] = rot[p]
    else:
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
    failure[(failure == 0) & ((nvis > 0).sum(-1) < 2)] = epipolar.TOO_FEW_POINTS
    return _finish(out, Xw, okJ, R, t, cfg, failure)


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
            ests[p] = epipolar._fail(epipolar.INCONSISTENT, ests[p].n_points, ests[p].n_inliers)
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
    (with extrinsics in known and rig modes). Returns the label contract's arrays for these
    frames: labels_cam [f,V,J,3] float32 (canonical scale), valid [f,V,J], frame_ok [f],
    failure [f] int8 (FAILURES), scale [f] (canonical scale in the rig's units; mm when
    known), and per-pair diagnostics over rig.all_pairs(V): pair_used, pair_inliers (joints
    reprojecting within inlier_px; per-frame mode: RANSAC inliers), pair_reproj_px,
    pair_rot_deg, pair_failure, pair_loop_deg (per-frame: rotation loop closure) [f,P]; in
    known mode also labels_cam_mm.
    """
    cfg = resolve_cfg(cfg)
    kp2d = _check_inputs(kp2d, cams)
    xn, w = _normalised(kp2d, cams, cfg)
    if cfg["mode"] == "per-frame":
        return _label_per_frame(xn, w, cams, cfg, progress)
    if not cams.has_extrinsics:
        raise ValueError(f"labels: mode {cfg['mode']!r} needs cameras with extrinsics "
                         "(known: from the dataset; rig: from calibrate())")
    return _label_with_rig(xn, w, cams, cfg, known=cfg["mode"] == "known")


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
