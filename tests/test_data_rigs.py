"""Rigs: Human3.6M-like geometry and seeded random rigs (checked against OpenCV)."""
import cv2
import numpy as np
import pytest

from pipeline.camera import project
from pipeline.data.rigs import h36m_like_rig, random_rig, make_rig

TARGET = np.array([0.0, 0.0, 1000.0])


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_h36m_like_rig_geometry(seed):
    cams = h36m_like_rig(4, seed=seed)
    C = cams.centers
    d = np.linalg.norm(C - TARGET, axis=1)
    assert np.all((d > 4400) & (d < 5700)), d
    assert np.all((C[:, 2] > 1300) & (C[:, 2] < 1900))
    assert np.allclose(cams.K[:, 0, 0], 1150, rtol=0.011)
    assert np.all(cams.size == 1000)
    # each camera aims at the volume: its centre projects near the principal point
    uv = project(TARGET[None, None], cams.K, cams.R, cams.t)[:, 0]
    assert np.all(np.abs(uv - cams.K[:, :2, 2]) < 1e-6)
    # cameras spread around: azimuth gaps between 60 and 120 degrees
    az = np.sort(np.degrees(np.arctan2(C[:, 1], C[:, 0])) % 360)
    gaps = np.diff(np.r_[az, az[0] + 360])
    assert np.all((gaps > 60) & (gaps < 120)), gaps
    # rotations are proper
    assert np.allclose(np.linalg.det(cams.R), 1) and np.allclose(cams.R @ np.swapaxes(cams.R, 1, 2), np.eye(3))


def test_random_rig_is_seeded_and_in_range():
    a, b, c = random_rig(3, 5), random_rig(3, 5), random_rig(4, 5)
    assert np.array_equal(a.R, b.R) and np.array_equal(a.K, b.K)
    assert not np.allclose(a.R, c.R)
    r = np.linalg.norm(a.centers[:, :2], axis=1)
    assert a.V == 5 and np.all((r >= 3500) & (r <= 6000))
    assert np.all((a.K[:, 0, 0] >= 900) & (a.K[:, 0, 0] <= 1400))
    uv = project(TARGET[None, None], a.K, a.R, a.t)[:, 0]
    assert np.all((uv > 0) & (uv < 1000))
    fixed = random_rig(1, 3, radius_mm=4000.0, height_mm=1500.0, focal_px=1000.0, image_size=(640, 480))
    assert np.allclose(np.linalg.norm(fixed.centers[:, :2], axis=1), 4000) and np.all(fixed.size == [640, 480])


def test_random_rig_distortion_matches_opencv():
    cams = random_rig(2, 4, distortion=0.15)
    assert np.all(np.abs(cams.dist[:, 0]) > 0)
    X = np.random.default_rng(0).uniform(-800, 800, (50, 3)) + TARGET
    for v in range(4):
        ref, _ = cv2.projectPoints(X, cv2.Rodrigues(cams.R[v])[0], cams.t[v], cams.K[v], cams.dist[v])
        ours = project(X[None], cams.K[v], cams.R[v], cams.t[v], cams.dist[v])[0]
        assert np.abs(ours - ref[:, 0]).max() < 1e-6


def test_bad_rig_requests():
    with pytest.raises(ValueError, match="at least 2"):
        h36m_like_rig(1)
    with pytest.raises(ValueError, match="unknown rig"):
        make_rig("dome", 4, 0)
