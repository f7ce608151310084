"""`python -m pipeline.infer` a user can trust: any detector plug-in gives the keypoints (run
on the input as a one-view dataset), frames without a person or of low confidence are flagged
and counted in the warnings, the network detector's domain is named, millimetres when the
scale is given, axes stated in poses.npz."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline import infer
from pipeline.joints import J
from pipeline.training import detector2d, pose3d
from tests.test_train3d import TINY, make_store

DEFAULTS: dict = {}
SKELETON = np.array([[80 + 6 * np.cos(j), 30 + 4 * j] for j in range(J)], float)   # a tall figure, pixels


def fake_detect(cfg, dataset, frames, context):
    """A detector plug-in: a person in every frame of the one-view store, except frame 1
    (nobody) and frame 2 (confidence 0.1); it checks it was handed the input video."""
    assert len(dataset.attrs["videos"]) == 1 and cv2.VideoCapture(dataset.attrs["videos"][0]).isOpened()
    n = dataset["frame_index"].shape[0]
    kp = np.zeros((n, 1, J, 3), np.float32)
    for k, f in enumerate(np.asarray(dataset["frame_index"][:])):
        kp[k, 0, :, :2] = SKELETON + [2 * f, 0]
        kp[k, 0, :, 2] = 0.1 if f == 2 else 0.9
        if f == 1:
            kp[k, 0] = np.nan
    return kp


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nets")
    store = make_store(tmp / "ds.zarr", F=16)
    from pipeline.camera import store_poses_in_cameras
    X = store_poses_in_cameras(store)
    targets = ((X - X[..., :1, :]) / 250.0).astype(np.float32)          # self-supervised units: mean bones
    n3 = pose3d.train({**TINY, "epochs": 1}, store, targets, None, tmp / "n3", progress=False)
    n2 = detector2d.train({**TINY, "epochs": 1}, store, tmp / "n2", progress=False)
    vw = cv2.VideoWriter(str(tmp / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for f in range(4):
        frame = np.full((120, 160, 3), 40, np.uint8)
        frame[30:94, 40 + 5 * f:104 + 5 * f] = cv2.resize(store["images"][f, 0], (64, 64))
        vw.write(frame)
    vw.release()
    return n3, n2, tmp / "v.avi"


def test_a_plugin_detector_flags_frames_and_mm(nets, tmp_path, monkeypatch):
    import pipeline.detectors as detectors
    monkeypatch.setitem(detectors.DETECTORS, "fake", "tests.test_infer_trust:fake_detect")
    n3, _, video = nets
    res = infer.run(video, n3, None, tmp_path / "a", detector="fake", figures=0, progress=False)
    z = np.load(res["poses"])
    assert z["found"].tolist() == [True, False, False, True]          # nobody in 1, low confidence in 2
    assert z["confidence"][0] == pytest.approx(0.9) and z["confidence"][2] == pytest.approx(0.1)
    np.testing.assert_allclose(z["keypoints2d"][3, :, :2], SKELETON + [6, 0])   # the plug-in's own keypoints
    box = z["boxes"][3]                                                # the box is set around them
    assert box[0] <= SKELETON[:, 0].min() + 6 and box[0] + box[2] >= SKELETON[:, 0].max() + 6
    assert "axes" in z.files and "y down" in str(z["axes"])
    assert any("2 of 4 frames" in w for w in res["warnings"])
    assert not any("2D network" in w for w in res["warnings"])
    mm = infer.run(video, n3, None, tmp_path / "b", detector="fake", figures=0, progress=False, mean_bone_mm=250.0)
    assert res["units"] != "mm" and mm["units"] == "mm"
    np.testing.assert_allclose(np.load(mm["poses"])["pose3d"], 250.0 * z["pose3d"], rtol=1e-5, atol=1e-3)


def test_the_network_detector_names_its_domain(nets, tmp_path, capsys):
    n3, n2, video = nets
    res = infer.run(video, n3, n2, tmp_path / "n", figures=1, progress=False)
    assert any("knows only its training dataset" in w for w in res["warnings"])
    assert infer.main([str(video), "--net3d", str(n3), "--out", str(tmp_path / "x")]) == 2
    assert "needs --net2d" in capsys.readouterr().err
    assert infer.main([str(video), "--net3d", str(n3), "--detector", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1
