"""The bundle adjustment's model (pipeline.geometry.bundle): the analytic Jacobian against
scipy's finite differences (scipy.optimize._numdiff.approx_derivative, the one least_squares
uses), the right Jacobian of SO(3) against its defining property, and the pattern's check."""
import numpy as np
import pytest
from scipy.optimize._numdiff import approx_derivative
from scipy.spatial.transform import Rotation

from pipeline.geometry import bundle


def _problem(seed=0, ncam=3, npt=25, nobs=90):
    rng = np.random.default_rng(seed)
    opt = rng.integers(0, npt, nobs)
    ocam = rng.integers(0, ncam + 1, nobs)
    cams = np.concatenate([rng.normal(0, 0.4, (ncam, 3)), rng.normal(0, 1, (ncam, 3))], 1)
    X = rng.normal(0, 1, (npt, 3)) + [0, 0, 12]
    p = np.concatenate([cams.ravel(), X.ravel()])
    obs = rng.normal(0, 0.1, (nobs, 2))
    foc = rng.uniform(900, 1200, nobs)
    return p, (opt, ocam, obs, foc, npt, ncam, 3.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_jacobian_matches_finite_differences(seed):
    p, args = _problem(seed)
    Ja = bundle.Jacobian(args[0], args[1], args[4], args[5])(p, *args)
    Jn = approx_derivative(bundle.residuals, p, method="3-point", args=args)
    assert Ja.shape == Jn.shape
    assert np.all(np.abs(Ja.toarray() - Jn) <= 1e-6 * np.abs(Jn) + 1e-8 * np.abs(Jn).max())
    # the pattern holds every non-zero of the dense derivative
    assert np.all((Ja.toarray() != 0) | (np.abs(Jn) < 1e-9 * np.abs(Jn).max()))


def test_right_jacobian_definition():
    rng = np.random.default_rng(2)
    for w in (rng.normal(0, 1, 3), np.array([1e-9, 0, 0]), np.zeros(3)):
        d = 1e-6 * rng.normal(0, 1, 3)
        lhs = Rotation.from_rotvec(w + d).as_matrix()
        rhs = Rotation.from_rotvec(w).as_matrix() @ Rotation.from_rotvec(bundle.right_jacobian(w) @ d).as_matrix()
        assert np.abs(lhs - rhs).max() < 1e-11


def test_residuals_are_pixels_of_the_projection():
    p, args = _problem(3)
    opt, ocam, obs, foc, npt, ncam, gw = args
    R, t, X, _ = bundle.unpack(p, ncam, npt)
    n = 7
    Xc = R[ocam[n]] @ X[opt[n]] + t[ocam[n]]
    r = bundle.residuals(p, *args)
    assert np.allclose(r[2 * n:2 * n + 2], foc[n] * (Xc[:2] / Xc[2] - obs[n]))
    assert np.isclose(r[-1], gw * (np.linalg.norm(t[1]) - 1))


def test_jacobian_refuses_other_observations():
    p, args = _problem(4)
    jac = bundle.Jacobian(args[0], args[1], args[4], args[5])
    with pytest.raises(ValueError, match="other observations"):
        jac(p, args[0].copy(), *args[1:])
