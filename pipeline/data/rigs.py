"""Camera rigs for the synthetic studio: a Human3.6M-like rig and seeded random rigs.

World frame: Z up, millimetres, the capture volume centred on the origin of the floor.
Cameras follow pipeline/camera.py (OpenCV: X_cam = R X + t).
"""
from __future__ import annotations

import numpy as np

from ..camera import Cameras, look_at

# Human3.6M's four cameras stand in the room's corners, ~4.5-5.5 m from the subject at
# about chest height, with f ~ 1145-1150 px on 1000x1000 (1002) images.
H36M_RADIUS_MM = 5000.0
H36M_HEIGHT_MM = 1600.0
H36M_TARGET_HEIGHT_MM = 1000.0
H36M_FOCAL_PX = 1150.0
H36M_SIZE = (1000, 1000)


def _rig_from_centres(centres: np.ndarray, targets: np.ndarray, focal: np.ndarray,
                      size: np.ndarray, dist: np.ndarray, principal: np.ndarray | None = None) -> Cameras:
    """Cameras at centres [V,3] looking at targets [V,3]; focal [V], size [V,2], dist [V,5]."""
    V = len(centres)
    K = np.zeros((V, 3, 3))
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    pp = size / 2.0 if principal is None else principal
    K[:, 0, 2] = pp[:, 0]
    K[:, 1, 2] = pp[:, 1]
    K[:, 2, 2] = 1.0
    R = np.empty((V, 3, 3))
    t = np.empty((V, 3))
    for v in range(V):
        R[v], t[v] = look_at(centres[v], targets[v])
    return Cameras(K, R, t, dist, size.astype(np.float64))


def h36m_like_rig(n_views: int = 4, seed: int | None = None) -> Cameras:
    """A Human3.6M-like rig of n_views cameras spread evenly around the volume.

    Deterministic for seed=None (azimuths 45°, 135°, ... as the room's corners); with a
    seed, each camera's radius (4.5-5.5 m), height (1.4-1.8 m), azimuth (±10°), focal
    length (±1 %) and principal point (±5 px) are jittered as real rigs differ.
    Returns Cameras with V = n_views, 1000x1000 images, no distortion.
    """
    if n_views < 2:
        raise ValueError(f"h36m_like_rig: need at least 2 views, got {n_views}")
    az = np.deg2rad(45.0 + 360.0 * np.arange(n_views) / n_views)
    radius = np.full(n_views, H36M_RADIUS_MM)
    height = np.full(n_views, H36M_HEIGHT_MM)
    focal = np.full(n_views, H36M_FOCAL_PX)
    size = np.tile(np.asarray(H36M_SIZE, dtype=np.float64), (n_views, 1))
    pp = size / 2.0
    if seed is not None:
        rng = np.random.default_rng(seed)
        az = az + np.deg2rad(rng.uniform(-10, 10, n_views))
        radius = rng.uniform(4500, 5500, n_views)
        height = rng.uniform(1400, 1800, n_views)
        focal = focal * rng.uniform(0.99, 1.01, n_views)
        pp = pp + rng.uniform(-5, 5, (n_views, 2))
    centres = np.stack([radius * np.cos(az), radius * np.sin(az), height], axis=1)
    targets = np.tile([0.0, 0.0, H36M_TARGET_HEIGHT_MM], (n_views, 1))
    return _rig_from_centres(centres, targets, focal, size, np.zeros((n_views, 5)), pp)


def random_rig(seed: int, n_views: int = 4, radius_mm: tuple[float, float] = (3500.0, 6000.0),
               height_mm: tuple[float, float] = (800.0, 2500.0),
               focal_px: tuple[float, float] = (900.0, 1400.0),
               distortion: float = 0.0, image_size: tuple[int, int] = (1000, 1000)) -> Cameras:
    """A seeded random rig: n_views cameras on a ring around the volume.

    Azimuths are spread around the circle with random jitter (no two cameras closer than
    ~half their even spacing); radius, height and focal length are drawn uniformly from the
    given (low, high) ranges (a scalar means fixed); each camera aims at a point jittered
    ±300 mm around (0, 0, 1000). distortion: the magnitude of k1 (drawn in ±distortion,
    k2 ≈ -k1/4, small tangential terms); 0 gives none. image_size (w, h).
    Returns Cameras with V = n_views.
    """
    if n_views < 2:
        raise ValueError(f"random_rig: need at least 2 views, got {n_views}")
    rng = np.random.default_rng(seed)

    def draw(r):
        lo, hi = (r, r) if np.isscalar(r) else r
        if lo > hi or lo <= 0:
            raise ValueError(f"random_rig: bad range {r!r}")
        return rng.uniform(lo, hi, n_views)

    spacing = 2 * np.pi / n_views
    az = rng.uniform(0, 2 * np.pi) + spacing * np.arange(n_views) + rng.uniform(-0.25, 0.25, n_views) * spacing
    radius, height, focal = draw(radius_mm), draw(height_mm), draw(focal_px)
    centres = np.stack([radius * np.cos(az), radius * np.sin(az), height], axis=1)
    targets = np.array([0.0, 0.0, 1000.0]) + rng.uniform(-300, 300, (n_views, 3))
    size = np.tile(np.asarray(image_size, dtype=np.float64), (n_views, 1))
    dist = np.zeros((n_views, 5))
    if distortion:
        k1 = rng.uniform(-distortion, distortion, n_views)
        dist[:, 0] = k1
        dist[:, 1] = -k1 / 4
        dist[:, 2:4] = rng.uniform(-1e-3, 1e-3, (n_views, 2)) * (distortion / 0.1)
    return _rig_from_centres(centres, targets, focal, size, dist)


def make_rig(kind: str, n_views: int, seed: int, **kw) -> Cameras:
    """Rig by name: 'h36m' (fixed), 'h36m_jitter' (seeded jitter) or 'random'."""
    if kind == "h36m":
        return h36m_like_rig(n_views)
    if kind == "h36m_jitter":
        return h36m_like_rig(n_views, seed=seed)
    if kind == "random":
        return random_rig(seed, n_views, **kw)
    raise ValueError(f"unknown rig {kind!r}; choose one of ['h36m', 'h36m_jitter', 'random']")
