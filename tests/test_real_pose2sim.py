"""Pose2Sim projects: calibration readers (TOML, Qualisys), the adapter's store, the demo."""
import numpy as np
import pytest
import zarr

from pipeline.camera import project
from pipeline.data import get_adapter
from pipeline.data.calibration import read_qca_calibration, read_toml_calibration
from pipeline.data.pose2sim import trc_to_joints17
from pipeline.detectors import get_detector
from pipeline.data.trc import read_trc
from pipeline.joints import INDEX, J
from pipeline.geometry.triangulate import triangulate_dlt

TOML = """
[cam_1]
name = "camA"
size = [ 640.0, 480.0]
matrix = [ [ 800.0, 0.0, 320.0], [ 0.0, 810.0, 240.0], [ 0.0, 0.0, 1.0]]
distortions = [ -0.01, 0.002, 0.0001, 0.0002]
rotation = [ 0.1, -0.2, 0.3]
translation = [ 0.5, -0.25, 3.0]
fisheye = false

[metadata]
adjusted = false
"""


def test_toml_reader_converts_rodrigues_and_metres(tmp_path):
    import cv2
    p = tmp_path / "c.toml"
    p.write_text(TOML)
    names, cams = read_toml_calibration(p)
    assert names == ["camA"] and cams.V == 1
    np.testing.assert_allclose(cams.R[0], cv2.Rodrigues(np.array([0.1, -0.2, 0.3]))[0], atol=1e-12)  # OpenCV
    np.testing.assert_allclose(cams.t[0], [500.0, -250.0, 3000.0])
    np.testing.assert_allclose(cams.dist[0], [-0.01, 0.002, 0.0001, 0.0002, 0.0])
    p.write_text(TOML.replace("fisheye = false", "fisheye = true"))
    with pytest.raises(ValueError, match="fisheye"):
        read_toml_calibration(p)
    p.write_text(TOML.replace('rotation = [ 0.1, -0.2, 0.3]\n', ""))
    with pytest.raises(ValueError, match="lacks"):
        read_toml_calibration(p)
    p.write_text("[x]\na = 1\n")
    with pytest.raises(ValueError, match="no camera sections"):
        read_toml_calibration(p)


def test_qualisys_reader_matches_pose2sims_toml(shared_data):
    cal = shared_data / "multiview" / "pose2sim_demo" / "calibration"
    n1, a = read_toml_calibration(cal / "Calib_qca.toml")
    n2, b = read_qca_calibration(cal / "Calib.qca.txt")
    assert n1 == n2 == ["cam01", "cam02", "cam03", "cam04"]
    # Pose2Sim's converter wrote the TOML from this .qca (values / 64, R = diag(1,-1,-1) M, t = -R C)
    for k in ("K", "R", "t", "dist"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-9, atol=1e-6)


@pytest.fixture(scope="module")
def demo_store(shared_data):
    g = zarr.group(store=zarr.storage.MemoryStore())
    get_adapter("pose2sim")({"root": str(shared_data / "multiview" / "pose2sim_demo"), "frames": [0, 40],
                             "crop_size": 64}, g, progress=False)
    return g


def test_adapter_writes_the_dataset_contract(demo_store):
    g = demo_store
    F, V = 40, 4
    shapes = {"keypoints2d_gt": (F, V, J, 3), "K": (1, V, 3, 3), "R": (1, V, 3, 3), "t": (1, V, 3),
              "dist": (1, V, 5), "size": (1, V, 2), "rig": (F,), "subject": (F,), "clip": (F,), "split": (F,),
              "frame_index": (F,), "crop_boxes": (F, V, 4), "images": (F, V, 64, 64, 3)}
    for k, s in shapes.items():
        assert g[k].shape == s, k
        assert g[k].metadata.dimension_names is not None and len(g[k].metadata.dimension_names) == len(s)
    assert np.all(np.isnan(g["keypoints2d_gt"][:]))          # no ground-truth 2D in a Pose2Sim project
    assert "poses3d_world" not in g
    # views of different resolutions keep their own sizes (cams 3-4 are 1088 wide)
    assert g["size"][0].tolist() == [[1080, 1920], [1080, 1920], [1088, 1920], [1088, 1920]]
    assert g.attrs["openpose_format"] == "body25b" and len(g.attrs["openpose_json"]) == V
    assert 200 < g.attrs["mean_bone_mm"] < 320
    assert g["images"][5].mean() > 20                         # crops hold picture, not black
    # the openpose detector plug-in finds its JSON through the store's attrs
    kp = get_detector("openpose")({}, g, slice(10, 20), {})
    assert kp.shape == (10, V, J, 3) and np.isnan(kp[..., 0]).mean() < 0.05


def test_calibration_and_keypoints_agree_with_pose2sims_triangulation(demo_store, shared_data):
    g = demo_store
    from pipeline.camera import Cameras, undistort_points
    cams = Cameras(*(np.asarray(g[k][0]) for k in ("K", "R", "t", "dist", "size")))
    kp = get_detector("openpose")({}, g, slice(None), {}).astype(np.float64)
    F, V = kp.shape[:2]
    xn = np.stack([undistort_points(kp[:, v, :, :2].reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, J, 2)
                   for v in range(V)], 1)
    w = np.where(np.isfinite(xn[..., 0]), np.nan_to_num(kp[..., 2]), 0)
    X, ok = triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), cams.R, cams.t)
    # reprojection: Pose2Sim logs 8-12 px for this demo; our DLT with all views ~14 px median
    err = np.concatenate([np.linalg.norm(project(X, cams.K[v], cams.R[v], cams.t[v], cams.dist[v])
                                         - kp[:, v, :, :2], axis=-1)[w[:, v] > 0] for v in range(V)])
    assert np.nanmedian(err) < 20
    # Pose2Sim's own TRC (Y-up, metres): wrists and ankles within a few mm of ours
    names, T, _, _ = read_trc(shared_data / "multiview" / "pose2sim_demo" / "Demo_0-100.trc")
    Tj = trc_to_joints17(names, T)[:F]
    sel = [INDEX[n] for n in ("l_wrist", "r_wrist", "l_ankle", "r_ankle")]
    d = np.linalg.norm(Tj[:, sel] - X[:, sel][..., [1, 2, 0]], axis=-1)
    assert np.nanmedian(d) < 10.0


def test_bad_project_folders(tmp_path):
    g = zarr.group(store=zarr.storage.MemoryStore())
    with pytest.raises(ValueError, match="does not exist"):
        get_adapter("pose2sim")({"root": str(tmp_path / "nope")}, g, progress=False)
    with pytest.raises(ValueError, match="calibration"):
        get_adapter("pose2sim")({"root": str(tmp_path)}, g, progress=False)
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "c.toml").write_text(TOML)
    with pytest.raises(ValueError, match="neither"):
        get_adapter("pose2sim")({"root": str(tmp_path)}, g, progress=False)
    with pytest.raises(ValueError, match="unknown configuration"):
        get_adapter("pose2sim")({"rooot": 1}, g, progress=False)


def test_demo_is_assembled_from_the_wheels_offline(tmp_path, monkeypatch):
    """fetch_demo unpacks the members it needs from cached wheels (no network when cached)."""
    import zipfile

    from pipeline.data import pose2sim
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "pose2sim-0.2.6-py3-none-any.whl", "w") as z:
        z.writestr("Pose2Sim/Demo/calib-2d/Calib_qca.toml", TOML)
        z.writestr("Pose2Sim/Demo/pose-2d/cam1_json/cam01.0000.json", '{"people": []}')
        z.writestr("Pose2Sim/Demo/pose-3d/Demo_0-100.trc", "x")
        z.writestr("Pose2Sim/other/file.py", "")
    with zipfile.ZipFile(wheels / "pose2sim-0.10.49-py3-none-any.whl", "w") as z:
        z.writestr("Pose2Sim/Demo_SinglePerson/videos/cam01.mp4", b"\x00")
    monkeypatch.setattr(pose2sim.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    # these stand-in wheels are not PyPI's: pin their own checksums (test_data_faults.py checks the pins)
    monkeypatch.setattr(pose2sim, "DEMO_WHEEL_SHA256", {v: pose2sim.fetch.sha256(next(wheels.glob(f"pose2sim-{v}-*")))
                                                        for v in ("0.2.6", "0.10.49")})
    root = pose2sim.fetch_demo(tmp_path / "cache", progress=False)
    assert (root / "calibration" / "Calib_qca.toml").read_text() == TOML
    assert (root / "pose" / "cam1_json" / "cam01.0000.json").is_file()
    assert (root / "videos" / "cam01.mp4").is_file() and not (root / "other").exists()
    assert pose2sim.fetch_demo(tmp_path / "cache", progress=False) == root     # cached: returned as is


def test_rig_from_openpose_alone_agrees_with_qualisys(shared_data):
    """End to end on real footage: rig mode without the calibration, compared with Qualisys.
    Reference: the demo's Qualisys calibration (bench/real.py measures 1.34 deg, 12.0 mm)."""
    from pipeline.geometry import labels
    from pipeline.camera import Cameras, rotation_angle_deg
    from pipeline.evaluation.metrics import pmpjpe
    from pipeline.geometry.rig import all_pairs
    g = zarr.group(store=zarr.storage.MemoryStore())
    get_adapter("pose2sim")({"root": str(shared_data / "multiview" / "pose2sim_demo"), "images": False}, g,
                            progress=False)
    ref = Cameras(*(np.asarray(g[k][0]) for k in ("K", "R", "t", "dist", "size")))
    kp = get_detector("openpose")({}, g, slice(None), {})
    est, _ = labels.calibrate(kp, ref.without_extrinsics(), {"mode": "rig"})
    p = all_pairs(ref.V)
    rel = lambda R: R[p[:, 1]] @ np.swapaxes(R[p[:, 0]], 1, 2)  # noqa: E731
    err = rotation_angle_deg(rel(est.R), rel(ref.R))
    assert err.mean() < 2.5 and err.max() < 4.0, err
    lr = labels.label_chunk(kp, est, {"mode": "rig"})
    lk = labels.label_chunk(kp, ref, {"mode": "known"})
    ok = lr["frame_ok"] & lk["frame_ok"]
    assert ok.sum() > 90
    e = pmpjpe(lr["labels_cam"][ok].reshape(-1, J, 3).astype(float), lk["labels_cam_mm"][ok].reshape(-1, J, 3).astype(float))
    assert np.nanmean(e) < 15.0
