"""MediaPipe BlazePose plug-in: landmark mapping, missing extra, and a real video (the demo)."""
import builtins
import sys

import numpy as np
import pytest

from pipeline.detectors.mediapipe import BLAZEPOSE, _import_mediapipe
from pipeline.data.openpose import load_keypoints, to_joints17
from pipeline.joints import INDEX


def test_landmark_mapping_follows_the_documented_rules():
    rng = np.random.default_rng(0)
    lm = np.column_stack([rng.uniform(0, 1000, (33, 2)), rng.uniform(0.2, 1, 33)])
    out = to_joints17(lm, BLAZEPOSE)
    # BlazePose indices (MediaPipe's documentation): 0 nose, 7/8 ears, 11/12 shoulders, 23/24 hips,
    # 25/26 knees, 27/28 ankles, 13/14 elbows, 15/16 wrists (left/right)
    np.testing.assert_allclose(out[INDEX["pelvis"], :2], (lm[23, :2] + lm[24, :2]) / 2)
    np.testing.assert_allclose(out[INDEX["thorax"], :2], (lm[11, :2] + lm[12, :2]) / 2)
    np.testing.assert_allclose(out[INDEX["head"], :2], (lm[7, :2] + lm[8, :2]) / 2)
    for name, i in (("neck", 0), ("r_hip", 24), ("l_knee", 25), ("r_ankle", 28), ("l_elbow", 13), ("r_wrist", 16)):
        np.testing.assert_allclose(out[INDEX[name]], lm[i])


def test_missing_extra_names_the_install(monkeypatch):
    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name == "mediapipe":
            raise ImportError("No module named 'mediapipe'")
        return real_import(name, *a, **k)
    monkeypatch.delitem(sys.modules, "mediapipe", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"epipolarpose\[mediapipe\]"):
        _import_mediapipe()


def test_models_that_would_download_are_refused():
    pytest.importorskip("mediapipe")
    from pipeline.detectors.mediapipe import BlazePose
    with pytest.raises(ValueError, match="model_complexity"):
        BlazePose(model_complexity=5)


def test_demo_video_chunk_invariant_and_close_to_openpose(shared_data):
    pytest.importorskip("mediapipe")
    from pipeline.detectors.mediapipe import detect_video
    demo = shared_data / "multiview" / "pose2sim_demo"
    video = demo / "videos" / "cam01.mp4"
    cfg = {"reset_every": 4}
    whole = detect_video(video, np.arange(8), cfg)
    part = detect_video(video, np.arange(4, 8), cfg)
    np.testing.assert_array_equal(whole[4:], part)       # tracker restarts at multiples of 4
    assert np.all(np.isfinite(whole[..., 0]))
    _, op, _ = load_keypoints(demo / "pose" / "cam01_json")
    # wrists, ankles, knees, elbows: the same anatomical points in both detectors (1080x1920 px)
    sel = [INDEX[n] for n in ("l_wrist", "r_wrist", "l_ankle", "r_ankle", "l_knee", "r_knee", "l_elbow", "r_elbow")]
    d = np.linalg.norm(whole[:, sel, :2] - op[:8, sel, :2], axis=-1)
    assert np.nanmedian(d) < 30.0
    assert np.all((whole[..., 2] >= 0) & (whole[..., 2] <= 1))


def test_store_crops_as_the_source(shared_data):
    """source "images": BlazePose on the store's crops, mapped back through crop_boxes."""
    pytest.importorskip("mediapipe")
    import zarr

    from pipeline.data import get_adapter
    from pipeline.detectors import get_detector
    g = zarr.group(store=zarr.storage.MemoryStore())
    get_adapter("pose2sim")({"root": str(shared_data / "multiview" / "pose2sim_demo"), "frames": [0, 2],
                             "crop_size": 256}, g, progress=False)
    kp = get_detector("mediapipe")({"source": "images"}, g, slice(None), {})
    op = get_detector("openpose")({}, g, slice(None), {})
    sel = [INDEX[n] for n in ("l_wrist", "r_wrist", "l_ankle", "r_ankle", "l_knee", "r_knee")]
    # original pixels of 1080x1920 frames, from 256 px crops: within a few crop pixels of OpenPose
    d = np.linalg.norm(kp[:, :, sel, :2] - op[:, :, sel, :2], axis=-1)
    assert np.isfinite(d).mean() > 0.9 and np.nanmedian(d) < 40.0
