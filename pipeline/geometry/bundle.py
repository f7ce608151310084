"""The bundle adjustment's model for scipy: reprojection residuals of a static rig and their
analytic, sparse Jacobian, what rig.bundle_adjust hands to scipy.optimize.least_squares when a
robust loss is asked for (least squares, the default, runs schur.solve on the same model).

Parameters p = [ω₁, t₁, …, ω_{V-1}, t_{V-1}, X₁, …, X_N]: camera 0 is the frame (R = I,
t = 0), every other camera a rotation vector ω (R = exp([ω]×), scipy's Rotation.from_rotvec)
and a translation t, then the N points (world). Observation n is point opt[n] seen by camera
ocam[n] at the normalised point obs[n]; its residual is focal[n] x (projection - obs) in
pixels. One more residual, gauge_w (|t₁| - 1), holds the scale (|C₁ - C₀| = 1 with C₀ = 0).

The Jacobian is exact (no finite differences, whose columns cost a residual evaluation per
colour group): with D = f [[1/z, 0, -x/z²], [0, 1/z, -y/z²]] at X_c = R X + t,
∂r/∂X = D R, ∂r/∂t = D, ∂r/∂ω = -D R [X]× J_r(ω), J_r the right Jacobian of SO(3):
I - (1 - cos θ)/θ² [ω]× + (θ - sin θ)/θ³ [ω]×². tests/test_bundle.py checks it against
scipy's finite differences.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial.transform import Rotation

from .triangulate import skew


def unpack(p: np.ndarray, ncam: int, npt: int):
    """p -> R [ncam+1,3,3], t [ncam+1,3] (camera 0 = identity), X [npt,3], ω [ncam,3]."""
    cams = p[:6 * ncam].reshape(ncam, 6)
    R = np.concatenate([np.eye(3)[None], Rotation.from_rotvec(cams[:, :3]).as_matrix()])
    t = np.concatenate([np.zeros((1, 3)), cams[:, 3:]])
    return R, t, p[6 * ncam:].reshape(npt, 3), cams[:, :3]


def _project(R, t, X, opt, ocam):
    """Per camera (few cameras, many points: one matrix product each): the camera-frame points
    Xc [nobs,3] of the observations."""
    Xc = np.empty((len(opt), 3))
    for c in range(len(R)):
        sel = np.flatnonzero(ocam == c)
        Xc[sel] = X[opt[sel]] @ R[c].T + t[c]
    return Xc


def residuals(p, opt, ocam, obs, foc, npt, ncam, gauge_w) -> np.ndarray:
    """Reprojection residuals in pixels [2 nobs] (x, y per observation) and the gauge residual
    -> [2 nobs + 1]. opt, ocam [nobs] int, obs [nobs,2] normalised, foc [nobs] pixels."""
    R, t, X, _ = unpack(p, ncam, npt)
    Xc = _project(R, t, X, opt, ocam)
    out = np.empty(2 * len(opt) + 1)
    res = out[:-1].reshape(-1, 2)
    np.divide(Xc[:, :2], Xc[:, 2:3], out=res)
    res -= obs
    res *= foc[:, None]
    out[-1] = gauge_w * (np.linalg.norm(t[1]) - 1.0)
    return out


def right_jacobian(w: np.ndarray) -> np.ndarray:
    """Right Jacobian of SO(3) at rotation vectors w [...,3] -> [...,3,3]:
    exp([w + δ]×) ≈ exp([w]×) exp([J_r(w) δ]×)."""
    w = np.asarray(w, dtype=np.float64)
    th = np.linalg.norm(w, axis=-1)[..., None, None]
    W = skew(w)
    small = th < 1e-6
    ths = np.where(small, 1.0, th)
    a = np.where(small, 0.5 - th ** 2 / 24.0, (1.0 - np.cos(ths)) / ths ** 2)
    b = np.where(small, 1.0 / 6.0 - th ** 2 / 120.0, (ths - np.sin(ths)) / ths ** 3)
    return np.eye(3) - a * W + b * (W @ W)


class Jacobian:
    """∂residuals/∂p as a callable for least_squares' `jac`: sparse [2 nobs + 1, 6 ncam + 3 npt]
    (arguments as residuals). The pattern depends only on which camera sees which point, so it
    is built once per set of observations (opt, ocam) and only the values are computed per call."""

    def __init__(self, opt: np.ndarray, ocam: np.ndarray, npt: int, ncam: int):
        n = len(opt)
        self.key = (opt, ocam)
        # every observation's two rows as 9 slots: the camera's 6 columns (none for camera 0,
        # the frame), then its point's 3; the gauge row holds ∂/∂t₁
        cols = np.empty((n, 2, 9), np.int64)
        cols[:, :, 6:] = (6 * ncam + 3 * opt)[:, None, None] + np.arange(3)
        cols[:, :, :6] = (6 * (ocam - 1))[:, None, None] + np.arange(6)
        self.used = np.ones((n, 2, 9), bool)
        self.used[ocam == 0, :, :6] = False
        counts = np.repeat(np.where(ocam > 0, 9, 3), 2)
        self.indptr = np.concatenate([[0], np.cumsum(counts), [counts.sum() + 3]])
        self.indices = np.concatenate([cols[self.used], np.arange(3, 6)])
        self.all_used = bool(self.used.all())
        # observations grouped by camera (as rig.bundle_adjust orders them): slices, whose
        # selections are views rather than copies
        self.sel = []
        for c in range(ncam + 1):
            idx = np.flatnonzero(ocam == c)
            contiguous = len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx)
            self.sel.append(slice(int(idx[0]), int(idx[-1]) + 1) if contiguous and len(idx) else idx)
        self.shape = (2 * n + 1, 6 * ncam + 3 * npt)

    def __call__(self, p, opt, ocam, obs, foc, npt, ncam, gauge_w) -> csr_matrix:
        return csr_matrix((self.values(p, opt, ocam, obs, foc, npt, ncam, gauge_w), self.indices, self.indptr),
                          shape=self.shape)

    def values(self, p, opt, ocam, obs, foc, npt, ncam, gauge_w) -> np.ndarray:
        """The Jacobian's nonzero values in the order of its (fixed) CSR pattern."""
        if opt is not self.key[0] or ocam is not self.key[1]:
            raise ValueError("bundle.Jacobian: called with other observations than it was built for")
        R, t, X, om = unpack(p, ncam, npt)
        Jr = right_jacobian(om)                            # [ncam,3,3]
        vals = np.zeros((len(opt), 2, 9))
        for c, sel in enumerate(self.sel):
            Xw = X[opt[sel]]
            Xc = Xw @ R[c].T + t[c]
            a = foc[sel] / Xc[:, 2]                        # D = [[a, 0, -a x/z], [0, a, -a y/z]]
            v = vals[sel]                                  # a view where sel is a slice
            for r in range(2):
                q = Xc[:, r] / Xc[:, 2]
                # ∂r/∂X = D R = a (R[r] - q R[2]); ∂r/∂t = D's row
                dX = a[:, None] * (R[c][r] - q[:, None] * R[c][2])
                v[:, r, 6:] = dX
                if c:
                    # ∂r/∂ω = -(∂r/∂X) [X]× J_r = (X × ∂r/∂X) J_r, the cross product written out
                    cx = np.stack([Xw[:, 1] * dX[:, 2] - Xw[:, 2] * dX[:, 1],
                                   Xw[:, 2] * dX[:, 0] - Xw[:, 0] * dX[:, 2],
                                   Xw[:, 0] * dX[:, 1] - Xw[:, 1] * dX[:, 0]], -1)
                    v[:, r, :3] = cx @ Jr[c - 1]
                    v[:, r, 3 + r] = a
                    v[:, r, 5] = -a * q
            if not isinstance(sel, slice):
                vals[sel] = v
        tail = gauge_w * t[1] / max(np.linalg.norm(t[1]), 1e-300)
        if self.all_used:
            return np.concatenate([vals.ravel(), tail])
        return np.concatenate([vals[self.used], tail])


def jacobian(p, opt, ocam, obs, foc, npt, ncam, gauge_w) -> csr_matrix:
    """∂residuals/∂p, sparse [2 nobs + 1, 6 ncam + 3 npt] (arguments as residuals)."""
    return Jacobian(opt, ocam, npt, ncam)(p, opt, ocam, obs, foc, npt, ncam, gauge_w)
