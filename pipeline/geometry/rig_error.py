"""How far an estimated rig is from a reference calibration, per camera pair.

The rotation error of pair (i, j) is the geodesic angle between the relative rotations
R_j R_iᵀ of the two rigs (orchestration/calibrate.py `pair_errors`); the direction error is
the angle between the baselines seen from camera i, R_i (C_j - C_i) / |C_j - C_i|, of the two
rigs: both are free of the rigs' world frames and scales, so a rig known up to a similarity
(calibrated from people) is compared as it is. Conventions as pipeline/camera.py.
"""
from __future__ import annotations

import numpy as np

from ..camera import camera_center, vector_angle
from .rig import all_pairs

__all__ = ["pair_direction_errors"]


def _baselines(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = all_pairs(len(R))
    C = camera_center(R, t)
    d = np.einsum("pab,pb->pa", R[p[:, 0]], C[p[:, 1]] - C[p[:, 0]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return d / np.linalg.norm(d, axis=-1, keepdims=True)


def pair_direction_errors(R_est: np.ndarray, t_est: np.ndarray, R_ref: np.ndarray, t_ref: np.ndarray) -> np.ndarray:
    """Angle (deg) between each pair's baseline direction in its first camera's frame, estimate
    vs reference, in rig.all_pairs order. R [V,3,3], t [V,3] -> [P] (NaN where a camera is
    not placed)."""
    a, b = _baselines(R_est, t_est), _baselines(R_ref, t_ref)
    return np.degrees(vector_angle(a, b))
