"""Triangulation, vectorised over any leading batch (frames x joints): optimal two-view
correction, two-view and confidence-weighted N-view linear triangulation, and the consensus
of views that finds the observations the other views disagree with (a detector's gross
errors). The vector median that fuses pairwise reconstructions: median.py.

Coordinates: "normalised" points are undistorted K⁻¹-coordinates (x/z, y/z); camera poses
follow pipeline/camera.py (X_cam = R X + t). Everything is float64.
"""
from __future__ import annotations

import numpy as np


def skew(v: np.ndarray) -> np.ndarray:
    """[...,3] -> cross-product matrices [...,3,3]."""
    v = np.asarray(v, dtype=np.float64)
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def relative_pose(Ri, ti, Rj, tj):
    """Pose of camera j relative to camera i: X_j = R X_i + t. [...,3,3],[...,3] -> R, t."""
    R = Rj @ np.swapaxes(Ri, -1, -2)
    return R, tj - np.einsum("...ab,...b->...a", R, ti)


def essential_from_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """E = [t]x R, so that x2ᵀ E x1 = 0 for normalised points. [...,3,3],[...,3] -> [...,3,3]."""
    return skew(t) @ R


def correct_matches(F: np.ndarray, x1: np.ndarray, x2: np.ndarray, n_iter: int = 3):
    """Optimal (Hartley–Sturm) correction of correspondences, Lindstrom's iterative form.

    Finds x̂1, x̂2 minimising |x̂1 - x1|² + |x̂2 - x2|² subject to x̂2ᵀ F x̂1 = 0 (homogeneous
    coordinates; OpenCV's convention for cv2.correctMatches(F, x1, x2)). Each iteration
    solves the constraint's quadratic in the Lagrange multiplier exactly, so the output
    satisfies the epipolar constraint; the iteration converges quadratically to the
    Hartley–Sturm optimum (P. Lindstrom, "Triangulation made easy", CVPR 2010).
    F [...,3,3] broadcasts against x1, x2 [...,2]. Returns x̂1, x̂2 [...,2].
    Work in well-conditioned coordinates (e.g. focal-scaled normalised points): the tests
    check this against cv2.correctMatches to 1e-6.
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    h1x, h1y, h2x, h2y = _correct_xy(np.asarray(F, dtype=np.float64), x1[..., 0], x1[..., 1], x2[..., 0], x2[..., 1],
                                     n_iter)
    return np.stack([h1x, h1y], -1), np.stack([h2x, h2y], -1)


def _correct_xy(F, x1, y1, x2, y2, n_iter: int):
    """correct_matches on coordinate arrays (x1, y1, x2, y2 [...], F [...,3,3]) -> x̂1, ŷ1, x̂2, ŷ2."""
    f = lambda a, b: F[..., a, b]  # noqa: E731  (broadcast views, no copies)
    # F x1 and Fᵀ x2 for homogeneous points, written out so that F broadcasts cheaply
    a0 = f(0, 0) * x1 + f(0, 1) * y1 + f(0, 2)
    a1 = f(1, 0) * x1 + f(1, 1) * y1 + f(1, 2)
    a2 = f(2, 0) * x1 + f(2, 1) * y1 + f(2, 2)
    c = x2 * a0 + y2 * a1 + a2                 # x2ᵀ F x1, fixed through the iterations
    n2x, n2y = a0, a1                          # ∂c/∂x2 at the current x̂1
    b0 = f(0, 0) * x2 + f(1, 0) * y2 + f(2, 0)
    b1 = f(0, 1) * x2 + f(1, 1) * y2 + f(2, 1)
    n1x, n1y = b0, b1                          # ∂c/∂x1 at the current x̂2
    Fx1_0, Fx1_1 = a0, a1
    FTx2_0, FTx2_1 = b0, b1
    for _ in range(max(int(n_iter), 1)):
        # (x2 - λ n2)ᵀ F (x1 - λ n1) = c - 2 b λ + a λ² with the top-left 2x2 block of F
        a = (n2x * (f(0, 0) * n1x + f(0, 1) * n1y) + n2y * (f(1, 0) * n1x + f(1, 1) * n1y))
        b = 0.5 * (n2x * Fx1_0 + n2y * Fx1_1 + n1x * FTx2_0 + n1y * FTx2_1)
        disc = np.sqrt(np.maximum(b * b - a * c, 0.0))
        den = b + np.copysign(disc, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            lam = np.where(den != 0, c / den, 0.0)
        h1x, h1y = x1 - lam * n1x, y1 - lam * n1y
        h2x, h2y = x2 - lam * n2x, y2 - lam * n2y
        # new normals at the corrected points
        n2x = f(0, 0) * h1x + f(0, 1) * h1y + f(0, 2)
        n2y = f(1, 0) * h1x + f(1, 1) * h1y + f(1, 2)
        n1x = f(0, 0) * h2x + f(1, 0) * h2y + f(2, 0)
        n1y = f(0, 1) * h2x + f(1, 1) * h2y + f(2, 1)
    return h1x, h1y, h2x, h2y


def triangulate_two_view(x1: np.ndarray, x2: np.ndarray, R: np.ndarray, t: np.ndarray):
    """Linear two-view triangulation in camera 1's frame (P1 = [I|0], P2 = [R|t]).

    x1, x2 [...,2] normalised points (exact for epipolar-consistent points, e.g. after
    correct_matches; otherwise the least-squares depth along ray 1). R [...,3,3], t [...,3].
    Returns X [...,3] in camera 1's frame and the depths z1, z2 [...].
    """
    X, z1, z2 = _two_view_xy(x1[..., 0], x1[..., 1], x2[..., 0], x2[..., 1], np.asarray(R, dtype=np.float64),
                             np.asarray(t, dtype=np.float64))
    return np.stack(X, -1), z1, z2


def _two_view_xy(x1, y1, x2, y2, R, t):
    """triangulate_two_view on coordinate arrays [...] (R [...,3,3], t [...,3]) -> (X, Y, Z), z1, z2."""
    r = lambda a, b: R[..., a, b]  # noqa: E731
    # R r1 for r1 = (x1, y1, 1), then z2 r2 = z1 R r1 + t  ->  0 = z1 (r2 x R r1) + r2 x t
    q0 = r(0, 0) * x1 + r(0, 1) * y1 + r(0, 2)
    q1 = r(1, 0) * x1 + r(1, 1) * y1 + r(1, 2)
    q2 = r(2, 0) * x1 + r(2, 1) * y1 + r(2, 2)
    t0, t1, t2 = t[..., 0], t[..., 1], t[..., 2]
    u0, u1, u2 = y2 * q2 - q1, q0 - x2 * q2, x2 * q1 - y2 * q0
    w0, w1, w2 = y2 * t2 - t1, t0 - x2 * t2, x2 * t1 - y2 * t0
    with np.errstate(invalid="ignore", divide="ignore"):
        z1 = -(u0 * w0 + u1 * w1 + u2 * w2) / (u0 * u0 + u1 * u1 + u2 * u2)
    return (z1 * x1, z1 * y1, z1 + 0.0), z1, z1 * q2 + t2


def triangulate_pair(x1: np.ndarray, x2: np.ndarray, R: np.ndarray, t: np.ndarray,
                     f1=1.0, f2=1.0, n_iter: int = 3):
    """Optimal two-view triangulation (correction, then linear). Camera 1's frame.

    x1, x2 [...,2] normalised points of cameras 1 and 2; X_2 = R X_1 + t. The correction
    minimises the error in pixels: coordinates are scaled by the focal lengths f1, f2
    (scalars or broadcastable) before correct_matches, which also keeps F well
    conditioned (no principal-point offsets). Returns X [...,3], the mean reprojection
    error in pixels [...] (half the correction length per view, as |Δ1|+|Δ2| over 2) and
    an ok mask [...] (finite, in front of both cameras).
    """
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    E = essential_from_pose(R, t)
    # F in focal-scaled coordinates u = f x: F = diag(1/f2,1/f2,1) E diag(1/f1,1/f1,1)
    s1 = np.stack([1 / f1, 1 / f1, np.ones_like(f1)], -1)
    s2 = np.stack([1 / f2, 1 / f2, np.ones_like(f2)], -1)
    Fm = s2[..., :, None] * E * s1[..., None, :]
    Fm = Fm / np.linalg.norm(Fm, axis=(-2, -1), keepdims=True)
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    # coordinates as separate arrays throughout: numpy is slow on a short last axis
    u1x, u1y, u2x, u2y = x1[..., 0] * f1, x1[..., 1] * f1, x2[..., 0] * f2, x2[..., 1] * f2
    h1x, h1y, h2x, h2y = _correct_xy(Fm, u1x, u1y, u2x, u2y, n_iter)
    err = 0.5 * (np.sqrt((h1x - u1x) ** 2 + (h1y - u1y) ** 2) + np.sqrt((h2x - u2x) ** 2 + (h2y - u2y) ** 2))
    X, z1, z2 = _two_view_xy(h1x / f1, h1y / f1, h2x / f2, h2y / f2, np.asarray(R, dtype=np.float64),
                             np.asarray(t, dtype=np.float64))
    ok = np.isfinite(z1) & (z1 > 0) & (z2 > 0) & np.isfinite(err)
    return np.stack(X, -1), err, ok


# points per vectorised batch of triangulate_dlt: its temporaries (~40 floats per view and
# point) stay a few tens of MB however many frames come in
DLT_CHUNK = 32768


def triangulate_dlt(x: np.ndarray, w: np.ndarray, R: np.ndarray, t: np.ndarray, min_views: int = 2,
                    chunk: int = DLT_CHUNK):
    """Confidence-weighted N-view linear triangulation (DLT, inhomogeneous least squares).

    x [...,V,2] normalised points, w [...,V] weights (confidence; 0 or NaN = unused, NaN
    points are unused too), R [V,3,3], t [V,3] (or broadcastable [...,V,...]).
    Each view contributes rows w·(x P₃ - P₁), w·(y P₃ - P₂) of P = [R|t]; solved by the
    3x3 normal equations. Returns X [...,3] world and ok [...] (>= min_views views, solvable,
    in front of every used camera). Works through at most `chunk` points at a time (cameras
    shared by all points, R [V,3,3]), so its memory beyond the output is bounded.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    R, t = np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64)
    batch = np.broadcast_shapes(x.shape[:-2], w.shape[:-1])
    n = int(np.prod(batch))
    if R.ndim > 3 or t.ndim > 2 or n <= chunk or x.shape[:-2] != batch or w.shape[:-1] != batch:
        return _dlt_batch(x, w, R, t, min_views)
    V = x.shape[-2]
    xf, wf = x.reshape(n, V, 2), w.reshape(n, V)
    X = np.empty((n, 3))
    ok = np.empty(n, bool)
    for s in range(0, n, chunk):
        X[s:s + chunk], ok[s:s + chunk] = _dlt_batch(xf[s:s + chunk], wf[s:s + chunk], R, t, min_views)
    return X.reshape(batch + (3,)), ok.reshape(batch)


def _dlt_batch(x, w, R, t, min_views):
    """triangulate_dlt on one batch, all at once. With cameras shared by the batch (R [V,3,3])
    the normal equations are summed view by view on contiguous 1-D arrays and solved in closed
    form (Cramer), which numpy runs several times faster than [...,V,4,4] products and a
    batched solve; per-point cameras take the general path."""
    x = np.asarray(x, dtype=np.float64)
    if R.ndim != 3 or t.ndim != 2 or x.ndim < 2:
        return _dlt_general(x, w, R, t, min_views)
    V = x.shape[-2]
    batch = np.broadcast_shapes(x.shape[:-2], np.shape(w)[:-1])
    x = np.broadcast_to(x, batch + (V, 2)).reshape(-1, V, 2)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), batch + (V,)).reshape(-1, V)
    n = x.shape[0]
    P = np.concatenate([R, t[..., None]], -1)  # [V,3,4]
    # M = Σ_v w_v² (a0 a0ᵀ + a1 a1ᵀ), a_k = x_k P₃ - P_k (4-vectors); its upper 3x4 block
    M = np.zeros((3, 4, n))
    nviews = np.zeros(n, np.int64)
    front_w = []
    for v in range(V):
        xv, yv = x[:, v, 0], x[:, v, 1]
        wv = w[:, v]
        usable = np.isfinite(xv) & np.isfinite(yv) & np.isfinite(wv) & (wv > 0)
        wv = np.where(usable, wv, 0.0)
        w2 = wv * wv
        xv, yv = np.where(usable, xv, 0.0), np.where(usable, yv, 0.0)
        a0 = [xv * P[v, 2, k] - P[v, 0, k] for k in range(4)]
        a1 = [yv * P[v, 2, k] - P[v, 1, k] for k in range(4)]
        for i in range(3):
            for j in range(i, 4):
                M[i, j] += w2 * (a0[i] * a0[j] + a1[i] * a1[j])
        nviews += usable
        front_w.append(usable)
    a, b_, c = M[0, 0], M[0, 1], M[0, 2]
    d, e, f = M[1, 1], M[1, 2], M[2, 2]
    rhs = -M[:, 3]
    # cofactors of the symmetric [[a,b,c],[b,d,e],[c,e,f]]
    c00, c01, c02 = d * f - e * e, c * e - b_ * f, b_ * e - c * d
    c11, c12, c22 = a * f - c * c, b_ * c - a * e, a * d - b_ * b_
    det = a * c00 + b_ * c01 + c * c02
    scale = (a + d + f) ** 3
    good = (nviews >= min_views) & (np.abs(det) > 1e-12 * np.maximum(scale, 1e-300))
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(good, 1.0 / np.where(good, det, 1.0), 0.0)
        X = np.stack([(c00 * rhs[0] + c01 * rhs[1] + c02 * rhs[2]) * inv,
                      (c01 * rhs[0] + c11 * rhs[1] + c12 * rhs[2]) * inv,
                      (c02 * rhs[0] + c12 * rhs[1] + c22 * rhs[2]) * inv], -1)
    front = np.ones(n, bool)
    for v in range(V):
        depth = X @ R[v, 2] + t[v, 2]
        front &= (depth > 0) | ~front_w[v]
    ok = good & front
    X = np.where(ok[:, None], X, np.nan)
    return X.reshape(batch + (3,)), ok.reshape(batch)


def _dlt_general(x, w, R, t, min_views):
    """triangulate_dlt for cameras that vary over the batch (R [...,V,3,3])."""
    x = np.asarray(x, dtype=np.float64)
    w = np.where(np.all(np.isfinite(x), -1) & np.isfinite(w), w, 0.0)
    w = np.maximum(w, 0.0)
    xs = np.where(np.isfinite(x), x, 0.0)
    P = np.concatenate([R, t[..., None]], -1)  # [V,3,4]
    A0 = xs[..., 0, None] * P[..., 2, :] - P[..., 0, :]  # [...,V,4]
    A1 = xs[..., 1, None] * P[..., 2, :] - P[..., 1, :]
    w2 = (w * w)[..., None, None]
    M = (w2 * (A0[..., :, None] * A0[..., None, :] + A1[..., :, None] * A1[..., None, :])).sum(-3)
    A = M[..., :3, :3]
    b = -M[..., :3, 3]
    nviews = (w > 0).sum(-1)
    det = np.linalg.det(A)
    scale = np.trace(A, axis1=-2, axis2=-1) ** 3
    good = (nviews >= min_views) & (np.abs(det) > 1e-12 * np.maximum(scale, 1e-300))
    A = np.where(good[..., None, None], A, np.eye(3))
    X = np.linalg.solve(A, np.where(good[..., None], b, 0.0)[..., None])[..., 0]
    depth = np.einsum("...vab,...b->...va", np.broadcast_to(R, x.shape[:-1] + (3, 3)), X)[..., 2] \
        + np.broadcast_to(t[..., 2], x.shape[:-1])
    front = np.all((depth > 0) | (w == 0), -1)
    ok = good & front
    return np.where(ok[..., None], X, np.nan), ok


def consensus_outliers(cand, cok, xn, w, R, t, focal, outlier_px: float) -> np.ndarray:
    """Observations the other views disagree with (a RANSAC over view pairs, per joint).

    cand [F,Q,J,3] world candidates (e.g. each camera pair's triangulation), cok [F,Q,J];
    xn [F,V,J,2] normalised points, w [F,V,J] (> 0 observed), R [V,3,3], t [V,3], focal [V]
    pixels. Every candidate is projected into every view; the one that most views see within
    the threshold (ties: the smaller truncated error) is the joint's consensus, and an
    observation farther than the threshold from it is an outlier, when at least two views
    agree with it. Threshold: max(outlier_px, 5 x the median of the frame's candidate-view
    errors), so a rig that fits its keypoints loosely (a real calibration) keeps its joints.
    -> outliers [F,V,J] bool."""
    Xc = cand[:, :, None] @ np.swapaxes(R, 1, 2)[None, None] + t[None, None, :, None, :]  # [F,Q,V,J,3]
    with np.errstate(invalid="ignore", divide="ignore"):
        proj = Xc[..., :2] / Xc[..., 2:3]
        d = proj - xn[:, None]
        r = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2) * focal[None, None, :, None]  # [F,Q,V,J] pixels
    seen = (w > 0)[:, None] & cok[:, :, None, :] & (Xc[..., 2] > 0) & np.isfinite(r)
    r = np.where(seen, r, np.inf)
    # the frame's scale: median of all its candidate-view errors (unseen ones count as large,
    # which only raises the threshold)
    scale = np.median(np.minimum(r, 1e9).reshape(len(r), -1), axis=1)  # [F]
    thr = np.maximum(outlier_px, 5.0 * scale)[:, None, None, None]
    inl = r < thr
    support = inl.sum(2)  # [F,Q,J]
    trunc = np.where(inl, r, thr).sum(2)
    key = support * 1e6 - np.minimum(trunc / np.maximum(thr[:, :, 0], 1e-9), 1e5)
    key = np.where(cok, key, -np.inf)
    q = np.argmax(key, axis=1)  # [F,J]
    fi, ji = np.meshgrid(np.arange(cand.shape[0]), np.arange(cand.shape[2]), indexing="ij")
    best_inl = inl[fi, q, :, ji]                     # [F,J,V]
    best_support = support[fi, q, ji]                # [F,J]
    any_cand = cok.any(1)
    out = (w > 0).transpose(0, 2, 1) & ~best_inl & (best_support >= 2)[..., None] & any_cand[..., None]
    return out.transpose(0, 2, 1)
