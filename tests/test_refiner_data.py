"""The refinement unit's training data: cross-fitting folds, the training subjects' 3D in the
SS network's units, a motion-capture library seen by the dataset's cameras."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.joints import INDEX, J, PARENTS, ROOT, mean_bone_length
from pipeline.training import refiner_data


def test_crossfit_folds_deal_people():
    folds = refiner_data.crossfit_folds(np.array([3, 3, 1, 5, 7, 1]), 2)
    assert [f.tolist() for f in folds] == [[1, 5], [3, 7]]
    assert len(refiner_data.crossfit_folds(np.array([0, 1]), 5)) == 2  # at most one fold per person
    with pytest.raises(ValueError, match="two training people"):
        refiner_data.crossfit_folds(np.array([2, 2, 2]), 2)


def test_library_files_names_the_problem(tmp_path):
    assert refiner_data.library_files({}) == []
    with pytest.raises(ValueError, match="not a folder"):
        refiner_data.library_files({"mocap_dir": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="no files match"):
        refiner_data.library_files({"mocap_dir": str(tmp_path), "mocap_glob": "*.bvh"})
    with pytest.raises(ValueError, match="do not exist"):
        refiner_data.library_files({"mocap_files": [str(tmp_path / "a.asf"), str(tmp_path / "a.amc")]})


def test_library_poses_seen_by_the_cameras(shared_data):
    """BVH clips of a folder turned to the dataset's cameras: the head is above the pelvis in
    each camera's image (-y for a level camera, R0 maps world z to camera -y), root-relative,
    in mean bones (median bone length about 1)."""
    folder = shared_data / "motion" / "cmu" / "bvh11_subject131"
    files = sorted(folder.glob("*.bvh"))[:1]
    assert files, folder
    R0 = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    cfg = {"mocap_dir": str(folder), "mocap_glob": files[0].name, "mocap_fps": 5.0, "mocap_headings": 2}
    poses, what = refiner_data.library_poses(cfg, np.stack([R0, R0]), seed=0)
    assert "1 BVH files" in what and poses.shape[1:] == (J, 3)
    np.testing.assert_allclose(poses[:, ROOT], 0, atol=1e-6)
    assert np.median(poses[:, INDEX["head"], 1]) < -2  # head up: -y, several bones above the pelvis
    bones = np.linalg.norm(poses[:, 1:] - poses[:, PARENTS[1:]], axis=-1)
    assert 0.6 < np.median(bones) < 1.6
    assert np.isfinite(poses).all()
    np.testing.assert_allclose(mean_bone_length(poses), 1.0, rtol=1e-5)  # each pose in its own mean bones



def test_clean_poses_are_in_their_own_mean_bones():
    """The SS network's unit is each pose's own mean bone length (the labels' canonical scale):
    two people of different sizes in the same pose give the same clean target (a unit cannot
    learn a size no pose in mean bones shows), root at 0, mean bone 1 by the closed form
    (16 bones summed / 16); a missing joint leaves its bones out of the mean; no bone: NaN."""
    rng = np.random.default_rng(0)
    pose = rng.normal(0, 300, (J, 3)) + [100.0, -50.0, 4000.0]
    small, tall = 0.85 * pose, 1.2 * pose + [10.0, 20.0, 30.0]
    a, b = refiner_data.in_mean_bones(np.stack([small, tall]))
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(a[ROOT], 0)
    bones = np.linalg.norm(a[1:] - a[PARENTS[1:]], axis=-1)
    assert np.isclose(bones.sum() / 16, 1.0)
    gap = pose.copy()
    gap[INDEX["l_wrist"]] = np.nan
    g = refiner_data.in_mean_bones(gap)
    ok = np.isfinite(g).all(-1)
    keep = ok[1:] & ok[PARENTS[1:]]
    assert np.isclose(np.linalg.norm(g[1:] - g[PARENTS[1:]], axis=-1)[keep].mean(), 1.0)
    assert np.isnan(refiner_data.in_mean_bones(np.full((J, 3), np.nan))).all()
