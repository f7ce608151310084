"""The vector median of a few candidates per point, batched: the paper's fusion of pairwise
reconstructions (Sec. 3.2).

Each point's estimate of the geometric median (the minimiser of f(y) = Σ_p |X_p - y| over
its usable candidates) is computed on its own, in a compiled loop (numba): a batched numpy
iteration pays for every point until the slowest has stopped.

Per point: one or two candidates give their mean (every point of the segment is a median;
the midpoint is returned); identical candidates are their own median; then the exact
optimality test at each candidate (the median is a candidate when the unit pulls of the
others do not outweigh the weight sitting there, coincident candidates adding up; Weiszfeld's
iteration crawls there); otherwise over-relaxed Weiszfeld steps y <- y + 1.8 (T(y) - y) from
the mean, which descend f for a relaxation in [1, 2] (Ostresh 1978), until a step is below
tol times the candidates' spread (checked every 4 steps) or after n_iter steps. The
estimate is the iteration's, not the exact minimiser: at the defaults it stops short of the
median in flat valleys, between the median and the mean.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["vector_median"]

_RELAX = 1.8


@numba.njit(cache=True, nogil=True)
def _median_points(X, ok, n_iter, tol, out, count):  # pragma: no cover (compiled)
    m, P = ok.shape
    for i in range(m):
        n = 0
        y0 = y1 = y2 = 0.0
        for p in range(P):
            if ok[i, p]:
                n += 1
                y0 += X[i, p, 0]
                y1 += X[i, p, 1]
                y2 += X[i, p, 2]
        count[i] = n
        if n == 0:
            out[i, 0] = out[i, 1] = out[i, 2] = np.nan
            continue
        y0, y1, y2 = y0 / n, y1 / n, y2 / n
        if n >= 3:
            widest = ss = 0.0
            for p in range(P):
                if ok[i, p]:
                    d0, d1, d2 = X[i, p, 0] - y0, X[i, p, 1] - y1, X[i, p, 2] - y2
                    widest = max(widest, abs(d0), abs(d1), abs(d2))
                    ss += d0 * d0 + d1 * d1 + d2 * d2
            if widest > 0:
                spread = np.sqrt(ss / n)
                floor = 1e-12 * max(spread, 1e-9)
                vertex = False
                for p in range(P):
                    if not ok[i, p]:
                        continue
                    here = 1.0
                    q0 = q1 = q2 = 0.0
                    for q in range(P):
                        if q == p or not ok[i, q]:
                            continue
                        d0, d1, d2 = X[i, q, 0] - X[i, p, 0], X[i, q, 1] - X[i, p, 1], X[i, q, 2] - X[i, p, 2]
                        r = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                        if r <= floor:
                            here += 1.0
                        else:
                            q0 += d0 / r
                            q1 += d1 / r
                            q2 += d2 / r
                    if np.sqrt(q0 * q0 + q1 * q1 + q2 * q2) <= here:
                        y0, y1, y2 = X[i, p, 0], X[i, p, 1], X[i, p, 2]
                        vertex = True
                        break
                if not vertex:
                    it = 0
                    while it < n_iter:
                        for _ in range(min(4, n_iter - it)):  # the step is checked every 4 steps
                            t0 = t1 = t2 = den = 0.0
                            for p in range(P):
                                if ok[i, p]:
                                    d0, d1, d2 = X[i, p, 0] - y0, X[i, p, 1] - y1, X[i, p, 2] - y2
                                    inv = 1.0 / max(np.sqrt(d0 * d0 + d1 * d1 + d2 * d2), floor)
                                    den += inv
                                    t0 += inv * X[i, p, 0]
                                    t1 += inv * X[i, p, 1]
                                    t2 += inv * X[i, p, 2]
                            n0 = y0 + _RELAX * (t0 / den - y0)
                            n1 = y1 + _RELAX * (t1 / den - y1)
                            n2 = y2 + _RELAX * (t2 / den - y2)
                            s0, s1, s2 = n0 - y0, n1 - y1, n2 - y2
                            y0, y1, y2 = n0, n1, n2
                            it += 1
                        if np.sqrt(s0 * s0 + s1 * s1 + s2 * s2) <= tol * spread:
                            break
        out[i, 0] = y0
        out[i, 1] = y1
        out[i, 2] = y2


def vector_median(X: np.ndarray, ok: np.ndarray, n_iter: int = 25, tol: float = 1e-4):
    """Geometric median of candidates, batched (the module's method).

    X [...,P,3] candidates, ok [...,P] which are usable (non-finite candidates never are).
    Returns the estimate [...,3] (NaN where no candidate) and the count of candidates used
    [...] int64. At most n_iter steps per point; tol is relative to the candidates' spread.
    Releases the GIL (threads labelling chunks run in parallel).
    """
    X = np.asarray(X, dtype=np.float64)
    batch, P = X.shape[:-2], X.shape[-2]
    ok = np.asarray(ok, bool) & np.all(np.isfinite(X), -1)
    Xf = np.ascontiguousarray(X.reshape(-1, P, 3))
    okf = np.ascontiguousarray(ok.reshape(-1, P))
    out = np.empty((len(Xf), 3))
    count = np.empty(len(Xf), np.int64)
    _median_points(Xf, okf, int(n_iter), float(tol), out, count)
    return out.reshape(batch + (3,)), count.reshape(batch)
