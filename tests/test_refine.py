"""The refinement unit: its training data builders and train/apply on synthetic pose pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.refiner import RefineNet
from pipeline.training import refiner
from tests import synth
from pipeline.joints import J, ROOT


def _poses(n, seed=0):
    P = synth.random_poses(n, seed=seed)
    P = P - P[:, ROOT:ROOT + 1]
    return (P / 250.0).astype(np.float32)  # about "mean bones"


def test_refinenet_starts_as_identity():
    net = RefineNet(J, hidden=64).eval()
    x = torch.randn(5, J, 3)
    outs = net(x)
    assert len(outs) == 2 and all(torch.allclose(o, x) for o in outs)


def test_noise_model_recovers_covariance():
    """The fitted per-joint Gaussian matches the one the errors were drawn from (closed form)."""
    rng = np.random.default_rng(0)
    clean = _poses(4000)
    err = rng.normal([0.1, -0.05, 0.2], [0.1, 0.2, 0.3], size=clean.shape).astype(np.float32)
    err[:, ROOT] = 0
    model = refiner.fit_noise_model(clean + err, clean)
    np.testing.assert_allclose(model["mean"][1:], np.tile([0.1, -0.05, 0.2], (J - 1, 1)), atol=0.02)
    np.testing.assert_allclose(np.sqrt(np.diagonal(model["cov"][1:], axis1=1, axis2=2)),
                               np.tile([0.1, 0.2, 0.3], (J - 1, 1)), rtol=0.06)
    x, y = refiner.noisy_pairs(clean[:100], model, seed=1, copies=3)
    assert x.shape == y.shape == (300, J, 3) and np.all(x[:, ROOT] == 0)


def test_refiner_removes_systematic_error(tmp_path):
    """Inputs = poses with a fixed bias per joint plus noise: the trained RU cuts the error
    (mean joint error before vs after, on held-out poses); masked (NaN) targets are ignored."""
    rng = np.random.default_rng(1)
    bias = rng.normal(0, 0.3, (J, 3)).astype(np.float32)
    bias[ROOT] = 0

    def pairs(n, seed):
        y = _poses(n, seed)
        x = y + bias + rng.normal(0, 0.05, y.shape).astype(np.float32) * (np.arange(J) != ROOT)[:, None]
        return x, y
    x, y = pairs(2000, 0)
    y_masked = y.copy()
    y_masked[::3, 4] = np.nan
    ck = refiner.train_refiner({"hidden": 256, "epochs": 15, "batch_size": 128, "dropout": 0.1}, x, y_masked,
                              tmp_path / "ru", progress=False)
    xt, yt = pairs(300, 5)
    before = np.linalg.norm(xt - yt, axis=-1).mean()
    after = np.linalg.norm(refiner.apply_refiner(ck, xt) - yt, axis=-1).mean()
    assert after < 0.5 * before, (before, after)
    xt[0, 3] = np.nan
    out = refiner.apply_refiner(ck, xt)
    assert np.all(np.isnan(out[0])) and np.all(np.isfinite(out[1:]))


def test_make_pairs_and_bad_input(tmp_path):
    y = _poses(50)
    pred = y + 0.1
    mask = np.ones((50, J), bool)
    mask[0, 2] = False
    x1, y1 = refiner.make_pairs({"training_data": "predictions"}, pred, y, mask)
    assert x1.shape == (50, J, 3) and np.isnan(y1[0, 2]).all()
    x2, y2 = refiner.make_pairs({"training_data": "noise", "copies": 2}, pred, y, mask)
    assert x2.shape == (98, J, 3)
    with pytest.raises(ValueError, match="training_data"):
        refiner.make_pairs({"training_data": "mocap"}, pred, y)
    with pytest.raises(ValueError, match="NaN"):
        refiner.train_refiner({}, np.full((4, J, 3), np.nan), y[:4], tmp_path / "bad")
    with pytest.raises(ValueError, match=r"\[N,17,3\]"):
        refiner.train_refiner({}, y[:, :16], y[:, :16], tmp_path / "bad")
    with pytest.raises(ValueError, match="unknown"):
        refiner.train_refiner({"hiden": 3}, y, y, tmp_path / "bad")
