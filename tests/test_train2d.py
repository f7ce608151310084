"""The 2D detector: pre-training on the training split, the detect2d plug-in, evaluation."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.training import detector2d, images, loop, pose3d
from pipeline.detectors import get_detector
from pipeline.joints import J
from tests.test_train3d import TINY, make_store


def test_crop_coordinate_round_trip():
    """docs/stores.md: crop pixel (u, v) ↔ original (x0 + u·w/S, y0 + v·h/S); pixel u ↔ (2u+1)/S - 1."""
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 1000, (5, 3, J, 2))
    boxes = np.concatenate([rng.uniform(0, 500, (5, 3, 2)), rng.uniform(100, 400, (5, 3, 2))], -1)
    n = detector2d.crop_coords(kp, boxes, 64)
    np.testing.assert_allclose(detector2d.original_coords(n, boxes, 64), kp, atol=1e-9)
    corner = detector2d.crop_coords(boxes[..., None, :2] + 0 * kp[..., :1, :], boxes, 64)
    np.testing.assert_allclose(corner, np.full(corner.shape, 1 / 64 - 1))


def test_pretrain_detect_evaluate(tmp_path):
    store = make_store(tmp_path / "ds.zarr", F=32)
    ck = detector2d.train({**TINY, "epochs": 2}, store, tmp_path / "p2d", progress=False)
    detect = get_detector("network")
    kp = detect({}, store, slice(24, 32), {"pretrain2d": str(tmp_path / "p2d")})
    assert kp.shape == (8, 2, J, 3) and kp.dtype == np.float32
    assert np.all((kp[..., 2] >= 0) & (kp[..., 2] <= 1))
    # outputs land inside the crop boxes, in original pixels
    b = store["crop_boxes"][24:32][:, :, None]
    assert np.all((kp[..., 0] >= b[..., 0]) & (kp[..., 0] <= b[..., 0] + b[..., 2]))
    res = detector2d.evaluate(ck, store, split=1, progress=False)
    assert res["frames"] == 8 and 0 <= res["pck@0.05"] <= res["pck@0.1"] <= 1 and res["mean_px"] > 0
    with pytest.raises(ValueError, match="context"):
        detect({}, store, slice(0, 2), {})
    with pytest.raises(ValueError, match="unknown"):
        detect({"thresh": 1}, store, slice(0, 2), {"pretrain2d": ck})
    with pytest.raises(ValueError, match="a 2d one"):
        from pipeline.training import pose3d
        loop.load_model(pose3d.train({**TINY, "epochs": 1}, store, None, None, tmp_path / "3d",
                                         progress=False), "2d")


def test_spread_loss_closed_form():
    """E_p||g - t||^2: a one-hot heatmap gives the squared distance from its bin centre
    (2i + 1)/n - 1 to the target; a uniform one adds the bins' variance."""
    import torch
    from pipeline.training.loop import spread_loss
    p = torch.zeros(1, 1, 4, 4)
    p[0, 0, 1, 3] = 1.0  # y bin 1, x bin 3 -> (0.75, -0.25)
    t = torch.tensor([[[0.25, 0.25]]])
    m = torch.ones(1, 1)
    torch.testing.assert_close(spread_loss(p, t, m), torch.tensor(0.5 ** 2 + 0.5 ** 2))
    u = torch.full((1, 1, 4, 4), 1 / 16)
    centres = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    torch.testing.assert_close(spread_loss(u, torch.zeros(1, 1, 2), m), 2 * (centres ** 2).mean())


def test_heatmap_nll_weight_trains(tmp_path):
    """heatmap_nll_weight adds the heatmap cross-entropy to the 2D loss: training runs, the
    checkpoint records the weight, the loss stays finite; 3D training ignores it."""
    import torch
    store = make_store(tmp_path / "ds.zarr", F=16)
    ck = detector2d.train({**TINY, "epochs": 1, "heatmap_nll_weight": 0.05}, store, tmp_path / "p2d", progress=False)
    meta = torch.load(ck, weights_only=True)
    assert meta["cfg"]["heatmap_nll_weight"] == 0.05 and np.all(np.isfinite(meta["losses"]))
    with pytest.raises(ValueError, match="unknown|heatmap_nll_weight"):
        pose3d.train({**TINY, "heatmap_nll_weight": 0.05}, store, None, None, tmp_path / "3d", progress=False)


def test_colour_permuted_source_reads_permuted_channels():
    """View k·V + v of ColourPermuted is view v with its channels in the k-th order (all 6
    orders, the identity first), and each sample copy keeps its (frame, view)'s target."""
    from itertools import permutations
    rng = np.random.default_rng(1)
    im = rng.integers(0, 256, (5, 3, 8, 8, 3), dtype=np.uint8)

    class Plain:
        def get(self, f, v):
            return im[f, v]
    src = images.ColourPermuted(Plain(), 3)
    samples = np.array([[0, 2], [4, 1]])
    cp = images.colour_permuted_samples(samples, 3)
    assert cp.shape == (12, 2)
    got = src.get(cp[:, 0], cp[:, 1])
    for k, order in enumerate(permutations(range(3))):
        for i, (f, v) in enumerate(samples):
            np.testing.assert_array_equal(got[2 * k + i], im[f, v][..., list(order)])
    np.testing.assert_array_equal(cp % [6, 3], np.tile(samples, (6, 1)))

