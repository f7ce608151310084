"""`epipose calibrate` on real files: a Pose2Sim project of OpenPose JSON with several people
per view (pipeline/data/crowd.py writes it from a synthetic rig with known truth), a TOML of
intrinsics; the written calibration read back by our own reader."""
import json

import numpy as np
import pytest

from flows.cli import main
from pipeline.camera import rotation_angle_deg
from pipeline.data import crowd
from pipeline.data.calibration import read_toml_calibration
from pipeline.geometry.rig import all_pairs


def pair_errors(R, R_ref):
    p = all_pairs(len(R))
    rel = lambda A: A[p[:, 1]] @ np.swapaxes(A[p[:, 0]], 1, 2)  # noqa: E731
    return rotation_angle_deg(rel(R), rel(R_ref))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    cams, X, kp, truth = crowd.studio_crowd(3, 60, 4, seed=2)
    names = [f"cam{v + 1}" for v in range(cams.V)]
    root = crowd.write_project(tmp_path_factory.mktemp("crowd"), names, cams, kp, truth)
    return root, cams


def test_calibrate_writes_a_calibration_pose2sim_reads(project, tmp_path, capsys):
    root, cams = project
    out = tmp_path / "rig.toml"
    C = cams.centers
    d = np.linalg.norm(C[0] - C[1])
    rc = main(["calibrate", "--keypoints", str(root / "pose"), "--intrinsics", str(root / "calibration" / "calibration.toml"),
               "--out", str(out), "--camera-distance", "0", "1", f"{d:.3f}",
               "--reference", str(root / "calibration" / "calibration.toml")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "rotation error vs reference" in text
    names, est = read_toml_calibration(out)
    assert names == ["cam1", "cam2", "cam3", "cam4"]
    np.testing.assert_array_equal(est.K, cams.K)
    assert pair_errors(est.R, cams.R).max() < 0.3
    Ce = est.centers
    np.testing.assert_allclose(np.linalg.norm(Ce[:, None] - Ce[None], axis=-1),
                               np.linalg.norm(C[:, None] - C[None], axis=-1), rtol=0.01, atol=5.0)
    # upright: camera heights above the floor (the up direction from a crude procedural walker
    # is measured 2.5 degrees off, cameras 4-5 m away: 200 mm)
    np.testing.assert_allclose(Ce[:, 2], C[:, 2], atol=300.0)
    rep = json.loads((tmp_path / "rig_report.json").read_text())
    assert [c["placed"] for c in rep["cameras"]] == [True] * 4
    assert rep["frames_labelled_share"] > 0.8 and rep["people"] >= 3
    assert (tmp_path / "rig_rig.png").stat().st_size > 10_000


def test_a_view_out_of_sync_is_refused_then_corrected(tmp_path, capsys):
    cams, X, kp, truth = crowd.studio_crowd(3, 60, 4, seed=2)
    names = [f"cam{v + 1}" for v in range(cams.V)]
    root = crowd.write_project(tmp_path / "p", names, cams, kp, truth, offsets=[0, 0, 3, 0])
    args = ["calibrate", "--keypoints", str(root / "pose"), "--intrinsics", str(root / "calibration" / "calibration.toml"),
            "--out", str(tmp_path / "o.toml")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cam3 +3" in err[0] and "--sync correct" in err[0]
    assert not (tmp_path / "o.toml").exists()
    assert main(args + ["--sync", "correct"]) == 0
    rep = json.loads((tmp_path / "o_report.json").read_text())
    assert [c["sync_offset_frames"] for c in rep["cameras"]] == [0, 0, 3, 0]


def test_a_refused_rig_writes_nothing(project, tmp_path, capsys):
    root, cams = project
    bad = tmp_path / "pose"
    for v, d in enumerate(sorted((root / "pose").iterdir())):  # every view from other moments
        (bad / d.name).mkdir(parents=True)
        files = sorted(d.glob("*.json"))
        order = np.random.default_rng(v).permutation(len(files))
        for f, k in zip(files, order):
            (bad / d.name / f.name).write_text(files[k].read_text())
    rc = main(["calibrate", "--keypoints", str(bad), "--intrinsics", str(root / "calibration" / "calibration.toml"),
               "--out", str(tmp_path / "x.toml")])
    assert rc == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("x*"))


def test_a_camera_that_cannot_be_placed_is_left_out_with_a_warning(project, tmp_path, capsys):
    root, cams = project
    bad = tmp_path / "pose"
    for v, d in enumerate(sorted((root / "pose").iterdir())):  # cam3 mirrored: no rig explains it
        (bad / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.json")):
            data = json.loads(f.read_text())
            if v == 2:
                for p in data["people"]:
                    k = np.array(p["pose_keypoints_2d"], float).reshape(-1, 3)
                    k[:, 0] = np.where(k[:, 2] > 0, cams.size[v, 0] - k[:, 0], 0.0)
                    p["pose_keypoints_2d"] = k.ravel().tolist()
            (bad / d.name / f.name).write_text(json.dumps(data))
    out = tmp_path / "rig.toml"
    rc = main(["calibrate", "--keypoints", str(bad), "--intrinsics", str(root / "calibration" / "calibration.toml"),
               "--out", str(out), "--sync", "off"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "cam3: LEFT OUT" in cap.out
    err = [line for line in cap.err.splitlines() if "left out" in line]
    assert len(err) == 1 and "cam3" in err[0] and err[0].startswith("epipose calibrate: warning:")
    names, est = read_toml_calibration(out)
    assert names == ["cam1", "cam2", "cam4"]
    assert pair_errors(est.R, cams.R[[0, 1, 3]]).max() < 0.3
    rep = json.loads((tmp_path / "rig_report.json").read_text())
    assert [c["placed"] for c in rep["cameras"]] == [True, True, False, True]
    assert rep["cameras"][2]["status"] != "ok"


@pytest.mark.parametrize("args, msg", [
    (["--videos", "v"], "--detector"),
    (["--videos", "no/such/folder", "--detector", "mediapipe"], "not a folder"),
    (["--camera-distance", "0", "x", "100"], "camera indices"),
    (["--camera-distance", "0", "7", "100"], "0..3"),
    (["--out", "."], "is a folder"),
    (["--out", "rig.txt"], ".toml"),
])
def test_mistakes_are_one_line_and_status_2(project, tmp_path, capsys, args, msg):
    root, _ = project
    base = ["calibrate", "--intrinsics", str(root / "calibration" / "calibration.toml")]
    if "--out" not in args:
        base += ["--out", str(tmp_path / "o.toml")]
    if "--videos" not in args:
        base += ["--keypoints", str(root / "pose")]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
