"""Relative pose and rig calibration: closed forms (noiseless exact recovery), OpenCV
(cv2.recoverPose as the reference choice among the four decompositions)."""
import cv2
import numpy as np
import pytest

from pipeline import camera
from pipeline.geometry import epipolar, rig
from tests import synth
from pipeline.geometry import triangulate as tri


def _norm(kp, cams):
    return np.stack([camera.normalise_points(kp[:, v, :, :2], cams.K[v]) for v in range(cams.V)], 1)


def _weights(kp):
    return np.where(np.all(np.isfinite(kp), -1), kp[..., 2], 0.0)


@pytest.mark.parametrize("gap", [20.0, 45.0, 90.0, 120.0])
def test_pair_exact_and_cheirality(gap):
    # closed form: with σ = 0 the estimate equals the true relative pose (unit baseline), and the
    # cheirality check keeps exactly one of the four decompositions (as cv2.recoverPose does)
    cams = synth.ring_rig([0.0, gap], height_mm=1500.0)
    P = synth.random_poses(40, seed=int(gap))
    kp = synth.observe(P, cams, 0.0)
    xn = _norm(kp, cams)
    x1, x2 = xn[:, 0].reshape(-1, 2), xn[:, 1].reshape(-1, 2)
    e = epipolar.estimate_pair(x1, x2, cams.K[0], cams.K[1], threshold_px=1.0)
    assert e.ok, epipolar.FAILURES[e.failure]
    R, t = tri.relative_pose(cams.R[0], cams.t[0], cams.R[1], cams.t[1])
    assert camera.rotation_angle_deg(e.R, R) < 1e-3  # MAGSAC returns its minimal-sample model: float-level exact
    np.testing.assert_allclose(e.t, t / np.linalg.norm(t), atol=1e-5)
    counts = np.array(e.info["counts"])
    assert counts.max() == len(x1) and np.sort(counts)[-2] < 0.5 * len(x1)
    E, _ = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.USAC_MAGSAC, threshold=1e-3)
    _, Rcv, tcv, _ = cv2.recoverPose(E[:3], x1, x2, np.eye(3))
    assert camera.rotation_angle_deg(Rcv, R) < 1e-3


def test_four_decompositions_closed_form():
    # closed form: E = [t]x R decomposes into {R, R'} x {t, -t}; only (R, t) puts points in front
    rng = np.random.default_rng(0)
    R = camera.rodrigues_to_matrix(np.array([0.1, -0.6, 0.05]))
    t = np.array([-0.8, 0.1, 0.3])
    X = rng.uniform([-1, -1, 4], [1, 1, 6], (50, 3))
    x1 = X[:, :2] / X[:, 2:]
    X2 = X @ R.T + t
    x2 = X2[:, :2] / X2[:, 2:]
    Rs, ts = epipolar.decompose_essential(tri.essential_from_pose(R, t))
    counts = epipolar.cheirality_counts(Rs, ts, x1, x2)
    assert sorted(counts)[-1] == 50 and sorted(counts)[-2] == 0
    Rb, tb, n, _, amb = epipolar.choose_decomposition(tri.essential_from_pose(R, t), x1, x2)
    assert not amb and n == 50
    np.testing.assert_allclose(Rb, R, atol=1e-9)
    np.testing.assert_allclose(tb, t / np.linalg.norm(t), atol=1e-9)


@pytest.mark.parametrize("V,seed", [(2, 0), (3, 1), (5, 2), (8, 3)])
def test_rig_exact_recovery(V, seed):
    # closed form: σ = 0 on random rigs of 2-8 cameras with neighbour baselines 20-120°: the
    # chained, bundle-adjusted rig equals the truth up to the gauge (camera 0's frame, |C1-C0| = 1)
    cams = synth.random_rig(V, seed=seed, min_gap_deg=20, max_gap_deg=120 if V < 5 else 360 / V)
    P = synth.random_poses(60, seed=seed)
    kp = synth.observe(P, cams, 0.0)
    R, t, info = rig.calibrate_rig(_norm(kp, cams), _weights(kp), cams.K, threshold_px=1.0)
    Rrel, trel = tri.relative_pose(cams.R[0], cams.t[0], cams.R, cams.t)
    scale = np.linalg.norm(camera.camera_center(cams.R[1], cams.t[1]) - camera.camera_center(cams.R[0], cams.t[0]))
    assert np.all(camera.rotation_angle_deg(R, Rrel) < 1e-4)
    np.testing.assert_allclose(t, trel / scale, atol=1e-6)
    assert info["ba_rms_px_after"] < 1e-4


def test_rig_noisy_rotations():
    # measured fact (DESIGN.md): pooled MAGSAC + bundle adjustment recovers rotations to a fraction of a degree at 2 px
    cams = synth.ring_rig([0, 90, 180, 270], height_mm=1600)
    P = synth.random_poses(200, seed=4)
    kp = synth.observe(P, cams, 2.0, seed=5)
    R, t, info = rig.calibrate_rig(_norm(kp, cams), _weights(kp), cams.K, threshold_px=3.0, ba_frames=100)
    Rrel, _ = tri.relative_pose(cams.R[0], cams.t[0], cams.R, cams.t)
    assert np.all(camera.rotation_angle_deg(R, Rrel) < 0.5)
    assert 1.0 < info["ba_rms_px_after"] < 3.0  # about the noise σ = 2 px, not more


def test_pair_failures_are_reported():
    cams = synth.ring_rig([0.0, 60.0])
    K = cams.K
    rng = np.random.default_rng(1)
    # fewer than 8 correspondences
    e = epipolar.estimate_pair(rng.normal(0, 0.1, (7, 2)), rng.normal(0, 0.1, (7, 2)), K[0], K[1])
    assert e.failure == epipolar.TOO_FEW_POINTS and not np.isfinite(e.R).any()
    # all NaN
    e = epipolar.estimate_pair(np.full((17, 2), np.nan), np.full((17, 2), np.nan), K[0], K[1])
    assert e.failure == epipolar.NO_JOINTS
    # collinear joints in one image
    x1 = np.c_[np.linspace(-0.1, 0.1, 17), np.zeros(17)]
    e = epipolar.estimate_pair(x1, rng.normal(0, 0.1, (17, 2)), K[0], K[1])
    assert e.failure == epipolar.DEGENERATE
    # coplanar joints: a plane seen by both cameras (one homography explains every point)
    Xp = np.c_[rng.uniform(-500, 500, (17, 2)), np.zeros(17)] + [0, 0, 1000]
    kp = synth.observe(np.broadcast_to(Xp, (1, 17, 3)), cams, 0.0)
    xn = _norm(kp, cams)[0]
    e = epipolar.estimate_pair(xn[0], xn[1], K[0], K[1])
    assert e.failure == epipolar.DEGENERATE
    with pytest.raises(ValueError, match="shape"):
        epipolar.estimate_pair(np.zeros((9, 2)), np.zeros((8, 2)), K[0], K[1])
    with pytest.raises(ValueError, match="method"):
        epipolar.estimate_pair(rng.normal(0, .1, (20, 2)), rng.normal(0, .1, (20, 2)), K[0], K[1], method="x")


def test_rig_calibration_errors():
    cams = synth.ring_rig([0.0, 60.0, 120.0])
    kp = synth.observe(synth.random_poses(5, seed=0), cams, 0.0)
    kp[:] = np.nan
    with pytest.raises(ValueError, match="no camera pair"):
        rig.calibrate_rig(_norm(kp, cams), _weights(kp), cams.K)
    with pytest.raises(ValueError, match="at least 2"):
        rig.calibrate_rig(_norm(kp, cams)[:, :1], _weights(kp)[:, :1], cams.K[:1])


def test_batched_estimates_are_the_single_ones():
    """estimate_pairs over many frames at once (the per-frame mode's path) gives, row by row,
    what estimate_pair gives for that row alone: every failure kind present (too few points,
    degenerate, too few inliers) among successes with noise, and the paper's fundamental route."""
    cams = synth.ring_rig([0.0, 70.0], height_mm=1500.0)
    kp = synth.observe(synth.random_poses(60, seed=3), cams, 2.0, seed=4, outlier_rate=0.1)
    xn = _norm(kp, cams)
    x1, x2 = xn[:, 0].copy(), xn[:, 1].copy()
    rng = np.random.default_rng(0)
    x1[:5, 6:] = np.nan                                           # 6 points: too few
    x2[5:10] = x2[5:10, :1] + 1e-4 * rng.normal(size=(5, 17, 2))  # every point in one spot: degenerate
    x2[10:15] = rng.normal(0, 0.3, (5, 17, 2))                    # unrelated: too few inliers
    K1, K2 = np.broadcast_to(cams.K[0], (60, 3, 3)), np.broadcast_to(cams.K[1], (60, 3, 3))
    for method in ("essential", "fundamental"):
        batch = epipolar.estimate_pairs(x1, x2, K1, K2, method=method, seeds=np.arange(60))
        kinds = {e.failure for e in batch}
        assert {epipolar.OK, epipolar.TOO_FEW_POINTS, epipolar.DEGENERATE} <= kinds, kinds
        for m, e in enumerate(batch):
            one = epipolar.estimate_pair(x1[m], x2[m], cams.K[0], cams.K[1], method=method, seed=m)
            assert e.failure == one.failure and e.n_inliers == one.n_inliers and e.n_front == one.n_front
            np.testing.assert_array_equal(e.R, one.R)
            np.testing.assert_array_equal(e.t, one.t)
            np.testing.assert_array_equal(e.inliers, one.inliers)
            assert e.reproj_px == one.reproj_px or (np.isnan(e.reproj_px) and np.isnan(one.reproj_px))
