"""OpenPose / COCO JSON import: layouts mapped onto the 17 joints, person selection, bad files."""
import json
import warnings

import numpy as np
import pytest
import zarr

from pipeline.detectors import get_detector
from pipeline.data.openpose import LAYOUTS, guess_layout, load_keypoints, mapping_for, to_joints17
from pipeline.joints import INDEX, J


def _person(layout: str, rng, offset=(0.0, 0.0), scale=1.0) -> np.ndarray:
    """A plausible upright person in `layout`: [K,3] (x, y, conf)."""
    base = {"nose": (0, -80), "l_eye": (8, -85), "r_eye": (-8, -85), "l_ear": (15, -82), "r_ear": (-15, -82),
            "l_shoulder": (40, -50), "r_shoulder": (-40, -50), "l_elbow": (55, 0), "r_elbow": (-55, 0),
            "l_wrist": (60, 40), "r_wrist": (-60, 40), "l_hip": (25, 50), "r_hip": (-25, 50),
            "l_knee": (28, 130), "r_knee": (-28, 130), "l_ankle": (30, 210), "r_ankle": (-30, 210),
            "upper_neck": (0, -60), "head_top": (0, -110), "neck": (0, -50), "mid_hip": (0, 50),
            "l_big_toe": (35, 225), "l_small_toe": (40, 222), "l_heel": (28, 215),
            "r_big_toe": (-35, 225), "r_small_toe": (-40, 222), "r_heel": (-28, 215)}
    names = LAYOUTS[layout]
    xy = np.array([base[n] for n in names], float) * scale + np.array(offset) + rng.normal(0, 0.5, (len(names), 2))
    return np.column_stack([xy, rng.uniform(0.5, 0.9, len(names))])


def _write_folder(path, frames: list[list[np.ndarray]], stem="cam01"):
    path.mkdir(parents=True, exist_ok=True)
    for f, people in enumerate(frames):
        data = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": p.ravel().tolist()} for p in people]}
        (path / f"{stem}.{f:04d}.json").write_text(json.dumps(data))


def test_mapping_rules_against_the_documented_table():
    rng = np.random.default_rng(0)
    for layout in LAYOUTS:
        p = _person(layout, rng)
        names = LAYOUTS[layout]
        k = {n: p[i] for i, n in enumerate(names)}
        out = to_joints17(p, names)
        # closed forms of the rules: midpoints, the mean of four, direct copies
        np.testing.assert_allclose(out[INDEX["pelvis"], :2], (k["l_hip"][:2] + k["r_hip"][:2]) / 2)
        np.testing.assert_allclose(out[INDEX["thorax"], :2], (k["l_shoulder"][:2] + k["r_shoulder"][:2]) / 2)
        np.testing.assert_allclose(out[INDEX["spine"], :2], np.mean([k[n][:2] for n in
                                   ("l_hip", "r_hip", "l_shoulder", "r_shoulder")], axis=0))
        np.testing.assert_allclose(out[INDEX["neck"], :2], k["nose"][:2])
        head = k["head_top"][:2] if "head_top" in k else (k["l_ear"][:2] + k["r_ear"][:2]) / 2
        np.testing.assert_allclose(out[INDEX["head"], :2], head)
        for n in ("r_knee", "l_wrist", "r_ankle", "l_shoulder"):
            np.testing.assert_allclose(out[INDEX[n]], k[n])
        assert out[INDEX["pelvis"], 2] == min(k["l_hip"][2], k["r_hip"][2])
        assert len(mapping_for(names)) == J


def test_missing_source_point_makes_the_joint_missing():
    rng = np.random.default_rng(1)
    p = _person("coco17", rng)
    p[LAYOUTS["coco17"].index("l_hip")] = np.nan
    out = to_joints17(p, LAYOUTS["coco17"])
    assert np.all(np.isnan(out[INDEX["pelvis"]])) and np.all(np.isnan(out[INDEX["l_hip"]]))
    assert np.all(np.isfinite(out[INDEX["r_hip"]]))


def test_layout_guess_tells_body25_from_body25b():
    rng = np.random.default_rng(2)
    assert guess_layout([_person("body25", rng) for _ in range(5)]) == "body25"
    assert guess_layout([_person("body25b", rng) for _ in range(5)]) == "body25b"
    assert guess_layout([_person("coco17", rng)]) == "coco17"
    with pytest.raises(ValueError, match="layout"):
        guess_layout([np.zeros((18, 3))])


def _dataset(dirs, F):
    g = zarr.group(store=zarr.storage.MemoryStore())
    g.create_array("frame_index", data=np.arange(F, dtype=np.int32), dimension_names=("frame",))
    g.create_array("clip", data=np.zeros(F, np.int16), dimension_names=("frame",))
    g.create_array("K", data=np.tile(np.eye(3), (1, len(dirs), 1, 1)), dimension_names=("rig", "view", "r", "c"))
    g.attrs.update({"clips": ["c"], "openpose_json": [str(d) for d in dirs]})
    return g


def test_detector_reads_folders_selects_the_person_and_flags_gaps(tmp_path):
    rng = np.random.default_rng(3)
    F = 6
    big = [_person("body25b", rng, offset=(500, 500), scale=2.0) for _ in range(F)]
    small = [_person("body25b", rng, offset=(100, 300), scale=0.7) for _ in range(F)]
    frames0 = [[small[f], big[f]] for f in range(F)]
    frames0[2] = []                                  # a frame with nobody
    _write_folder(tmp_path / "cam01_json", frames0)
    (tmp_path / "cam01_json" / "cam01.0004.json").unlink()   # a missing file
    _write_folder(tmp_path / "cam02_json", [[big[f]] for f in range(F)], stem="cam02")
    g = _dataset([tmp_path / "cam01_json", tmp_path / "cam02_json"], F)
    ctx = {}
    with pytest.warns(UserWarning, match="without a file"):
        kp = get_detector("openpose")({}, g, slice(None), ctx)
    assert kp.shape == (F, 2, J, 3)
    flags = ctx["flags"]["openpose"]
    assert {k: flags[k] for k in ("missing_file", "no_person", "damaged_file")} == \
        {"missing_file": 1, "no_person": 1, "damaged_file": 0}
    # people per file (-1: no file), and the share of frames with more than one person
    assert flags["people_count"] == [[2, 1], [2, 1], [0, 1], [2, 1], [-1, 1], [2, 1]]
    assert flags["multi_person"] == {"cam01_json": pytest.approx(4 / 6)}
    assert np.all(np.isnan(kp[2, 0])) and np.all(np.isnan(kp[4, 0]))
    expect = to_joints17(big[0], LAYOUTS["body25b"])
    np.testing.assert_allclose(kp[0, 0], expect, atol=1e-3)     # the larger person was chosen
    np.testing.assert_allclose(kp[0, 1], expect, atol=1e-3)
    # which person of each file was read (the second of cam01's, the only one of cam02's; -1: none)
    np.testing.assert_array_equal(ctx["arrays"]["person_index"], [[1, 0], [1, 0], [-1, 0], [1, 0], [-1, 0], [1, 0]])
    # chunks agree with the whole (track mode replays from the clip's start)
    for person in ("largest", "track"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            whole = get_detector("openpose")({"person": person}, g, slice(0, F), {})
            part = get_detector("openpose")({"person": person}, g, slice(3, F), {})
        np.testing.assert_array_equal(whole[3:], part)


def test_track_follows_the_person_it_started_with(tmp_path):
    rng = np.random.default_rng(4)
    F = 5
    a = [_person("coco17", rng, offset=(300, 400), scale=1.5) for _ in range(F)]
    # the second person grows larger than the first from frame 2 on
    b = [_person("coco17", rng, offset=(900, 400), scale=1.0 + 0.5 * f) for f in range(F)]
    _write_folder(tmp_path / "v", [[a[f], b[f]] for f in range(F)])
    _, largest, _ = load_keypoints(tmp_path / "v", person="largest")
    _, track, _ = load_keypoints(tmp_path / "v", person="track")
    assert np.all(np.abs(track[:, INDEX["pelvis"], 0] - 300) < 20)
    assert np.all(np.abs(largest[3:, INDEX["pelvis"], 0] - 900) < 20)


def test_coco_annotation_file(tmp_path):
    rng = np.random.default_rng(5)
    p = [_person("coco17", rng, offset=(200, 200)) for _ in range(3)]
    data = {"images": [{"id": 10 + i, "file_name": f"frame_{i:03d}.jpg"} for i in range(3)],
            "annotations": [{"image_id": 10 + i, "keypoints": np.column_stack([p[i][:, :2], np.full(17, 2)]).ravel().tolist(),
                             "score": 0.9} for i in (0, 2)]}
    f = tmp_path / "coco.json"
    f.write_text(json.dumps(data))
    numbers, kp, layout = load_keypoints(f)
    assert layout == "coco17" and numbers.tolist() == [0, 1, 2]
    assert np.all(np.isnan(kp[1])) and np.allclose(kp[2, INDEX["r_knee"], :2], p[2][14, :2])
    assert np.allclose(kp[0, :, 2], 0.9)


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_keypoints(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .json"):
        load_keypoints(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.0000.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_keypoints(tmp_path / "bad")
    g = _dataset([tmp_path / "empty"], 2)
    g.attrs["openpose_json"] = None
    with pytest.raises(ValueError, match="json_dirs"):
        get_detector("openpose")({}, g, slice(None), {})


def test_pose2sim_demo_json(shared_data):
    d = shared_data / "multiview" / "pose2sim_demo" / "pose"
    for cam in ("cam01_json", "cam04_json"):
        numbers, kp, layout = load_keypoints(d / cam)
        assert layout == "body25b" and numbers.tolist() == list(range(100))
        assert np.isnan(kp[..., 0]).mean() < 0.05
        # the person fills a good part of the portrait 1080x1920 frame
        h = np.nanmax(kp[..., 1], axis=1) - np.nanmin(kp[..., 1], axis=1)
        assert np.median(h) > 500
