"""The camera model: the one place for the project's camera convention.

OpenCV convention: X_cam = R @ X_world + t (millimetres), x = K @ distort(X_cam / Z).
Distortion (k1, k2, p1, p2, k3) as in OpenCV. All functions are vectorised over
leading batch dimensions and use float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation


FIELDS = ("K", "R", "t", "dist", "size")


@dataclass(frozen=True)
class Cameras:
    """A rig of V cameras. K [V,3,3], R [V,3,3], t [V,3] (mm), dist [V,5], size [V,2] (w, h).

    R and t may be NaN when extrinsics are unknown (the self-supervised setting).
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    dist: np.ndarray
    size: np.ndarray

    def __post_init__(self):
        V = np.asarray(self.K).shape[0] if np.ndim(self.K) == 3 else -1
        shapes = {"K": (V, 3, 3), "R": (V, 3, 3), "t": (V, 3), "dist": (V, 5), "size": (V, 2)}
        for name, shape in shapes.items():
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if V < 1 or arr.shape != shape:
                raise ValueError(f"Cameras.{name}: expected shape {shape}, got {arr.shape}")
            object.__setattr__(self, name, arr)
        if not np.all(np.isfinite(self.K)) or not np.all(np.isfinite(self.dist)):
            raise ValueError("Cameras: intrinsics K and dist must be finite")
        if np.any(self.K[:, 0, 0] <= 0) or np.any(self.K[:, 1, 1] <= 0):
            raise ValueError("Cameras: focal lengths must be positive")

    @property
    def V(self) -> int:
        return self.K.shape[0]

    @property
    def has_extrinsics(self) -> bool:
        return bool(np.all(np.isfinite(self.R)) and np.all(np.isfinite(self.t)))

    @property
    def centers(self) -> np.ndarray:
        """Camera centres in world coordinates [V,3]."""
        return camera_center(self.R, self.t)

    @property
    def P(self) -> np.ndarray:
        """Projection matrices [V,3,4]."""
        return projection_matrix(self.K, self.R, self.t)

    def subset(self, views) -> "Cameras":
        views = np.asarray(views)
        return Cameras(self.K[views], self.R[views], self.t[views], self.dist[views], self.size[views])

    def without_extrinsics(self) -> "Cameras":
        nan = np.full_like(self.R, np.nan)
        return Cameras(self.K, nan, np.full_like(self.t, np.nan), self.dist, self.size)

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "Cameras":
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in FIELDS))

    @classmethod
    def from_store(cls, group, rig: int = 0, suffix: str = "") -> "Cameras":
        """Rig `rig` of a store's [G,V,...] camera arrays (docs/stores.md); suffix "_est" reads
        a label store's estimated rig."""
        return cls(*(np.asarray(group[k + suffix][rig], dtype=np.float64) for k in FIELDS))


def check_rig(cams: Cameras, names=None, what: str = "cameras") -> None:
    """Refuse a rig that cannot triangulate, with a ValueError naming the cameras.

    Extrinsics must be all known or all unknown (NaN: the self-supervised setting); where
    known, every R a rotation (RᵀR = I within 1e-6, det +1), every t finite, and no two
    cameras at the same centre (a baseline under 1e-3 of the rig's median baseline, or
    under 1e-6 mm): a duplicated camera has no parallax and its labels would be noise.
    """
    names = list(names) if names is not None else [f"camera {v}" for v in range(cams.V)]
    if len(names) != cams.V:
        raise ValueError(f"{what}: {len(names)} names for {cams.V} cameras")
    known = np.all(np.isfinite(cams.R), axis=(1, 2)) & np.all(np.isfinite(cams.t), axis=1)
    some = np.any(np.isfinite(cams.R), axis=(1, 2)) | np.any(np.isfinite(cams.t), axis=1)
    partial = [names[v] for v in range(cams.V) if some[v] and not known[v]]
    if partial:
        raise ValueError(f"{what}: {', '.join(partial)} have non-finite rotation or translation values; "
                         "fix the calibration (or give no extrinsics at all for the self-supervised setting)")
    if known.any() and not known.all():
        missing = [names[v] for v in range(cams.V) if not known[v]]
        raise ValueError(f"{what}: extrinsics are given for some cameras but not for {', '.join(missing)}")
    if not known.all():
        return
    eye = np.einsum("vji,vjk->vik", cams.R, cams.R)
    bad = [names[v] for v in range(cams.V)
           if np.abs(eye[v] - np.eye(3)).max() > 1e-6 or np.linalg.det(cams.R[v]) < 0]
    if bad:
        raise ValueError(f"{what}: the rotation of {', '.join(bad)} is not a rotation matrix (RᵀR != I or det < 0)")
    if cams.V < 2:
        return
    C = cams.centers
    d = np.linalg.norm(C[:, None] - C[None], axis=-1)
    iu = np.triu_indices(cams.V, 1)
    tol = max(1e-3 * float(np.median(d[iu])), 1e-6)
    same = [(names[i], names[j], d[i, j]) for i, j in zip(*iu) if d[i, j] < tol]
    if same:
        a, b, dist = same[0]
        raise ValueError(f"{what}: {a} and {b} are at the same place (baseline {dist:.3g} mm): a duplicated "
                         "camera gives no parallax; remove one of them or fix the calibration")


def store_poses_in_cameras(group, frames: np.ndarray | None = None) -> np.ndarray:
    """A dataset store's ground truth (docs/stores.md: poses3d_world, rig, R, t) in each view's
    camera frame, mm: [f,V,J,3] for `frames` (int indices; None: all), NaN where unknown.
    ValueError naming what is missing: the 3D ground truth or finite extrinsics."""
    for name in ("poses3d_world", "rig", "R", "t"):
        if name not in group:
            raise ValueError(f"the dataset store has no `{name}`: its 3D ground truth cannot be put in camera frames")
    n = group["rig"].shape[0]
    idx = np.arange(n) if frames is None else np.asarray(frames, dtype=np.int64)
    X = np.asarray(group["poses3d_world"].get_orthogonal_selection((idx,)), dtype=np.float64)
    rig = np.asarray(group["rig"][:], dtype=np.int64)[idx]
    R = np.asarray(group["R"][:], dtype=np.float64)[rig]   # [f,V,3,3]
    t = np.asarray(group["t"][:], dtype=np.float64)[rig]   # [f,V,3]
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise ValueError("the dataset's cameras lack extrinsics (R/t hold NaN): its 3D ground truth "
                         "cannot be put in camera frames")
    return world_to_camera(X[:, None], R, t)


def camera_center(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """C = -Rᵀ t. R [...,3,3], t [...,3] -> [...,3]."""
    return -np.einsum("...ji,...j->...i", R, t)


def projection_matrix(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """P = K [R | t]. K,R [...,3,3], t [...,3] -> [...,3,4]."""
    return K @ np.concatenate([R, t[..., None]], axis=-1)


def world_to_camera(X: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """X [...,N,3] world -> camera frame; R [...,3,3], t [...,3] broadcast over N."""
    return np.einsum("...ij,...nj->...ni", R, X) + t[..., None, :]


def camera_to_world(Xc: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Inverse of world_to_camera: X = Rᵀ (Xc - t). Xc [...,N,3]."""
    return np.einsum("...ji,...nj->...ni", R, Xc - t[..., None, :])


def distort(xn: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Apply OpenCV's (k1,k2,p1,p2,k3) model to normalised points. xn [...,N,2], dist [...,5]."""
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))
    x, y = xn[..., 0], xn[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def project_camera(Xc: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Camera-frame points Xc [...,N,3] -> pixels [...,N,2]. K [...,3,3], dist [...,5]."""
    xn = Xc[..., :2] / Xc[..., 2:3]
    if dist is not None:
        xn = distort(xn, dist)
    return np.einsum("...ij,...nj->...ni", K[..., :2, :2], xn) + K[..., None, :2, 2]


def project(X: np.ndarray, K, R, t, dist=None) -> np.ndarray:
    """World points X [...,N,3] -> pixels [...,N,2] (matches cv2.projectPoints)."""
    return project_camera(world_to_camera(X, R, t), K, dist)


def undistort_points(uv: np.ndarray, K: np.ndarray, dist: np.ndarray, normalised: bool = True) -> np.ndarray:
    """Remove lens distortion (cv2.undistortPoints, iterative). uv [N,2] pixels of one camera.

    Returns normalised coordinates [N,2] (or pixels with the same K when normalised=False).
    NaN rows stay NaN.
    """
    uv = np.asarray(uv, dtype=np.float64)
    out = np.full(uv.shape, np.nan)
    ok = np.all(np.isfinite(uv), axis=-1)
    if ok.any():
        P = None if normalised else K
        und = cv2.undistortPoints(uv[ok].reshape(-1, 1, 2), K, dist, P=P,
                                  criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))
        out[ok] = und.reshape(-1, 2)
    return out


def normalise_points(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels -> normalised image coordinates without distortion. uv [...,N,2], K [...,3,3]."""
    Kinv = np.linalg.inv(K)
    uv = np.asarray(uv, dtype=np.float64)
    u, v = uv[..., 0], uv[..., 1]
    k = lambda i, j: Kinv[..., i, j][..., None]  # noqa: E731  [...,1]: broadcasts over N
    # the 2x3 affine map written out: a few passes over contiguous arrays (einsum was the
    # label path's largest cost)
    out = np.empty(np.broadcast_shapes(uv.shape, Kinv.shape[:-2] + (1, 2)))
    np.add(k(0, 0) * u + k(0, 1) * v, k(0, 2), out=out[..., 0])
    np.add(k(1, 0) * u + k(1, 1) * v, k(1, 2), out=out[..., 1])
    return out


def rodrigues_to_matrix(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues vectors [...,3] -> rotation matrices [...,3,3] (cv2.Rodrigues convention)."""
    return Rotation.from_rotvec(np.asarray(rvec, dtype=np.float64).reshape(-1, 3)).as_matrix().reshape(
        *np.shape(rvec)[:-1], 3, 3)


def matrix_to_rodrigues(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [...,3,3] -> Rodrigues vectors [...,3]."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)).as_rotvec().reshape(
        *np.shape(R)[:-2], 3)


def quaternion_to_matrix(q: np.ndarray, scalar_first: bool = True) -> np.ndarray:
    """Quaternions [...,4] (w,x,y,z by default, as Human3.6M's metadata) -> [...,3,3]."""
    q = np.asarray(q, dtype=np.float64)
    return Rotation.from_quat(q.reshape(-1, 4), scalar_first=scalar_first).as_matrix().reshape(
        *q.shape[:-1], 3, 3)


def vector_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between vectors, radians in [0, pi]. a, b [...,3] (any lengths) -> [...].
    atan2(|a x b|, a . b): exact near 0, where arccos of the cosine resolves ~1e-8 rad."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.einsum("...a,...a->...", a, b))


def rotation_magnitude_deg(R: np.ndarray) -> np.ndarray:
    """Angle of rotations R [...,3,3] about their axes, degrees in [0, 180] -> [...]; NaN where
    R has a NaN."""
    R = np.asarray(R, dtype=np.float64)
    # atan2(sin, cos) from the skew and trace parts: exact near 0, where arccos of the trace
    # resolves no finer than sqrt(2 eps) ~ 1e-6 degrees
    s = 0.5 * np.linalg.norm(np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                                       R[..., 1, 0] - R[..., 0, 1]], -1), axis=-1)
    c = (np.trace(R, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arctan2(s, c))


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations, degrees. [...,3,3] x [...,3,3] -> [...]."""
    return rotation_magnitude_deg(np.swapaxes(Ra, -1, -2) @ Rb)


def look_at(center: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """R [3,3], t [3] of a camera at `center` looking at `target` (OpenCV axes: x right, y down, z forward)."""
    center, target, up = (np.asarray(a, dtype=np.float64) for a in (center, target, up))
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ center
