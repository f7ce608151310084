"""Held-out validation per epoch (pipeline/training/validation.py, the loop's hook)."""
from __future__ import annotations

import numpy as np
import torch
import zarr

from pipeline.joints import J, ROOT
from pipeline.training import loop, pose3d, validation
from pipeline.training.checkpoint import training_record
from tests.test_train3d import TINY, make_store


def _clips(store, clips):
    store["clip"][...] = np.asarray(clips, np.int16)


def test_validation_frames_hold_out_the_last_training_clips(tmp_path):
    g = make_store(tmp_path / "ds.zarr", F=24)             # frames 18..23 are the test split
    _clips(g, [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6)
    np.testing.assert_array_equal(validation.validation_frames(g, 1), np.arange(12, 18))   # never a test clip
    np.testing.assert_array_equal(validation.validation_frames(g, 2), np.arange(6, 18))
    assert validation.validation_frames(g, 0).size == 0
    assert validation.validation_frames(g, 3).size == 0     # would leave nothing to train on: none, warned


def test_pose_errors_closed_form():
    rng = np.random.default_rng(0)
    t = rng.normal(0, 100, (5, J, 3))
    t -= t[:, ROOT:ROOT + 1]
    m = np.ones((5, J), bool)
    off = np.where(np.arange(J)[:, None] == ROOT, 0.0, [3.0, 4.0, 0.0])
    e, n = validation.pose_errors(t + off, t, m)                 # every joint but the root off by 5 mm
    np.testing.assert_allclose(e, 5.0 * (J - 1) / J)
    e, n = validation.pose_errors(2 * t, t, m)                   # a scaled pose: NMPJPE 0
    assert np.all(e > 0) and np.allclose(n, 0, atol=1e-9)
    m[0] = False
    assert np.isnan(validation.pose_errors(t, t, m)[0][0])


def test_training_scores_the_held_out_clip_every_epoch(tmp_path):
    g = make_store(tmp_path / "ds.zarr", F=24)
    _clips(g, [0] * 9 + [1] * 9 + [2] * 6)
    ck = pose3d.train({**TINY, "val_clips": 1}, g, None, None, tmp_path / "fs", progress=False)
    rec = training_record(ck)
    meta = loop.load_checkpoint(ck)
    assert meta["n_samples"] == 9 * 2 * 6          # 9 training frames x 2 views x 6 colour orders
    assert meta["val_samples"] == 9 * 2
    val = rec["validation"]
    assert len(val) == TINY["epochs"] and all(v["units"] == "mm" for v in val)
    assert all(np.isfinite([v["loss"], v["mpjpe"], v["nmpjpe"]]).all() and v["nmpjpe"] <= v["mpjpe"] + 1e-6
               for v in val)
    curves = zarr.open_group(str(tmp_path / "fs"), mode="r")
    np.testing.assert_allclose(curves["val_mpjpe"][:], [v["mpjpe"] for v in val])
    # the figures are the network's on those samples: MPJPE from predict on the held-out frames
    pred = pose3d.predict(ck, g, np.arange(9, 18), progress=False)
    gt = pose3d.gt_camera_poses(g)[9:18]
    e = np.linalg.norm(pred - gt, axis=-1).mean(-1)
    assert abs(e.mean() - val[-1]["mpjpe"]) < 1e-3 * max(1.0, e.mean())
    # without a second training clip: no validation, training as before
    ck0 = pose3d.train({**TINY, "val_clips": 0}, g, None, None, tmp_path / "none", progress=False)
    assert training_record(ck0)["validation"] == []
