"""From a rig of unit baseline in camera 0's frame to an upright world in millimetres.

Without extrinsics a rig calibrated from people is known up to a similarity: its frame is
camera 0's and its unit is the distance of the first two cameras. Three sources fix the scale
(`metric_scale`): the subject's standing height (`stature` of the triangulated skeleton), a
known distance between two cameras, or a reference calibration (`align_similarity`). The up
direction and the floor come from the person (`up_and_floor`): the body axis (ankles to head)
(ankles to pelvis) over all frames, refined by a plane through the ankles where the subject walked about; the
floor lies an ankle height below the lowest ankles. `to_world` applies the result: z up, the
origin on the floor below the subject's mean position, x along camera 0's horizontal view.

Conventions as pipeline/camera.py: X_cam = R X + t. Functions are pure and vectorised over
frames; poses X [F,J,3] in the 17-joint order of pipeline/joints.py.
"""
from __future__ import annotations

import numpy as np

from ..camera import vector_angle
from ..joints import INDEX

__all__ = ["ANKLE_HEIGHT", "stature", "up_and_floor", "world_transform", "to_world", "align_similarity",
           "metric_scale", "transform_rig"]

# Height of the ankle joint (lateral malleolus) above the floor as a share of standing height
# (anthropometric tables: 0.039 H; Drillis & Contini via Winter, Biomechanics and Motor Control
# of Human Movement, fig. 4.1).
ANKLE_HEIGHT = 0.039

_L = {k: INDEX[k] for k in ("pelvis", "thorax", "head", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")}


def _seg(X: np.ndarray, a: str, b: str) -> np.ndarray:
    return np.linalg.norm(X[..., _L[a], :] - X[..., _L[b], :], axis=-1)


def stature(X: np.ndarray) -> float:
    """Standing height of a person from its skeleton over frames, whatever its pose: the
    median over frames of shank + thigh (both sides averaged) + trunk (pelvis to thorax) +
    thorax to head, divided by 1 - ANKLE_HEIGHT. X [F,J,3] (any unit; NaN missing) -> float in
    X's unit (NaN when a segment is never seen). The head joint must be the head top (BODY_25B,
    Human3.6M); a mid-ear head (COCO, BODY_25) reads a few centimetres short."""
    X = np.asarray(X, dtype=np.float64)
    leg = 0.5 * (_seg(X, "l_ankle", "l_knee") + _seg(X, "l_knee", "l_hip")
                 + _seg(X, "r_ankle", "r_knee") + _seg(X, "r_knee", "r_hip"))
    parts = [leg, _seg(X, "pelvis", "thorax"), _seg(X, "thorax", "head")]
    meds = [np.nanmedian(p) if np.isfinite(p).any() else np.nan for p in parts]
    return float(sum(meds) / (1.0 - ANKLE_HEIGHT))


def up_and_floor(X: np.ndarray, min_spread: float = 0.3, min_line: float = 0.1, max_tilt_deg: float = 20.0) -> dict:
    """The up direction and the floor from a person over frames. X [F,J,3] (rig frame, any
    unit; NaN missing).

    up: the normalised median over frames of the unit vector from the ankles' midpoint to the
    pelvis (the body axis: balance keeps the centre of mass, near the pelvis, above the feet;
    the trunk and head lean far more, docs/calibration.md). Where the lower
    ankle of each frame spreads over the floor (second singular value of those points at least
    min_spread x the stature in both horizontal directions, i.e. the person walked about), the
    normal of the plane fitted to them replaces it when it lies within max_tilt_deg of the body
    axis; where they spread along one direction only (min_line x the stature; a walk to and fro),
    that line is taken as
    horizontal and up is the body axis less its component along it. floor: the height along up of the 5th percentile of the lower ankle, less
    ANKLE_HEIGHT x stature. Returns {up [3], floor (float, along up), source ("ankle plane" |
    "body axis across the ankle line" | "body axis"), spread [2] (the ankles', / stature), tilt_deg (plane vs body axis), stature, centre [3] (median pelvis)}."""
    X = np.asarray(X, dtype=np.float64)
    la, ra, pelvis = X[:, _L["l_ankle"]], X[:, _L["r_ankle"]], X[:, _L["pelvis"]]
    axis = pelvis - 0.5 * (la + ra)
    n = np.linalg.norm(axis, axis=-1, keepdims=True)
    ok = np.all(np.isfinite(axis), -1) & (n[:, 0] > 0)
    if ok.sum() < 1:
        raise ValueError("world: no frame shows the subject's pelvis and both ankles; cannot tell up")
    body = np.median(axis[ok] / n[ok], axis=0)
    body /= np.linalg.norm(body)
    H = stature(X)
    # the lower ankle of each frame (along the body axis): the foot on the ground
    both = np.stack([la, ra], 1)  # [F,2,3]
    h = np.einsum("fka,a->fk", both, body)
    low = np.where(np.isfinite(h), h, np.inf).argmin(1)
    pts = both[np.arange(len(X)), low]
    pts = pts[np.all(np.isfinite(pts), -1)]
    up, source, tilt, spread = body, "body axis", np.nan, np.full(2, np.nan)
    if len(pts) >= 10 and np.isfinite(H):
        c = np.median(pts, 0)
        _, s, Vt = np.linalg.svd(pts - c, full_matrices=False)
        spread = s[:2] / np.sqrt(len(pts))
        spread_h = spread / H
        normal = Vt[2] * np.sign(Vt[2] @ body)
        tilt = float(np.degrees(vector_angle(normal, body)))
        if spread[1] >= min_spread * H and tilt <= max_tilt_deg:
            up, source = normal, "ankle plane"
        elif spread[0] >= min_line * H:
            # the ankles trace a line (walking to and fro): it is horizontal, so up is the body
            # axis without its component along it (gait leans the body mostly along the path)
            d = Vt[0]
            up = body - (body @ d) * d
            up /= np.linalg.norm(up)
            source = "body axis across the ankle line"
    hl = pts @ up if len(pts) else np.einsum("fa,a->f", np.nan_to_num(la), up)
    floor = float(np.percentile(hl, 5)) - ANKLE_HEIGHT * H if len(hl) else np.nan
    centre = np.nanmedian(X[:, _L["pelvis"]], axis=0)
    return {"up": up, "floor": floor, "source": source, "tilt_deg": tilt, "stature": H, "centre": centre,
            "spread": spread / H if np.isfinite(H) else spread}


def world_transform(up: np.ndarray, floor: float, centre: np.ndarray, R0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation A and offset b taking rig coordinates to the upright world, Xw = A X + b:
    z along `up`, the origin on the floor below `centre`, x along camera 0's horizontal viewing
    direction (R0 [3,3] its rotation; its optical axis is R0[2] in the rig frame). -> A [3,3], b [3]."""
    z = np.asarray(up, float) / np.linalg.norm(up)
    view = R0[2] - (R0[2] @ z) * z
    if np.linalg.norm(view) < 1e-6:  # camera 0 looks straight down: use its x axis
        view = R0[0] - (R0[0] @ z) * z
    x = view / np.linalg.norm(view)
    y = np.cross(z, x)
    A = np.stack([x, y, z])
    foot = centre - (centre @ z - floor) * z
    return A, -A @ foot


def transform_rig(R: np.ndarray, t: np.ndarray, A: np.ndarray, b: np.ndarray, s: float = 1.0):
    """A rig after the similarity Xw = s (A X + b) of its world. R [V,3,3], t [V,3] -> R', t'
    with X_cam' = R' Xw + t' = s X_cam (the cameras' frames scaled with the world)."""
    Rn = R @ A.T
    tn = s * (t - np.einsum("vab,b->va", Rn, b))
    return Rn, tn


def to_world(R: np.ndarray, t: np.ndarray, X: np.ndarray, scale: float) -> dict:
    """A rig R [V,3,3], t [V,3] (camera 0's frame, any unit) and the subject's poses X [F,J,3]
    in it -> the upright metric world: R' [V,3,3], t' [V,3] (mm), X' [F,J,3] (mm), and the
    up_and_floor figures. scale: millimetres per rig unit (metric_scale)."""
    uf = up_and_floor(X)
    first = int(np.flatnonzero(np.all(np.isfinite(R), axis=(1, 2)))[0])
    A, b = world_transform(uf["up"], uf["floor"], uf["centre"], R[first])
    Rn, tn = transform_rig(R, t, A, b, scale)
    Xw = scale * (np.einsum("ab,fjb->fja", A, X) + b)
    return {"R": Rn, "t": tn, "X": Xw, "A": A, "b": b, **uf}


def align_similarity(Ca: np.ndarray, Cb: np.ndarray, Ra: np.ndarray | None = None, Rb: np.ndarray | None = None):
    """The similarity taking rig a's world to rig b's: Xb = s Q Xa + d, from camera centres
    Ca, Cb [V,3] (Umeyama's least squares, 1991) where at least three cameras are placed; with
    two, the scale from their distance and the rotation from the cameras' orientations Ra, Rb
    [V,3,3] (world-to-camera: Q = Rb_vᵀ Ra_v, chordal mean). NaN rows are skipped.
    -> s, Q [3,3], d [3]."""
    ok = np.all(np.isfinite(Ca), 1) & np.all(np.isfinite(Cb), 1)
    A, B = Ca[ok], Cb[ok]
    if len(A) < 2:
        raise ValueError("align: fewer than two cameras are placed in both rigs")
    ma, mb = A.mean(0), B.mean(0)
    if len(A) >= 3:
        U, S, Vt = np.linalg.svd((B - mb).T @ (A - ma) / len(A))
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
        Q = U @ D @ Vt
        s = float(np.trace(np.diag(S) @ D) / np.mean(np.sum((A - ma) ** 2, 1)))
    else:
        if Ra is None or Rb is None:
            raise ValueError("align: two cameras need their rotations too")
        M = sum(Rb[v].T @ Ra[v] for v in np.flatnonzero(ok))
        U, _, Vt = np.linalg.svd(M)
        Q = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        s = float(np.linalg.norm(B[1] - B[0]) / np.linalg.norm(A[1] - A[0]))
    return s, Q, mb - s * Q @ ma


def metric_scale(R: np.ndarray, t: np.ndarray, X: np.ndarray | None = None, height_mm: float | None = None,
                 distance: tuple[int, int, float] | None = None, reference=None) -> tuple[float, str]:
    """Millimetres per unit of a rig (R [V,3,3], t [V,3]) from one source, tried in this order:
    a known camera distance (a, b, mm), a reference Cameras (mm; align_similarity of the
    centres), the subject's standing height height_mm (stature of X [F,J,3] in rig units).
    -> (scale, what it came from). ValueError when none is given or it cannot be used."""
    C = -np.einsum("vji,vj->vi", R, t)
    if distance is not None:
        a, b, mm = distance
        d = np.linalg.norm(C[int(a)] - C[int(b)])
        if not np.isfinite(d) or d <= 0:
            raise ValueError(f"scale: cameras {a} and {b} are not both placed; cannot use their distance")
        return float(mm) / d, f"the distance between cameras {a} and {b} ({mm:g} mm)"
    if reference is not None:
        s, _, _ = align_similarity(C, reference.centers, R, reference.R)
        return s, "the reference calibration's camera positions"
    if height_mm is not None:
        if X is None:
            raise ValueError("scale: the subject's height needs its poses")
        H = stature(X)
        if not np.isfinite(H) or H <= 0:
            raise ValueError("scale: the subject's legs, trunk and head are never all seen; cannot use its height")
        return float(height_mm) / H, f"the subject's height ({height_mm:g} mm)"
    raise ValueError("scale: give the subject's height, a camera distance or a reference calibration")
