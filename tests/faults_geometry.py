"""Bad 2D input for the label geometry, one small reproducible case each (for tests and bench/faults.py).

CASES[name]() -> (kp2d [F,V,J,3], cams, label cfg, expected) where expected is
"error:<substring of the ValueError>", "flag:<substring of a LabelWarning>" (calibration and
labelling go on with the rest), "warn:<substring of a LabelWarning>" (the input the labels are
made with is itself wrong, e.g. a given calibration: saying so is the outcome, the labels are
not judged against a truth they were not made from) or "ok". `run_case(name)` runs labels.calibrate then
labels.label_chunk as the label stage does and says whether the outcome is the expected one;
for "ok" and "flag" cases it also checks the numbers against the synthetic truth, so a case
that passes is not silently wrong: left-out cameras without labels, rig rotations within
MAX_ROT_ERR_DEG of the truth, label PMPJPE (mm, against the true poses) within
MAX_LABEL_RATIO of what the true cameras give from the same keypoints (the geometry's share
of the error; the detector's own errors are the same in both).
"""
from __future__ import annotations

import warnings
from typing import Callable

import cv2
import numpy as np

from pipeline import camera
from pipeline.geometry import labels
from pipeline.evaluation import metrics
from tests import synth
from pipeline.geometry import sync as syncmod
from pipeline.joints import FLIP, ROOT

SIGMA_PX = 2.0
MAX_ROT_ERR_DEG = 0.5      # a pair's relative rotation against the truth (clean: about 0.1°)
MAX_LABEL_RATIO = 1.1      # label PMPJPE over the true cameras' from the same keypoints


def rig() -> camera.Cameras:
    """The synthetic 4-camera ring of tests/test_labels.py (azimuths 45-315°, 5 m, f = 1150 px)."""
    return synth.ring_rig([45, 135, 225, 315], radius_mm=5000, height_mm=1600)


def smooth_motion(F: int, seed: int = 0, key_every: int = 60) -> np.ndarray:
    """One person moving smoothly: plausible poses every `key_every` frames joined by cubic
    splines of the joint positions, each bone then set back to the first pose's length along
    its interpolated direction (so the skeleton stays one person's). -> poses [F,J,3] mm.
    About 10 mm per frame per joint: a brisk pace filmed at 60 fps."""
    from scipy.interpolate import CubicSpline

    from pipeline.joints import PARENTS
    n = F // key_every + 3
    keys = synth.random_poses(n, seed=seed, area_mm=1200.0)
    raw = CubicSpline(np.arange(n) * key_every, keys, axis=0)(np.arange(F))
    length = np.linalg.norm(keys[0] - keys[0][PARENTS.clip(0)], axis=-1)  # [J], 0 for the root
    out = raw.copy()
    for j in range(1, raw.shape[1]):  # PARENTS is topologically ordered
        d = raw[:, j] - raw[:, PARENTS[j]]
        out[:, j] = out[:, PARENTS[j]] + length[j] * d / np.linalg.norm(d, axis=-1, keepdims=True)
    return out


def _world(F: int = 240, seed: int = 0, cams: camera.Cameras | None = None, **observe):
    cams = rig() if cams is None else cams
    P = smooth_motion(F, seed=seed)
    kp = synth.observe(P, cams, SIGMA_PX, seed=seed + 1, **observe)
    return P, kp, cams


def _with_camera(cams: camera.Cameras, v: int, R: np.ndarray, t: np.ndarray) -> camera.Cameras:
    Rs, ts = cams.R.copy(), cams.t.copy()
    Rs[v], ts[v] = R, t
    return camera.Cameras(cams.K, Rs, ts, cams.dist, cams.size)


# ------------------------------------------------------------------ the cases

def wild_point_1e12():
    _, kp, cams = _world()
    kp[10, 0, 5, 0] = 1e12           # the case: one finite joint far away in one view
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "flag:camera 0: 1 keypoint(s) lie more than"


def wild_points_every_view_known():
    _, kp, cams = _world()
    rng = np.random.default_rng(3)
    for v in range(cams.V):
        f, j = rng.integers(0, len(kp), 3), rng.integers(0, 17, 3)
        kp[f, v, j, :2] = rng.choice([-1, 1], (3, 2)) * rng.uniform(3e3, 1e9, (3, 2))
    return kp, cams, {"mode": "known"}, "flag:keypoint(s) lie more than 0.5 x the image size"


def camera_sees_nobody_rig():
    _, kp, cams = _world()
    kp[:, 2] = np.nan
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "flag:camera 2 is left out (sees nobody"


def camera_below_min_confidence_rig():
    _, kp, cams = _world()
    kp[:, 1, :, 2] = 0.01
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "flag:camera 1 is left out (sees nobody"


def camera0_sees_nobody_rig():
    _, kp, cams = _world()
    kp[:, 0] = np.nan
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "flag:camera 0 is left out (sees nobody"


def camera_sees_nobody_known():
    _, kp, cams = _world()
    kp[:, 3] = np.nan
    return kp, cams, {"mode": "known"}, "flag:camera 3 is left out (sees nobody"


def camera_sees_nobody_per_frame():
    _, kp, cams = _world(F=60)
    kp[:, 3] = np.nan
    return kp, cams.without_extrinsics(), {"mode": "per-frame"}, "flag:camera 3 is left out (sees nobody"


def camera_shares_too_few_rig():
    _, kp, cams = _world()
    kp[1:, 3] = np.nan
    kp[0, 3, 5:] = np.nan            # 5 joints in one frame: nothing to place it with
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "flag:camera 3 is left out (shares at most 5 joints"


def three_cameras_see_nobody_rig():
    _, kp, cams = _world()
    kp[:, 1:] = np.nan
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "error:no camera pair can be calibrated: 1 of 4 cameras"


def duplicated_keypoints_rig():
    _, kp, cams = _world()
    kp[:, 2] = kp[:, 1]              # a copied keypoint folder
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "error:camera 1 and camera 2 show the same keypoints"


def duplicated_keypoints_per_frame():
    _, kp, cams = _world(F=60)
    kp[:, 3] = kp[:, 0]
    return kp, cams.without_extrinsics(), {"mode": "per-frame"}, "error:camera 0 and camera 3 show the same keypoints"


def duplicated_camera_known():
    cams = rig()
    cams = _with_camera(cams, 1, cams.R[0], cams.t[0])  # the two identical cameras
    _, kp, cams = _world(cams=cams)
    return kp, cams, {"mode": "known"}, "error:camera 0 and camera 1 are at the same place"


def pure_rotation_rig(F: int = 240):
    cams = rig()
    R1, t1 = camera.look_at(cams.centers[0], np.array([300.0, 400.0, 900.0]))  # camera 0's centre, turned
    cams = _with_camera(cams, 1, R1, t1)
    _, kp, cams = _world(F=F, cams=cams)
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "error:camera 0 and camera 1 have no baseline"


def pure_rotation_per_frame():
    kp, cams, cfg, _ = pure_rotation_rig()
    return kp[:60], cams, {"mode": "per-frame"}, "error:camera 0 and camera 1 have no baseline"


def pure_rotation_caught_by_the_estimated_rig():
    # the keypoint test off: the calibrated rig's two centres coincide, and that is refused too
    kp, cams, cfg, _ = pure_rotation_rig(F=120)
    return kp, cams, {**cfg, "no_baseline_ratio": 0.0, "ba_frames": 120}, "error:camera 0 and camera 1 were calibrated at the same place"


def desynchronised_view_rig():
    _, kp, cams = _world(F=300)
    kp = syncmod.shift_view(kp, 2, 5)  # the view offset by 5 frames
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "error:camera 2 is out of sync by about +5 frames"


def desynchronised_camera0_known():
    _, kp, cams = _world(F=300)
    kp = syncmod.shift_view(kp, 0, -3)
    return kp, cams, {"mode": "known"}, "error:camera 0 is out of sync by about -3 frames"


def desynchronised_camera0_short_known():
    # 20 frames leave 8 to compare lags on: one odd frame can mimic an offset there, so an
    # offset found is a warning naming the camera, not a refusal (calibration.SYNC_MIN_ANCHORS)
    _, kp, cams = _world(F=20)
    kp = syncmod.shift_view(kp, 0, -3)
    return kp, cams, {"mode": "known"}, "flag:not conclusive (only 8 frames to compare lags on): camera 0 is out of sync"


def synchronised_smooth_motion_rig():
    _, kp, cams = _world(F=300)      # no false alarm at σ = 2 px
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "ok"


def outliers_inside_image_rig():
    # 3 % of joints displaced by ~200 px (still inside the image): calibration must hold
    _, kp, cams = _world(outlier_rate=0.03, outlier_px=200.0)
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "ok"


def left_right_swaps_rig():
    # 5 % of (frame, view) with every left/right joint pair exchanged (a detector's swap)
    _, kp, cams = _world()
    rng = np.random.default_rng(7)
    sel = rng.random(kp.shape[:2]) < 0.05
    kp[sel] = kp[sel][:, FLIP]
    return kp, cams.without_extrinsics(), {"mode": "rig"}, "ok"


def given_calibration_tilted_known():
    # known mode with camera 2's given extrinsics tilted by 1 degree about its own centre
    _, kp, cams = _world(F=240)
    Q = cv2.Rodrigues(np.array([np.radians(1.0), 0.0, 0.0]))[0]
    return kp, _with_camera(cams, 2, Q @ cams.R[2], Q @ cams.t[2]), {"mode": "known"}, \
        "warn:camera 2 is the likely culprit"


def config_mode_typo():
    _, kp, cams = _world(F=20)
    return kp, cams, {"mode": "rigg"}, "error:label: mode must be one of ['known', 'per-frame', 'rig'], got 'rigg'"


def config_negative_threshold():
    _, kp, cams = _world(F=20)
    return kp, cams, {"threshold_px": -1.0}, "error:label: threshold_px must be"


CASES: dict[str, Callable[[], tuple[np.ndarray, camera.Cameras, dict, str]]] = {
    f.__name__: f for f in (
        wild_point_1e12, wild_points_every_view_known, camera_sees_nobody_rig, camera_below_min_confidence_rig,
        camera0_sees_nobody_rig, camera_sees_nobody_known, camera_sees_nobody_per_frame,
        camera_shares_too_few_rig, three_cameras_see_nobody_rig, duplicated_keypoints_rig,
        duplicated_keypoints_per_frame, duplicated_camera_known, pure_rotation_rig, pure_rotation_per_frame,
        pure_rotation_caught_by_the_estimated_rig,
        desynchronised_view_rig, desynchronised_camera0_known, desynchronised_camera0_short_known,
        synchronised_smooth_motion_rig,
        outliers_inside_image_rig, left_right_swaps_rig, given_calibration_tilted_known, config_mode_typo,
        config_negative_threshold)
}

# the ground truth each case's keypoints were made from (for run_case's checks)
TRUTH_SEED = 0


def relative_rotation_errors(R_est: np.ndarray, R_true: np.ndarray) -> np.ndarray:
    """Error (deg) of every pair's relative rotation R_j R_iᵀ, gauge-free. R [V,3,3] -> [P]
    (NaN for pairs with a left-out camera)."""
    from pipeline.geometry.rig import all_pairs
    p = all_pairs(len(R_true))
    rel = lambda R: R[p[:, 1]] @ np.swapaxes(R[p[:, 0]], 1, 2)  # noqa: E731
    return camera.rotation_angle_deg(rel(R_est), rel(R_true))


def run_case(name: str) -> tuple[bool, str]:
    """Run CASES[name] through calibrate + label_chunk. -> (as expected and not silently
    wrong, what happened)."""
    kp, cams, cfg, expected = CASES[name]()
    kind, _, text = expected.partition(":")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est, diag = labels.calibrate(kp, cams, cfg)
            out = labels.label_chunk(kp, est, cfg)
        except ValueError as e:
            return kind == "error" and text in str(e), f"error: {e}"
    msgs = [str(w.message) for w in caught if issubclass(w.category, labels.LabelWarning)]
    if kind == "error":
        return False, f"no error (expected {text!r}); warnings: {msgs}"
    if kind in ("flag", "warn") and not any(text in m for m in msgs):
        return False, f"no warning with {text!r}; warnings: {msgs}"
    if kind == "warn":
        return True, f"{expected}: warnings: {msgs}"
    if kind == "ok" and msgs:
        return False, f"unexpected warnings: {msgs}"
    # not silently wrong: the truth these keypoints came from
    truth = _truth_for(name)
    used = diag["cameras_used"]
    if np.any(out["valid"][:, ~used]):
        return False, "a left-out camera has labels"
    if cfg.get("mode", "rig") == "rig":
        err = relative_rotation_errors(est.R, truth.R)
        if not np.nanmax(err) < MAX_ROT_ERR_DEG:
            return False, f"rig rotation errors {np.round(err, 3)} deg"
    # labels as good as the true cameras give from the same keypoints (same cameras left out)
    P = _poses_for(name, len(kp))
    gt = camera.world_to_camera(P[:, None], truth.R[None], truth.t[None])
    gt = gt - gt[:, :, ROOT:ROOT + 1]
    ref_cams = camera.Cameras(truth.K, np.where(used[:, None, None], truth.R, np.nan),
                              np.where(used[:, None], truth.t, np.nan), truth.dist, truth.size)
    ref_cfg = {**cfg, "mode": "known"} if cfg.get("mode", "rig") != "per-frame" else cfg
    ref = labels.label_chunk(kp, ref_cams if ref_cfg["mode"] == "known" else est, ref_cfg)
    e = metrics.pmpjpe(out["labels_cam"].astype(np.float64), gt, out["valid"])
    e0 = metrics.pmpjpe(ref["labels_cam"].astype(np.float64), gt, ref["valid"])
    if not np.isfinite(e).any():
        return False, "no labels at all"
    if np.nanmean(e) > MAX_LABEL_RATIO * np.nanmean(e0):
        return False, f"label PMPJPE {np.nanmean(e):.1f} mm vs {np.nanmean(e0):.1f} mm with the true cameras"
    return True, (f"{expected}: label PMPJPE {np.nanmean(e):.1f} mm (true cameras, same keypoints: "
                  f"{np.nanmean(e0):.1f} mm); warnings: {msgs}")


def _truth_for(name: str) -> camera.Cameras:
    cams = rig()
    if name.startswith("pure_rotation"):
        R1, t1 = camera.look_at(cams.centers[0], np.array([300.0, 400.0, 900.0]))
        cams = _with_camera(cams, 1, R1, t1)
    elif name == "duplicated_camera_known":
        cams = _with_camera(cams, 1, cams.R[0], cams.t[0])
    return cams


def _poses_for(name: str, F: int) -> np.ndarray:
    return smooth_motion(F, seed=TRUTH_SEED)


# ------------------------------------------------------------------ a detector for stage tests

def _gt_defaults() -> dict:
    from pipeline.detectors.gt import DEFAULTS as GT
    return {**GT, "blind_view": 1}


DEFAULTS = _gt_defaults()  # detector plug-in defaults of detect_blind_view (the gt detector's + blind_view)


def detect_blind_view(cfg: dict, dataset, frames: slice, context: dict) -> np.ndarray:
    """The gt detector, except that view cfg["blind_view"] sees nobody (all NaN): a camera
    whose lens was capped, for the label stage end to end. [f,V,J,3]."""
    from pipeline.detectors.gt import detect
    c = dict(cfg)
    v = int(c.pop("blind_view"))
    kp = np.array(detect(c, dataset, frames, context), dtype=np.float32)
    kp[:, v] = np.nan
    return kp
