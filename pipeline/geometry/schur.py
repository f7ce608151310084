"""The bundle adjustment's solver: Levenberg-Marquardt with the points eliminated (the Schur
complement), the per-observation blocks compiled (numba).

The model is bundle.py's: camera 0 is the frame (R = I, t = 0); camera c sees world point X
at X_c = R_c X + t_c, and observation n (point opt[n], camera ocam[n], normalised point
obs[n], focal length foc[n] px) has the residual foc s_c (x_c / z_c) - foc obs in pixels, s_c
camera c's factor on its focal length (1 and held unless fit_focal). One more residual,
gauge_w (|t₁| - 1), holds the scale.

Parameters: camera c ≥ 1 has [δω (3), t (3)] and, with fit_focal, s_c; camera 0 has s_0 with
fit_focal, else nothing. A rotation moves by a local step, R ← R exp([δω]×), so the Jacobian
needs no SO(3) right Jacobian: ∂r/∂δω = X × (∂r/∂X) (rows), ∂r/∂X = D R, ∂r/∂t = D with
D = foc s [[1/z, 0, -x/z²], [0, 1/z, -y/z²]], ∂r/∂s = foc (x/z, y/z).

Each iteration builds the normal equations block by block: U (cameras, dense), V_i (3 x 3
per point), W_n (camera-point, one per observation); eliminates the points (S = U - Σ W V⁻¹
Wᵀ, a system the size of the camera parameters), solves it and substitutes back. Damping
is Marquardt's (μ times the running maximum of each diagonal entry) with Nielsen's update of
μ; a step is kept when it lowers the cost. μ starts small (mu0): the bundle adjustment starts
from a chained rig close to the optimum, where nearly Gauss-Newton steps converge in a few
iterations; a rejected step raises μ (x2, x4, x8, ...). Stops (scipy.optimize.least_squares' tests and
status codes): 1 gradient (max |Jᵀr| < gtol), 2 cost (a kept step lowers it by less than
ftol of itself), 3 step (|h| < xtol (xtol + |x|)), 0 max_nfev evaluations, -2 the deadline.

Points must be seen by at least two observations (a point seen once is unconstrained along
its ray): rig.bundle_adjust passes only such points.
"""
from __future__ import annotations

import time

import numba
import numpy as np

from ..camera import rodrigues_to_matrix

__all__ = ["solve", "linearise", "cost"]

_NC = 7  # camera parameters at most: δω, t, s


@numba.njit(cache=True, nogil=True, inline="always")
def _obs(R, t, s, X, i, c, ob, f, fit_focal, r, A, B, jac):  # pragma: no cover (compiled)
    """One observation (point i, camera c, normalised ob [2], focal f): residual r [2] and, when
    jac, its camera block A [2,7] (δω, t, s; columns camera c lacks are left alone) and point
    block B [2,3]."""
    x0, x1, x2 = X[i, 0], X[i, 1], X[i, 2]
    xc = R[c, 0, 0] * x0 + R[c, 0, 1] * x1 + R[c, 0, 2] * x2 + t[c, 0]
    yc = R[c, 1, 0] * x0 + R[c, 1, 1] * x1 + R[c, 1, 2] * x2 + t[c, 1]
    zc = R[c, 2, 0] * x0 + R[c, 2, 1] * x1 + R[c, 2, 2] * x2 + t[c, 2]
    q0, q1 = xc / zc, yc / zc
    sc = s[c]
    r[0] = f * (sc * q0 - ob[0])
    r[1] = f * (sc * q1 - ob[1])
    if not jac:
        return
    a = f * sc / zc
    for row in range(2):
        q = q0 if row == 0 else q1
        d0 = a * (R[c, row, 0] - q * R[c, 2, 0])  # ∂r/∂X = D R, this row
        d1 = a * (R[c, row, 1] - q * R[c, 2, 1])
        d2 = a * (R[c, row, 2] - q * R[c, 2, 2])
        B[row, 0], B[row, 1], B[row, 2] = d0, d1, d2
        col = 0
        if c > 0:
            A[row, 0] = x1 * d2 - x2 * d1  # X × ∂r/∂X
            A[row, 1] = x2 * d0 - x0 * d2
            A[row, 2] = x0 * d1 - x1 * d0
            A[row, 3] = a if row == 0 else 0.0
            A[row, 4] = a if row == 1 else 0.0
            A[row, 5] = -a * q
            col = 6
        if fit_focal:
            A[row, col] = f * q


@numba.njit(cache=True, nogil=True)
def _rows(R, t, s, X, opt, ocam, obs, foc, fit_focal, r, A, B, jac):  # pragma: no cover (compiled)
    """Every observation's residual r [n,2] and, when jac, blocks A [n,2,7], B [n,2,3] (_obs)."""
    for n in range(opt.shape[0]):
        _obs(R, t, s, X, opt[n], ocam[n], obs[n], foc[n], fit_focal, r[n], A[n if jac else 0], B[n if jac else 0], jac)


@numba.njit(cache=True, nogil=True)
def _normal(R, t, s, X, opt, ocam, obs, foc, fit_focal, off, size, nc, npt, W):  # pragma: no cover (compiled)
    """The normal equations by blocks, each observation linearised in turn (_obs): U [nc,nc],
    gc [nc], Vp [npt,3,3], gp [npt,3], and into W [V,7,npt,3] the camera-point blocks Aᵀ B,
    camera by camera (entries no observation writes are left as they are: zeros)."""
    n_obs = opt.shape[0]
    U = np.zeros((nc, nc))
    gc = np.zeros(nc)
    Vp = np.zeros((npt, 3, 3))
    gp = np.zeros((npt, 3))
    r = np.empty(2)
    A = np.zeros((2, _NC))
    B = np.empty((2, 3))
    for n in range(n_obs):
        c, i = ocam[n], opt[n]
        _obs(R, t, s, X, i, c, obs[n], foc[n], fit_focal, r, A, B, True)
        o, k = off[c], size[c]
        for a in range(k):
            gc[o + a] += A[0, a] * r[0] + A[1, a] * r[1]
            for b in range(a, k):  # U is symmetric: the upper triangle, mirrored below
                U[o + a, o + b] += A[0, a] * A[0, b] + A[1, a] * A[1, b]
            for d in range(3):
                W[c, a, i, d] = A[0, a] * B[0, d] + A[1, a] * B[1, d]
        for d in range(3):
            gp[i, d] += B[0, d] * r[0] + B[1, d] * r[1]
            for e in range(d, 3):
                Vp[i, d, e] += B[0, d] * B[0, e] + B[1, d] * B[1, e]
    for a in range(nc):
        for b in range(a):
            U[a, b] = U[b, a]
    for i in range(npt):
        Vp[i, 1, 0], Vp[i, 2, 0], Vp[i, 2, 1] = Vp[i, 0, 1], Vp[i, 0, 2], Vp[i, 1, 2]
    return U, gc, Vp, gp


@numba.njit(cache=True, nogil=True)
def _inv3(M, out):  # pragma: no cover (compiled)
    """out = M⁻¹ for a 3 x 3 matrix (adjugate / determinant)."""
    a, b, c = M[0, 0], M[0, 1], M[0, 2]
    d, e, f = M[1, 0], M[1, 1], M[1, 2]
    g, h, k = M[2, 0], M[2, 1], M[2, 2]
    A, B_, C = e * k - f * h, -(d * k - f * g), d * h - e * g
    det = a * A + b * B_ + c * C
    out[0, 0], out[1, 0], out[2, 0] = A / det, B_ / det, C / det
    out[0, 1] = -(b * k - c * h) / det
    out[1, 1] = (a * k - c * g) / det
    out[2, 1] = -(a * h - b * g) / det
    out[0, 2] = (b * f - c * e) / det
    out[1, 2] = -(a * f - c * d) / det
    out[2, 2] = (a * e - b * d) / det


@numba.njit(cache=True, nogil=True)
def _eliminate(Vp, dV, mu, W, opt, ocam, size, WV):  # pragma: no cover (compiled)
    """Each point's damped V_μ⁻¹ [npt,3,3], and into WV [V,7,npt,3] the blocks W V_μ⁻¹ (entries
    no observation writes are left as they are: zeros)."""
    npt = Vp.shape[0]
    Vinv = np.empty((npt, 3, 3))
    Vd = np.empty((3, 3))
    for i in range(npt):
        for d in range(3):
            for e in range(3):
                Vd[d, e] = Vp[i, d, e]
            Vd[d, d] += mu * dV[i, d]
        _inv3(Vd, Vinv[i])
    for n in range(opt.shape[0]):
        c, i = ocam[n], opt[n]
        for a in range(size[c]):
            for d in range(3):
                WV[c, a, i, d] = W[c, a, i, 0] * Vinv[i, 0, d] + W[c, a, i, 1] * Vinv[i, 1, d] + W[c, a, i, 2] * Vinv[i, 2, d]
    return Vinv


def _reduce(U, gc, Vp, gp, W, dU, dV, mu, opt, ocam, off, size, WV):
    """The damped system with the points eliminated: S hc = b with S = U_μ - Σ W V_μ⁻¹ Wᵀ and
    b = -gc + Σ W V_μ⁻¹ gp, each camera pair's block one matrix product over all points; also
    V_μ⁻¹ [npt,3,3]. WV: a zeroed buffer shaped like W, reused between calls."""
    Vinv = _eliminate(Vp, dV, mu, W, opt, ocam, size, WV)
    S = U + np.diag(mu * dU)
    y = np.einsum("ide,ie->id", Vinv, gp).ravel()
    b = -gc
    cams = [c for c in range(len(off)) if size[c]]
    flat = {c: W[c, :size[c]].reshape(size[c], -1) for c in cams}
    for c in cams:
        o, k = off[c], size[c]
        b[o:o + k] += flat[c] @ y
        wv = WV[c, :k].reshape(k, -1)
        for c2 in cams:
            if c2 >= c:
                blk = wv @ flat[c2].T
                S[o:o + k, off[c2]:off[c2] + size[c2]] -= blk
                if c2 != c:
                    S[off[c2]:off[c2] + size[c2], o:o + k] -= blk.T
    return S, b, Vinv


def _back(hc, Vinv, gp, W, off, size):
    """The points' steps: hp_i = -V_μ⁻¹ (gp_i + Σ Wᵀ hc) [npt,3]."""
    z = gp.copy()
    for c in range(len(off)):
        if size[c]:
            z += (hc[off[c]:off[c] + size[c]] @ W[c, :size[c]].reshape(size[c], -1)).reshape(z.shape)
    return -np.einsum("ide,ie->id", Vinv, z)


def _layout(V: int, fit_focal: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Each camera's first column and number of parameters in the camera vector, and its size."""
    size = np.array([1 if fit_focal else 0] + [7 if fit_focal else 6] * (V - 1), np.int64)
    off = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    return off, size, int(size.sum())


def linearise(R, t, s, X, opt, ocam, obs, foc, fit_focal: bool = False, jac: bool = True):
    """Residuals r [n,2] px, camera blocks A [n,2,7] (∂r/∂(δω, t, s); unused columns 0) and point
    blocks B [n,2,3] at R [V,3,3], t [V,3], s [V], X [npt,3]; opt, ocam [n] int, obs [n,2], foc [n]."""
    n = len(opt)
    r = np.empty((n, 2))
    A = np.zeros((n, 2, _NC)) if jac else np.zeros((1, 2, _NC))
    B = np.empty((n, 2, 3)) if jac else np.zeros((1, 2, 3))
    _rows(np.ascontiguousarray(R, np.float64), np.ascontiguousarray(t, np.float64), np.asarray(s, np.float64),
          np.ascontiguousarray(X, np.float64), np.asarray(opt, np.int64), np.asarray(ocam, np.int64),
          np.ascontiguousarray(obs, np.float64), np.asarray(foc, np.float64), bool(fit_focal), r, A, B, bool(jac))
    return r, A, B


def cost(R, t, s, X, opt, ocam, obs, foc, gauge_w: float) -> float:
    """½ Σ r² over the observations and the gauge residual (arguments as linearise)."""
    r, _, _ = linearise(R, t, s, X, opt, ocam, obs, foc, jac=False)
    return 0.5 * float(np.sum(r * r)) + 0.5 * (gauge_w * (np.linalg.norm(t[1]) - 1.0)) ** 2


def solve(R, t, X, opt, ocam, obs, foc, gauge_w: float, fit_focal: bool = False, s=None,
          max_nfev: int = 50, ftol: float = 1e-8, xtol: float = 1e-8, gtol: float = 1e-8,
          deadline: float = np.inf, mu0: float = 1e-6):
    """Minimise the cost over the cameras (all but camera 0's pose) and the points.

    R [V,3,3], t [V,3] (camera 0: I, 0), X [npt,3] start; opt, ocam [n] int; obs [n,2]
    normalised; foc [n] px; s [V] focal factors (default 1; free with fit_focal); deadline a
    time.perf_counter() value. Returns R, t, s, X and info: cost, nfev (cost evaluations),
    njev (linearisations), status (module docstring)."""
    V = len(R)
    R, t, X = np.array(R, np.float64), np.array(t, np.float64), np.array(X, np.float64)
    s = np.ones(V) if s is None else np.array(s, np.float64)
    opt, ocam = np.asarray(opt, np.int64), np.asarray(ocam, np.int64)
    obs, foc = np.ascontiguousarray(obs, np.float64), np.asarray(foc, np.float64)
    npt = len(X)
    off, size, nc = _layout(V, fit_focal)
    if np.any(np.bincount(opt, minlength=npt) < 2):
        raise ValueError("schur.solve: every point needs at least two observations")
    gi = off[1] + 3 if V > 1 else -1  # camera 1's translation columns (the gauge residual)

    # the camera-point blocks, camera by camera: allocated (zeroed) once, since the kernels only
    # ever write the entries of observed (camera, point) pairs
    W, WV = np.zeros((V, _NC, npt, 3)), np.zeros((V, _NC, npt, 3))

    def lin():
        U, gc, Vp, gp = _normal(R, t, s, X, opt, ocam, obs, foc, fit_focal, off, size, nc, npt, W)
        if gi >= 0:
            nt = max(float(np.linalg.norm(t[1])), 1e-300)
            rg, Jg = gauge_w * (nt - 1.0), gauge_w * t[1] / nt
            U[gi:gi + 3, gi:gi + 3] += np.outer(Jg, Jg)
            gc[gi:gi + 3] += Jg * rg
        return U, gc, Vp, gp, W

    def params(Rv, tv, sv):  # the camera vector's values, for the step test (δω at 0)
        out = np.zeros(nc)
        for c in range(V):
            o = off[c]
            if c > 0:
                out[o + 3:o + 6] = tv[c]
            if fit_focal:
                out[o + size[c] - 1] = sv[c]
        return out

    F = cost(R, t, s, X, opt, ocam, obs, foc, gauge_w)
    nfev, njev, status = 1, 0, 0
    mu, nu = float(mu0), 2.0
    U, gc, Vp, gp, W = lin()
    njev += 1
    dU = np.maximum(np.diag(U).copy(), 1e-12)
    dV = np.maximum(np.einsum("ndd->nd", Vp).copy(), 1e-12)
    while True:
        if max(np.abs(gc).max(initial=0.0), np.abs(gp).max(initial=0.0)) < gtol:
            status = 1
            break
        if nfev >= max_nfev:
            status = 0
            break
        if time.perf_counter() > deadline:
            status = -2
            break
        S, b, Vinv = _reduce(U, gc, Vp, gp, W, dU, dV, mu, opt, ocam, off, size, WV)
        try:
            hc = np.linalg.solve(S, b)
        except np.linalg.LinAlgError:  # counted as an evaluation, so that max_nfev bounds a singular run
            nfev += 1
            mu, nu = mu * nu, nu * 2
            continue
        hp = _back(hc, Vinv, gp, W, off, size)
        Rn, tn, sn = R.copy(), t.copy(), s.copy()
        for c in range(V):
            o = off[c]
            if c > 0:
                Rn[c] = R[c] @ rodrigues_to_matrix(hc[o:o + 3])  # the local step R exp([δω]×)
                tn[c] = t[c] + hc[o + 3:o + 6]
            if fit_focal:
                sn[c] = s[c] + hc[o + size[c] - 1]
        Xn = X + hp
        Fn = cost(Rn, tn, sn, Xn, opt, ocam, obs, foc, gauge_w)
        nfev += 1
        # predicted decrease of the linear model: ½ hᵀ(μ D h - g)
        pred = 0.5 * (hc @ (mu * dU * hc - gc) + np.sum(hp * (mu * dV * hp - gp)))
        rho = (F - Fn) / pred if pred > 0 else -1.0
        hnorm = np.sqrt(hc @ hc + np.sum(hp * hp))
        xnorm = np.sqrt(np.sum(params(R, t, s) ** 2) + np.sum(X * X))
        if rho > 0 and np.isfinite(Fn):
            dF = F - Fn
            R, t, s, X, F = Rn, tn, sn, Xn, Fn
            mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
            nu = 2.0
            if dF < ftol * F:
                status = 2
                break
            if hnorm < xtol * (xtol + xnorm):
                status = 3
                break
            U, gc, Vp, gp, W = lin()
            njev += 1
            dU = np.maximum(dU, np.diag(U))
            dV = np.maximum(dV, np.einsum("ndd->nd", Vp))
        else:
            if hnorm < xtol * (xtol + xnorm):
                status = 3
                break
            mu, nu = mu * nu, nu * 2
    return R, t, s, X, {"cost": F, "nfev": nfev, "njev": njev, "status": status}
