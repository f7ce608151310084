"""Pseudo-labels from multi-view 2D joints: the label stage's logic (EpipolarPose, Sec. 3.2).

Modes (cfg["mode"]):
- "known": extrinsics given (the paper's "with R"); labels also in mm.
- "per-frame": the paper's method. Every camera pair of every frame gets its own relative
  pose from that frame's ≤ 17 joints (robust E, cheirality), then polynomial triangulation;
  frames where no pair works are flagged with a FAILURES code. A pair fails on too few
  points or inliers, a degenerate configuration (collinear joints, or one homography
  explaining them: coplanar), an ambiguous cheirality, an implausible skeleton (left/right
  limbs differ by more than max_lr_ratio) or, with three or more cameras, rotations that
  do not close around camera triplets (max_loop_deg). cfg["estimator"] =
  "fundamental" is the paper's exact route (F by RANSAC on pixels, E = KᵀFK); the default
  "essential" (5-point on normalised points) uses the known K better (docs/results.md).
- "rig": the cameras are static, so `calibrate` pools the joints of many frames, estimates
  each pair once, chains them into one rig and bundle-adjusts it; labelling then
  triangulates with that rig.

Triangulation (cfg["triangulation"]): "pairs" (default, the paper): optimal two-view
(Hartley–Sturm) triangulation for each selected pair, fused per joint by the vector median;
"dlt": confidence-weighted N-view DLT. Pair selection (cfg["pairs"]): "neighbours" (each
camera with its n_neighbours nearest by viewing direction, none wider than
max_pair_angle_deg unless a camera would be left alone: facing pairs triangulate badly) or
"all".

Bad input: pipeline/geometry/calibration.py leaves out cameras that cannot be used and refuses
rigs that cannot triangulate. Outliers inside the image (a detector's gross errors, left/right
swaps): in known / rig mode with pair triangulation each joint's views are checked against
the consensus of the others (triangulate.consensus_outliers, outlier_px) and a view that
disagrees is left out of that joint (`outliers` counts them; per-frame mode relies on its
per-frame RANSAC).

The canonical scale: a label is root-relative and divided by its pose's mean bone length
over the 16 bones of joints.BONES (`canonical_scale`), so it is in "mean bones" whatever
the rig's unknown scale. In "known" mode `labels_cam_mm` keeps millimetres as well.
"""
from __future__ import annotations


import numpy as np
from tqdm.auto import tqdm

from .. import camera
from ..cores import available_cores, thread_imap
from ..joints import INDEX, J, PARENTS, ROOT, mean_bone_length
from . import epipolar, median
from . import rig as rigmod
from . import triangulate as tri
from .calibration import calibrate
from .epipolar import FAILURES
from .label_settings import (DEFAULTS, PRESETS, LabelWarning, check_inputs, estimator, resolve_cfg, screened,
                             select_pairs, viewing_angles)

# the label stage's interface: its settings, the two steps, the failure codes of its outputs
__all__ = ["DEFAULTS", "PRESETS", "FAILURES", "LabelWarning", "calibrate", "canonical_scale", "label_chunk", "lr_ratio",
           "make_labels", "resolve_cfg"]



# the canonical scale of a label: its pose's mean bone length (one definition, in joints)
canonical_scale = mean_bone_length


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
    F, V = len(Xw), len(R)
    ok = okJ & good[:, None]  # [F,J]
    Xr = (Xw - Xw[:, ROOT:ROOT + 1]).reshape(-1, 3)  # root-relative world joints: rotations alone map them
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.repeat(1.0 / scale, Xw.shape[1])[:, None]
    lab = np.empty((F, V) + Xw.shape[1:], np.float32)
    mm = np.empty_like(lab) if "labels_cam_mm" in out else None
    for v in range(V):  # one [F·J,3] x [3,3] product per camera
        rel = Xr @ R[v].T
        if mm is not None:
            mm[:, v] = rel.reshape(Xw.shape)
        lab[:, v] = (rel * inv).reshape(Xw.shape)
    lab[~np.broadcast_to(ok[:, None], lab.shape[:3])] = np.nan
    out["labels_cam"] = lab
    if mm is not None:
        mm[~np.broadcast_to(ok[:, None], lab.shape[:3])] = np.nan
        out["labels_cam_mm"] = mm
    valid = np.broadcast_to(ok[:, None], lab.shape[:3])
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
    rot = camera.rotation_magnitude_deg(Rrel)
    geo = (pairs, used, Rrel, trel, rot, R, t, focal)
    Xw, okJ, cand, cok = _triangulate_frames(xn, w, geo, cfg, out)
    outliers = np.zeros((F, V, J), bool)
    if cfg["triangulation"] == "pairs" and cfg["outlier_px"] > 0 and V >= 3:
        # only frames where the fused joints miss some observation by half the threshold can
        # hold an outlier (the fused point lies between the candidates): the rest skip the test
        far = np.zeros(F, bool)
        for v in range(V):  # one [F·J,3] x [3,3] product per camera
            Xc = (Xw.reshape(-1, 3) @ R[v].T + t[v]).reshape(Xw.shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                dx = Xc[..., 0] / Xc[..., 2] - xn[:, v, :, 0]
                dy = Xc[..., 1] / Xc[..., 2] - xn[:, v, :, 1]
                r0 = np.sqrt(dx * dx + dy * dy) * focal[v]
            far |= np.any((w[:, v] > 0) & ~(r0 <= 0.5 * cfg["outlier_px"]), axis=1)
        suspect = np.flatnonzero(far)
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
        cand[:, q] = ((X - t[i]).reshape(-1, 3) @ R[i]).reshape(X.shape)  # camera i -> world
        cok[:, q] = ok
        n = ok.sum(-1)
        out["pair_used"][:, p] = n > 0
        out["pair_inliers"][:, p] = (ok & (err <= cfg["inlier_px"])).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["pair_reproj_px"][:, p] = np.where(n > 0, np.where(ok, err, 0).sum(-1) / n, np.nan)
        out["pair_rot_deg"][:, p] = rot[p]
    Xw, n = median.vector_median(cand.transpose(0, 2, 1, 3), cok.transpose(0, 2, 1))  # [F,J,3]
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
    fusion per camera by the vector median of the pairwise (normalised) reconstructions.
    Blocks of PER_FRAME_BLOCK frames: OpenCV's robust fit runs per frame and pair, the rest
    on the block's frames together."""
    F, V = xn.shape[:2]
    out = _empty(F, V, len(rigmod.all_pairs(V)), False)
    out["failure"][~(w > 0).any((1, 2))] = epipolar.NO_JOINTS
    act = np.flatnonzero((w > 0).any((1, 2)))
    for a in tqdm(range(0, len(act), PER_FRAME_BLOCK), disable=not progress, desc="per-frame labels", leave=False,
                  unit="block"):
        _per_frame_block(act[a:a + PER_FRAME_BLOCK], xn, w, cams, cfg, out)
    return out


PER_FRAME_BLOCK = 256  # frames labelled together in per-frame mode (bounds the [f,V,P,J,3] candidates)


def _per_frame_block(fr: np.ndarray, xn, w, cams: camera.Cameras, cfg: dict, out: dict) -> None:
    """_label_per_frame on frames fr [n] (each with some joint seen); fills out's rows fr."""
    V = xn.shape[1]
    pairs = rigmod.all_pairs(V)
    P = len(pairs)
    method, robust = estimator(cfg)
    focal = 0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1])
    n = len(fr)
    ests = np.empty((n, P), object)
    for p, (i, j) in enumerate(pairs):
        both = (w[fr, i] > 0) & (w[fr, j] > 0)
        ests[:, p] = epipolar.estimate_pairs(
            np.where(both[..., None], xn[fr, i], np.nan), np.where(both[..., None], xn[fr, j], np.nan),
            np.broadcast_to(cams.K[i], (n, 3, 3)), np.broadcast_to(cams.K[j], (n, 3, 3)), method=method,
            robust=robust, threshold_px=cfg["threshold_px"], min_inlier_ratio=cfg["min_inlier_ratio"],
            seeds=np.full(n, cfg["seed"] + p))
    for key, attr in (("pair_failure", "failure"), ("pair_inliers", "n_inliers"), ("pair_rot_deg", "rot_deg"),
                      ("pair_reproj_px", "reproj_px")):
        out[key][fr] = [[getattr(e, attr) for e in row] for row in ests]
    sel = np.zeros((n, P), bool)
    for r in range(n):
        loop = _loop_closure(ests[r], pairs, V)
        out["pair_loop_deg"][fr[r]] = loop
        for p in np.flatnonzero(loop > cfg["max_loop_deg"]):
            ests[r, p] = epipolar.failed(epipolar.INCONSISTENT, ests[r, p].n_points, ests[r, p].n_inliers)
            out["pair_failure"][fr[r], p] = epipolar.INCONSISTENT
        angles = np.array([e.rot_deg if e.ok else np.nan for e in ests[r]])
        sel[r] = select_pairs(angles, cfg["pairs"], cfg["n_neighbours"], cfg["max_pair_angle_deg"])
    # every selected (frame, pair) triangulated, checked and put in both cameras' frames
    cand = np.full((n, V, P, J, 3), np.nan)
    pair_fail = np.zeros((n, P), np.int8)
    for p in range(P):
        rows = np.flatnonzero(sel[:, p])
        if not len(rows):
            continue
        i, j = pairs[p]
        R = np.stack([e.R for e in ests[rows, p]])
        t = np.stack([e.t for e in ests[rows, p]])
        both = (w[fr[rows], i] > 0) & (w[fr[rows], j] > 0)
        X, _, ok = tri.triangulate_pair(np.where(both[..., None], xn[fr[rows], i], 0.0),
                                        np.where(both[..., None], xn[fr[rows], j], 0.0), R[:, None], t[:, None],
                                        focal[i], focal[j])
        ok &= both
        X = np.where(ok[..., None], X, np.nan)
        s = canonical_scale(X)
        bad = ~ok[:, ROOT] | (ok.sum(-1) < cfg["min_joints"]) | ~np.isfinite(s)
        pair_fail[rows[bad], p] = epipolar.TRIANGULATION
        odd = ~bad & (lr_ratio(X) > cfg["max_lr_ratio"])
        pair_fail[rows[odd], p] = epipolar.IMPLAUSIBLE
        good = ~bad & ~odd
        Xj = X @ np.swapaxes(R, 1, 2) + t[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            cand[rows[good], i, p] = ((X - X[:, ROOT:ROOT + 1]) / s[:, None, None])[good]
            cand[rows[good], j, p] = ((Xj - Xj[:, ROOT:ROOT + 1]) / s[:, None, None])[good]
        out["pair_used"][fr[rows[good]], p] = True
    used = out["pair_used"][fr].any(1)
    for r in np.flatnonzero(~used):
        codes = [e.failure for e in ests[r] if not e.ok] + [int(c) for c in pair_fail[r][sel[r]]]
        # report the most frequent reason (ties: the later stage of the pipeline)
        out["failure"][fr[r]] = max(set(codes), key=lambda c: (codes.count(c), c)) if codes else epipolar.NO_PAIR
    rows = np.flatnonzero(used)
    c = cand[rows].transpose(0, 1, 3, 2, 4)  # [m,V,J,P,3]: candidates on axis -2
    lab, cnt = median.vector_median(c, np.all(np.isfinite(c), -1))  # [m,V,J,3]
    ok = cnt > 0
    ok &= ok[:, :, ROOT:ROOT + 1]
    f = fr[rows]
    out["labels_cam"][f] = np.where(ok[..., None], lab, np.nan)
    out["valid"][f] = ok
    out["frame_ok"][f] = ok.any((1, 2))
    # scale stays NaN: every pair has its own unit baseline, only the normalised shape is fused
    out["failure"][f[~ok.any((1, 2))]] = epipolar.TRIANGULATION


def _loop_closure(ests: list, pairs: np.ndarray, V: int) -> np.ndarray:
    """rig.loop_closure: per pair, the smallest rotation loop-closure error over its triplets."""
    return rigmod.loop_closure(ests, pairs, V)


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
    kp2d = check_inputs(kp2d, cams)
    xn, w, wild = screened(kp2d, cams, cfg)
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


def make_labels(kp2d: np.ndarray, cams: camera.Cameras, cfg: dict | None = None, progress: bool = False,
                client=None) -> dict:
    """calibrate + label_chunk over all frames (in chunks of cfg["chunk_frames"], per-frame mode:
    of whole PER_FRAME_BLOCKs, about 4 per core; on a thread per core, or in per-frame mode with
    a Dask `client`, spread over its workers: label_chunk is a pure function of its frames, so
    the result is the same).

    Returns label_chunk's frame-indexed arrays plus calibrate's info, which is not
    frame-indexed: in rig mode R_est [V,3,3], t_est [V,3], rig_pairs [P,2] and rig_pair_*
    [P] (points, inliers, rot_deg, reproj_px, failure, threshold_px), chain_order [V],
    ba_* scalars."""
    cfg = resolve_cfg(cfg)
    cams2, info = calibrate(kp2d, cams, cfg)
    F = len(kp2d)
    if cfg["mode"] != "per-frame":
        step = max(1, int(cfg["chunk_frames"]))
    else:  # a RANSAC per frame and pair: blocks enough to keep every core busy (OpenCV releases the GIL)
        step = PER_FRAME_BLOCK * max(1, -(-F // (PER_FRAME_BLOCK * 4 * available_cores())))
    starts = range(0, max(F, 1), step)
    if client is not None and cfg["mode"] == "per-frame" and F > 1:
        # the per-frame mode costs a RANSAC per frame and pair: worth spreading; 4 chunks a worker
        step = max(1, -(-F // (4 * max(1, len(client.scheduler_info().get("workers", {}))))))
        starts = range(0, F, step)
        futures = client.map(label_chunk, [kp2d[s:s + step] for s in starts], cams=cams2, cfg=cfg, pure=False)
        parts = (f.result() for f in futures)  # fetched one at a time, in order
    else:  # chunks on a thread per core, at most that many in flight (numpy and numba release the GIL)
        inner = progress and len(starts) == 1  # several chunks: the bar below counts them
        parts = thread_imap(lambda s: label_chunk(kp2d[s:s + step], cams2, cfg, progress=inner), starts)
    out: dict = {}
    # each chunk's result goes straight into the output (no list of parts then a copy of all:
    # the peak stays the input, the output and one chunk's work)
    for s, part in tqdm(zip(starts, parts), total=len(starts), disable=not progress or F <= step, desc="labels"):
        if not out:
            out = {k: np.empty((F,) + v.shape[1:], v.dtype) for k, v in part.items()}
        for k, v in part.items():
            out[k][s:s + len(v)] = v
    out.update(info)
    return out
