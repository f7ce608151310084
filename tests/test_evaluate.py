"""Evaluation (pipeline/evaluate.py): closed-form errors, unit handling, masks, Parquet, and
ground truth put in camera frames (checked against cv2.projectPoints' convention via camera.py)."""
import numpy as np
import pytest

from pipeline.data import contract
from pipeline.evaluation import scoring as ev
from pipeline.evaluation import pss
from tests import synth
from pipeline.joints import J


@pytest.fixture(scope="module")
def data():
    F, V = 40, 2
    gt = synth.random_poses(F * V, seed=4).reshape(F, V, J, 3) + [0, 0, 4000]  # camera frame, absolute
    actions = ["walk"] * 20 + ["sit"] * 20
    return gt, actions


@pytest.fixture(scope="module")
def reference():
    return pss.build_reference(synth.random_poses(1500, seed=7), ks=(50, 100), n_init=1)


def test_perfect_and_closed_form_offset(data, reference):
    gt, actions = data
    s, df = ev.score(gt - gt[..., :1, :], gt, actions=actions, reference=reference)
    o = s["overall"]
    assert o["mpjpe"] == pytest.approx(0, abs=1e-9) and o["pck"] == 1 and o["mpss_k50"] == 1
    assert o["n_poses"] == 80 and len(df) == 80
    # every non-root joint off by (30, 40, 0): 50 mm on 16 of 17 joints (the root is the origin)
    pred = gt - gt[..., :1, :]
    pred[..., 1:, :] += [30, 40, 0]
    s, _ = ev.score(pred, gt, actions=actions)
    assert s["overall"]["mpjpe"] == pytest.approx(50 * 16 / 17)
    assert s["overall"]["pck"] == 1.0
    s, _ = ev.score(pred, gt, pck_threshold=45.0)
    assert s["overall"]["pck"] == pytest.approx(1 / 17)


def test_scale_units_and_nmpjpe(data):
    gt, actions = data
    rr = gt - gt[..., :1, :]
    # self-supervised units: mean bones, one global scalar brings them to mm
    s, _ = ev.score(rr / 240.0, gt, units="bones", mean_bone_mm=240.0)
    assert s["overall"]["mpjpe"] == pytest.approx(0, abs=1e-9) and s["scale_mm"] == 240.0
    # a wrong global scale: MPJPE grows, NMPJPE (per-pose optimal scale) and PSS do not
    s, _ = ev.score(1.3 * rr, gt)
    assert s["overall"]["mpjpe"] > 50
    assert s["overall"]["nmpjpe"] == pytest.approx(0, abs=1e-9)
    assert s["overall"]["npck"] == 1.0
    with pytest.raises(ValueError, match="mean_bone_mm"):
        ev.score(rr, gt, units="bones")
    with pytest.raises(ValueError, match="units"):
        ev.score(rr, gt, units="cm")


def test_per_action(data):
    gt, actions = data
    pred = gt - gt[..., :1, :]
    pred[:20, :, 1:] += [0, 0, 10]   # walk: 10 mm on 16 joints
    pred[20:, :, 1:] += [0, 0, 40]   # sit: 40 mm
    s, df = ev.score(pred, gt, actions=actions)
    assert s["per_action"]["walk"]["mpjpe"] == pytest.approx(160 / 17)
    assert s["per_action"]["sit"]["mpjpe"] == pytest.approx(640 / 17)
    assert s["overall"]["mpjpe"] == pytest.approx(400 / 17)
    assert s["action_mean"]["mpjpe"] == pytest.approx(400 / 17)
    assert set(df["action"]) == {"walk", "sit"}


def test_mask_and_incomplete_poses(data):
    gt, _ = data
    pred = gt - gt[..., :1, :]
    pred[..., 1:, :] += [0, 10, 0]
    mask = np.ones(gt.shape[:-1], bool)
    mask[0, 0, 5] = False
    pred[0, 0, 5] = np.nan            # NaN only on a joint that is not scored: allowed
    pred[1, 1, 3] += 5000             # a huge error hidden by the mask
    mask[1, 1, 3] = False
    s, df = ev.score(pred, gt, mask)
    row = df[(df.frame == 0) & (df.view == 0)].iloc[0]
    assert row["mpjpe"] == pytest.approx(10 * 15 / 16)   # 16 scored joints, root at 0
    assert not row["complete"] and np.isnan(row["nmpjpe"])
    assert s["overall"]["n_complete"] == 78
    assert df["mpjpe"].max() == pytest.approx(10.0 * 16 / 17)
    # ground truth NaN is masked out by itself
    g2 = gt.copy()
    g2[2, 0, 7] = np.nan
    _, df2 = ev.score(gt - gt[..., :1, :], g2)
    assert not df2[(df2.frame == 2) & (df2.view == 0)].iloc[0]["complete"]


def test_bad_input(data):
    gt, actions = data
    pred = gt - gt[..., :1, :]
    bad = pred.copy()
    bad[3, 1, 4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN.*frame 3, view 1, joint 4"):
        ev.score(bad, gt)
    with pytest.raises(ValueError, match="joints"):
        ev.score(pred[..., :16, :], gt[..., :16, :])
    with pytest.raises(ValueError, match="differ in shape"):
        ev.score(pred[:, :1], gt)
    with pytest.raises(ValueError, match="actions"):
        ev.score(pred, gt, actions=actions[:5])
    with pytest.raises(ValueError, match="mask"):
        ev.score(pred, gt, mask=np.ones((3, 3, J), bool))


def test_parquet_round_trip(data, reference, tmp_path):
    gt, actions = data
    rng = np.random.default_rng(0)
    pred = gt - gt[..., :1, :] + rng.normal(0, 40, gt.shape)
    s, df = ev.score(pred, gt, actions=actions, reference=reference, model="SS")
    p = ev.write_per_frame(df, tmp_path / "per_frame.parquet")
    back = ev.read_per_frame(p)
    assert list(back.columns) == list(df.columns)
    np.testing.assert_allclose(back["mpjpe"], df["mpjpe"])
    assert (back["model"] == "SS").all()
    # the summary is the mean of the table, and mPSS the mean of its PSS column
    assert s["overall"]["mpss_k100"] == pytest.approx(df["pss_k100"].mean())
    assert s["overall"]["pmpjpe"] == pytest.approx(df["pmpjpe"].mean())
    assert 0 < s["overall"]["mpss_k100"] <= s["overall"]["mpss_k50"] + 0.1


def test_ground_truth_from_store():
    import zarr

    from pipeline.camera import world_to_camera

    F, V = 6, 2
    X = synth.random_poses(F, seed=3).astype(np.float32)
    cams = synth.ring_rig([0, 90])
    g = zarr.group()
    g.create_array("poses3d_world", data=X)
    g.create_array("rig", data=np.zeros(F, np.int16))
    g.create_array("R", data=cams.R[None])
    g.create_array("t", data=cams.t[None])
    g.create_array("split", data=np.array([0, 0, 1, 1, 1, 1], np.int16))
    g.create_array("clip", data=np.array([0, 0, 0, 1, 1, 1], np.int16))
    g.create_array("subject", data=np.array([0, 0, 1, 1, 1, 1], np.int16))
    g.attrs.update(clips=["c0", "c1"], actions={"c0": "walk", "c1": "sit"}, subjects=["S1", "S9"],
                   mean_bone_mm=250.0)
    r = contract.ground_truth(g)
    np.testing.assert_array_equal(r["frame_ids"], [2, 3, 4, 5])
    assert r["actions"] == ["walk", "sit", "sit", "sit"] and r["subjects"] == ["S9"] * 4
    np.testing.assert_allclose(r["gt"][:, 1], world_to_camera(X[2:].astype(float), cams.R[1], cams.t[1]))
    # PSS reference poses: the training frames in every camera's frame
    refp = pss.reference_poses(g)
    assert refp.shape == (4, J, 3)
    np.testing.assert_allclose(refp[2], world_to_camera(X[1:2].astype(float), cams.R[0], cams.t[0])[0])
    rr = r["gt"] - r["gt"][..., :1, :]
    s, df = ev.score_dataset(rr / 250.0, g, units="bones")
    assert s["overall"]["mpjpe"] == pytest.approx(0, abs=1e-6)
    assert list(df["frame_id"].unique()) == [2, 3, 4, 5]
