"""Synthetic people and rigs for tests and benchmarks: plausible 17-joint poses and their 2D views.

Poses come from forward kinematics over the skeleton of pipeline.joints: human bone lengths
(Human3.6M subject averages, scaled per person) and joint angles drawn inside anatomical
limits, so the poses are varied but never impossible. World frame: z up, millimetres, the
lowest joint on the floor (z = 0).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from pipeline import camera
from pipeline.joints import INDEX, JOINTS, J, PARENTS

# Bone lengths in mm (child joint -> length of the bone to its parent), close to Human3.6M's
# subject averages. The ROOT has none.
BONE_MM = {
    "r_hip": 133.0, "r_knee": 454.0, "r_ankle": 450.0,
    "l_hip": 133.0, "l_knee": 454.0, "l_ankle": 450.0,
    "spine": 233.0, "thorax": 257.0, "neck": 121.0, "head": 115.0,
    "l_shoulder": 151.0, "l_elbow": 278.0, "l_wrist": 252.0,
    "r_shoulder": 151.0, "r_elbow": 278.0, "r_wrist": 252.0,
}

# Rest directions of each bone in the parent segment's frame (x: person's left, y: forward, z: up).
_REST_DIR = {
    "r_hip": (-1, 0, 0), "r_knee": (0, 0, -1), "r_ankle": (0, 0, -1),
    "l_hip": (1, 0, 0), "l_knee": (0, 0, -1), "l_ankle": (0, 0, -1),
    "spine": (0, 0, 1), "thorax": (0, 0, 1), "neck": (0, 0.25, 1), "head": (0, 0.1, 1),
    "l_shoulder": (1, 0, 0.05), "l_elbow": (0, 0, -1), "l_wrist": (0, 0, -1),
    "r_shoulder": (-1, 0, 0.05), "r_elbow": (0, 0, -1), "r_wrist": (0, 0, -1),
}

# Joint-angle limits in degrees, (low, high), for the rotation applied at each joint to the
# segment it drives, as (about x = flexion, about y = ab/adduction, about z = twist).
# Sign conventions: positive x-rotation swings a downward limb forward.
_LIMITS = {
    "r_hip": ((-25, 110), (-5, 40), (-20, 20)),    # thigh: flexion, abduction (outwards), twist
    "l_hip": ((-25, 110), (-5, 40), (-20, 20)),
    "r_knee": ((-135, 0), (0, 0), (0, 0)),         # shank folds backwards only
    "l_knee": ((-135, 0), (0, 0), (0, 0)),
    "spine": ((-40, 12), (-20, 20), (-30, 30)),    # negative x bends the trunk forwards
    "thorax": ((-15, 10), (-10, 10), (-15, 15)),
    "neck": ((-35, 30), (-20, 20), (-50, 50)),
    "r_shoulder": ((-40, 170), (0, 150), (-30, 30)),  # upper arm: flexion, abduction (outwards)
    "l_shoulder": ((-40, 170), (0, 150), (-30, 30)),
    "r_elbow": ((0, 145), (0, 0), (-60, 60)),
    "l_elbow": ((0, 145), (0, 0), (-60, 60)),
}
# A joint's rotation drives its *outgoing* segment: the hip rotates the thigh (hip -> knee).
_MIRROR_Y = {"l_hip": -1.0, "l_shoulder": -1.0}

MEAN_BONE_MM = float(np.mean(list(BONE_MM.values())))


def _euler_xyz(ang_deg: np.ndarray) -> np.ndarray:
    """[...,3] degrees (x, y, z) -> [...,3,3] rotation Rz @ Ry @ Rx."""
    return Rotation.from_euler("ZYX", ang_deg.reshape(-1, 3)[:, ::-1], degrees=True).as_matrix().reshape(
        *ang_deg.shape[:-1], 3, 3)


def random_poses(n: int, seed: int = 0, bone_scale_sd: float = 0.06, area_mm: float = 1500.0,
                 posture_spread: float = 1.0) -> np.ndarray:
    """n random plausible poses [n,J,3] in world mm (z up, feet on the floor).

    bone_scale_sd: spread of a person's overall size (and 1/2 of it per bone, left/right kept
    symmetric). area_mm: the root lies uniformly in a square of this side around the origin.
    posture_spread in (0, 1]: fraction of each joint's angular range used (1 = full limits).
    """
    if n < 0:
        raise ValueError(f"random_poses: n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    # bone lengths: one size per person, a small symmetric jitter per bone pair
    size = np.clip(1 + bone_scale_sd * rng.standard_normal(n), 0.75, 1.25)
    lengths = np.zeros((n, J))
    pair_jitter = {}
    for name, mm in BONE_MM.items():
        key = name[2:] if name[:2] in ("l_", "r_") else name
        if key not in pair_jitter:
            pair_jitter[key] = 1 + 0.5 * bone_scale_sd * rng.standard_normal(n)
        lengths[:, INDEX[name]] = mm * size * pair_jitter[key]

    # local rotation of each joint's outgoing segment
    local = np.broadcast_to(np.eye(3), (n, J, 3, 3)).copy()
    for name, lims in _LIMITS.items():
        lo = np.array([l for l, _ in lims], dtype=float)
        hi = np.array([h for _, h in lims], dtype=float)
        neutral = np.clip(0.0, lo, hi)
        # mostly everyday postures near the neutral stance, a third anywhere in the range
        near = neutral + 0.2 * (hi - lo) * rng.standard_normal((n, 3))
        far = lo + rng.beta(2.0, 2.0, size=(n, 3)) * (hi - lo)
        ang = np.where(rng.random((n, 1)) < 0.65, near, far)
        ang = np.clip(neutral + posture_spread * (ang - neutral), lo, hi)
        # abduction swings the limb outwards: towards -x on the right, +x on the left
        ang[:, 1] *= _MIRROR_Y.get(name, 1.0)
        local[:, INDEX[name]] = _euler_xyz(ang)

    # global orientation: any heading, a small lean
    heading = rng.uniform(-180, 180, n)
    lean = rng.normal(0, 5, (n, 2))
    root = _euler_xyz(np.stack([lean[:, 0], lean[:, 1], heading], axis=1))

    seg = np.zeros((n, J, 3, 3))  # global rotation of each joint's outgoing segment
    pos = np.zeros((n, J, 3))
    seg[:, 0] = root
    for j in range(1, J):  # PARENTS is topologically ordered
        p = PARENTS[j]
        name = _name(j)
        d = np.asarray(_REST_DIR[name], dtype=float)
        d = d / np.linalg.norm(d)
        pos[:, j] = pos[:, p] + lengths[:, j, None] * np.einsum("nij,j->ni", seg[:, p], d)
        seg[:, j] = seg[:, p] @ local[:, j]

    # The rest directions above put the left side at +x with forward +y and up +z: a mirror
    # image of a person. Mirroring x gives human handedness (right = forward × up).
    pos[..., 0] = -pos[..., 0]
    # feet on the floor, root somewhere in the capture area
    pos[..., 2] -= pos[..., 2].min(axis=1, keepdims=True)
    xy = rng.uniform(-area_mm / 2, area_mm / 2, (n, 2))
    pos[..., :2] += (xy - pos[:, 0, :2])[:, None, :]
    return pos


def _name(j: int) -> str:
    return JOINTS[j]


def ring_rig(angles_deg, radius_mm: float = 5000.0, height_mm: float = 1300.0,
             target=(0.0, 0.0, 1000.0), focal: float = 1150.0, size=(1000, 1000),
             dist=None) -> camera.Cameras:
    """Cameras on a circle around `target`, at the given azimuths (degrees), looking at it.

    Consecutive azimuth differences are the pair baselines (angles between viewing directions
    seen from above). K has the given focal length and a centred principal point.
    """
    angles = np.radians(np.asarray(angles_deg, dtype=float))
    V = len(angles)
    w, h = size
    K = np.tile(np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]]), (V, 1, 1))
    R = np.zeros((V, 3, 3))
    t = np.zeros((V, 3))
    for v, a in enumerate(angles):
        c = np.array([radius_mm * np.cos(a), radius_mm * np.sin(a), height_mm])
        R[v], t[v] = camera.look_at(c, target)
    D = np.zeros((V, 5)) if dist is None else np.broadcast_to(np.asarray(dist, float), (V, 5)).copy()
    return camera.Cameras(K, R, t, D, np.tile(np.array(size, float), (V, 1)))


def random_rig(n_views: int, seed: int = 0, min_gap_deg: float = 20.0, max_gap_deg: float = 120.0,
               radius_mm=(4000.0, 6000.0), height_mm=(900.0, 2200.0), focal=(900.0, 1500.0),
               size=(1000, 1000)) -> camera.Cameras:
    """A random rig of n_views cameras around the capture area: azimuth gaps between
    neighbouring cameras in [min_gap_deg, max_gap_deg], random distance, height and focal."""
    if n_views < 1:
        raise ValueError("random_rig: n_views must be >= 1")
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(min_gap_deg, max_gap_deg, max(n_views - 1, 0))
    az = np.concatenate([[0.0], np.cumsum(gaps)]) + rng.uniform(0, 360)
    w, h = size
    K = np.zeros((n_views, 3, 3))
    R = np.zeros((n_views, 3, 3))
    t = np.zeros((n_views, 3))
    for v in range(n_views):
        a = np.radians(az[v])
        r = rng.uniform(*radius_mm)
        c = np.array([r * np.cos(a), r * np.sin(a), rng.uniform(*height_mm)])
        tgt = np.array([rng.normal(0, 150), rng.normal(0, 150), rng.uniform(800, 1200)])
        R[v], t[v] = camera.look_at(c, tgt)
        f = rng.uniform(*focal)
        K[v] = [[f, 0, w / 2 + rng.normal(0, 10)], [0, f * rng.uniform(0.98, 1.02), h / 2 + rng.normal(0, 10)],
                [0, 0, 1]]
    return camera.Cameras(K, R, t, np.zeros((n_views, 5)), np.tile(np.array(size, float), (n_views, 1)))


def observe(poses: np.ndarray, cams: camera.Cameras, sigma_px: float = 0.0, seed: int = 0,
            drop_rate: float = 0.0, outlier_rate: float = 0.0, outlier_px: float = 60.0) -> np.ndarray:
    """2D detections [F,V,J,3] (x, y, confidence) of poses [F,J,3] seen by cams.

    Gaussian pixel noise sigma_px; a fraction drop_rate of joints missing (NaN, confidence 0);
    a fraction outlier_rate displaced by ~outlier_px (a detector's gross errors), with lower
    confidence. Points behind a camera are missing.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (J, 3):
        raise ValueError(f"observe: poses must be [F,{J},3], got {poses.shape}")
    rng = np.random.default_rng(seed)
    F, V = poses.shape[0], cams.V
    Xc = camera.world_to_camera(poses[:, None], cams.R[None], cams.t[None])  # [F,V,J,3]
    uv = camera.project_camera(Xc, cams.K[None], cams.dist[None])
    uv = uv + sigma_px * rng.standard_normal(uv.shape)
    conf = np.clip(0.9 + 0.05 * rng.standard_normal((F, V, J)), 0.5, 1.0)
    if outlier_rate > 0:
        bad = rng.random((F, V, J)) < outlier_rate
        uv[bad] += outlier_px * rng.standard_normal((int(bad.sum()), 2))
        conf[bad] = rng.uniform(0.2, 0.6, int(bad.sum()))
    missing = (Xc[..., 2] <= 0) | (rng.random((F, V, J)) < drop_rate)
    uv[missing] = np.nan
    conf[missing] = np.nan
    return np.concatenate([uv, conf[..., None]], axis=-1)
