"""A folder of synchronised videos: sizes per view, portrait and turned videos, frames, crops."""
import json
import warnings

import cv2
import numpy as np
import pytest
import zarr

from pipeline.camera import Cameras, project
from pipeline.data import get_adapter
from pipeline.data.videos import _rotated_dist, crop, fill_boxes, iter_frames, rotate_intrinsics, rotation_camera_R, square_box


def _video(path, w, h, n, fps=25.0):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(np.full((h, w, 3), 10 + 20 * i, np.uint8))
    vw.release()


@pytest.fixture
def folder(tmp_path):
    _video(tmp_path / "a.mp4", 64, 48, 10)      # landscape
    _video(tmp_path / "b.mp4", 48, 64, 12)      # portrait, longer
    return tmp_path


def test_iter_frames_order_content_and_end(folder):
    got = list(iter_frames(folder / "a.mp4", np.array([1, 3, 3, 9, 11])))
    assert [i for i, _ in got] == [1, 3, 3, 9, 11]
    means = [f.mean() for _, f in got[:4]]
    np.testing.assert_allclose(means, [30, 70, 70, 190], atol=8)    # lossy codec
    assert got[4][1] is None                                          # past the end
    (_, f), = list(iter_frames(folder / "a.mp4", [0], rotate=90))
    assert f.shape == (64, 48, 3)
    with pytest.raises(ValueError, match="sorted"):
        list(iter_frames(folder / "a.mp4", [3, 1]))


def test_build_sizes_lengths_rotation(folder):
    g = zarr.group(store=zarr.storage.MemoryStore())
    with pytest.warns(UserWarning, match="unequal lengths"):
        get_adapter("videos")({"root": str(folder), "rotate": [0, 90]}, g, progress=False)
    assert g["frame_index"].shape == (10,)
    assert g["size"][0].tolist() == [[64, 48], [64, 48]]     # the portrait view turned to landscape
    assert np.all(np.isnan(g["R"][:])) and g.attrs["calibrated"] is False
    assert g.attrs["rotate"] == [0, 90] and len(g.attrs["videos"]) == 2
    K = g["K"][0]
    assert np.isclose(K[0, 0, 0], 1.2 * 64) and np.isclose(K[1, 0, 2], (64 - 1) / 2)
    with pytest.raises(ValueError, match="rotate"):
        get_adapter("videos")({"root": str(folder), "rotate": [0, 45]}, zarr.group(store=zarr.storage.MemoryStore()))
    with pytest.raises(ValueError, match="no video"):
        (folder / "empty").mkdir()
        get_adapter("videos")({"root": str(folder / "empty")}, zarr.group(store=zarr.storage.MemoryStore()))


def test_json_calibration_is_used(folder):
    K = [[[100, 0, 31.5], [0, 100, 23.5], [0, 0, 1]], [[90, 0, 23.5], [0, 90, 31.5], [0, 0, 1]]]
    (folder / "calibration.json").write_text(json.dumps({"K": K, "dist": [[0.01, 0, 0, 0, 0]] * 2}))
    g = zarr.group(store=zarr.storage.MemoryStore())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_adapter("videos")({"root": str(folder)}, g, progress=False)
    np.testing.assert_allclose(g["K"][0], K)
    assert g.attrs["calibrated"] is True


@pytest.mark.parametrize("deg", [90, 180, 270])
def test_turned_camera_projects_where_cv2_rotate_puts_the_pixel(deg):
    """Reference: cv2.rotate's pixel mapping, measured on an image with one lit pixel."""
    w, h = 7, 5
    img = np.zeros((h, w), np.uint8)
    img[1, 5] = 255                                              # (x, y) = (5, 1)
    code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}[deg]
    yx = np.argwhere(cv2.rotate(img, code))[0]
    mapped = {90: (h - 1 - 1, 5), 180: (w - 1 - 5, h - 1 - 1), 270: (1, w - 1 - 5)}[deg]
    assert (yx[1], yx[0]) == mapped
    # a camera with distortion; the turned camera must project to the turned pixel
    rng = np.random.default_rng(deg)
    W, H = 640.0, 480.0
    K = np.array([[700.0, 0, 300.0], [0, 720.0, 250.0], [0, 0, 1]])
    dist = np.array([-0.1, 0.02, 0.003, -0.002, 0.0])
    X = rng.uniform([-500, -400, 2000], [500, 400, 4000], (50, 3))
    uv = project(X, K, np.eye(3), np.zeros(3), dist)
    K2, size2 = rotate_intrinsics(K, np.array([W, H]), deg)
    Rz = rotation_camera_R(deg)
    d2 = _rotated_dist(dist[None], [deg])[0]
    uv2 = project(X, K2, Rz, np.zeros(3), d2)
    x, y = uv[:, 0], uv[:, 1]
    expect = {90: np.column_stack([H - 1 - y, x]), 180: np.column_stack([W - 1 - x, H - 1 - y]),
              270: np.column_stack([y, W - 1 - x])}[deg]
    np.testing.assert_allclose(uv2, expect, atol=1e-9)
    assert size2.tolist() == ([H, W] if deg in (90, 270) else [W, H])
    Cameras(K2[None], Rz[None], np.zeros((1, 3)), d2[None], size2[None])   # a valid camera


def test_boxes_and_crops():
    kp = np.full((3, 1, 17, 3), np.nan)
    kp[0, 0, :2, :2] = [[10, 20], [30, 60]]
    b = square_box(kp, margin=1.0)
    np.testing.assert_allclose(b[0, 0], [0, 20, 40, 40])
    assert np.all(np.isnan(b[1:]))
    filled = fill_boxes(b, np.array([[100.0, 80.0]]))
    np.testing.assert_allclose(filled[2, 0], b[0, 0])           # nearest valid box in time
    none = fill_boxes(np.full((2, 1, 4), np.nan), np.array([[100.0, 80.0]]))
    np.testing.assert_allclose(none[0, 0], [10, 0, 80, 80])      # centred square of the image
    img = np.zeros((80, 100, 3), np.uint8)
    img[40, 50] = 255
    c = crop(img, np.array([40.0, 30.0, 20.0, 20.0]), 40)        # crop pixel (u, v) = ((x-40)*2, (y-30)*2)
    v, u = np.unravel_index(np.argmax(c[..., 0]), c.shape[:2])
    assert abs(u - 20) <= 1 and abs(v - 20) <= 1
