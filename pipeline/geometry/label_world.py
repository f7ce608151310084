"""Labels back in their rig's world: where each labelled person stood, and how well the
labels explain the 2D keypoints they came from.

A label store holds root-relative poses in each camera's frame divided by a per-frame scale
(`labels_cam`, `scale`; pipeline/geometry/labels.py): in known and rig modes
labels_cam[f, v] = R_v (X_f - X_f,root) / scale_f for one world pose X_f, so the pose is
X_f = root_f + R_vᵀ labels_cam[f, v] scale_f for any view v where it is valid. The root is
not stored: `root_positions` triangulates it again from the keypoints (confidence-weighted
N-view DLT, pipeline/geometry/triangulate.py), with the cameras the labels were made with
(the dataset's in known mode, the estimated rig `*_est` in rig mode), in their unit (mm in
known mode, the rig's baseline unit in rig mode).

Shapes: keypoints kp2d [F,V,J,3] (x, y, confidence; NaN missing), labels [F,V,J,3],
valid [F,V,J], scale [F], cameras as pipeline/camera.py.
"""
from __future__ import annotations

import numpy as np

from ..camera import Cameras, project, undistort_points
from ..joints import ROOT
from .triangulate import triangulate_dlt

__all__ = ["normalised_keypoints", "root_positions", "world_poses", "views_to_world", "reprojection_px"]


def normalised_keypoints(kp2d: np.ndarray, cams: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted normalised points [F,V,J,2] and weights [F,V,J] (the confidence; 0 where the
    point is missing or the camera is not placed)."""
    kp2d = np.asarray(kp2d, dtype=np.float64)
    F, V, J = kp2d.shape[:3]
    xn = np.stack([undistort_points(kp2d[:, v, :, :2].reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, J, 2)
                   for v in range(V)], 1)
    placed = np.all(np.isfinite(cams.R), axis=(1, 2)) & np.all(np.isfinite(cams.t), axis=1)
    w = np.where(np.isfinite(xn[..., 0]) & placed[None, :, None], np.nan_to_num(kp2d[..., 2], nan=0.0), 0.0)
    return xn, np.maximum(w, 0.0)


def root_positions(kp2d: np.ndarray, cams: Cameras) -> np.ndarray:
    """The root joint of every frame in the rig's world, by DLT over the views that see it:
    [F,3] (NaN where fewer than two placed views see it)."""
    xn, w = normalised_keypoints(kp2d, cams)
    R = np.where(np.isfinite(cams.R), cams.R, 0.0)
    t = np.where(np.isfinite(cams.t), cams.t, 0.0)
    X, _ = triangulate_dlt(xn[:, :, ROOT], w[:, :, ROOT], R, t)
    return X


def world_poses(labels: np.ndarray, valid: np.ndarray, scale: np.ndarray, R: np.ndarray,
                root: np.ndarray) -> np.ndarray:
    """Labels -> world poses [F,J,3]: root + R_vᵀ labels[f, v] scale[f], taking for each joint
    the first view where it is valid (every valid view gives the same point in known and rig
    modes). NaN where no view is valid, the scale or the root is unknown. R [V,3,3]."""
    labels = np.asarray(labels, dtype=np.float64)
    ok = np.asarray(valid, bool) & np.all(np.isfinite(labels), -1)  # [F,V,J]
    Rs = np.where(np.isfinite(R), R, 0.0)
    rel = np.einsum("vji,fvkj->fvki", Rs, np.where(ok[..., None], labels, 0.0))  # R_vᵀ l, [F,V,J,3]
    first = np.argmax(ok, axis=1)  # [F,J]
    pick = np.take_along_axis(rel, first[:, None, :, None], axis=1)[:, 0]  # [F,J,3]
    seen = ok.any(1)
    X = np.asarray(root, float)[:, None, :] + pick * np.asarray(scale, float)[:, None, None]
    return np.where(seen[..., None], X, np.nan)


def views_to_world(P: np.ndarray, scale, R: np.ndarray, root: np.ndarray) -> np.ndarray:
    """Root-relative poses predicted in each camera's frame, P [F,V,J,3] (NaN where missing),
    -> world poses [F,J,3]: root + scale x the mean over views of R_vᵀ P[f, v] (views whose
    camera is not placed, or whose prediction is missing, are left out). scale: a float or
    [F] (rig units per unit of P); root [F,3]. NaN where no view is usable."""
    P = np.asarray(P, dtype=np.float64)
    placed = np.all(np.isfinite(R), axis=(1, 2))
    ok = np.all(np.isfinite(P), axis=(-2, -1)) & placed[None, :]  # [F,V]
    Rs = np.where(np.isfinite(R), R, 0.0)
    rel = np.einsum("vji,fvkj->fvki", Rs, np.where(ok[..., None, None], P, 0.0))
    n = ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = rel.sum(1) / n[:, None, None]
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(P),))
    X = np.asarray(root, float)[:, None, :] + mean * s[:, None, None]
    return np.where((n > 0)[:, None, None], X, np.nan)


def reprojection_px(X: np.ndarray, kp2d: np.ndarray, cams: Cameras) -> np.ndarray:
    """Pixel distance between world poses X [F,J,3] projected into each camera and the
    keypoints kp2d [F,V,J,3]: [F,V,J] (NaN where either is missing or the camera not placed)."""
    kp2d = np.asarray(kp2d, dtype=np.float64)
    V = cams.V
    out = np.full(kp2d.shape[:3], np.nan)
    for v in range(V):
        if not (np.all(np.isfinite(cams.R[v])) and np.all(np.isfinite(cams.t[v]))):
            continue
        uv = project(np.asarray(X, float), cams.K[v], cams.R[v], cams.t[v], cams.dist[v])  # [F,J,2]
        with np.errstate(invalid="ignore"):
            depth = np.einsum("ab,fjb->fja", cams.R[v], X)[..., 2] + cams.t[v, 2]
        d = np.linalg.norm(uv - kp2d[:, v, :, :2], axis=-1)
        out[:, v] = np.where(depth > 0, d, np.nan)
    return out
