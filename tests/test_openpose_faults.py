"""The keypoint importers' input reading: damaged OpenPose/COCO files, views nobody is seen in,
mixed layouts given through json_dirs, and the mediapipe detector's undecodable frames."""
import json
import warnings

import numpy as np
import pytest
import zarr

from pipeline.detectors import mediapipe, openpose
from pipeline.data import openpose as openpose_files
from pipeline.joints import J
from tests import faults_inputs as fi


def _folder(path, frames):
    path.mkdir(parents=True)
    for i, text in enumerate(frames):
        (path / f"v.{i:04d}.json").write_text(text if isinstance(text, str) else json.dumps(text))
    return path


def _person(k=25, x=100.0):
    p = np.column_stack([x + np.arange(k) * 3.0, 200 + np.arange(k) * 5.0, np.full(k, 0.8)])
    return {"people": [{"pose_keypoints_2d": p.ravel().tolist()}]}


def test_damaged_files_are_listed_and_read_as_missing_frames(tmp_path):
    d = _folder(tmp_path / "v", [_person(), "[1, 2]", _person(), '{"people": [{"pose_keypoints_2d": [1, "a", 2]}]}',
                                 _person(), _person(), '{"people": [5]}'])
    v = openpose_files.read_view(d, "body25b")
    assert v.numbers.tolist() == list(range(7))
    assert sorted(v.damaged) == [1, 3, 6]
    assert "holds a JSON list" in v.damaged[1] and "not a flat list of numbers" in v.damaged[3]
    assert "person 0 is a JSON number" in v.damaged[6]
    assert v.people.tolist() == [1, -1, 1, -1, 1, 1, -1]
    assert np.all(np.isnan(v.kp[[1, 3, 6]])) and np.isfinite(v.kp[0, :, 0]).any()


def test_more_than_half_damaged_is_an_error_naming_the_first(tmp_path):
    d = _folder(tmp_path / "v", [_person(), "x", "y", '{"people": 3}'])
    with pytest.raises(ValueError, match=r"cannot read .*: 3 of 4 keypoint files are damaged, e.g. .*v\.0001\.json"):
        openpose_files.read_view(d)


def test_non_finite_values_are_missing_points(tmp_path):
    p = _person()
    p["people"][0]["pose_keypoints_2d"][0] = float("nan")      # Python's json writes NaN
    p["people"][0]["pose_keypoints_2d"][5] = float("inf")
    d = _folder(tmp_path / "v", [p, _person()])
    v = openpose_files.read_view(d, "body25b")
    assert np.all(np.isnan(v.raw[0, :2])) and np.isfinite(v.raw[0, 2:]).all() and not v.damaged


def test_a_view_where_nobody_is_seen_has_no_layout_and_does_not_clash(tmp_path):
    empty = _folder(tmp_path / "e", [{"people": []}] * 3)
    full = _folder(tmp_path / "f", [_person()] * 3)
    ve, vf = openpose_files.read_view(empty), openpose_files.read_view(full)
    assert ve.layout is None and np.all(np.isnan(ve.kp)) and ve.people.tolist() == [0, 0, 0]
    assert openpose_files.check_layouts([ve, vf]) == vf.layout


def _dataset(dirs, F, size=(640, 480)):
    g = zarr.group(store=zarr.storage.MemoryStore())
    g.create_array("frame_index", data=np.arange(F, dtype=np.int32), dimension_names=("frame",))
    g.create_array("clip", data=np.zeros(F, np.int16), dimension_names=("frame",))
    g.create_array("rig", data=np.zeros(F, np.int16), dimension_names=("frame",))
    V = len(dirs)
    g.create_array("K", data=np.tile(np.eye(3), (1, V, 1, 1)), dimension_names=("rig", "view", "r", "c"))
    g.create_array("size", data=np.tile(np.asarray(size, float), (1, V, 1)), dimension_names=("rig", "view", "wh"))
    g.attrs.update({"clips": ["c"], "openpose_json": [str(d) for d in dirs]})
    return g


def test_detector_refuses_views_of_different_layouts_given_by_json_dirs(tmp_path):
    a = _folder(tmp_path / "cam1_json", [_person(25)] * 2)
    b = _folder(tmp_path / "cam2_json", [_person(17)] * 2)
    g = _dataset([a, a], 2)
    with pytest.raises(ValueError, match=r"layouts differ: cam1_json \(body25b\), cam2_json \(coco17\)"):
        openpose.detect({"json_dirs": [str(a), str(b)]}, g, slice(None), {})


def test_detector_flags_points_far_outside_the_image(tmp_path):
    p = _person()
    p["people"][0]["pose_keypoints_2d"][3 * 10] = 1e12
    a = _folder(tmp_path / "cam1_json", [p, _person()])
    b = _folder(tmp_path / "cam2_json", [_person(), _person()])
    ctx = {}
    with pytest.warns(UserWarning, match=r"1 keypoints far outside the image set to NaN \(frames per view: \{'cam1_json': 1\}\)"):
        kp = openpose.detect({}, _dataset([a, b], 2), slice(None), ctx)
    assert ctx["flags"]["openpose"]["outside_image"] == 1
    assert np.nanmax(kp[..., 0]) < 1000


def test_coco_file_errors_name_the_file_and_annotation(tmp_path):
    f = tmp_path / "coco.json"
    f.write_text(json.dumps({"images": [{"id": 1, "file_name": "f_0001.jpg"}],
                             "annotations": [{"image_id": 1, "keypoints": [1, 2, 2] * 17},
                                             {"image_id": 1, "keypoints": [1, 2] * 17}]}))
    with pytest.raises(ValueError, match=r"coco\.json: annotation 1 has 34 keypoint values, not a multiple of 3"):
        openpose_files.read_view(f)
    f.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"cannot read .*coco\.json"):
        openpose_files.read_view(f)
    f.write_text(json.dumps({"images": [{"file_name": "x"}], "annotations": []}))
    with pytest.raises(ValueError, match="every entry of 'images' needs an 'id'"):
        openpose_files.read_view(f)


# ------------------------------------------------------------------------------ mediapipe
class _Stub:
    """Stands in for BlazePose (the optional extra is not installed here): 33 landmarks at the
    image centre; records how many images it saw."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        h, w = rgb.shape[:2]
        return np.column_stack([np.full(33, w / 2), np.full(33, h / 2), np.full(33, 0.9)])


def test_mediapipe_flags_frames_that_do_not_decode(tmp_path, monkeypatch):
    stub = _Stub()
    monkeypatch.setattr(mediapipe, "_model", lambda *a: stub)
    res = fi.run_case("video_shorter_than_json", tmp_path)       # cam04 decodes 12 of 20 frames
    g = zarr.open_group(res["locations"]["dataset"], mode="r")
    ctx = {}
    with pytest.warns(UserWarning, match=r"cam04\.mp4 frames 12, 13, 14, 15, 16, 17, 18, 19 \(8\)"):
        kp = mediapipe.detect({"source": "videos"}, g, slice(None), ctx)
    assert list(ctx["flags"]["mediapipe"]["undecodable"].values()) == [list(range(12, 20))]
    assert np.all(np.isnan(kp[12:, 3])) and np.isfinite(kp[:12, 3, :, 0]).all() and np.isfinite(kp[:, :3, :, 0]).all()


def test_mediapipe_skips_crops_that_were_not_decoded(tmp_path, monkeypatch):
    stub = _Stub()
    monkeypatch.setattr(mediapipe, "_model", lambda *a: stub)
    res = fi.run_case("video_shorter_than_json", tmp_path)
    g = zarr.open_group(res["locations"]["dataset"], mode="r")
    ok = g["image_ok"][:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kp = mediapipe.detect({"source": "images"}, g, slice(None), {})
    assert kp.shape == (fi.FRAMES, 4, J, 3) and stub.calls == int(ok.sum()) == fi.FRAMES * 4 - 8
    assert np.all(np.isnan(kp[~ok])) and np.isfinite(kp[ok][..., 0]).all()
