"""pipeline/camera.py against OpenCV (projectPoints, undistortPoints, Rodrigues) and closed forms."""
import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline import camera

DIST = np.array([-0.21, 0.08, 0.0012, -0.0009, -0.01])


def _rig(seed=0, V=3):
    rng = np.random.default_rng(seed)
    K = np.tile(np.array([[1150.0, 0, 512], [0, 1148.0, 498], [0, 0, 1]]), (V, 1, 1))
    R = Rotation.random(V, random_state=seed).as_matrix()
    t = rng.normal(0, 500, (V, 3)) + [0, 0, 5000]
    return K, R, t


def test_project_matches_cv2_projectPoints():
    # reference: cv2.projectPoints with distortion
    K, R, t = _rig()
    rng = np.random.default_rng(1)
    for v in range(len(K)):
        Xc = rng.uniform([-800, -800, 3000], [800, 800, 6000], (50, 3))
        X = camera.camera_to_world(Xc, R[v], t[v])
        ours = camera.project(X, K[v], R[v], t[v], DIST)
        ref, _ = cv2.projectPoints(X, cv2.Rodrigues(R[v])[0], t[v], K[v], DIST)
        np.testing.assert_allclose(ours, ref.reshape(-1, 2), atol=1e-8)


def test_project_batched_over_views():
    K, R, t = _rig(V=4)
    X = np.random.default_rng(2).normal(0, 300, (20, 3))
    allv = camera.project(X[None], K, R, t, np.tile(DIST, (4, 1)))
    for v in range(4):
        np.testing.assert_allclose(allv[v], camera.project(X, K[v], R[v], t[v], DIST), atol=1e-10)


def test_undistort_matches_cv2_and_inverts_distort():
    # reference: cv2.undistortPoints, and the closed-form round trip distort(undistort(x)) = x
    K, _, _ = _rig()
    rng = np.random.default_rng(3)
    xn = rng.uniform(-0.35, 0.35, (100, 2))
    uv = camera.project_camera(np.concatenate([xn, np.ones((100, 1))], 1), K[0], DIST)
    und = camera.undistort_points(uv, K[0], DIST)
    np.testing.assert_allclose(und, xn, atol=1e-9)
    ref = cv2.undistortPoints(uv.reshape(-1, 1, 2), K[0], DIST,
                              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)).reshape(-1, 2)
    np.testing.assert_allclose(und, ref, atol=1e-12)
    uv[5] = np.nan
    assert np.all(np.isnan(camera.undistort_points(uv, K[0], DIST)[5]))


def test_normalise_points_is_K_inverse():
    # closed form: K⁻¹ [u v 1]ᵀ
    K, _, _ = _rig()
    uv = np.random.default_rng(4).uniform(0, 1000, (30, 2))
    ref = (np.linalg.inv(K[0]) @ np.c_[uv, np.ones(30)].T).T[:, :2]
    np.testing.assert_allclose(camera.normalise_points(uv, K[0]), ref, atol=1e-12)


def test_rodrigues_matches_cv2():
    rv = np.random.default_rng(5).normal(0, 1.2, (20, 3))
    Rs = camera.rodrigues_to_matrix(rv)
    for r, Rm in zip(rv, Rs):
        np.testing.assert_allclose(Rm, cv2.Rodrigues(r)[0], atol=1e-12)
    back = camera.matrix_to_rodrigues(Rs)
    np.testing.assert_allclose(camera.rodrigues_to_matrix(back), Rs, atol=1e-12)
    assert camera.rodrigues_to_matrix(rv.reshape(4, 5, 3)).shape == (4, 5, 3, 3)


def test_quaternion_closed_form():
    # closed form: q = (cos θ/2, sin θ/2 · axis) is a rotation by θ about axis
    th = 0.7
    q = np.array([np.cos(th / 2), 0, 0, np.sin(th / 2)])
    Rz = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    np.testing.assert_allclose(camera.quaternion_to_matrix(q), Rz, atol=1e-12)
    np.testing.assert_allclose(camera.quaternion_to_matrix(q[[1, 2, 3, 0]], scalar_first=False), Rz, atol=1e-12)


def test_center_projection_matrix_and_inverse():
    K, R, t = _rig()
    C = camera.camera_center(R, t)
    np.testing.assert_allclose(camera.world_to_camera(C[:, None], R, t)[:, 0], 0, atol=1e-9)
    P = camera.projection_matrix(K, R, t)
    X = np.random.default_rng(6).normal(0, 300, (10, 3))
    for v in range(3):
        h = (P[v] @ np.c_[X, np.ones(10)].T).T
        np.testing.assert_allclose(h[:, :2] / h[:, 2:], camera.project(X, K[v], R[v], t[v]), atol=1e-8)
        # P C = 0 (closed form: the centre projects to nothing)
        np.testing.assert_allclose(P[v] @ np.r_[C[v], 1], 0, atol=1e-6)
    Xc = camera.world_to_camera(X[None], R, t)
    np.testing.assert_allclose(camera.camera_to_world(Xc, R, t), np.broadcast_to(X, Xc.shape), atol=1e-9)


def test_look_at_and_rotation_angle():
    R, t = camera.look_at([5000, 0, 1500], [0, 0, 1000])
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1)
    Xc = camera.world_to_camera(np.array([[[0.0, 0, 1000]]]), R, t)[0, 0]
    np.testing.assert_allclose(Xc[:2], 0, atol=1e-9)  # the target is on the optical axis
    assert Xc[2] > 0
    up = camera.world_to_camera(np.array([[[0.0, 0, 2000]]]), R, t)[0, 0]
    assert up[1] < 0  # world up is image up (OpenCV y points down)
    Ra = camera.rodrigues_to_matrix(np.array([0, 0, np.radians(30)]))
    assert np.isclose(camera.rotation_angle_deg(np.eye(3), Ra), 30)
    with pytest.raises(ValueError):
        camera.look_at([0, 0, 5000], [0, 0, 0])


def test_rotation_magnitude_against_scipy_down_to_tiny_angles():
    # against scipy's Rotation.magnitude (quaternion-based, accurate at every angle): the
    # trace's arccos would give 0 or ~1e-6 degrees for 1e-9 rad; atan2 keeps every digit
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(7, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    theta = np.array([1e-12, 1e-9, 1e-6, 0.3, 1.5, 3.0, np.pi - 1e-9])
    R = Rotation.from_rotvec(axes * theta[:, None]).as_matrix()
    got = camera.rotation_magnitude_deg(R)
    np.testing.assert_allclose(np.radians(got), Rotation.from_matrix(R).magnitude(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(np.radians(got[:3]), theta[:3], rtol=1e-6)
    # the pairwise form is the magnitude of Raᵀ Rb, and a NaN stays a NaN
    np.testing.assert_allclose(camera.rotation_angle_deg(R[3], R[3] @ R[1]), np.degrees(1e-9), rtol=1e-6)
    assert np.isnan(camera.rotation_magnitude_deg(np.full((3, 3), np.nan)))
    # vector_angle: the closed form for two vectors 1e-9 rad apart, and at right angles
    a = np.array([[1.0, 0, 0], [0, 2.0, 0]])
    b = np.array([[np.cos(1e-9), np.sin(1e-9), 0], [0, 0, 5.0]])
    np.testing.assert_allclose(camera.vector_angle(a, b), [1e-9, np.pi / 2], rtol=1e-12)


def test_cameras_validation():
    K, R, t = _rig()
    cams = camera.Cameras(K, R, t, np.zeros((3, 5)), np.tile([1000.0, 1000.0], (3, 1)))
    assert cams.V == 3 and cams.has_extrinsics
    assert not cams.without_extrinsics().has_extrinsics
    again = camera.Cameras.from_dict(cams.to_dict())
    np.testing.assert_allclose(again.P, cams.P)
    bad = K.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        camera.Cameras(bad, R, t, np.zeros((3, 5)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        camera.Cameras(K, R[:2], t, np.zeros((3, 5)), np.ones((3, 2)))
