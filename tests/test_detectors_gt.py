"""The ground-truth 2D detector and its noise model."""
import numpy as np
import pytest
import zarr

from pipeline.detectors import detector_defaults, get_detector
from pipeline.detectors.gt import add_noise
from pipeline.joints import FLIP, J


def _store(F=40, V=3, seed=0):
    rng = np.random.default_rng(seed)
    kp = np.concatenate([rng.uniform(100, 900, (F, V, J, 2)), np.ones((F, V, J, 1))], -1)
    kp[0, 0, 3, 2] = 0.0                     # one occluded joint
    kp[1, 1, 5] = np.nan                     # one unknown joint
    g = zarr.group(store=zarr.storage.MemoryStore())
    g.create_array("keypoints2d_gt", data=kp.astype(np.float32), dimension_names=("frame", "view", "joint", "xyc"))
    return g, kp


def test_no_noise_is_identity_and_confidence_from_visibility():
    g, kp = _store()
    out = get_detector("gt")({}, g, slice(None), {})
    assert out.shape == kp.shape and out.dtype == np.float32
    ok = np.isfinite(kp[..., 0])
    np.testing.assert_allclose(out[ok][:, :2], kp[ok][:, :2], atol=1e-4)
    assert out[0, 0, 3, 2] == 0.0 and out[0, 0, 4, 2] == 1.0
    assert np.all(np.isnan(out[1, 1, 5]))
    assert set(detector_defaults("gt")) >= {"sigma_px", "swap_rate", "outlier_rate", "drop_rate", "seed"}


def test_chunking_gives_identical_noise():
    g, _ = _store()
    cfg = {"sigma_px": 3.0, "outlier_rate": 0.1, "swap_rate": 0.2, "drop_rate": 0.1, "seed": 5}
    det = get_detector("gt")
    whole = det(cfg, g, slice(0, 40), {})
    parts = np.concatenate([det(cfg, g, slice(a, min(a + 7, 40)), {}) for a in range(0, 40, 7)])
    np.testing.assert_array_equal(whole, parts)
    other = det({**cfg, "seed": 6}, g, slice(0, 40), {})
    assert not np.array_equal(np.nan_to_num(whole), np.nan_to_num(other))


def test_noise_statistics_match_the_configuration():
    F, V = 2000, 2
    kp = np.concatenate([np.full((F, V, J, 2), 500.0), np.ones((F, V, J, 1))], -1)
    ids = np.arange(F)
    out = add_noise(kp, ids, {"sigma_px": 2.0})
    # sample std of 2*F*V*J normals should be within 2 % of sigma
    assert abs(np.std(out[..., :2] - 500.0) - 2.0) < 0.04
    out = add_noise(kp, ids, {"drop_rate": 0.25})
    assert abs(np.isnan(out[..., 0]).mean() - 0.25) < 0.01
    out = add_noise(kp, ids, {"outlier_rate": 0.1, "outlier_px": 40.0})
    moved = np.any(np.abs(out[..., :2] - 500.0) > 1e-3, axis=-1)
    assert abs(moved.mean() - 0.1) < 0.01
    assert np.abs(out[..., :2] - 500.0).max() <= 40.0 + 1e-3


def test_swaps_exchange_left_and_right():
    F, V = 500, 2
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform(0, 1000, (F, V, J, 2)), np.ones((F, V, J, 1))], -1)
    out = add_noise(kp, np.arange(F), {"swap_rate": 0.3})
    swapped = np.all(np.abs(out[..., :2] - kp[:, :, FLIP, :2]) < 1e-3, axis=(-1, -2))
    same = np.all(np.abs(out[..., :2] - kp[..., :2]) < 1e-3, axis=(-1, -2))
    assert np.all(swapped ^ same)
    assert abs(swapped.mean() - 0.3) < 0.05


def test_bad_configuration_is_a_clear_error():
    g, _ = _store()
    with pytest.raises(ValueError, match="unknown configuration"):
        get_detector("gt")({"sigma": 1}, g, slice(None), {})
    with pytest.raises(ValueError, match="swap_rate"):
        get_detector("gt")({"swap_rate": 2}, g, slice(None), {})
    empty = zarr.group(store=zarr.storage.MemoryStore())
    with pytest.raises(ValueError, match="keypoints2d_gt"):
        get_detector("gt")({}, empty, slice(None), {})
