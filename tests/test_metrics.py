"""Metrics against closed forms and scipy's Procrustes."""
import numpy as np
import pytest
from scipy.spatial import procrustes as scipy_procrustes
from scipy.spatial.transform import Rotation

from pipeline.evaluation import metrics
from tests import synth
from pipeline.joints import FLIP, J, ROOT


@pytest.fixture(scope="module")
def poses():
    P = synth.random_poses(64, seed=3)
    return P - P[:, ROOT:ROOT + 1]


def test_mpjpe_closed_form(poses):
    # closed form: a constant offset on every non-root joint of length 10 mm; the root is 0
    d = np.zeros_like(poses)
    d[:, 1:] = [6.0, 8.0, 0.0]
    e = metrics.mpjpe(poses + d, poses)
    np.testing.assert_allclose(e, 10.0 * (J - 1) / J)
    # translations never matter (root alignment)
    np.testing.assert_allclose(metrics.mpjpe(poses + 500.0, poses), 0, atol=1e-9)


def test_mpjpe_mask_and_nan(poses):
    pred = poses.copy()
    pred[:, 5] += [0, 0, 100.0]
    mask = np.ones(poses.shape[:2], bool)
    mask[:, 5] = False
    np.testing.assert_allclose(metrics.mpjpe(pred, poses, mask), 0, atol=1e-9)
    pred[:, 5] = np.nan  # NaN joints are dropped as if masked
    np.testing.assert_allclose(metrics.mpjpe(pred, poses), 0, atol=1e-9)
    allnan = np.full_like(poses[:1], np.nan)
    assert np.isnan(metrics.mpjpe(allnan, poses[:1]))[0]


def test_nmpjpe_is_rhodin_optimal_scale(poses):
    # Rhodin et al. 2018: s* = <p,g>/<p,p> minimises ||s p - g||²; a pure scaling is undone exactly
    np.testing.assert_allclose(metrics.nmpjpe(0.37 * poses, poses), 0, atol=1e-9)
    rng = np.random.default_rng(0)
    pred = 0.5 * poses + rng.normal(0, 20, poses.shape)
    s = metrics.scale_align(pred, poses)
    p = pred - pred[:, :1]
    s_star = (p * poses).sum((1, 2)) / (p * p).sum((1, 2))
    np.testing.assert_allclose(s, s_star[:, None, None] * p)
    # s* is the minimiser: perturbing it raises the squared error
    sq = lambda k: ((k[:, None, None] * p - poses) ** 2).sum((1, 2))
    assert np.all(sq(s_star) <= sq(s_star * 1.01)) and np.all(sq(s_star) <= sq(s_star * 0.99))
    assert np.all(metrics.nmpjpe(pred, poses) <= metrics.mpjpe(pred, poses) + 1e-9)


def test_pmpjpe_recovers_similarity(poses):
    # closed form: pred = s R gt + t exactly -> PMPJPE 0
    R = Rotation.random(len(poses), random_state=1).as_matrix()
    pred = 0.3 * np.einsum("nij,nkj->nki", R, poses) + 123.0
    np.testing.assert_allclose(metrics.pmpjpe(pred, poses), 0, atol=1e-8)
    np.testing.assert_allclose(metrics.procrustes(pred, poses), poses, atol=1e-8)


def test_procrustes_matches_scipy(poses):
    # reference: scipy.spatial.procrustes (standardises both, then rotation + scale)
    rng = np.random.default_rng(2)
    R = Rotation.random(len(poses), random_state=2).as_matrix()
    pred = 1.7 * np.einsum("nij,nkj->nki", R, poses) + rng.normal(0, 30, poses.shape)
    ours = metrics.procrustes(pred, poses)
    for i in range(8):
        m1, m2, _ = scipy_procrustes(poses[i], pred[i])
        g = poses[i] - poses[i].mean(0)
        np.testing.assert_allclose((ours[i] - poses[i].mean(0)) / np.linalg.norm(g), m2, atol=1e-9)


def test_reflection_guard(poses):
    # a mirror image is not a rotation: with the guard it cannot be aligned perfectly,
    # while an unconstrained orthogonal fit (det -1) would give 0
    mirror = poses * np.array([-1.0, 1.0, 1.0])
    al = metrics.procrustes(mirror, poses)
    err = metrics.pmpjpe(mirror, poses)
    assert np.all(err > 10.0)
    # the aligned pose is a proper rotation of the input: same handedness (det of a frame > 0)
    def handed(P):
        a, b, c = P[:, 1] - P[:, 0], P[:, 7] - P[:, 0], P[:, 14] - P[:, 0]
        return np.sign(np.einsum("ni,ni->n", np.cross(a, b), c))
    np.testing.assert_array_equal(handed(al), handed(mirror))


def test_pck_auc_closed_form(poses):
    d = np.zeros_like(poses)
    d[:, 1:9] = [0, 0, 100.0]   # 8 joints off by 100 mm
    d[:, 9:] = [0, 0, 200.0]    # 8 joints off by 200 mm
    pred = poses + d
    np.testing.assert_allclose(metrics.pck(pred, poses, 150.0), 9 / J)
    np.testing.assert_allclose(metrics.pck(pred, poses, 250.0), 1.0)
    # AUC over thresholds 0..150 step 5: root hits for t > 0 (30 of 31), the 100 mm joints for t > 100 (10)
    expect = (30 * 1 + 10 * 8) / (31 * J)
    np.testing.assert_allclose(metrics.auc(pred, poses), expect)
    np.testing.assert_allclose(metrics.auc(poses + 1e-3, poses), 30 / 31)


def test_flip_is_an_error(poses):
    # swapping left and right is wrong even after Procrustes
    assert np.all(metrics.pmpjpe(poses[:, FLIP], poses) > 1.0)


def test_bad_shapes():
    with pytest.raises(ValueError, match="joints"):
        metrics.mpjpe(np.zeros((4, 16, 3)), np.zeros((4, 16, 3)))
    with pytest.raises(ValueError, match="broadcast"):
        metrics.mpjpe(np.zeros((4, J, 3)), np.zeros((5, J, 3)))
