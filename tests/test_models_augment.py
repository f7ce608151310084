"""pipeline/augment.py: image warps and point/pose transforms agree (a bright pixel follows its point)."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.training import augment as aug
from pipeline.joints import FLIP, J


def test_image_and_points_move_together():
    rng = np.random.default_rng(3)
    S, n = 64, 16
    cfg = aug.resolve({"occluder_prob": 0.0, "color": 0.0, "rotation_prob": 1.0, "flip": True})
    p = aug.sample_params(rng, n, cfg)
    assert p["flip"].any() and (~p["flip"]).any()
    img = torch.zeros(n, 3, S, S)
    u = rng.integers(22, 42, (n, 2))
    img[np.arange(n), :, u[:, 1], u[:, 0]] = 1.0
    pts = np.zeros((n, J, 2))
    pts[:, 1] = (2 * u + 1) / S - 1  # joint 1 (r_hip) sits on the bright pixel
    out = aug.augment_images(img, p)
    moved = aug.transform_points_2d(pts, p)
    for i in range(n):
        yy, xx = np.unravel_index(int(out[i, 0].argmax()), (S, S))
        j = FLIP[1] if p["flip"][i] else 1  # a flip relabels r_hip as l_hip
        q = (moved[i, j] + 1) * S / 2 - 0.5
        assert np.hypot(xx - q[0], yy - q[1]) < 1.0


def test_pose_transform_is_rotation_about_optical_axis():
    """Bone lengths and depths are kept; a flip mirrors X; identity parameters change nothing."""
    rng = np.random.default_rng(0)
    P = rng.normal(size=(32, J, 3))
    p = aug.sample_params(rng, 32, aug.resolve({"flip": True}))
    Q = aug.transform_pose_3d(P, p)
    d = lambda X: np.linalg.norm(X[:, :, None] - X[:, None], axis=-1)
    np.testing.assert_allclose(np.sort(d(Q).reshape(32, -1)), np.sort(d(P).reshape(32, -1)), atol=1e-9)
    np.testing.assert_allclose(np.sort(Q[..., 2]), np.sort(P[..., 2]))
    f = aug.identity_params(32)
    np.testing.assert_array_equal(aug.transform_pose_3d(P, f), P)
    f["flip"][:] = True
    np.testing.assert_allclose(aug.transform_pose_3d(P, f), P[:, FLIP] * [-1, 1, 1])


def test_occluders_and_colour_stay_in_range():
    rng = np.random.default_rng(1)
    p = aug.sample_params(rng, 8, aug.resolve({"occluder_prob": 1.0}))
    x = aug.augment_images(torch.rand(8, 3, 32, 32), p)
    assert x.min() >= 0 and x.max() <= 1 and x.shape == (8, 3, 32, 32)
