"""Human3.6M adapter on a tiny fixture written in exactly the public layout."""
import shutil

import cv2
import numpy as np
import pytest
import zarr
from scipy.spatial.transform import Rotation

from pipeline.camera import look_at
from pipeline.data import h36m
from pipeline.data.contract import check_dataset

CAMS = ["54138969", "55011271", "58860488", "60457274"]
SIZE = 160
ACTION = "Walking 1"


def _camera(c, s):
    az = np.deg2rad(45 + 90 * c + 3 * s)
    C = np.array([5000 * np.cos(az), 5000 * np.sin(az), 1600.0])
    R, _ = look_at(C, np.array([0, 0, 1000.0]))
    K = np.array([[180.0 + c, 0, 80 - c], [0, 181.0, 79.0 + c], [0, 0, 1]])
    dist = np.array([-0.1, 0.05, 1e-3, -1e-3, 0.01])  # OpenCV order k1 k2 p1 p2 k3
    return K, R, C, dist


def _w0(subjects=range(1, 12)):
    """The release's <w0>: per camera and subject (angles, centre), then per camera intrinsics.
    Angles by scipy: world-to-camera R = Rx Ry Rz is the intrinsic 'XYZ' Euler rotation."""
    w = np.zeros(264 + 36)
    for c in range(4):
        for s in subjects:
            K, R, C, dist = _camera(c, s)
            e0 = 6 * (11 * c + s - 1)
            w[e0:e0 + 3] = Rotation.from_matrix(R).as_euler("XYZ")
            w[e0 + 3:e0 + 6] = C
        K, _, _, dist = _camera(c, 1)
        i0 = 264 + 9 * c
        w[i0:i0 + 9] = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], dist[0], dist[1], dist[4], dist[2], dist[3]]
    return w


def _poses(F, seed):
    rng = np.random.default_rng(seed)
    base = np.zeros((32, 3))
    base[:, 2] = 950
    z17 = np.array([950, 950, 520, 90, 950, 520, 90, 1170, 1420, 1530, 1720, 1400, 1120, 880, 1400, 1120, 880.0])
    x17 = np.array([0, -90, -95, -100, 90, 95, 100, 0, 0, 0, 0, 180, 220, 230, -180, -220, -230.0])
    base[h36m.H36M_17, 0] = x17
    base[h36m.H36M_17, 2] = z17
    P = np.repeat(base[None], F, 0)
    P[:, :, 0] += np.linspace(-400, 400, F)[:, None]
    P += rng.normal(0, 10, P.shape)
    return P


def _write_cdf(path, P):
    import cdflib
    from cdflib.cdfwrite import CDF
    path.parent.mkdir(parents=True, exist_ok=True)
    c = CDF(str(path))
    c.write_var({"Variable": "Pose", "Data_Type": 44, "Num_Elements": 1, "Rec_Vary": True,
                 "Dim_Sizes": list(P.reshape(len(P), 96).shape)}, var_data=P.reshape(1, len(P), 96).astype(np.float32))
    c.close()
    assert cdflib.CDF(str(path)).varget("Pose").shape == (1, len(P), 96)


def _write_video(path, P, c, s, n=None):
    """Black frames with a white dot at the projected head (OpenCV's projection)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    K, R, C, dist = _camera(c, s)
    head = P[:, 15].astype(np.float64)
    uv, _ = cv2.projectPoints(head, cv2.Rodrigues(R)[0], -R @ C, K, dist)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 50, (SIZE, SIZE))
    for f in range(n or len(P)):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        cv2.circle(img, tuple(int(round(x)) for x in uv[min(f, len(P) - 1), 0]), 3, (255, 255, 255), -1)
        w.write(img)
    w.release()


def make_fixture(root, frames={"S1": 12, "S9": 70}, action=ACTION):
    root.mkdir(parents=True, exist_ok=True)
    idx = "".join(f"<item>{c}</item>" for c in CAMS)
    w = " ".join(f"{v:.17g}" for v in _w0())
    (root / "metadata.xml").write_text(f'<?xml version="1.0"?>\n<db><dbcameras><index2id>{idx}</index2id>'
                                       f"</dbcameras><w0>[{w}]</w0></db>\n")
    poses = {}
    for subj, F in frames.items():
        s = int(subj[1:])
        P = _poses(F, s)
        poses[subj] = P
        _write_cdf(root / subj / "MyPoseFeatures" / "D3_Positions" / f"{action}.cdf", P)
        for c, cam in enumerate(CAMS):
            _write_video(root / subj / "Videos" / f"{action}.{cam}.mp4", P, c, s)
    return poses


CFG = {"train_subjects": ["S1"], "test_subjects": ["S9"], "crop_size": 64, "train_every": 5}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("h36m")
    poses = make_fixture(root)
    g = zarr.open_group(root / "out.zarr", mode="w")
    h36m.build({**CFG, "root": str(root)}, g, progress=False)
    return root, poses, g


def test_contract_and_protocol(fixture):
    root, poses, g = fixture
    assert check_dataset(g, require_3d=True) == []
    split, fi, subj = g["split"][:], g["frame_index"][:], g["subject"][:]
    # S1 every 5th of 12 frames; S9 every 64th of 70
    np.testing.assert_array_equal(fi[split == 0], [0, 5, 10])
    np.testing.assert_array_equal(fi[split == 1], [0, 64])
    assert g.attrs["subjects"] == ["S1", "S9"] and g.attrs["actions"]["S1/Walking 1"] == "Walking"
    assert g["K"].shape == (2, 4, 3, 3) and np.array_equal(g["rig"][:], subj)
    np.testing.assert_allclose(g["poses3d_world"][:][split == 1], poses["S9"][[0, 64]][:, h36m.H36M_17], atol=1e-3)


def _project_point_radial(P, R, T, f, c, k, p):
    """The release's projection, as 3d-pose-baseline ships it (cameras.py), written here
    independently of the adapter: P [N,3] world, R world->camera, T the camera centre, f, c [2],
    k [3] radial, p [2] tangential, in <w0>'s order."""
    X = R.dot(P.T - T.reshape(3, 1))
    XX = X[:2] / X[2]
    r2 = XX[0] ** 2 + XX[1] ** 2
    radial = 1 + np.einsum("ij,ij->j", np.tile(k.reshape(3, 1), (1, len(P))), np.array([r2, r2 ** 2, r2 ** 3]))
    tan = p[0] * XX[1] + p[1] * XX[0]
    XXX = XX * np.tile(radial + tan, (2, 1)) + np.outer(np.array([p[1], p[0]]), r2)
    return (f.reshape(2, 1) * XXX + c.reshape(2, 1)).T


def test_cameras_decode_and_gt_2d_is_the_release_projection(fixture):
    # reference: the release's formula (project_point_radial) with the cameras the fixture
    # encoded (scipy Euler angles); OpenCV's model differs in its tangential terms
    root, poses, g = fixture
    kp, subj, fi = g["keypoints2d_gt"][:], g["subject"][:], g["frame_index"][:]
    worst_cv = 0.0
    for row in range(len(kp)):
        s = int(g.attrs["subjects"][subj[row]][1:])
        X = poses[f"S{s}"][fi[row]][h36m.H36M_17].astype(np.float32).astype(np.float64)
        for c in range(4):
            K, R, C, dist = _camera(c, s)
            ref = _project_point_radial(X, R, C, np.diag(K)[:2], K[:2, 2], dist[[0, 1, 4]], dist[[2, 3]])
            assert np.abs(ref - kp[row, c, :, :2]).max() < 1e-3
            cv, _ = cv2.projectPoints(X, cv2.Rodrigues(R)[0], -R @ C, K, dist)
            worst_cv = max(worst_cv, np.abs(cv[:, 0] - kp[row, c, :, :2]).max())
    assert worst_cv > 5e-3  # the test can tell the two models apart
    assert np.all(g["size"][:] == SIZE)


def test_release_projection_reproduces_d2_positions(shared_data):
    """Human3.6M's own 2D (D2_Positions, `part`) from its camera-frame 3D (`S`) and the camera
    of metadata.xml, on 4 real frames: to 1e-3 px; OpenCV's model with the same numbers is off."""
    from pipeline.camera import project_camera
    base = shared_data / "h36m_samples"
    d = np.load(base / "test_h36m_body3d.npz")
    subjects = [n.split("/")[0] for n in d["imgname"]]
    cams = [n.split("/")[1].split(".")[1] for n in d["imgname"]]
    rigs = h36m.read_metadata(base / "metadata.xml", sorted(set(subjects)), CAMS)
    for i, (s, cam) in enumerate(zip(subjects, cams)):
        cm = rigs[s]
        v = CAMS.index(cam)
        Xc = d["S"][i, :, :3] * 1000.0
        uv = h36m.project_release(Xc, cm.K[v], cm.dist[v])
        assert np.abs(uv - d["part"][i, :, :2]).max() < 1e-3, (s, cam)
        # OpenCV's model with the same coefficients does not (its tangential terms differ)
        cv = project_camera(Xc, cm.K[v], cm.dist[v])
        assert np.abs(cv - d["part"][i, :, :2]).max() > 1e-2


def test_action_aliases_and_filter(tmp_path):
    """S1's 'TakingPhoto' is 'Photo' (as the standard loaders map it); the filter takes either."""
    assert h36m.action_name("TakingPhoto 1") == "Photo" and h36m.action_name("WalkingDog") == "WalkDog"
    assert h36m.action_name("Walking 1") == "Walking"
    root = tmp_path / "h"
    make_fixture(root, {"S1": 6, "S9": 3}, action="TakingPhoto 1")
    for actions in (None, ["Photo"], ["Photo 1"], ["TakingPhoto 1"]):
        g = zarr.open_group(tmp_path / f"{actions}.zarr", mode="w")
        h36m.build({**CFG, "root": str(root), "actions": actions}, g, progress=False)
        assert g.attrs["actions"] == {"S1/TakingPhoto 1": "Photo", "S9/TakingPhoto 1": "Photo"}
    with pytest.raises(ValueError, match="no actions found"):
        h36m.build({**CFG, "root": str(root), "actions": ["Walking"]}, zarr.open_group(tmp_path / "n.zarr", mode="w"),
                   progress=False)


def test_crops_follow_the_store_convention(fixture):
    # the white dot drawn at the head's projection shows up at (uv - box_xy) * S / box_w
    root, poses, g = fixture
    imgs, kp, boxes = g["images"][:], g["keypoints2d_gt"][:], g["crop_boxes"][:]
    S = imgs.shape[2]
    for f in range(len(imgs)):
        for v in range(4):
            gray = imgs[f, v].astype(float).sum(-1)
            ys, xs = np.nonzero(gray > 0.5 * gray.max())
            w = gray[ys, xs]
            centre = np.array([np.sum(xs * w), np.sum(ys * w)]) / w.sum()
            expect = (kp[f, v, h36m.JOINTS.index("head"), :2] - boxes[f, v, :2]) * S / boxes[f, v, 2]
            assert np.linalg.norm(centre - expect) < 1.0, (f, v, centre, expect)


def test_resume_skips_written_sequences(fixture, tmp_path):
    root, poses, g = fixture
    out = zarr.open_group(tmp_path / "r.zarr", mode="w")
    cfg = {**CFG, "root": str(root)}
    h36m.build(cfg, out, progress=False)
    assert out.attrs["sequences_done"] == 2
    # S9's sequence lost: a rerun rewrites it and leaves S1's alone
    keep = out["images"][:]
    rows = out["split"][:] == 1
    imgs = out["images"][:]
    imgs[rows] = 0
    imgs[~rows] = 7  # marks S1's crops: a rerun must not touch them
    out["images"][:] = imgs
    out.attrs["sequences_done"] = 1
    h36m.build(cfg, out, progress=False)
    after = out["images"][:]
    assert np.all(after[~rows] == 7) and np.array_equal(after[rows], keep[rows])


def test_bad_inputs_name_the_file(tmp_path):
    root = tmp_path / "h"
    make_fixture(root, {"S1": 6, "S9": 6})
    cfg = {**CFG, "root": str(root)}
    out = zarr.open_group(tmp_path / "o.zarr", mode="w")
    vids = root / "S9" / "Videos"
    # a video with fewer frames than the others: S9's sequence skipped, named in a warning
    bad = vids / f"{ACTION}.{CAMS[2]}.mp4"
    shutil.copy(bad, tmp_path / "keep.mp4")
    _write_video(bad, _poses(6, 9), 2, 9, n=2)
    with pytest.warns(UserWarning, match=rf"S9/{ACTION} skipped.*{CAMS[2]}\.mp4: frame counts differ"):
        h36m.build(cfg, out, progress=False)
    assert set(out["subject"][:].tolist()) == {0} and "S9/Walking 1" in out.attrs["skipped"][0]
    # an unreadable video (older copies of S11 'Directions' on 54138969 are such)
    bad.write_bytes(b"not a video" * 50)
    with pytest.warns(UserWarning, match=rf"S9/{ACTION} skipped.*{CAMS[2]}\.mp4: unreadable video"):
        h36m.build(cfg, zarr.open_group(tmp_path / "o2.zarr", mode="w"), progress=False)
    # views that the calibration does not have: a configuration error, not a damaged file
    bad.unlink()
    with pytest.raises(ValueError, match=r"3 camera views.*calibration has 4 cameras"):
        h36m.build(cfg, out, progress=False)
    shutil.copy(tmp_path / "keep.mp4", bad)
    shutil.copy(bad, vids / f"{ACTION}.12345678.mp4")
    with pytest.raises(ValueError, match=r"5 camera views"):
        h36m.build(cfg, out, progress=False)
    (vids / f"{ACTION}.12345678.mp4").unlink()
    # a broken pose file: S1 skipped; with S9's video broken too, nothing is left: an error
    (root / "S1" / "MyPoseFeatures" / "D3_Positions" / f"{ACTION}.cdf").write_bytes(b"\x00" * 64)
    with pytest.warns(UserWarning, match=r"S1/Walking 1 skipped.*Walking 1\.cdf: cannot read"):
        h36m.build(cfg, zarr.open_group(tmp_path / "o3.zarr", mode="w"), progress=False)
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(ValueError, match=r"none of the 2 sequences could be read.*cannot read"):
        with pytest.warns(UserWarning):
            h36m.build(cfg, zarr.open_group(tmp_path / "o4.zarr", mode="w"), progress=False)


def test_pss_bench_reads_the_papers_poses(tmp_path):
    """bench/pss.py --source h36m: the paper's protocol from the pose files alone (no video):
    train frames every 5th, test every 64th, each pose in each camera's frame; closed form
    against the fixture's own cameras (X_cam = R (X - C))."""
    from bench.pss import h36m_poses

    root = tmp_path / "h36m"
    poses = make_fixture(root)
    for d in root.glob("S*/Videos"):
        shutil.rmtree(d)  # PSS needs no video
    tr, te, what = h36m_poses(root, subjects=(["S1"], ["S9"]))
    assert tr.shape == (3 * 4, 17, 3) and te.shape == (2 * 4, 17, 3) and "Human3.6M" in what

    def in_cameras(P, s):
        return np.stack([(_camera(c, s)[1] @ (P[:, h36m.H36M_17] - _camera(c, s)[2])[..., None])[..., 0]
                         for c in range(4)], 1).reshape(-1, 17, 3)

    # the pose files hold float32: 1e-3 mm
    np.testing.assert_allclose(tr, in_cameras(poses["S1"][::5], 1), atol=1e-3)
    np.testing.assert_allclose(te, in_cameras(poses["S9"][::64], 9), atol=1e-3)
    with pytest.raises(ValueError, match="no D3_Positions pose files for the test subjects"):
        h36m_poses(root, subjects=(["S1"], ["S11"]))
