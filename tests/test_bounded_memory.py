"""Geometry entry points that take every frame work in chunks: the same results as all at once,
and a tracemalloc peak bounded by a few times the input (the goal: at most 4x)."""
import tracemalloc

import numpy as np
import pytest

from pipeline.geometry import labels, sync
from pipeline.geometry import triangulate as tri
from tests import synth


def _peak(fn):
    tracemalloc.start()
    try:
        r = fn()
        return r, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_dlt_chunks_give_the_same_bits_in_bounded_memory():
    cams = synth.ring_rig([45, 135, 225, 315], radius_mm=5000, height_mm=1600)
    rng = np.random.default_rng(0)
    N = 60_000
    x = rng.normal(0, 0.1, (N, cams.V, 2))
    w = rng.uniform(0.5, 1, (N, cams.V))
    w[::7, 1:] = 0  # some points seen once: not ok
    whole = tri.triangulate_dlt(x, w, cams.R, cams.t, chunk=10 ** 9)
    (X, ok), peak = _peak(lambda: tri.triangulate_dlt(x, w, cams.R, cams.t, chunk=4096))
    np.testing.assert_array_equal(X, whole[0])
    np.testing.assert_array_equal(ok, whole[1])
    assert peak <= 4 * (x.nbytes + w.nbytes)
    # a leading batch of several axes keeps its shape
    X2, ok2 = tri.triangulate_dlt(x.reshape(600, 100, cams.V, 2), w.reshape(600, 100, cams.V), cams.R, cams.t, chunk=999)
    np.testing.assert_array_equal(X2.reshape(-1, 3), whole[0])


def test_sync_usable_mask_and_rows_match_a_masked_copy():
    cams = synth.ring_rig([0, 70, 150], radius_mm=4000, height_mm=1500)
    kp = synth.observe(synth.random_poses(300, seed=1), cams, 1.0, seed=2)
    usable = np.random.default_rng(3).random(kp.shape[:3]) > 0.1
    masked = np.where(usable[..., None], kp, np.nan)
    a = sync.estimate_offsets(masked, cams.K, cams.dist, max_lag=5)
    b = sync.estimate_offsets(kp, cams.K, cams.dist, max_lag=5, usable=usable)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1]["cost_px"], b[1]["cost_px"])


@pytest.mark.slow
def test_make_labels_peak_is_a_few_times_its_input():
    cams = synth.ring_rig([45, 135, 225, 315], radius_mm=5000, height_mm=1600)
    kp = synth.observe(synth.random_poses(12000, seed=4), cams, 2.0, seed=5)
    out, peak = _peak(lambda: labels.make_labels(kp, cams, {"mode": "known", "chunk_frames": 1200}))
    whole = labels.make_labels(kp, cams, {"mode": "known", "chunk_frames": 12000})
    np.testing.assert_array_equal(out["labels_cam"], whole["labels_cam"])
    assert peak <= 4 * kp.nbytes
