"""Relative pose of a camera pair from joint correspondences.

Robust estimation by OpenCV (USAC_MAGSAC by default): either the essential matrix directly
on normalised coordinates (pooled rig mode: measured far more accurate, DESIGN.md), or the
paper's route, the fundamental matrix on pixels then E = K₂ᵀ F K₁. Then our own choice
among the four decompositions of E by the cheirality check, so that an ambiguous choice is
reported instead of silently taken. Every failure carries a code from FAILURES.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..camera import rotation_magnitude_deg
from . import triangulate as tri

# failure codes shared with pipeline.geometry.labels (stored as int8 per frame)
OK = 0
NO_JOINTS = 1
TOO_FEW_POINTS = 2
DEGENERATE = 3
TOO_FEW_INLIERS = 4
CHEIRALITY = 5
TRIANGULATION = 6
IMPLAUSIBLE = 7
NO_PAIR = 8
INCONSISTENT = 9

FAILURES: dict[int, str] = {
    OK: "ok",
    NO_JOINTS: "no valid joints in the frame",
    TOO_FEW_POINTS: "fewer than 8 correspondences visible in both views",
    DEGENERATE: "degenerate configuration (collinear or coplanar joints, or no model found)",
    TOO_FEW_INLIERS: "too few RANSAC inliers",
    CHEIRALITY: "cheirality ambiguous (no decomposition of E puts the joints clearly in front of both cameras)",
    TRIANGULATION: "triangulation failed (root or too few joints reconstructed)",
    IMPLAUSIBLE: "implausible skeleton (left/right bone lengths disagree)",
    NO_PAIR: "no usable camera pair",
    INCONSISTENT: "relative rotations disagree around camera triplets (loop closure)",
}

MIN_POINTS = 8


@dataclass
class PairEstimate:
    """Result of one relative-pose estimate. R [3,3], t [3] (unit norm; X₂ = R X₁ + t),
    inliers [N] bool, failure code (0 = ok), and diagnostics."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    failure: int = OK
    n_points: int = 0
    n_inliers: int = 0
    n_front: int = 0
    reproj_px: float = np.nan
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure == OK

    @property
    def rot_deg(self) -> float:
        if not np.all(np.isfinite(self.R)):
            return np.nan
        return float(rotation_magnitude_deg(self.R))


def failed(code: int, n: int, n_inl: int = 0, **info) -> PairEstimate:
    """A failed pair estimate (NaN pose, no inliers) with its FAILURES code and counts."""
    return PairEstimate(np.full((3, 3), np.nan), np.full(3, np.nan), np.zeros(n, bool), code, n, n_inl,
                        info=info)


def decompose_essential(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The four (R, t) of an essential matrix (cv2.decomposeEssentialMat):
    R [4,3,3], t [4,3] (unit), in the order (R1,t), (R1,-t), (R2,t), (R2,-t)."""
    R1, R2, t = cv2.decomposeEssentialMat(np.asarray(E, dtype=np.float64))
    t = t.ravel()
    return np.stack([R1, R1, R2, R2]), np.stack([t, -t, t, -t])


def cheirality_counts(Rs: np.ndarray, ts: np.ndarray, x1: np.ndarray, x2: np.ndarray,
                      mask: np.ndarray | None = None) -> np.ndarray:
    """Number of points triangulated in front of both cameras for each candidate pose.
    Rs [...,K,3,3], ts [...,K,3], x1, x2 [...,N,2] normalised, mask [...,N] the points that
    count (default all). -> [...,K] int."""
    _, z1, z2 = tri.triangulate_two_view(x1[..., None, :, :], x2[..., None, :, :], Rs[..., None, :, :],
                                         ts[..., None, :])
    front = (z1 > 0) & (z2 > 0) & np.isfinite(z1)
    return np.sum(front if mask is None else front & mask[..., None, :], axis=-1)


def pick_decomposition(Rs, ts, x1, x2, mask=None, min_front: float = 0.5, max_second: float = 0.5):
    """The candidate pose with the most points in front of both cameras, batched.

    Rs [...,K,3,3], ts [...,K,3] (e.g. decompose_essential's four), x1, x2 [...,N,2], mask
    [...,N] (default all). Returns (R [...,3,3], t [...,3], n_front [...], counts [...,K],
    ambiguous [...]): ambiguous when the best keeps fewer than min_front of the points in
    front, or the runner-up reaches max_second of the best.
    """
    counts = cheirality_counts(Rs, ts, x1, x2, mask)
    n = x1.shape[-2] if mask is None else mask.sum(-1)
    order = np.argsort(-counts, axis=-1, kind="stable")
    best = np.take_along_axis(counts, order[..., :1], -1)[..., 0]
    second = np.take_along_axis(counts, order[..., 1:2], -1)[..., 0]
    ambiguous = (best < min_front * n) | (second >= max_second * np.maximum(best, 1))
    R = np.take_along_axis(Rs, order[..., :1, None, None], -3)[..., 0, :, :]
    t = np.take_along_axis(ts, order[..., :1, None], -2)[..., 0, :]
    return R, t, best, counts, ambiguous


def choose_decomposition(E, x1, x2, min_front: float = 0.5, max_second: float = 0.5):
    """Pick the decomposition of E [3,3] with the most points x1, x2 [N,2] in front of both
    cameras (pick_decomposition). Returns (R, t, n_front, counts [4], ambiguous)."""
    R, t, best, counts, ambiguous = pick_decomposition(*decompose_essential(E), x1, x2, None, min_front, max_second)
    return R, t, int(best), counts, bool(ambiguous)


def is_degenerate(x1: np.ndarray, x2: np.ndarray, thr1: float, thr2: float,
                  planar_ratio: float = 0.95, fit_points: int = 2000) -> bool:
    """True when the correspondences cannot fix a relative pose: the points are collinear in
    either image (a tiny second principal spread), or one homography explains nearly all of
    them (coplanar scene or no parallax: F is then not unique). x [N,2], thresholds in the
    points' units (the RANSAC threshold). The homography is fitted to at most fit_points of
    them, evenly spaced, and tested on all."""
    for x, thr in ((x1, thr1), (x2, thr2)):
        s = np.linalg.svd(x - x.mean(0), compute_uv=False)
        if s[1] <= max(thr, 1e-9 * s[0]) * np.sqrt(len(x)) * 0.5:
            return True
    fit = np.unique(np.linspace(0, len(x1) - 1, min(len(x1), fit_points)).round().astype(np.int64))
    H, mask = cv2.findHomography(x1[fit], x2[fit], 0)  # least squares: no RANSAC needed here
    if H is None or not np.all(np.isfinite(H)):
        return True
    proj = cv2.perspectiveTransform(x1.reshape(-1, 1, 2), H).reshape(-1, 2)
    resid = np.linalg.norm(proj - x2, axis=1)
    return bool(np.mean(resid < thr2) >= planar_ratio)


def sampson_px(E: np.ndarray, x1: np.ndarray, x2: np.ndarray, focal: float) -> np.ndarray:
    """First-order geometric (Sampson) distance to x2ᵀ E x1 = 0, in pixels (Hartley &
    Zisserman eq. 11.9, scaled by `focal`, pixels per normalised unit).

    E [...,3,3]; x1, x2 [...,N,2] normalised coordinates -> [...,N] (NaN where a point is NaN)."""
    h1 = np.concatenate([x1, np.ones(x1.shape[:-1] + (1,))], -1)
    h2 = np.concatenate([x2, np.ones(x2.shape[:-1] + (1,))], -1)
    Ex1 = np.einsum("...ab,...nb->...na", E, h1)
    Etx2 = np.einsum("...ba,...nb->...na", E, h2)
    num = np.einsum("...na,...na->...n", h2, Ex1) ** 2
    den = Ex1[..., 0] ** 2 + Ex1[..., 1] ** 2 + Etx2[..., 0] ** 2 + Etx2[..., 1] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return focal * np.sqrt(num / den)


def estimate_pair(x1n: np.ndarray, x2n: np.ndarray, K1: np.ndarray, K2: np.ndarray,
                  method: str = "essential", robust: int = cv2.USAC_MAGSAC, threshold_px: float = 3.0,
                  prob: float = 0.999, min_inliers: int = 8, min_inlier_ratio: float = 0.5,
                  seed: int = 0, check_degenerate: bool = True) -> PairEstimate:
    """Relative pose of camera 2 w.r.t. camera 1 from correspondences.

    x1n, x2n [N,2] undistorted normalised points (NaN rows are dropped). K1, K2 [3,3] give
    pixel scales (the RANSAC threshold is in pixels). method "essential": E by
    cv2.findEssentialMat on normalised coordinates (threshold_px / mean focal);
    "fundamental": F by cv2.findFundamentalMat on undistorted pixels, E = K₂ᵀ F K₁ (the
    paper). Then the cheirality check over the four decompositions (inliers only).
    Returns a PairEstimate: t has unit norm (the baseline's scale is unobservable).
    """
    x1n = np.asarray(x1n, dtype=np.float64).reshape(-1, 2)
    x2n = np.asarray(x2n, dtype=np.float64).reshape(-1, 2)
    if x1n.shape != x2n.shape:
        raise ValueError(f"estimate_pair: point sets differ in shape {x1n.shape} vs {x2n.shape}")
    return estimate_pairs(x1n[None], x2n[None], K1[None], K2[None], method, robust, threshold_px, prob, min_inliers,
                          min_inlier_ratio, [seed], check_degenerate)[0]


def estimate_pairs(x1n: np.ndarray, x2n: np.ndarray, K1: np.ndarray, K2: np.ndarray,
                   method: str = "essential", robust: int = cv2.USAC_MAGSAC, threshold_px: float = 3.0,
                   prob: float = 0.999, min_inliers: int = 8, min_inlier_ratio: float = 0.5,
                   seeds=None, check_degenerate: bool = True) -> list[PairEstimate]:
    """estimate_pair for M sets of correspondences at once (e.g. one per frame): x1n, x2n
    [M,N,2], K1, K2 [M,3,3], seeds [M] (default 0). OpenCV's robust fit runs per set; the
    cheirality check and the triangulation of the inliers run on all sets together.
    -> M PairEstimates, each as estimate_pair would give it."""
    x1n = np.asarray(x1n, dtype=np.float64)
    x2n = np.asarray(x2n, dtype=np.float64)
    if x1n.shape != x2n.shape or x1n.ndim != 3 or x1n.shape[-1] != 2:
        raise ValueError(f"estimate_pairs: point sets must be [M,N,2] alike, got {x1n.shape} vs {x2n.shape}")
    if method not in ("essential", "fundamental"):
        raise ValueError(f"estimate_pair: unknown method {method!r} (essential | fundamental)")
    M, N0 = x1n.shape[:2]
    seeds = np.zeros(M, np.int64) if seeds is None else np.asarray(seeds)
    f1 = 0.5 * (K1[:, 0, 0] + K1[:, 1, 1])
    f2 = 0.5 * (K2[:, 0, 0] + K2[:, 1, 1])
    keep = np.all(np.isfinite(x1n), -1) & np.all(np.isfinite(x2n), -1)    # [M,N0]
    out: list = [None] * M
    fitted = []                                                             # (row, E, inliers [N0])
    for m in range(M):
        idx = np.flatnonzero(keep[m])
        x1, x2 = x1n[m, idx], x2n[m, idx]
        N = len(idx)
        if N < MIN_POINTS:
            out[m] = failed(TOO_FEW_POINTS if N > 0 else NO_JOINTS, N0)
            continue
        if check_degenerate and is_degenerate(x1 * f1[m], x2 * f2[m], threshold_px, threshold_px):
            out[m] = failed(DEGENERATE, N0)
            continue
        cv2.setRNGSeed(int(seeds[m]))
        if method == "essential":
            thr = threshold_px / (0.5 * (f1[m] + f2[m]))
            E, mask = cv2.findEssentialMat(x1, x2, np.eye(3), method=robust, prob=prob, threshold=thr)
        else:
            p1 = x1 @ K1[m, :2, :2].T + K1[m, :2, 2]
            p2 = x2 @ K2[m, :2, :2].T + K2[m, :2, 2]
            Fm, mask = cv2.findFundamentalMat(p1, p2, robust, threshold_px, prob)
            E = None if Fm is None or Fm.shape != (3, 3) else K2[m].T @ Fm @ K1[m]
        if E is None or mask is None or E.shape[0] < 3 or not np.all(np.isfinite(E)):
            out[m] = failed(DEGENERATE, N0)
            continue
        inl = mask.ravel().astype(bool)
        n_inl = int(inl.sum())
        if n_inl < max(min_inliers, 5) or n_inl < min_inlier_ratio * N:
            out[m] = failed(TOO_FEW_INLIERS, N0, n_inl)
            continue
        inliers = np.zeros(N0, bool)
        inliers[idx[inl]] = True
        fitted.append((m, E[:3], inliers))
    if not fitted:
        return out
    rows = np.array([m for m, _, _ in fitted])
    inl = np.stack([i for _, _, i in fitted])                              # [Mo,N0]
    Rs, ts = map(np.stack, zip(*(decompose_essential(E) for _, E, _ in fitted)))  # [Mo,4,3,3], [Mo,4,3]
    x1 = np.where(inl[..., None], x1n[rows], 0.0)
    x2 = np.where(inl[..., None], x2n[rows], 0.0)
    R, t, best, counts, ambiguous = pick_decomposition(Rs, ts, x1, x2, inl)  # the cheirality check, on the inliers
    n_inl = inl.sum(1)
    _, err, ok = tri.triangulate_pair(x1, x2, R[:, None], t[:, None], f1[rows, None], f2[rows, None])
    for k, m in enumerate(rows):
        if ambiguous[k]:
            out[m] = failed(CHEIRALITY, N0, int(n_inl[k]), counts=counts[k].tolist())
            continue
        e = err[k][inl[k]][ok[k][inl[k]]]
        out[m] = PairEstimate(R[k], t[k] / np.linalg.norm(t[k]), inl[k], OK, N0, int(n_inl[k]), int(best[k]),
                              float(np.mean(e)) if len(e) else np.nan, {"counts": counts[k].tolist()})
    return out
