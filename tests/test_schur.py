"""The bundle adjustment's solver (pipeline.geometry.schur): its Jacobian blocks against
central finite differences of its own residuals, its optimum against scipy.optimize.least_squares
(trf) on the same model (pipeline.geometry.bundle), a focal factor recovered against the
closed form (observations made with f x 1.2), and its refusals and stops."""
import time

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from pipeline.geometry import bundle, schur


def _rig(V=4, npt=400, sigma_px=1.0, seed=0, focal_factor=None):
    """A ring of V cameras looking at points near the origin, in camera 0's frame with
    |C₁| = 1; observations of every point by every camera, noisy by sigma_px at f = 1000."""
    rng = np.random.default_rng(seed)
    R, t = [], []
    for a in np.linspace(0, 2 * np.pi, V, endpoint=False):
        C = np.array([4 * np.sin(a), 0.3 * rng.normal(), -4 * np.cos(a)])
        z = -C / np.linalg.norm(C)
        x = np.cross([0, 1, 0], z)
        x /= np.linalg.norm(x)
        Rw = np.stack([x, np.cross(z, x), z])
        R.append(Rw)
        t.append(-Rw @ C)
    R, t = np.array(R), np.array(t)
    Rr = R @ R[0].T
    tr = t - np.einsum("vab,b->va", Rr, t[0])
    X = rng.normal(0, 0.8, (npt, 3)) @ R[0].T + t[0]
    k = np.linalg.norm(-Rr[1].T @ tr[1])
    tr, X = tr / k, X / k
    opt, ocam = np.repeat(np.arange(npt), V), np.tile(np.arange(V), npt)
    Xc = np.einsum("nab,nb->na", Rr[ocam], X[opt]) + tr[ocam]
    foc = np.full(len(opt), 1000.0)
    scale = np.ones(V) if focal_factor is None else np.asarray(focal_factor, float)
    obs = scale[ocam, None] * Xc[:, :2] / Xc[:, 2:] + rng.normal(0, sigma_px / 1000.0, (len(opt), 2))
    return Rr, tr, X, opt, ocam, obs, foc


def _perturbed(R, t, X, seed=1, rot=0.01, trans=0.01, pts=0.01):
    rng = np.random.default_rng(seed)
    R, t = R.copy(), t.copy()
    for c in range(1, len(R)):
        R[c] = Rotation.from_rotvec(rng.normal(0, rot, 3)).as_matrix() @ R[c]
        t[c] = t[c] + rng.normal(0, trans, 3)
    return R, t, X + rng.normal(0, pts, X.shape)


@pytest.mark.parametrize("fit_focal", [False, True])
def test_blocks_match_finite_differences(fit_focal):
    R, t, X, opt, ocam, obs, foc = _rig(V=3, npt=20, seed=3)
    R, t, X = _perturbed(R, t, X, seed=4, rot=0.2, trans=0.3, pts=0.2)
    s = np.array([0.9, 1.1, 1.3])
    r0, A, B = schur.linearise(R, t, s, X, opt, ocam, obs, foc, fit_focal)
    h = 1e-6
    for n in range(len(opt)):
        c, i = ocam[n], opt[n]

        def res(Rc=R[c], tc=t[c], sc=s[c], Xi=X[i]):
            Rv, tv, sv, Xv = R.copy(), t.copy(), s.copy(), X.copy()
            Rv[c], tv[c], sv[c], Xv[i] = Rc, tc, sc, Xi
            return schur.linearise(Rv, tv, sv, Xv, opt[n:n + 1], ocam[n:n + 1], obs[n:n + 1], foc[n:n + 1],
                                   jac=False)[0][0]
        num_X = np.stack([(res(Xi=X[i] + h * e) - res(Xi=X[i] - h * e)) / (2 * h) for e in np.eye(3)], 1)
        assert np.allclose(B[n], num_X, rtol=1e-6, atol=1e-6 * np.abs(num_X).max())
        cols = []
        if c > 0:  # the local rotation step R exp([δ]×), then the translation
            cols += [(res(Rc=R[c] @ Rotation.from_rotvec(h * e).as_matrix())
                      - res(Rc=R[c] @ Rotation.from_rotvec(-h * e).as_matrix())) / (2 * h) for e in np.eye(3)]
            cols += [(res(tc=t[c] + h * e) - res(tc=t[c] - h * e)) / (2 * h) for e in np.eye(3)]
        if fit_focal:
            cols.append((res(sc=s[c] + h) - res(sc=s[c] - h)) / (2 * h))
        num_A = np.stack(cols, 1) if cols else np.zeros((2, 0))
        k = num_A.shape[1]
        assert np.allclose(A[n][:, :k], num_A, rtol=1e-6, atol=1e-6 * max(np.abs(num_A).max(initial=0), 1.0))
        assert np.all(A[n][:, k:] == 0)


def test_solve_reaches_scipys_optimum():
    """The same model and start in scipy's trf (bundle.residuals, bundle.Jacobian): schur's cost
    is at most scipy's and the cameras agree to well under the noise's effect."""
    R, t, X, opt, ocam, obs, foc = _rig(V=4, npt=600, sigma_px=1.5, seed=5)
    R0, t0, X0 = _perturbed(R, t, X, seed=6)
    gw = np.sqrt(len(opt))
    Rs, ts, _, Xs, info = schur.solve(R0, t0, X0, opt, ocam, obs, foc, gw)
    assert info["status"] in (1, 2, 3)
    ncam, npt = len(R) - 1, len(X)
    p0 = np.concatenate([np.concatenate([Rotation.from_matrix(R0[1:]).as_rotvec(), t0[1:]], 1).ravel(), X0.ravel()])
    args = (opt, ocam, obs, foc, npt, ncam, gw)
    sol = least_squares(bundle.residuals, p0, jac=bundle.Jacobian(opt, ocam, npt, ncam), method="trf",
                        x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=200, args=args)
    assert info["cost"] <= sol.cost * (1 + 1e-9)
    Rq, tq, _, _ = bundle.unpack(sol.x, ncam, npt)
    rot = [np.degrees(Rotation.from_matrix(Rs[c] @ Rq[c].T).magnitude()) for c in range(1, len(R))]
    assert max(rot) < 1e-4
    # the scale is the gauge residual's alone (residuals do not see it), which trf leaves less
    # converged: the positions agree up to it
    assert np.allclose(ts / np.linalg.norm(ts[1]), tq / np.linalg.norm(tq[1]), atol=1e-5)
    # and the truth is found to the noise's effect
    assert max(np.degrees(Rotation.from_matrix(Rs[c] @ R[c].T).magnitude()) for c in range(1, len(R))) < 0.05
    assert abs(np.linalg.norm(ts[1]) - 1) < 1e-4  # the gauge residual (rig.bundle_adjust then makes it exact)


def test_focal_factor_recovered():
    """Camera 2's observations made with its focal length x 1.2 (the others x 1): the fitted
    factors are those, to the noise."""
    R, t, X, opt, ocam, obs, foc = _rig(V=4, npt=600, sigma_px=0.5, seed=7, focal_factor=[1.0, 1.0, 1.2, 1.0])
    R0, t0, X0 = _perturbed(R, t, X, seed=8)
    _, _, s, _, info = schur.solve(R0, t0, X0, opt, ocam, obs, foc, np.sqrt(len(opt)), fit_focal=True)
    # the scale of the factors is free up to the points' depth: compare ratios to camera 0's
    assert np.allclose(s / s[0], [1.0, 1.0, 1.2, 1.0], atol=2e-3)


def test_refusals_and_stops():
    R, t, X, opt, ocam, obs, foc = _rig(V=3, npt=50, seed=9)
    gw = np.sqrt(len(opt))
    once = opt != 0
    once[np.flatnonzero(opt == 0)[0]] = True  # point 0 seen by one camera only
    with pytest.raises(ValueError, match="at least two observations"):
        schur.solve(R, t, X, opt[once], ocam[once], obs[once], foc[once], gw)
    R0, t0, X0 = _perturbed(R, t, X, seed=10, rot=0.05)
    assert schur.solve(R0, t0, X0, opt, ocam, obs, foc, gw, max_nfev=2)[-1]["status"] == 0
    assert schur.solve(R0, t0, X0, opt, ocam, obs, foc, gw, deadline=time.perf_counter() - 1)[-1]["status"] == -2
