"""Cameras for labelling, from the 2D joints of many frames (EpipolarPose, Sec. 3.2, and the
static-rig mode that pools them).

`calibrate(kp2d, cams, cfg)`: known: the cameras as given (camera.check_rig refuses a rig that
cannot triangulate); per-frame: without extrinsics (each frame gets its own relative poses);
rig: R, t estimated from the pooled joints (pipeline/geometry/rig.py), bundle-adjusted.

Bad input (every mode): a wild point is treated as missing (counted, warned about per camera);
a camera that sees nobody, or shares fewer than 8 joints with every other camera, or (rig)
cannot be placed, is left out with a warning (its extrinsics NaN, its labels NaN; diag says
why) and the others are calibrated and labelled; fewer than 2 cameras left is an error naming
each camera and why. Two views without a baseline (identical keypoints, or rays one rotation
maps onto each other: a duplicated view or a camera only turned; rig mode: two cameras
calibrated at the same place) are refused with an error naming both: which of the two is the
real view cannot be told, and a duplicate's labels would be wrong for its images. A view out
of sync with the others (pipeline/geometry/sync.py, `sync` = "check") is refused with an error
naming it and its offset in frames ("correct" is not offered: a view's label at frame f would
need the other views' keypoints of other frames, which a chunk does not hold; the data must
be aligned upstream).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from .. import camera
from ..joints import J
from . import epipolar
from . import rig as rigmod
from . import sync as syncmod
from . import triangulate as tri
from .label_settings import LabelWarning, check_inputs, estimator, gate, resolve_cfg, screened



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
              names=None, extra: np.ndarray | None = None) -> tuple[camera.Cameras, dict]:
    """Cameras for labelling. known: cams as given (extrinsics required; camera.check_rig);
    per-frame: cams without extrinsics; rig: R, t estimated from the pooled joints of kp2d
    [F,V,J,3] (the frame of camera 0, or of the first placed camera; unit baseline between the
    first two placed cameras), bundle-adjusted. names [V]: camera names for messages.

    Every mode first screens the keypoints (module docstring): wild points are treated as
    missing; a camera that sees nobody or shares fewer than 8 joints with every other camera
    (rig: or cannot be placed) is left out with a LabelWarning, its R, t NaN in the returned
    Cameras (so label_chunk gives it no labels); two views without a baseline and (sync =
    "check") a view clearly out of sync are refused. ValueError names the cameras. known: a
    given calibration that explains a pair's joints clearly worse than their own epipolar
    geometry is named, with the camera its pairs share (LabelWarning; baseline_given_px).

    Returns (Cameras, diag): cameras_used [V] bool, camera_status [V] ("ok" or why it was left
    out), usable_joints [V], keypoints_outside [V] (wild points), baseline_pairs [P,2] with
    baseline_points, baseline_coincide, baseline_rotation_px, baseline_epipolar_px,
    baseline_given_px [P] (rig.baseline_evidence; given_px NaN but in known mode), sync_*
    (pipeline.geometry.sync.estimate_offsets: sync_offsets [V], sync_relative [V], sync_ratio
    [V], sync_sharpness [V], sync_clear [V], sync_cost_px [P',L], sync_pairs [P',2],
    sync_given [P'] (scored under the known rig: all, or none), sync_lags [L], sync_agrees [V], sync_skipped,
    sync_seconds); in rig mode also per-pair arrays over rig.all_pairs(V) (`rig_pair_*`), R_est,
    t_est, chain_order and the bundle-adjustment figures.

    extra [N,V,J,3]: more people's keypoints (pipeline.geometry.people.rows: the bystanders
    associated with the subject), screened the same way and pooled with kp2d for the rig's
    estimate only (rig mode; the checks above look at kp2d alone). The rig's quality gate
    (gate_* keys, rig.GATE) may leave cameras out or refuse the rig (rig.RigRefused).
    """
    cfg = resolve_cfg(cfg)
    kp2d = check_inputs(kp2d, cams)
    names = _names(names, cams.V)
    F, V = kp2d.shape[:2]
    if cfg["mode"] == "known":
        camera.check_rig(cams, names, "labels (known mode)")
        if not cams.has_extrinsics:
            raise ValueError("labels: mode 'known' needs finite extrinsics R, t; use mode 'rig' or 'per-frame'")
    xn, w, wild = screened(kp2d, cams, cfg)
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
                                  seed=cfg["seed"], **({"R": cams.R, "t": cams.t} if cfg["mode"] == "known" else {}))
    diag.update({"baseline_pairs": kp_pairs, **{f"baseline_{k}": a for k, a in ev.items()}})
    for p, (i, j) in enumerate(kp_pairs):
        if ev["coincide"][p] >= 0.5:
            raise ValueError(
                f"labels: {names[i]} and {names[j]} show the same keypoints ({100 * ev['coincide'][p]:.0f} % of the "
                f"{ev['points'][p]} joints both see are within 1 px): a duplicated view (copied keypoint files?) has "
                "no baseline and one of them is not what its images show; remove the duplicate or fix its keypoints")
        rot, e = ev["rotation_px"][p], ev["epipolar_px"][p]
        ratio = cfg["no_baseline_ratio"]
        # only where the rotation explains the rays at the detector's noise level: views whose
        # keypoints agree on nothing (another recording, a shuffled view) are the gate's to refuse
        if (ratio > 0 and np.isfinite(rot) and np.isfinite(e) and rot <= ratio * max(e, 0.25)
                and rot <= 8.0 * cfg["threshold_px"]):
            raise ValueError(
                f"labels: {names[i]} and {names[j]} have no baseline: one rotation maps the rays of their "
                f"{ev['points'][p]} pooled joints onto each other (median {rot:.2f} px, vs {e:.2f} px epipolar "
                "error): the same camera centre (a duplicated view, or a camera only turned). Such a pair cannot "
                "triangulate; remove one of the two views (or set label.no_baseline_ratio=0 if they are "
                "genuinely apart)")
    given_E = None
    if cfg["mode"] == "known":
        _check_given_rig(ev, kp_pairs, names, cfg)
        # all pairs or none: a view out of step makes its own pairs disagree with the given rig,
        # and given and fitted curves mixed in one solve misplace it (docs/calibration.md)
        if np.all(np.isfinite(ev["given_px"]) & ~_given_disagrees(ev, cfg)):
            given_E = _given_essentials(cams, kp_pairs)
    # 4. synchronisation
    diag.update(_sync_check(kp2d, wk, cams, cfg, keep, names, given_E))
    for v in np.flatnonzero(keep & ~diag.get("sync_agrees", np.ones(V, bool))):
        status[v] = (f"its keypoints agree with no other view's at any frame offset within ±{cfg['sync_max_lag']} "
                     "(out of sync by more, or of another recording)")
    keep = np.array([st == "ok" for st in status])
    if keep.sum() < 2:
        raise _too_few_cameras(names, status, "calibrated")
    wk = np.where(keep[None, :, None], w, 0.0)
    # 5. the cameras
    if cfg["mode"] == "known":
        R, t = cams.R.copy(), cams.t.copy()
    elif cfg["mode"] == "per-frame":
        R, t = np.full((V, 3, 3), np.nan), np.full((V, 3), np.nan)
    else:
        method, robust = estimator(cfg)
        xr, wr = xn, wk
        if extra is not None and len(extra):
            ex = check_inputs(extra, cams)
            xe, we, _ = screened(ex, cams, cfg)
            xr = np.concatenate([xn, xe])
            wr = np.concatenate([wk, np.where(keep[None, :, None], we, 0.0)])
            diag["extra_rows"] = int(len(ex))
        try:
            R, t, info = rigmod.calibrate_rig(
                xr, wr, cams.K, method=method, threshold_px=cfg["threshold_px"], max_points=cfg["max_pool_points"],
                seed=cfg["seed"], ba=cfg["ba"], ba_frames=cfg["ba_frames"], ba_loss=cfg["ba_loss"],
                ba_f_scale_px=cfg["ba_f_scale_px"], ba_max_nfev=cfg["ba_max_nfev"],
                min_inlier_ratio=cfg["min_inlier_ratio"], robust=robust, names=names, gate=gate(cfg),
                ba_max_seconds=cfg["ba_max_seconds"])
        except ValueError as err:  # RigRefused stays RigRefused
            raise type(err)(f"labels: {err}") from None
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


# a given calibration is flagged for a pair whose keypoints it explains this many times worse
# (and threshold_px worse) than their own epipolar geometry (rig.baseline_evidence)
GIVEN_WORSE_X = 2.0


def _given_disagrees(ev: dict, cfg: dict) -> np.ndarray:
    """[P] bool: pairs whose given calibration explains their pooled joints clearly worse than
    their own fitted essential matrix (rig.baseline_evidence's given_px vs epipolar_px)."""
    given, own = ev["given_px"], ev["epipolar_px"]
    with np.errstate(invalid="ignore"):
        return (given > GIVEN_WORSE_X * own) & (given - own > cfg["threshold_px"])


def _given_essentials(cams: camera.Cameras, pairs: np.ndarray) -> np.ndarray:
    """[V,V,3,3] the given rig's essential matrix of each pair (i, j) at [i, j] (x_j^T E x_i =
    0), NaN elsewhere: the sync check scores those pairs' lags without a fit."""
    E = np.full((cams.V, cams.V, 3, 3), np.nan)
    for i, j in pairs:
        E[i, j] = tri.essential_from_pose(*tri.relative_pose(cams.R[i], cams.t[i], cams.R[j], cams.t[j]))
    return E


def _check_given_rig(ev: dict, pairs: np.ndarray, names: list[str], cfg: dict) -> None:
    """LabelWarning naming the camera pairs whose given extrinsics explain the pooled joints
    clearly worse than a fitted essential matrix does, and the camera they share most: its
    calibration (or intrinsics, distortion) disagrees with its keypoints, and the labels are
    triangulated with it. Blind to errors that move the joints along their epipolar lines
    (e.g. a roll about the optical axis)."""
    given, own = ev["given_px"], ev["epipolar_px"]
    bad = np.flatnonzero(_given_disagrees(ev, cfg))
    if not len(bad):
        return
    count = np.bincount(pairs[bad].ravel(), minlength=len(names))
    worst = [names[v] for v in np.flatnonzero(count == count.max())]
    _warn("labels: the given calibration explains these views' joints clearly worse than their own epipolar "
          "geometry (median Sampson distance of the pooled joints, given vs fitted): "
          + ", ".join(f"{names[pairs[p, 0]]}-{names[pairs[p, 1]]} {given[p]:.1f} px vs {own[p]:.1f} px" for p in bad)
          + f"; {' or '.join(worst)} {'is' if len(worst) == 1 else 'are'} the likely culprit: check "
          f"{'its' if len(worst) == 1 else 'their'} extrinsics, intrinsics and distortion (the labels are "
          "triangulated with them), or label without the calibration (label.mode=rig)")


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


# fewer anchor frames than this: an offset the sync check finds is a warning, not a refusal
SYNC_MIN_ANCHORS = 24


def _sync_check(kp2d, w, cams: camera.Cameras, cfg: dict, keep: np.ndarray, names: list[str],
                given_E: np.ndarray | None = None) -> dict:
    """pipeline.geometry.sync on the usable keypoints (given_E: the known rig's essential
    matrices, when it explains every pair: scored without a fit); sync = "check": ValueError
    for a view clearly off."""
    if cfg["sync"] == "off":
        return {"sync_skipped": "label.sync is off"}
    t0 = time.perf_counter()
    off, d = syncmod.estimate_offsets(kp2d, cams.K, cams.dist, max_lag=cfg["sync_max_lag"],
                                      n_frames=cfg["sync_frames"], min_confidence=cfg["min_confidence"],
                                      threshold_px=cfg["threshold_px"], min_ratio=cfg["sync_min_ratio"],
                                      cameras=keep, seed=cfg["seed"], usable=w > 0, given_E=given_E)
    out = {"sync_offsets": off, "sync_relative": d["relative"], "sync_ratio": d["ratio"],
           "sync_sharpness": d["sharpness"], "sync_clear": d["clear"], "sync_cost_px": d["cost_px"],
           "sync_pairs": d["pairs"], "sync_given": d["given"], "sync_lags": d["lags"], "sync_skipped": d["skipped"],
           "sync_agrees": d["agrees"],
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
        if int(d["anchors"]) < SYNC_MIN_ANCHORS:
            # a few frames to compare: one odd frame or a wrong intrinsic can mimic an offset, so
            # say it, and leave the refusal to longer recordings
            warnings.warn("labels: not conclusive (only " + str(int(d["anchors"])) + " frames to compare lags on): "
                          + "; ".join(msgs) + ". Check the recording's synchronisation", LabelWarning, stacklevel=3)
            out["sync_inconclusive"] = True
            return out
        raise ValueError("labels: " + "; ".join(msgs) + ". Fix the recording's synchronisation (a Pose2Sim project: "
                         "dataset.frame_offsets=auto estimates and applies the offsets, or give them as integers), "
                         "or set label.sync=off to label anyway")
    return out
