"""Judging a rig: `epipose inspect` on a label store compares the estimated rig with the
dataset's calibration per pair (rotation, baseline direction) and reprojects the labels per
camera (pipeline/orchestration/inspection.py, pipeline/geometry/rig_error.py)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline import orchestration as orch
from pipeline.camera import camera_center, look_at
from pipeline.geometry.rig_error import pair_direction_errors
from pipeline.orchestration.inspection import inspect_store, rig_judgement
from tests.test_stages_standins import toy_config


def _rig():
    C = np.array([[3000.0, 0, 1500], [0, 3000, 1200], [-3000, 0, 1800]])
    R = np.stack([look_at(c, [0, 0, 1000])[0] for c in C])
    return R, -np.einsum("vab,vb->va", R, C), C


def test_direction_error_is_free_of_the_world_and_sees_a_moved_camera():
    R, t, C = _rig()
    # the same rig after a similarity of its world (X' = s Q X + d): no error
    Q, s, d = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix(), 0.001, np.array([5.0, -2, 7])
    R2 = R @ Q.T
    t2 = -np.einsum("vab,vb->va", R2, s * C @ Q.T + d)
    np.testing.assert_allclose(pair_direction_errors(R2, t2, R, t), 0, atol=1e-6)
    # camera 2 turned about camera 0 by 4 degrees, about an axis across their baseline
    # (orientation kept): pair 0-2 sees 4 degrees, pair 0-1 nothing
    axis = np.cross(C[2] - C[0], [0, 0, 1.0])
    turn = Rotation.from_rotvec(np.radians(4) * axis / np.linalg.norm(axis)).as_matrix()
    C3 = C.copy()
    C3[2] = C[0] + turn @ (C[2] - C[0])
    t3 = -np.einsum("vab,vb->va", R, C3)
    e = pair_direction_errors(R, t3, R, t)
    assert e[1] == pytest.approx(4.0, abs=1e-9) and e[0] == pytest.approx(0, abs=1e-9)   # pairs 0-1, 0-2, 1-2
    np.testing.assert_allclose(camera_center(R, t3), C3)
    R4 = R.copy()
    R4[1] = np.nan
    assert np.isnan(pair_direction_errors(R4, t, R, t)[0])


def test_inspect_judges_the_estimated_rig_against_the_calibration(tmp_path):
    cfg = toy_config(tmp_path)                                   # rig mode, gt 2D without noise
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        orch.run_stage(s, cfg, st, progress=False)
    A = orch.plan(cfg, st)
    lab, ds, det = (orch.open_group(A[k].location) for k in ("label", "dataset", "detect2d"))
    res = rig_judgement(lab, ds, det, "rig")
    assert [r["rig"] for r in res] == [0, 1]
    for r in res:
        assert np.nanmax(r["rotation_err_deg"]) < 0.05 and np.nanmax(r["direction_err_deg"]) < 0.05
        assert np.nanmax(r["reprojection_px"]) < 0.5
    text = inspect_store(A["label"].location)
    assert "estimated rig vs the dataset's calibration, per pair" in text
    assert "label reproj px" in text and "training split" in text
