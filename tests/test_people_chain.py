"""A multi-person Pose2Sim project through the stages (dataset -> detect2d -> label): the
adapter associates the people (person_index, the crops follow the subject), the openpose
detector reads the subject and every associated person (people2d), the label stage calibrates
from all of them and says which detection each label came from; a view's frame offset is
corrected at the dataset. Synthetic crowd with known truth (pipeline/data/crowd.py)."""
import numpy as np
import pytest

from pipeline import orchestration as stages
from pipeline.camera import rotation_angle_deg
from pipeline.data import crowd
from pipeline.geometry.rig import all_pairs
from pipeline.orchestration import ArtifactStore, open_group


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    cams, X, kp, truth = crowd.studio_crowd(3, 60, 4, seed=2)
    names = [f"cam{v + 1}" for v in range(cams.V)]
    root = crowd.write_project(tmp_path_factory.mktemp("crowd") / "proj", names, cams, kp, truth,
                               offsets=[0, 0, 2, 0])
    return root, cams, truth


def test_the_chain_labels_the_subject_without_mixing_people(project, tmp_path):
    root, cams, truth = project
    cfg = stages.resolve("cpu", {"dataset.name": "pose2sim", "dataset.root": str(root), "dataset.images": False,
                                 "dataset.frame_offsets": [0, 0, 2, 0], "detect2d.detector": "openpose",
                                 "label.mode": "rig", "store.root": str(tmp_path / "store")})
    st = ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        stages.run_stage(s, cfg, st, progress=False)
    plan = stages.plan(cfg, st)
    ds = open_group(plan["dataset"].location)
    det = open_group(plan["detect2d"].location)
    lab = open_group(plan["label"].location)
    index = np.asarray(ds["person_index"][:])
    F, V, P = index.shape
    assert P >= 3 and ds.attrs["frame_offsets"] == [0, 0, 2, 0]
    # the frames the dataset keeps are the instants every view can show after the shift
    frames = np.asarray(ds["frame_index"][:])
    f, v = np.nonzero(index[:, :, 0] >= 0)
    who = truth[frames[f], v, index[f, v, 0]]
    assert np.mean(who == 0) >= 0.98
    np.testing.assert_array_equal(np.asarray(lab["person_index"][:]), index[:, :, 0])
    np.testing.assert_array_equal(np.asarray(det["person_index"][:]), index[:, :, 0])
    # the rig's diagnostics in the label store (issue 12: pairs, loop closure, per-camera RMS, share labelled)
    diag = lab.attrs["calibration"]["0"]
    assert len(diag["rig_pair_inliers"]) == len(all_pairs(V)) and np.nanmax(diag["rig_pair_loop_deg"]) < 5.0
    assert len(diag["ba_rms_px_camera"]) == V and diag["camera_status"] == ["ok"] * V
    assert diag["frames_labelled_share"] == pytest.approx(float(np.asarray(lab["frame_ok"][:]).mean()), abs=1e-4)
    assert det["people2d"].shape == (F, V, P, 17, 3) and det["keypoints2d"].shape == (F, V, 17, 3)
    np.testing.assert_array_equal(np.isnan(np.asarray(det["keypoints2d"][:])),
                                  np.isnan(np.asarray(det["people2d"][:, :, 0])))
    R = np.asarray(lab["R_est"][0])
    p = all_pairs(V)
    rel = lambda A: A[p[:, 1]] @ np.swapaxes(A[p[:, 0]], 1, 2)  # noqa: E731
    assert rotation_angle_deg(rel(R), rel(cams.R)).max() < 0.3
    assert np.asarray(lab["frame_ok"][:]).mean() > 0.7


def test_frame_offsets_auto_estimates_and_applies_them(project, tmp_path):
    root, cams, truth = project  # cam3 written 2 frames late
    cfg = stages.resolve("cpu", {"dataset.name": "pose2sim", "dataset.root": str(root), "dataset.images": False,
                                 "dataset.frame_offsets": "auto", "store.root": str(tmp_path / "store")})
    st = ArtifactStore(cfg["store"]["root"])
    with pytest.warns(UserWarning, match=r"frame_offsets 'auto'.*cam3 \+2"):
        stages.run_stage("dataset", cfg, st, progress=False)
    ds = open_group(stages.plan(cfg, st)["dataset"].location)
    assert ds.attrs["frame_offsets"] == [0, 0, 2, 0] and ds.attrs["frame_offsets_source"] == "estimated"
