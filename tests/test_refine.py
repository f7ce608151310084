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


def test_noise_model_counts_left_right_confusions():
    """A known share of rows with left and right swapped (joints.FLIP): the model's flip_rate
    recovers it, and its Gaussian is fitted after undoing the swap (so stays small)."""
    from pipeline.joints import FLIP
    rng = np.random.default_rng(3)
    clean = _poses(2000)
    pred = clean + rng.normal(0, 0.02, clean.shape).astype(np.float32) * (np.arange(J) != ROOT)[:, None]
    swap = rng.random(len(pred)) < 0.2
    pred[swap] = pred[swap][:, FLIP]
    model = refiner.fit_noise_model(pred, clean)
    assert abs(model["flip_rate"] - swap.mean()) < 0.01
    assert np.sqrt(np.diagonal(model["cov"][1:], axis1=1, axis2=2)).max() < 0.03
    x, y = refiner.noisy_pairs(clean, model, seed=0)
    flipped = np.linalg.norm(x[:, FLIP] - y, axis=-1).mean(-1) < np.linalg.norm(x - y, axis=-1).mean(-1)
    assert abs(flipped.mean() - swap.mean()) < 0.03


def test_make_pairs_heldout_and_library():
    """crossfit: the held-out predictions are the inputs; a library: its poses are the targets,
    the inputs those poses plus the modelled error of the predictions against the clean poses."""
    y = _poses(200)
    pred, held = y.copy(), y - 0.2
    pred[:, 1:] += 0.1  # a root-relative error of +0.1 on every other joint
    x, t = refiner.make_pairs({"training_data": "crossfit"}, pred, y, heldout=held)
    np.testing.assert_allclose(x, held)
    np.testing.assert_allclose(t, y)
    with pytest.raises(ValueError, match="heldout"):
        refiner.make_pairs({"training_data": "crossfit"}, pred, y)
    lib = _poses(300, seed=4)
    x, t = refiner.make_pairs({"training_data": "predictions", "copies": 2}, pred, y, library=lib)
    assert x.shape == t.shape == (600, J, 3)
    np.testing.assert_allclose(t[:300], lib - lib[:, ROOT:ROOT + 1], atol=1e-6)
    # the error drawn is the predictions' (+0.1 on every non-root joint), not the held-out ones'
    np.testing.assert_allclose((x - t)[:, 1:].mean((0, 1)), [0.1, 0.1, 0.1], atol=0.01)
