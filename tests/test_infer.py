"""pipeline/infer.py: crops follow docs/stores.md, and an image or a video gives poses and PNGs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline import infer
from pipeline.training import detector2d, pose3d
from pipeline.joints import J
from tests.test_train3d import TINY, make_store


def test_crop_convention():
    """A dot at original (x, y) lands on crop pixel ((x - x0)·S/w, (y - y0)·S/h) (docs/stores.md)."""
    img = np.zeros((300, 400, 3), np.uint8)
    img[120, 250] = 255
    box = np.array([200.0, 80.0, 128.0, 128.0])
    c = infer.crop(img, box, 64)
    v, u = np.unravel_index(int(c[..., 0].argmax()), c.shape[:2])
    assert abs(u - (250 - 200) * 64 / 128) <= 0.5 and abs(v - (120 - 80) * 64 / 128) <= 0.5
    b = infer.box_from_keypoints(np.array([[10, 20, 1], [30, 60, 1], [20, 30, 1], [15, 50, 1]] + [[0, 0, 0]] * (J - 4),
                                          float), 0.5, 1.25)
    np.testing.assert_allclose(b, [20 - 25, 40 - 25, 50, 50])


def test_image_and_video(tmp_path):
    store = make_store(tmp_path / "ds.zarr", F=16)
    n3 = pose3d.train({**TINY, "epochs": 1}, store, None, None, tmp_path / "n3", progress=False)
    n2 = detector2d.train({**TINY, "epochs": 1}, store, tmp_path / "n2", progress=False)
    frames = []
    for f in range(3):  # paste a crop into a larger frame, as a camera would see the person
        canvas = np.full((120, 160, 3), 40, np.uint8)
        canvas[30:94, 50 + 10 * f:114 + 10 * f] = cv2.resize(store["images"][f, 0], (64, 64))
        frames.append(canvas)
    cv2.imwrite(str(tmp_path / "one.png"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    res = infer.run(tmp_path / "one.png", n3, n2, tmp_path / "out_img", progress=False)
    assert res["frames"] == 1 and res["units"] == "mm" and res["figures"][0].stat().st_size > 1000
    vw = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for fr in frames:
        vw.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    vw.release()
    res = infer.run(tmp_path / "v.avi", n3, n2, tmp_path / "out_vid", figures=1, progress=False)
    z = np.load(res["poses"])
    assert z["pose3d"].shape == (3, J, 3) and np.all(np.isfinite(z["pose3d"])) and np.all(z["pose3d"][:, 0] == 0)
    assert len(res["figures"]) == 1
    est = infer.Estimator(n3, n2)
    with pytest.raises(ValueError, match="grey"):
        est(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        est(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="no such file"):
        infer.run(tmp_path / "missing.mp4", n3, n2, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="a 2d one"):
        infer.Estimator(n3, n3)
