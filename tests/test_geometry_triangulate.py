"""Triangulation against OpenCV (correctMatches, triangulatePoints) and closed forms."""
import cv2
import numpy as np
import pytest

from pipeline import camera
from tests import synth
from pipeline.geometry import median, triangulate as tri


@pytest.fixture(scope="module")
def scene():
    P = synth.random_poses(100, seed=11)
    return P


@pytest.mark.parametrize("gap", [20.0, 60.0, 90.0, 120.0, 170.0, 180.0])
def test_correct_matches_equals_cv2(scene, gap):
    # reference: cv2.correctMatches (Hartley–Sturm's polynomial) on the same F and points, to 1e-6 px
    cams = synth.ring_rig([0.0, gap])
    kp = synth.observe(scene, cams, sigma_px=5.0, seed=1)
    xn = np.stack([camera.normalise_points(kp[:, v, :, :2].reshape(-1, 2), cams.K[v]) for v in range(2)])
    R, t = tri.relative_pose(cams.R[0], cams.t[0], cams.R[1], cams.t[1])
    f = cams.K[:, 0, 0]
    Fm = np.diag([1 / f[1], 1 / f[1], 1]) @ tri.essential_from_pose(R, t) @ np.diag([1 / f[0], 1 / f[0], 1])
    Fm /= np.linalg.norm(Fm)
    u1, u2 = xn[0] * f[0], xn[1] * f[1]
    r1, r2 = cv2.correctMatches(Fm, u1[None], u2[None])
    h1, h2 = tri.correct_matches(Fm, u1, u2)
    np.testing.assert_allclose(h1, r1[0], atol=1e-6)
    np.testing.assert_allclose(h2, r2[0], atol=1e-6)
    # the corrected points satisfy the epipolar constraint
    c = np.einsum("ni,ij,nj->n", np.c_[h2, np.ones(len(h2))], Fm, np.c_[h1, np.ones(len(h1))])
    assert np.abs(c).max() < 1e-9


def test_triangulate_pair_matches_cv2_pipeline(scene):
    # reference: the authors' per-pair loop, cv2.correctMatches + cv2.triangulatePoints
    cams = synth.ring_rig([0.0, 75.0])
    kp = synth.observe(scene[:20], cams, sigma_px=3.0, seed=2)
    xn = np.stack([camera.normalise_points(kp[:, v, :, :2].reshape(-1, 2), cams.K[v]) for v in range(2)])
    R, t = tri.relative_pose(cams.R[0], cams.t[0], cams.R[1], cams.t[1])
    f = 1150.0
    X, err, ok = tri.triangulate_pair(xn[0], xn[1], R, t, f, f)
    assert ok.all()
    E = tri.essential_from_pose(R, t)
    Fm = np.diag([1 / f, 1 / f, 1]) @ E @ np.diag([1 / f, 1 / f, 1])
    c1, c2 = cv2.correctMatches(Fm / np.linalg.norm(Fm), (xn[0] * f)[None], (xn[1] * f)[None])
    P1 = np.diag([f, f, 1.0]) @ np.eye(3, 4)
    P2 = np.diag([f, f, 1.0]) @ np.c_[R, t]
    Xh = cv2.triangulatePoints(P1, P2, c1[0].T, c2[0].T)
    ref = (Xh[:3] / Xh[3]).T
    np.testing.assert_allclose(X, ref, rtol=1e-6, atol=1e-6)
    # half the mean correction length, in pixels
    ref_err = 0.5 * (np.linalg.norm(c1[0] - xn[0] * f, axis=1) + np.linalg.norm(c2[0] - xn[1] * f, axis=1))
    np.testing.assert_allclose(err, ref_err, atol=1e-6)


def test_exact_points_are_recovered(scene):
    # closed form: noiseless points triangulate to the truth (camera 1's frame)
    cams = synth.ring_rig([0.0, 40.0])
    kp = synth.observe(scene, cams, 0.0)
    xn = [camera.normalise_points(kp[:, v, :, :2], cams.K[v]) for v in range(2)]
    R, t = tri.relative_pose(cams.R[0], cams.t[0], cams.R[1], cams.t[1])
    X, err, ok = tri.triangulate_pair(xn[0], xn[1], R, t, 1150.0, 1150.0)
    truth = camera.world_to_camera(scene, cams.R[0], cams.t[0])
    np.testing.assert_allclose(X, truth, atol=1e-6)
    assert ok.all() and err.max() < 1e-6


def test_dlt_weighted_and_nan(scene):
    # closed form: noiseless N-view DLT is exact; NaN / zero-weight views are skipped per joint
    cams = synth.ring_rig([0.0, 70.0, 140.0, 210.0])
    kp = synth.observe(scene[:10], cams, 0.0)
    xn = np.stack([camera.normalise_points(kp[:, v, :, :2], cams.K[v]) for v in range(4)], 2)  # [F,J,V,2]
    w = np.ones(xn.shape[:-1])
    xn[:, 3, 0] = np.nan          # joint 3 unseen by camera 0
    w[:, 5, :3] = 0               # joint 5 seen by one camera only -> not triangulated
    X, ok = tri.triangulate_dlt(xn, w, cams.R, cams.t)
    assert not ok[:, 5].any() and np.isnan(X[:, 5]).all()
    good = np.ones(17, bool)
    good[5] = False
    np.testing.assert_allclose(X[:, good], scene[:10][:, good], atol=1e-6)
    # a gross outlier with a tiny weight hardly moves the point
    kp2 = synth.observe(scene[:10], cams, 0.0)
    kp2[:, 1, :, 0] += 80.0
    xb = np.stack([camera.normalise_points(kp2[:, v, :, :2], cams.K[v]) for v in range(4)], 2)
    wb = np.ones(xb.shape[:-1])
    e_eq = np.linalg.norm(tri.triangulate_dlt(xb, wb, cams.R, cams.t)[0] - scene[:10], axis=-1).mean()
    wb[:, :, 1] = 1e-3
    e_low = np.linalg.norm(tri.triangulate_dlt(xb, wb, cams.R, cams.t)[0] - scene[:10], axis=-1).mean()
    assert e_low < 0.01 * e_eq


def test_vector_median_weiszfeld():
    # closed forms: collinear points -> the middle one; symmetric points -> the centre;
    # the median resists an outlier where the mean does not
    X = np.array([[[0.0, 0, 0], [1, 0, 0], [5, 0, 0]]])
    m, n = median.vector_median(X, np.ones((1, 3), bool), n_iter=2000, tol=1e-12)
    np.testing.assert_allclose(m[0], [1, 0, 0], atol=1e-6)
    sq = np.array([[[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]])
    np.testing.assert_allclose(median.vector_median(sq, np.ones((1, 4), bool))[0][0], 0, atol=1e-9)
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1, (1000, 5, 3))
    pts[:, 0] += 100.0
    med, _ = median.vector_median(pts, np.ones((1000, 5), bool))
    assert np.abs(med).mean() < 1.0 < np.abs(pts.mean(1)).mean()
    # near-optimal: the objective Σ|x_p - y| within 0.1 % of scipy's Nelder-Mead optimum, and
    # exact where the median is one of the candidates (duplicated candidates)
    from scipy.optimize import minimize
    X4 = rng.normal(0, 10, (300, 4, 3))
    X4[:50, 1] = X4[:50, 0]
    a, _ = median.vector_median(X4, np.ones((300, 4), bool))
    np.testing.assert_allclose(a[:50], X4[:50, 0], atol=1e-9)
    for i in range(50, 120):
        cost = lambda y: np.linalg.norm(X4[i] - y, axis=1).sum()  # noqa: E731
        ref = minimize(cost, X4[i].mean(0), method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000))
        assert cost(a[i]) <= ref.fun * 1.001 + 1e-9
    # masks: nothing usable -> NaN; two points -> the midpoint
    m, n = median.vector_median(X, np.zeros((1, 3), bool))
    assert np.isnan(m).all() and n[0] == 0
    m, n = median.vector_median(X, np.array([[True, False, True]]))
    np.testing.assert_allclose(m[0], [2.5, 0, 0])


def test_synth_poses_have_human_handedness():
    """Closed form: for a person facing +y with z up, right = forward x up, so
    (r_hip - l_hip) x forward points up. A mirrored body would point down."""
    from tests import synth
    from pipeline.joints import INDEX as I

    P = synth.random_poses(300, seed=1)
    right = P[:, I["r_hip"]] - P[:, I["l_hip"]]
    fwd = P[:, I["neck"]] - P[:, I["thorax"]]
    fwd[:, 2] = 0
    up = P[:, I["thorax"]] - P[:, I["pelvis"]]
    s = np.sign(np.einsum("ni,ni->n", np.cross(right, fwd), up))
    assert s.mean() > 0.5
