"""The rig's quality gate (pipeline/geometry/rig.py GATE, pipeline/geometry/label_settings.py gate_*
keys): diagnostics on every rig, deliberately corrupted views left out or refused rather
than returned, a bounded refinement. Synthetic rig (tests/synth.py) with known truth."""
import time
import warnings

import numpy as np
import pytest

from pipeline.camera import rotation_angle_deg
from pipeline.geometry import epipolar, label_settings, rig
from pipeline.geometry.calibration import calibrate as calibrate_cameras
from tests import synth


@pytest.fixture(scope="module")
def scene():
    cams = synth.ring_rig([0, 60, 140, 220, 300])
    poses = synth.random_poses(150, seed=3)
    return cams, synth.observe(poses, cams, sigma_px=2.0, seed=3)


def calibrate(kp, cams):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        est, info = calibrate_cameras(kp, cams.without_extrinsics(), {"mode": "rig"})
    return est, info, [str(x.message) for x in w]


def test_a_good_rig_carries_its_diagnostics(scene):
    cams, kp = scene
    est, info, _ = calibrate(kp, cams)
    assert np.all(np.isfinite(est.R))
    assert np.nanmax(info["rig_pair_loop_deg"]) < 1.0
    assert np.all(info["ba_rms_px_camera"] < 5.0) and np.all(info["ba_kept_camera"] > 0.9)
    assert np.all(info["initial_px_camera"] < 10.0)


@pytest.mark.parametrize("how", ["mirrored", "shuffled", "upside down"])
def test_a_corrupted_view_is_left_out_or_the_rig_refused(scene, how):
    cams, kp = scene
    bad = kp.copy()
    v = 2
    if how == "mirrored":
        bad[:, v, :, 0] = cams.size[v, 0] - kp[:, v, :, 0]
    elif how == "shuffled":
        bad[:, v] = kp[np.random.default_rng(0).permutation(len(kp)), v]
    else:
        bad[:, v, :, 1] = cams.size[v, 1] - kp[:, v, :, 1]
    try:
        est, info, msgs = calibrate(bad, cams)
    except ValueError as e:  # refused: the message names the camera
        assert "camera 2" in str(e)
        return
    assert not np.any(np.isfinite(est.R[v])), "a corrupted view was placed in the rig"
    assert any("camera 2 is left out" in m for m in msgs)
    good = [u for u in range(cams.V) if u != v]
    p = np.array(good)
    rel = lambda R: R[p[1:]] @ R[p[0]].T  # noqa: E731
    assert rotation_angle_deg(rel(est.R), rel(cams.R)).max() < 0.5


def test_nothing_in_agreement_is_refused(scene):
    cams, kp = scene
    rng = np.random.default_rng(1)
    bad = np.stack([kp[rng.permutation(len(kp)), v] for v in range(cams.V)], 1)
    with pytest.raises(ValueError):
        calibrate(bad, cams)


def test_loop_closure_against_a_closed_form():
    from scipy.spatial.transform import Rotation
    R01 = Rotation.from_rotvec([0.1, 0.5, 0.0]).as_matrix()
    R12 = Rotation.from_rotvec([0.0, 0.4, 0.2]).as_matrix()
    off = Rotation.from_rotvec(np.radians(10.0) * np.array([0, 0, 1.0])).as_matrix()
    mk = lambda R: epipolar.PairEstimate(R, np.array([1.0, 0, 0]), np.ones(10, bool), 0, 10, 10)  # noqa: E731
    pairs = rig.all_pairs(3)
    exact = rig.loop_closure([mk(R01), mk(R12 @ R01), mk(R12)], pairs, 3)
    np.testing.assert_allclose(exact, 0.0, atol=1e-6)
    wrong = rig.loop_closure([mk(R01), mk(off @ R12 @ R01), mk(R12)], pairs, 3)
    np.testing.assert_allclose(wrong, 10.0, atol=1e-6)


def test_the_refinement_stops_at_its_deadline(scene):
    cams, kp = scene
    c = label_settings.resolve_cfg({})
    xn, w = label_settings.normalised(kp, cams, c)
    R0 = cams.R @ cams.R[0].T
    t0 = cams.t - np.einsum("vab,b->va", R0, cams.t[0])
    t0 /= np.linalg.norm(t0[1])
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    R0[1:] = Rotation.from_rotvec(rng.normal(0, 0.05, (cams.V - 1, 3))).as_matrix() @ R0[1:]
    t0[2:] += rng.normal(0, 0.05, (cams.V - 2, 3))
    t_start = time.perf_counter()
    _, _, info = rig.bundle_adjust(xn, w, cams.K, R0, t0, max_nfev=10000, max_seconds=0.2)
    assert time.perf_counter() - t_start < 5.0  # one iteration past the deadline at most, twice
    assert 1 <= info["ba_nfev"] < 200


def _scaled(cams, v, factor):
    from pipeline.camera import Cameras
    K = cams.K.copy()
    K[v, :2, :2] *= factor
    return Cameras(K, cams.R, cams.t, cams.dist, cams.size)


def test_the_focal_factor_fitted_by_the_refinement_against_a_closed_form():
    # noise-free joints and camera 2's focal given x0.6: its normalised points are
    # (u - c) / (0.6 f) = projection / 0.6, so the refinement with a factor per focal length
    # has a zero-residual solution at 1 / 0.6 for camera 2 and 1 for the others (closed form)
    cams = synth.ring_rig([0, 70, 150, 230])
    kp = synth.observe(synth.random_poses(60, seed=4), cams)
    given = _scaled(cams, 2, 0.6)
    xn, w = label_settings.normalised(kp, given, label_settings.resolve_cfg({}))
    R0 = cams.R @ cams.R[0].T
    t0 = cams.t - np.einsum("vab,b->va", R0, cams.t[0])
    t0 /= np.linalg.norm(t0[1])
    _, _, info = rig.bundle_adjust(xn, w, given.K, R0, t0, max_nfev=200, fit_focal=True)
    np.testing.assert_allclose(info["ba_focal_scale_camera"], [1, 1, 1 / 0.6, 1], rtol=1e-3)
    _, _, info = rig.bundle_adjust(xn, w, given.K, R0, t0)
    assert np.all(np.isnan(info["ba_focal_scale_camera"]))


def test_a_wrong_focal_length_is_refused_naming_the_camera(scene):
    cams, kp = scene
    est, info, _ = calibrate(kp, cams)  # the clean rig passes, every camera's focal confirmed
    assert np.all(np.abs(info["ba_focal_scale_camera"] - 1) < 0.02)
    with pytest.raises(rig.RigRefused, match=r"camera 2's joints fit a focal length of .*check camera 2's intrinsics"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calibrate_cameras(kp, _scaled(cams, 2, 0.6).without_extrinsics(), {"mode": "rig"})
    with pytest.raises(ValueError, match="gate_focal_ratio"):
        label_settings.resolve_cfg({"gate_focal_ratio": 0.9})
