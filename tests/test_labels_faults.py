"""Bad 2D input to the label geometry: every case of tests/faults_geometry.py gives its clear
error or its warning and correct numbers for the rest (checked against the synthetic truth:
the true rotations, the true poses); configuration validation; the consensus of views against
outliers inside the image; left-out cameras through a store as the label stage keeps them."""
import warnings

import cv2
import numpy as np
import pytest
import zarr

from pipeline import camera
from pipeline.geometry import label_settings, labels, rig
from pipeline.evaluation import metrics
from tests import synth
from pipeline.joints import J, ROOT

from tests import faults_geometry as fg


@pytest.mark.parametrize("name", sorted(fg.CASES))
def test_fault_case(name):
    ok, what = fg.run_case(name)
    assert ok, what


def _calibrate(kp, cams, cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est, diag = labels.calibrate(kp, cams, cfg)
    return est, diag, [str(w.message) for w in caught if issubclass(w.category, labels.LabelWarning)]


def test_a_given_calibration_that_disagrees_with_the_keypoints_is_named():
    """Known mode: each pair's pooled joints under the given rig's own essential matrix against
    a fitted one (median Sampson distance, Hartley & Zisserman eq. 11.9). The true rig: no word
    (the two agree to the noise); camera 2 tilted by 1 degree about its own centre: its pairs
    named, and camera 2. The sync check trusts the given rig only for the pairs it explains. (A roll about the optical axis moves the joints little and is not seen.)"""
    cams = fg.rig()
    kp = synth.observe(synth.random_poses(300, seed=4), cams, 2.0, seed=5)
    _, diag, msgs = _calibrate(kp, cams, {"mode": "known"})
    assert msgs == [] and np.all(diag["baseline_given_px"] < 1.2 * diag["baseline_epipolar_px"] + 0.1)
    assert diag["sync_given"].all()  # the sync check scores every pair under the given rig
    R, t = cams.R.copy(), cams.t.copy()
    Q = cv2.Rodrigues(np.array([np.radians(1.0), 0.0, 0.0]))[0]  # about the camera's x axis
    R[2], t[2] = Q @ R[2], Q @ t[2]
    off = camera.Cameras(cams.K, R, t, cams.dist, cams.size)
    _, diag, msgs = _calibrate(kp, off, {"mode": "known"})
    assert len(msgs) == 1 and "camera 2 is the likely culprit" in msgs[0], msgs
    named = diag["baseline_given_px"] > 2 * diag["baseline_epipolar_px"]
    assert named.any() and np.all((diag["baseline_pairs"][named] == 2).any(1))
    # a pair the given rig does not explain: the sync check fits every pair, and stays quiet
    np.testing.assert_array_equal(diag["sync_pairs"], diag["baseline_pairs"])
    assert not diag["sync_given"].any() and not diag["sync_relative"].any()


def test_wild_point_is_missing_counted_and_the_rig_stays_exact():
    # the case at σ = 0: one finite joint at 1e12 px; the rig must still equal the
    # truth (closed form, up to the gauge) and the point must be counted, not used
    cams = fg.rig()
    kp = synth.observe(synth.random_poses(120, seed=2), cams, 0.0)
    kp[10, 0, 5, 0] = 1e12
    kp[11, 3, 2, 1] = -5e4
    est, diag, msgs = _calibrate(kp, cams.without_extrinsics(), {"mode": "rig", "threshold_px": 1.0})
    assert diag["keypoints_outside"].tolist() == [1, 0, 0, 1]
    assert any("camera 0: 1 keypoint(s)" in m and "frame 10, joint 5" in m for m in msgs)
    assert np.all(fg.relative_rotation_errors(est.R, cams.R) < 1e-4)
    out = labels.label_chunk(kp, est, {"mode": "rig"})
    assert out["outside"][10].tolist() == [1, 0, 0, 0] and out["outside"][11].tolist() == [0, 0, 0, 1]
    assert out["outside"].sum() == 2 and out["frame_ok"].all()
    # the margin is documented: a point just outside the image (within 0.5 x its size) is kept
    assert not label_settings.outside_image(np.array([[[[1400.0, -450.0]]]]), np.array([[1000.0, 1000.0]]), 0.5).any()
    assert label_settings.outside_image(np.array([[[[1501.0, 0.0]]]]), np.array([[1000.0, 1000.0]]), 0.5).all()


@pytest.mark.parametrize("kind", ["random", "swaps"])
def test_calibration_not_thrown_by_outliers_inside_the_image(kind):
    # a few percent of random or left/right-swapped joints: rotations as close to the truth as clean
    cams = fg.rig()
    P = fg.smooth_motion(300, seed=4)
    clean = synth.observe(P, cams, 2.0, seed=5)
    if kind == "random":
        bad = synth.observe(P, cams, 2.0, seed=5, outlier_rate=0.05, outlier_px=250.0)
    else:
        from pipeline.joints import FLIP
        bad = clean.copy()
        sel = np.random.default_rng(6).random(bad.shape[:2]) < 0.08
        bad[sel] = bad[sel][:, FLIP]
    e_clean = fg.relative_rotation_errors(labels.calibrate(clean, cams.without_extrinsics())[0].R, cams.R)
    e_bad = fg.relative_rotation_errors(labels.calibrate(bad, cams.without_extrinsics())[0].R, cams.R)
    assert e_clean.max() < 0.3
    assert e_bad.max() < max(0.3, 2 * e_clean.max()), (e_bad, e_clean)


def test_view_consensus_removes_outliers_and_leaves_clean_labels_alone():
    cams = fg.rig()
    P = synth.random_poses(300, seed=8)
    gt = camera.world_to_camera(P[:, None], cams.R[None], cams.t[None])
    gt = gt - gt[:, :, ROOT:ROOT + 1]
    # σ = 0 and σ = 5 px: nothing is rejected, labels are bit-identical with the consensus off
    for sigma in (0.0, 5.0):
        kp = synth.observe(P, cams, sigma, seed=9)
        a = labels.label_chunk(kp, cams, {"mode": "known"})
        b = labels.label_chunk(kp, cams, {"mode": "known", "outlier_px": 0.0})
        assert a["outliers"].sum() == 0
        np.testing.assert_array_equal(a["labels_cam"], b["labels_cam"])
    # 3 % of joints 200 px off: the consensus finds them and the labels come back near clean
    kp = synth.observe(P, cams, 2.0, seed=9, outlier_rate=0.03, outlier_px=200.0)
    a = labels.label_chunk(kp, cams, {"mode": "known"})
    b = labels.label_chunk(kp, cams, {"mode": "known", "outlier_px": 0.0})
    ea = np.nanmean(metrics.pmpjpe(a["labels_cam"].astype(float), gt, a["valid"]))
    eb = np.nanmean(metrics.pmpjpe(b["labels_cam"].astype(float), gt, b["valid"]))
    clean = labels.label_chunk(synth.observe(P, cams, 2.0, seed=9), cams, {"mode": "known"})
    e0 = np.nanmean(metrics.pmpjpe(clean["labels_cam"].astype(float), gt, clean["valid"]))
    assert ea < 1.2 * e0 and eb > 2 * e0, (ea, eb, e0)
    assert a["frame_ok"].mean() > 0.97 > b["frame_ok"].mean()
    # the rejected observations are the displaced ones (those far off, not the small draws)
    far = np.linalg.norm(kp[..., :2] - synth.observe(P, cams, 2.0, seed=9)[..., :2], axis=-1) > 60
    assert a["outliers"].sum() >= 0.9 * far.sum()


def test_left_out_camera_survives_the_store_and_gets_no_labels():
    # as the label stage does: calibrate, keep R_est/t_est in a zarr array (NaN for the
    # camera left out), read the rig back, label chunks with it
    cams = fg.rig()
    P = fg.smooth_motion(240, seed=1)
    kp = synth.observe(P, cams, 2.0, seed=2)
    kp[:, 1] = np.nan
    est, diag, msgs = _calibrate(kp, cams.without_extrinsics(), {"mode": "rig"})
    assert diag["cameras_used"].tolist() == [True, False, True, True]
    assert diag["camera_status"][1].startswith("sees nobody") and diag["camera_status"][0] == "ok"
    assert any("camera 1 is left out" in m for m in msgs)
    g = zarr.group(store=zarr.storage.MemoryStore())
    for k in camera.FIELDS:
        g.create_array(k + "_est", shape=(1, cams.V) + getattr(est, k).shape[1:], dtype="f8", fill_value=np.nan)
        g[k + "_est"][0] = getattr(est, k)
    back = camera.Cameras.from_store(g, 0, "_est")
    assert np.isnan(back.R[1]).all() and np.isfinite(back.R[[0, 2, 3]]).all()
    parts = [labels.label_chunk(kp[s:s + 100], back, {"mode": "rig"}) for s in range(0, 240, 100)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    assert out["labels_cam"].shape == (240, 4, J, 3) and out["pair_used"].shape == (240, 6)
    assert not out["valid"][:, 1].any() and np.isnan(out["labels_cam"][:, 1]).all()
    assert out["frame_ok"].all() and not out["pair_used"][:, [0, 3, 4]].any()  # pairs 0-1, 1-2, 1-3
    gt = camera.world_to_camera(P[:, None], cams.R[None], cams.t[None])
    gt = gt - gt[:, :, ROOT:ROOT + 1]
    e = metrics.pmpjpe(out["labels_cam"].astype(float), gt, out["valid"])
    assert np.nanmean(e) < 15.0
    # known mode: the same, with the dataset's extrinsics
    est_k, diag_k, _ = _calibrate(kp, cams, {"mode": "known"})
    assert np.isnan(est_k.R[1]).all() and diag_k["cameras_used"].tolist() == [True, False, True, True]
    out_k = labels.label_chunk(kp, est_k, {"mode": "known"})
    assert not out_k["valid"][:, 1].any() and np.isnan(out_k["labels_cam_mm"][:, 1]).all()


def test_calibrate_rig_leaves_out_what_it_cannot_place():
    # rig.calibrate_rig: camera 3's pairs all fail (it sees 6 joints per frame in a line) -> NaN pose, reason
    cams = fg.rig()
    kp = synth.observe(synth.random_poses(80, seed=3), cams, 0.0)
    kp[:, 3, :, 1] = 500.0
    xn = np.stack([camera.normalise_points(kp[:, v, :, :2], cams.K[v]) for v in range(4)], 1)
    w = np.where(np.isfinite(xn[..., 0]), 1.0, 0.0)
    R, t, info = rig.calibrate_rig(xn, w, cams.K, threshold_px=1.0, ba_frames=50)
    assert info["placed"].tolist() == [True, True, True, False] and np.isnan(R[3]).all()
    assert "pair 0-3: degenerate" in info["unplaced"][3]
    assert np.all(fg.relative_rotation_errors(R[:3], cams.R[:3]) < 1e-4)


def test_rotation_fit_closed_form():
    # a camera turned about camera 0's centre: its rays are camera 0's rotated by the relative
    # rotation R1 R0ᵀ exactly (σ = 0): zero residual angles and that rotation
    cams = fg._truth_for("pure_rotation_rig")
    kp = synth.observe(synth.random_poses(30, seed=1), cams, 0.0)
    xn = np.stack([camera.normalise_points(kp[:, v, :, :2], cams.K[v]) for v in range(2)], 1)
    ok = np.isfinite(xn).all((1, 3))
    R, ang = rig.rotation_fit(xn[:, 0][ok], xn[:, 1][ok])
    np.testing.assert_allclose(R, cams.R[1] @ cams.R[0].T, atol=1e-9)
    # the angles are atan2(|a x b|, a . b), exact near 0 (arccos of a . b resolved no finer
    # than sqrt(2 eps) ~ 2e-8 rad, and 4e-8 came out on AVX-512)
    assert ang.max() < 1e-12


@pytest.mark.parametrize("gap", [10.0, 20.0])
def test_narrow_genuine_baselines_are_not_refused(gap):
    # cameras 10-20° apart (0.9-1.7 m at 5 m) are genuine pairs: no refusal, every camera used
    cams = synth.random_rig(4, seed=3, min_gap_deg=gap, max_gap_deg=gap + 1)
    kp = synth.observe(fg.smooth_motion(240, seed=2), cams, 2.0, seed=3)
    for mode in ("rig", "per-frame"):
        est, diag, msgs = _calibrate(kp[:60] if mode == "per-frame" else kp, cams.without_extrinsics(), {"mode": mode})
        ratio = diag["baseline_rotation_px"] / diag["baseline_epipolar_px"]
        assert diag["cameras_used"].all() and not msgs and ratio.min() > 1.5 * labels.DEFAULTS["no_baseline_ratio"]


def test_too_few_cameras_name_every_camera_and_why():
    cams = fg.rig()
    kp = synth.observe(synth.random_poses(50, seed=0), cams, 1.0)
    kp[:, 0] = np.nan
    kp[:, 1, :, 2] = 0.0
    kp[:, 2, :, :2] = 1e9
    with pytest.raises(ValueError) as e, pytest.warns(labels.LabelWarning, match="camera 2: 850 keypoint"):
        labels.calibrate(kp, cams, {"mode": "known"})
    msg = str(e.value)
    assert "1 of 4 cameras remain" in msg and "\n" not in msg
    assert "camera 0: sees nobody" in msg and "850 below min_confidence" in msg and "850 outside the image" in msg
    assert "camera 3" not in msg


def test_names_appear_in_messages():
    cams = fg.rig()
    kp = synth.observe(fg.smooth_motion(120), cams, 2.0, seed=1)
    kp[:, 2] = kp[:, 1]
    with pytest.raises(ValueError, match="cam02 and cam03 show the same keypoints"):
        labels.calibrate(kp, cams, {"mode": "rig"}, names=["cam01", "cam02", "cam03", "cam04"])
    with pytest.raises(ValueError, match="3 camera names for 4"):
        labels.calibrate(kp, cams, {"mode": "rig"}, names=["a", "b", "c"])


BAD_VALUES = {
    "mode": "rigg", "triangulation": "svd", "pairs": "some", "n_neighbours": 0, "max_pair_angle_deg": 200.0,
    "min_confidence": -0.1, "estimator": "homography", "ransac": "lmeds", "threshold_px": 0.0,
    "min_inlier_ratio": 1.5, "inlier_px": -1, "min_joints": 18, "max_lr_ratio": 0.9, "max_loop_deg": -1,
    "seed": -1, "max_pool_points": 5, "ba": "yes", "ba_frames": 0, "ba_loss": "l2", "ba_f_scale_px": 0,
    "ba_max_nfev": 0.5, "chunk_frames": 0, "outlier_px": -1.0, "image_margin": -0.5, "no_baseline_ratio": -1,
    "sync": "fix", "sync_max_lag": 0, "sync_frames": 4, "sync_min_ratio": 0.5, "ba_max_seconds": 0,
    "gate_loop_deg": -1, "gate_initial_px": 0, "gate_rms_px": -2.0, "gate_min_kept": 1.5, "gate_focal_ratio": 0.9,
}


def test_every_key_is_validated():
    assert set(BAD_VALUES) == set(labels.DEFAULTS)
    labels.resolve_cfg({})  # the defaults pass
    for key, bad in BAD_VALUES.items():
        with pytest.raises(ValueError, match=f"^label: {key} must be") as e:
            labels.resolve_cfg({key: bad})
        assert "\n" not in str(e.value)
    for key in ("n_neighbours", "seed", "chunk_frames"):
        with pytest.raises(ValueError, match="integer"):
            labels.resolve_cfg({key: "3"})
    with pytest.raises(ValueError, match=r"label: mode must be one of \['known', 'per-frame', 'rig'\], got 'rigg'"):
        labels.resolve_cfg({"mode": "rigg"})
    assert labels.resolve_cfg({"sync_max_lag": 4.0})["sync_max_lag"] == 4  # integral floats become ints


# ------------------------------------------------------------------ the real Pose2Sim recording

@pytest.fixture(scope="module")
def pose2sim(shared_data):
    from pipeline.data import get_adapter
    from pipeline.data.calibration import read_toml_calibration
    from pipeline.detectors import get_detector
    root = shared_data / "multiview" / "pose2sim_demo"
    g = zarr.group(store=zarr.storage.MemoryStore())
    get_adapter("pose2sim")({"root": str(root), "images": False}, g, progress=False)
    ref = camera.Cameras(*(np.asarray(g[k][0]) for k in camera.FIELDS))
    names, _ = read_toml_calibration(root / "calibration" / "Calib_qca.toml")
    kp = np.asarray(get_detector("openpose")({}, g, slice(None), {}), dtype=np.float64)
    return kp, ref, names


def test_real_recording_a_late_view_is_refused_with_its_calibration_given(pose2sim):
    """Known mode, cam03's keypoints 3 frames late: the given rig no longer explains its pairs,
    so the sync check fits every pair and refuses cam03 at +3 (scoring the other pairs under the
    given rig and mixing the two kinds of curves placed the views at -1, 0, +2, 0 and refused
    nothing)."""
    from pipeline.geometry import sync
    kp, ref, names = pose2sim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", labels.LabelWarning)  # the given-rig check names cam03's pairs
        with pytest.raises(ValueError, match="cam03 is out of sync by about [+]3 frames"):
            labels.calibrate(sync.shift_view(kp, 2, 3), ref, {"mode": "known"}, names=names)


@pytest.mark.parametrize("mode", ["known", "rig", "per-frame"])
def test_real_recording_passes_every_check(pose2sim, mode):
    # synchronised, four distinct cameras, keypoints inside the images: no error, no warning
    kp, ref, names = pose2sim
    est, diag, msgs = _calibrate(kp, ref if mode == "known" else ref.without_extrinsics(), {"mode": mode})
    assert diag["cameras_used"].all() and diag["sync_relative"].tolist() == [0, 0, 0, 0]
    if mode == "known":
        # the one thing said: the given (Qualisys) calibration explains cam03's joints far worse
        # than their own epipolar geometry does (its pairs with cam01 and cam04; triangulated
        # from the other three views, cam03's joints reproject the worst of the four)
        assert len(msgs) == 1 and "camera 2 is the likely culprit" in msgs[0], msgs
        flagged = diag["baseline_given_px"] > 2 * diag["baseline_epipolar_px"]
        assert [tuple(p) for p in diag["baseline_pairs"][flagged]] == [(0, 2), (2, 3)]
    else:
        assert msgs == []
    # the margin of the no-baseline test: real pairs are far from one rotation (ratio 3 refuses)
    assert np.all(diag["baseline_rotation_px"] > 3 * 3.0 * diag["baseline_epipolar_px"])
    assert np.all(diag["baseline_coincide"] < 0.01)


def test_real_recording_faults(pose2sim):
    kp, ref, names = pose2sim
    p2s = ref.without_extrinsics()
    # a copied keypoint folder (the cam02 duplicating cam01)
    dup = kp.copy()
    dup[:, 1] = dup[:, 0]
    with pytest.raises(ValueError, match="cam01 and cam02 show the same keypoints"):
        labels.calibrate(dup, ref, {"mode": "known"}, names=names)
    # the same camera twice in the calibration as well
    twice = camera.Cameras(ref.K[[0, 0, 2, 3]], ref.R[[0, 0, 2, 3]], ref.t[[0, 0, 2, 3]], ref.dist[[0, 0, 2, 3]],
                           ref.size[[0, 0, 2, 3]])
    with pytest.raises(ValueError, match="cam01 and cam02 are at the same place"):
        labels.calibrate(dup, twice, {"mode": "known"}, names=names)
    # one view 5 frames late
    from pipeline.geometry import sync
    with pytest.raises(ValueError, match="cam04 is out of sync by about [+]5 frames"):
        labels.calibrate(sync.shift_view(kp, 3, 5), p2s, {"mode": "rig"}, names=names)
    # a view where nobody is seen: left out, the other three calibrated as well as before
    full, _, _ = _calibrate(kp, p2s, {"mode": "rig"})
    blind = kp.copy()
    blind[:, 2] = np.nan
    est, diag, msgs = _calibrate(blind, p2s, {"mode": "rig"})
    assert any("camera 2 is left out (sees nobody" in m for m in msgs) and np.isnan(est.R[2]).all()
    keep = [0, 1, 3]
    e_full = fg.relative_rotation_errors(full.R[keep], ref.R[keep])
    e_blind = fg.relative_rotation_errors(est.R[keep], ref.R[keep])
    assert e_blind.mean() < 2.5 and e_blind.max() < 4.0, (e_blind, e_full)  # as test_real_pose2sim's bound
    out = labels.label_chunk(blind, est, {"mode": "rig"})
    assert not out["valid"][:, 2].any() and out["frame_ok"].mean() > 0.9
    # a wild point: a warning, and the rig as without it
    wild = kp.copy()
    wild[50, 1, 3, :2] = [1e12, -1e12]
    est, diag, msgs = _calibrate(wild, p2s, {"mode": "rig"})
    assert diag["keypoints_outside"].tolist() == [0, 1, 0, 0] and any("frame 50, joint 3" in m for m in msgs)
    assert np.allclose(fg.relative_rotation_errors(est.R, ref.R), fg.relative_rotation_errors(full.R, ref.R), atol=0.05)


def test_real_recording_consensus_brings_labels_closer_to_pose2sims_triangulation(pose2sim, shared_data):
    # reference: Pose2Sim's own 3D (its triangulation of the same OpenPose keypoints with the
    # Qualisys calibration, outliers rejected by reprojection error, filtered): the view
    # consensus may only bring our labels closer to it (measured: known 20.0 -> 17.9 mm, rig
    # 21.1 -> 20.2 mm PMPJPE)
    from pipeline.data.pose2sim import trc_to_joints17
    from pipeline.data.trc import read_trc
    kp, ref, _ = pose2sim
    trc_names, T, _, _ = read_trc(shared_data / "multiview" / "pose2sim_demo" / "Demo_filt_0-100.trc")
    X = trc_to_joints17(trc_names, T)[:len(kp)][..., [2, 0, 1]]  # Y-up (TRC) -> the calibration's Z-up
    gt = camera.world_to_camera(X[:, None], ref.R[None], ref.t[None])
    gt = gt - gt[:, :, ROOT:ROOT + 1]
    est, _, _ = _calibrate(kp, ref.without_extrinsics(), {"mode": "rig"})
    for mode, cams in (("known", ref), ("rig", est)):
        err = {}
        for op in (0.0, 30.0):
            lab = labels.label_chunk(kp, cams, {"mode": mode, "outlier_px": op})
            err[op] = np.nanmean(metrics.pmpjpe(lab["labels_cam"].astype(float), gt,
                                                lab["valid"] & np.isfinite(gt).all(-1)))
        assert err[30.0] < err[0.0] < 25.0, (mode, err)


def test_label_stage_leaves_a_blind_view_out(tmp_path):
    # the issue: "one view where nobody is seen fails the whole label stage". End to end on the
    # toy dataset (2 rigs of 3 random cameras, exact GT 2D) with view 1 blind in every frame.
    from pipeline import detectors
    from pipeline import orchestration as stages
    from pipeline.orchestration.store import ArtifactStore, open_group
    from tests.test_stages_standins import toy_config
    detectors.DETECTORS["blind_view"] = "tests.faults_geometry:detect_blind_view"
    try:
        for mode in ("rig", "known"):
            cfg = toy_config(tmp_path, **{"detect2d.detector": "blind_view", "label.mode": mode})
            st = ArtifactStore(cfg["store"]["root"])
            with pytest.warns(labels.LabelWarning, match="camera 1 is left out \\(sees nobody"):
                res = {s: stages.run_stage(s, cfg, st, progress=False) for s in ("dataset", "detect2d", "label")}
            g = open_group(res["label"]["location"])
            assert np.isnan(np.asarray(g["R_est"][:])[:, 1]).all()
            assert np.isfinite(np.asarray(g["R_est"][:])[:, [0, 2]]).all()
            valid = np.asarray(g["valid"][:])
            assert not valid[:, 1].any() and valid[:, [0, 2]].all() and np.asarray(g["frame_ok"][:]).all()
            diag = g.attrs["calibration"]
            assert [d["camera_status"][1][:11] for d in diag.values()] == ["sees nobody"] * 2
            # the labels of the two cameras left are exact (σ = 0): the toy's poses in their frames
            ds = open_group(res["dataset"]["location"])
            gt = camera.store_poses_in_cameras(ds)
            gt = gt - gt[:, :, ROOT:ROOT + 1]
            lab = np.asarray(g["labels_cam"][:], dtype=np.float64)[:, [0, 2]]
            e = metrics.pmpjpe(lab.reshape(-1, J, 3), gt[:, [0, 2]].reshape(-1, J, 3))
            assert np.nanmax(e) < 0.5, np.nanmax(e)
    finally:
        detectors.DETECTORS.pop("blind_view", None)
