"""Metric scale and an upright world from the person (pipeline/geometry/world.py): checked
against a procedural walker of known height (pipeline/data/crowd.py) and closed forms."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline.camera import camera_center
from pipeline.data import crowd, rigs
from pipeline.geometry import world


def test_stature_of_a_walker_of_known_height():
    for h in (1550.0, 1800.0):
        X = crowd.walker(90, (-800, 0), (800, 300), height_mm=h)
        assert world.stature(X) == pytest.approx(h, rel=0.03)


def test_up_and_floor_found_in_any_frame():
    X = crowd.walker(120, (-1200, -300), (1200, 400))
    Q = Rotation.from_rotvec([0.7, -0.4, 1.9]).as_matrix()
    d = np.array([300.0, -2000.0, 5000.0])
    uf = world.up_and_floor(X @ Q.T + d)
    up_true = Q @ [0, 0, 1.0]
    assert np.degrees(np.arccos(np.clip(uf["up"] @ up_true, -1, 1))) < 2.0
    # the floor (z = 0 in the walker's world) along the found up direction
    assert uf["floor"] - d @ up_true == pytest.approx(0.0, abs=40.0)
    assert uf["source"] in ("ankle plane", "body axis across the ankle line")


def test_a_rig_in_camera_0s_frame_stands_upright_in_millimetres():
    cams = rigs.random_rig(3, 4)
    X = crowd.walker(120, (-1000, 0), (1000, 200))
    # the rig as calibration from people gives it: camera 0's frame, unit baseline
    R0, t0 = cams.R[0], cams.t[0]
    R = cams.R @ R0.T
    t = cams.t - np.einsum("vab,b->va", R, t0)
    unit = np.linalg.norm(camera_center(R[1], t[1]))
    t = t / unit
    Xr = (X @ R0.T + t0) / unit
    C = cams.centers
    s, what = world.metric_scale(R, t, Xr, distance=(0, 2, np.linalg.norm(C[0] - C[2])))
    assert s == pytest.approx(unit, rel=1e-9) and "distance" in what
    out = world.to_world(R, t, Xr, s)
    Cw = camera_center(out["R"], out["t"])
    np.testing.assert_allclose(Cw[:, 2], C[:, 2], atol=60.0)  # camera heights above the floor, mm
    np.testing.assert_allclose(np.linalg.norm(Cw[:, None] - Cw[None], axis=-1),
                               np.linalg.norm(C[:, None] - C[None], axis=-1), atol=1e-6)
    np.testing.assert_allclose(out["X"][:, :, 2], X[:, :, 2], atol=60.0)  # the walker stands on z = 0


def test_align_similarity_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    Ca = rng.normal(size=(5, 3)) * 1000
    Q = Rotation.from_rotvec([0.2, 1.1, -0.5]).as_matrix()
    Cb = 2.5 * Ca @ Q.T + [10.0, -20.0, 30.0]
    s, Qe, d = world.align_similarity(Ca, Cb)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(Qe, Q, atol=1e-9)
    np.testing.assert_allclose(d, [10.0, -20.0, 30.0], atol=1e-6)


def test_metric_scale_needs_a_source():
    cams = rigs.random_rig(0, 3)
    with pytest.raises(ValueError, match="height, a camera distance or a reference"):
        world.metric_scale(cams.R, cams.t)
    s, _ = world.metric_scale(cams.R, cams.t, reference=cams)
    assert s == pytest.approx(1.0)
