"""Missing images (the dataset's optional `image_ok` [F,V], False where a video frame could not be
decoded and the crop is black): training skips those samples, predictions there are NaN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.training import detector2d, images, loop, pose3d, refiner
from pipeline.detectors import get_detector
from pipeline.joints import J
from tests.test_train3d import TINY, make_store

# (frame, view) samples whose image is missing: training frames and test frames (24 frames, 18 train)
MISSING = [(0, 0), (3, 1), (7, 0), (7, 1), (20, 1)]


def _stores(tmp_path):
    a = make_store(tmp_path / "plain.zarr", F=24)
    b = make_store(tmp_path / "holes.zarr", F=24)
    ok = np.ones((24, 2), bool)
    for f, v in MISSING:
        ok[f, v] = False
        b["images"][f, v] = 0  # what the adapter stores for an undecodable frame
    b.create_array("image_ok", data=ok, dimension_names=("frame", "view"))
    return a, b, ok


def test_training_skips_missing_images(tmp_path):
    """Training with image_ok False at some samples gives bit-identical weights to training on a
    store without image_ok whose targets are masked at those samples (the same sample set);
    the 2D detector likewise (its labels made invisible there)."""
    a, b, ok = _stores(tmp_path)
    P = pose3d.gt_camera_poses(a)
    mask = np.all(np.isfinite(P), -1) & ok[..., None]
    ref = pose3d.train(TINY, a, None, mask, tmp_path / "ref", progress=False)
    got = pose3d.train(TINY, b, None, None, tmp_path / "got", progress=False)
    wr, wg = loop.load_checkpoint(ref), loop.load_checkpoint(got)
    n_train_ok = int(ok[:18].sum())
    assert wg["n_samples"] == 6 * n_train_ok == wr["n_samples"]  # six colour orders of each sample
    assert all(torch.equal(wr["model"][k], wg["model"][k]) for k in wr["model"])

    kp = a["keypoints2d_gt"][:]
    kp[~ok, :, 2] = 0
    a["keypoints2d_gt"][:] = kp
    ref2 = detector2d.train(TINY, a, tmp_path / "ref2", progress=False)
    got2 = detector2d.train(TINY, b, tmp_path / "got2", progress=False)
    wr, wg = loop.load_checkpoint(ref2), loop.load_checkpoint(got2)
    assert wg["n_samples"] == wr["n_samples"] == 6 * n_train_ok
    assert all(torch.equal(wr["model"][k], wg["model"][k]) for k in wr["model"])


def test_predictions_are_nan_where_the_image_is_missing(tmp_path):
    a, b, ok = _stores(tmp_path)
    ck = pose3d.train({**TINY, "epochs": 1}, a, None, None, tmp_path / "n3", progress=False)
    pa = pose3d.predict(ck, a, slice(None), progress=False)
    pb = pose3d.predict(ck, b, slice(None), progress=False)
    assert np.all(np.isnan(pb[~ok])) and np.all(np.isfinite(pb[ok]))
    np.testing.assert_array_equal(pb[ok], pa[ok])
    fr = np.array([7, 8, 20])
    np.testing.assert_array_equal(np.isnan(pose3d.predict(ck, b, fr, progress=False)).all((-1, -2)), ~ok[fr])

    # the network detector: NaN keypoints (x, y and confidence) there
    n2 = detector2d.train({**TINY, "epochs": 1}, a, tmp_path / "n2", progress=False)
    kp = get_detector("network")({}, b, slice(0, 24), {"pretrain2d": str(n2)})
    assert np.all(np.isnan(kp[~ok])) and np.all(np.isfinite(kp[ok]))
    res = detector2d.evaluate(n2, b, split=1, progress=False)  # frames 18-23; (20, 1) left out
    assert res["joints"] == (int(ok[18:].sum())) * J and np.isfinite(res["mean_px"])

    # the refinement unit's training pairs leave those predictions out
    flat, lab = pb[:18].reshape(-1, J, 3), pa[:18].reshape(-1, J, 3)
    x, y = refiner.make_pairs({"training_data": "predictions"}, flat, lab)
    assert len(x) == int(ok[:18].sum()) and np.all(np.isfinite(x))
    noise = refiner.fit_noise_model(flat, lab)
    assert np.all(np.isfinite(noise["cov"]))


def test_bad_image_ok_is_named(tmp_path):
    g = make_store(tmp_path / "s.zarr", F=8)
    g.create_array("image_ok", data=np.ones((8, 3), bool), dimension_names=("frame", "view"))
    with pytest.raises(ValueError, match=r"image_ok must be \[F,V\] = \(8, 2\)"):
        images.image_ok(g)
    g = make_store(tmp_path / "t.zarr", F=8)
    g.create_array("image_ok", data=np.ones((8, 2), np.uint8), dimension_names=("frame", "view"))
    with pytest.raises(ValueError, match="image_ok must be bool"):
        pose3d.train(TINY, g, None, None, tmp_path / "x", progress=False)
