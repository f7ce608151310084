"""`epipose export`: labels and predictions as world trajectories (pipeline/orchestration/export.py).

Checked against closed forms (axis matrices, the mean over views), against the toy dataset's
ground truth (noise-free 2D: the exported world poses are the ground truth), and on the real
Pose2Sim recording against Pose2Sim's own triangulation (its TRC, read back by read_trc)."""
from __future__ import annotations

import numpy as np
import pytest

from flows.cli import main as cli
from pipeline import orchestration as orch
from pipeline.camera import look_at
from pipeline.data.trc import opensim_axes, read_csv, read_trc, to_opensim_axes
from pipeline.geometry import label_world, world
from pipeline.joints import INDEX, J
from pipeline.orchestration.export import export_store, world_of_rig
from tests.test_stages_standins import toy_config


def test_opensim_axes_closed_forms():
    # Pose2Sim's own turn of its Z-up world: (X, Y, Z) -> (Y, Z, X)
    np.testing.assert_array_equal(opensim_axes("z"), [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(opensim_axes("y"), np.eye(3))
    # an OpenCV camera frame (y down, z forward): image up is OpenSim's up, the camera looks along -Z
    np.testing.assert_array_equal(opensim_axes("camera"), np.diag([1.0, -1.0, -1.0]))
    u = np.array([0.3, -0.2, 2.0])
    M = opensim_axes(u)
    np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(M), 1.0)
    np.testing.assert_allclose(M @ u, [0, np.linalg.norm(u), 0], atol=1e-12)   # up becomes +Y
    with pytest.raises(ValueError, match=r"up must be one of \['camera', 'x', 'y', 'z'\]"):
        to_opensim_axes(np.zeros((1, 3)), "camera0")


def test_views_to_world_is_the_mean_of_the_views_turned_into_the_world():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2, J, 3)) * 100
    X -= X[:, :1]
    R = np.stack([look_at(c, [0, 0, 0])[0] for c in ([3000, 0, 500], [0, 3000, 800], [-3000, 100, 600])])
    P = np.einsum("vab,fjb->fvja", R, X) / 2.0                     # in units of 2 mm
    P[0, 1, 3] += R[1] @ np.array([6.0, 0, 0])                     # view 1 off by 12 mm at one joint
    P[1, 2] = np.nan                                              # view 2 missing in frame 1
    R[0] = np.nan                                                 # camera 0 not placed
    root = np.array([[10.0, 20, 30], [0, 0, 0]])
    W = label_world.views_to_world(P, 2.0, R, root)
    np.testing.assert_allclose(W[1], X[1], atol=1e-9)              # only view 1 left
    np.testing.assert_allclose(W[0, 3], X[0, 3] + root[0] + [6.0, 0, 0], atol=1e-9)  # mean of views 1, 2
    np.testing.assert_allclose(np.delete(W[0], 3, 0), np.delete(X[0] + root[0], 3, 0), atol=1e-9)


def test_without_calibration_the_world_comes_from_the_subject_or_an_error():
    from tests import synth
    X = synth.random_poses(60, seed=3, bone_scale_sd=0.0, area_mm=0.0)          # z up, feet on the floor
    rig = synth.random_rig(3, seed=2)
    Xr = np.einsum("ab,fjb->fja", rig.R[0], X) / 1000.0 + rig.t[0] / 1000.0         # camera 0's frame, metres
    R = rig.R @ rig.R[0].T
    t = (rig.t - np.einsum("vab,b->va", R, rig.t[0])) / 1000.0
    cams = type(rig)(rig.K, R, t, rig.dist, rig.size)
    H = world.stature(X)
    w = world_of_rig(Xr, cams, None, False, None, height_mm=H)
    assert world.stature(w["X"]) == pytest.approx(H, rel=1e-9)                     # the height asked for
    body = np.nanmedian(w["X"][:, INDEX["head"]] - w["X"][:, INDEX["l_ankle"]], 0)
    assert body[2] / np.linalg.norm(body) > 0.9                                    # upright: z up
    assert "height" in w["world"]
    with pytest.raises(ValueError, match=r"--height MM.*--camera-distance A B MM"):
        world_of_rig(Xr, cams, None, False)


@pytest.mark.parametrize("mode", ["rig", "known"])
def test_exported_labels_are_the_ground_truth_in_the_world(tmp_path, mode):
    """gt 2D without noise: every labelled frame, placed in the dataset's world (rig mode: the
    estimated rig moved onto the calibration), is the ground truth pose."""
    cfg = toy_config(tmp_path, **{"label.mode": mode})
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        orch.run_stage(s, cfg, st, progress=False)
    A = orch.plan(cfg, st)
    res = export_store(A["label"].location, tmp_path / "out", units="mm")
    names, X, frames = read_csv(tmp_path / "out" / "labels.csv")
    gt = np.asarray(orch.open_group(A["dataset"].location)["poses3d_world"][:], float)
    lab = orch.open_group(A["label"].location)
    ok = np.asarray(lab["frame_ok"][:], bool)
    assert res["labelled"] == ok.sum() >= 40 and frames.tolist() == list(range(48))
    err = np.linalg.norm(X[ok] - gt[ok], axis=-1)
    assert np.nanmax(err) < 1.0, np.nanmax(err)
    assert np.all(np.isnan(X[~ok]))
    _, T, rate, units = read_trc(tmp_path / "out" / "labels.trc")
    assert rate == 50 and units == "mm"
    np.testing.assert_allclose(T, to_opensim_axes(X, "z"), atol=2e-3, equal_nan=True)   # Z-up world, Y-up TRC


def test_export_refuses_what_it_cannot_place(tmp_path, capsys):
    cfg = toy_config(tmp_path, **{"label.mode": "per-frame"})
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        orch.run_stage(s, cfg, st, progress=False)
    A = orch.plan(cfg, st)
    assert cli(["export", A["label"].location, "--out", str(tmp_path / "o")]) == 2
    assert "label.mode=rig" in capsys.readouterr().err
    assert cli(["export", A["detect2d"].location, "--out", str(tmp_path / "o")]) == 2
    assert "give a label store" in capsys.readouterr().err
    assert cli(["export", A["label"].location, "--out", str(tmp_path / "o"), "--camera-distance", "0", "x", "3"]) == 2
    assert "--camera-distance takes" in capsys.readouterr().err


@pytest.mark.slow
def test_pose2sim_labels_land_on_pose2sims_own_triangulation(tmp_path, shared_data, capsys):
    """The real recording, labelled without its extrinsics, exported through the CLI: in the
    Qualisys world (the rig moved onto the calibration), and upright from the subject's height."""
    from pipeline.data.pose2sim import trc_to_joints17
    root = shared_data / "multiview" / "pose2sim_demo"
    cfg = orch.resolve("cpu", ["dataset.name=pose2sim", f"dataset.root={root}", "dataset.images=false",
                               "detect2d.detector=openpose", f"store.root={tmp_path / 'art'}", "dask.n_workers=0"])
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        orch.run_stage(s, cfg, st, progress=False)
    lab = orch.plan(cfg, st)["label"].location
    assert cli(["export", lab, "--out", str(tmp_path / "cal")]) == 0
    n2, ref, _, _ = read_trc(root / "Demo_0-100.trc")          # Pose2Sim's: Y up, frames 1..100
    G = trc_to_joints17(n2, ref)
    _, T, rate, units = read_trc(tmp_path / "cal" / "labels.trc")
    assert rate == 60 and units == "m" and T.shape == G.shape
    err = np.linalg.norm(T - G, axis=-1)
    assert np.nanmedian(err) < 60, np.nanmedian(err)            # mm, both in the same Y-up world
    H = world.stature(G)
    assert cli(["export", lab, "--out", str(tmp_path / "up"), "--height", f"{H:.1f}"]) == 0
    _, U, _, _ = read_trc(tmp_path / "up" / "labels.trc")
    assert world.stature(U) == pytest.approx(H, rel=1e-3)
    # upright: the same skeleton up to a turn about the vertical and a shift (Kabsch over all joints)
    ok = np.all(np.isfinite(U), -1) & np.all(np.isfinite(G), -1)
    a, b = U[ok] - U[ok].mean(0), G[ok] - G[ok].mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    Q = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
    tilt = np.degrees(np.arccos(np.clip(Q[1, 1], -1, 1)))       # OpenSim Y to Pose2Sim's Y
    assert tilt < 8, tilt                                          # measured 4.5 deg (the body axis)
    assert np.median(np.linalg.norm(a @ Q.T - b, axis=-1)) < 80


def test_trc_layout_is_pose2sims_own(tmp_path, shared_data):
    """Line by line, the header has the layout of the TRC Pose2Sim wrote for its demo (what
    Pose2Sim and OpenSim read): the same keys, a name every three columns, X/Y/Z labels, rows
    of 2 + 3 M fields; read_trc reads both."""
    ref = (shared_data / "multiview" / "pose2sim_demo" / "Demo_0-100.trc").read_text().splitlines()
    X = np.random.default_rng(0).normal(0, 500, (4, J, 3))
    ours = write_trc_lines(tmp_path, X)
    assert ours[0].split("\t")[:3] == ref[0].split("\t")[:3]
    assert ours[1] == ref[1]
    assert len(ours[2].split("\t")) == len(ref[2].split("\t")) == 8
    for lines, M in ((ours, J), (ref, 21)):
        names = lines[3].split("\t")
        assert names[:2] == ["Frame#", "Time"] and len(names) == 2 + 3 * M
        assert all(names[2 + 3 * m] and not names[3 + 3 * m] and not names[4 + 3 * m] for m in range(M))
        assert lines[4].split("\t")[:5] == ["", "", "X1", "Y1", "Z1"]
        assert len(lines[5].split("\t")) == 2 + 3 * M
    n2, Y, rate, units = read_trc(shared_data / "multiview" / "pose2sim_demo" / "Demo_0-100.trc")
    assert len(n2) == 21 and Y.shape == (100, 21, 3) and rate == 60 and units == "m"


def write_trc_lines(tmp_path, X) -> list[str]:
    from pipeline.data.trc import write_trc
    return write_trc(tmp_path / "o.trc", X, 60.0).read_text().splitlines()
