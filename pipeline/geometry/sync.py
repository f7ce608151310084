"""Frame offsets between views, from the 2D keypoints alone (no extrinsics needed).

A static rig's two views see the same 3D joints at the same instant, so their keypoints obey
one epipolar geometry. Pairing view i's frame f with view j's frame f + d keeps that geometry
only at the true lag d: at any other lag the person has moved between the two images and no
essential matrix explains the pooled correspondences. For every camera pair and every lag in
[-max_lag, max_lag], `lag_costs` fits an essential matrix to the lagged joints of a fixed set
of anchor frames (cv2.findEssentialMat, USAC, on normalised coordinates) and scores the lag by
the median Sampson distance of all of them, in pixels. A pair whose essential matrix is given
(a calibration that explains its joints) is scored under that one matrix at every lag, with
no fit: a fitted matrix absorbs part of a wrong lag's motion, a given one cannot.
`solve_offsets` turns the pairwise cost curves into one offset per camera (camera 0 = 0) by
coordinate descent on the mean log cost, and `estimate_offsets` does both and says how clear
the evidence is.

Convention: offsets[v] = o means view v's keypoints at frame f + o show the instant camera 0
shows at frame f (view v started recording o frames before camera 0: drop its first o frames
to align it; o < 0: it started |o| frames after). A pair (i, j)'s lag is offsets[j] - offsets[i].

Limits: the person must move between frames (a still person gives flat curves: no evidence,
offset 0); offsets beyond max_lag are not seen; a sub-frame offset rounds to a frame or shows
as no clear evidence.
"""
from __future__ import annotations

import itertools
import warnings

import cv2
import numpy as np

from .. import camera
from ..cores import thread_map
from .epipolar import sampson_px

__all__ = ["estimate_offsets", "lag_costs", "solve_offsets", "total_cost",
           "shift_view", "normalised_points"]


# a camera pair whose best lag still costs more than this x threshold_px (median Sampson
# distance) agrees at no lag: bad keypoints, not an offset (real in-sync pairs: 3-5 px)
BAD_PAIR_X = 4.0


def _pairs(V: int) -> np.ndarray:
    return np.array(list(itertools.combinations(range(V), 2)), dtype=np.int64).reshape(-1, 2)


SYNC_CHUNK = 8192  # frames per batch when estimate_offsets counts visibility


def normalised_points(kp2d: np.ndarray, K: np.ndarray, dist: np.ndarray | None,
                      min_confidence: float = 0.05) -> np.ndarray:
    """kp2d [F,V,J,3] pixels -> undistorted normalised points [F,V,J,2], NaN where unusable
    (non-finite, or confidence below min_confidence). K [V,3,3], dist [V,5] or None."""
    kp2d = np.asarray(kp2d, dtype=np.float64)
    F, V, J = kp2d.shape[:3]
    uv = np.array(kp2d[..., :2])
    conf = kp2d[..., 2]
    with np.errstate(invalid="ignore"):
        bad = ~(np.all(np.isfinite(uv), -1) & np.isfinite(conf) & (conf >= min_confidence))
    uv[bad] = np.nan
    xn = np.empty_like(uv)
    for v in range(V):
        if dist is not None and np.any(np.asarray(dist)[v] != 0):
            xn[:, v] = camera.undistort_points(uv[:, v].reshape(-1, 2), K[v], dist[v]).reshape(F, J, 2)
        else:
            xn[:, v] = camera.normalise_points(uv[:, v], K[v])
    return xn


def visible(kp2d: np.ndarray, K: np.ndarray, dist: np.ndarray | None, min_confidence: float = 0.05) -> np.ndarray:
    """Where normalised_points is finite, [F,V,J] bool, without normalising the views that have
    no distortion: their normalisation is affine (finite K⁻¹ keeps finite points finite)."""
    kp2d = np.asarray(kp2d, dtype=np.float64)
    V = kp2d.shape[1]
    with np.errstate(invalid="ignore"):
        conf = kp2d[..., 2]
        vis = np.isfinite(kp2d[..., 0]) & np.isfinite(kp2d[..., 1]) & np.isfinite(conf) & (conf >= min_confidence)
    for v in range(V):
        if dist is not None and np.any(np.asarray(dist)[v] != 0):  # undistortion can fail: ask it
            vis[:, v] = np.all(np.isfinite(normalised_points(kp2d[:, v:v + 1], K[v:v + 1], dist[v:v + 1],
                                                             min_confidence)), -1)[:, 0]
        elif not np.all(np.isfinite(np.linalg.inv(K[v]))):
            vis[:, v] = False
    return vis


def anchor_frames(F: int, max_lag: int, n_frames: int) -> np.ndarray:
    """At most n_frames frame indices, evenly spread over [max_lag, F - max_lag). -> [A] int."""
    anchors = np.arange(max_lag, F - max_lag)
    if len(anchors) > n_frames:
        anchors = anchors[np.linspace(0, len(anchors) - 1, n_frames).round().astype(int)]
    return anchors


def lag_costs(xn: np.ndarray, focal: np.ndarray, pairs: np.ndarray, lags: np.ndarray, anchors: np.ndarray,
              threshold_px: float = 3.0, max_iters: int = 100, min_points: int = 40,
              seed: int = 0, rows: np.ndarray | None = None,
              given: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Epipolar consistency of camera pairs at each lag.

    xn [F,V,J,2] undistorted normalised points (NaN missing); focal [V] pixels; pairs [P,2];
    lags [L] int; anchors [A] frames with anchors + lags inside [0, F). For pair (i, j) and
    lag d, view i's joints at the anchor frames are paired with view j's at anchor + d, an
    essential matrix is fitted (USAC) and the lag scored by the median Sampson distance of
    all those correspondences. Returns cost [P,L] pixels (NaN where fewer than min_points
    correspondences or no model) and points [P,L] int. rows [R] sorted frame numbers: xn holds
    only those frames (xn[k] is frame rows[k]); default every frame. given [P,3,3]: pair p's
    essential matrix (x_j^T E x_i = 0, normalised points) scores every lag instead of a fit;
    a row with a NaN is fitted.
    """
    P, L = len(pairs), len(lags)
    fixed = np.zeros(P, bool) if given is None else np.all(np.isfinite(given), axis=(1, 2))
    cost = np.full((P, L), np.nan)
    npts = np.zeros((P, L), np.int64)
    if len(anchors) == 0:
        return cost, npts
    at = (lambda fr: fr) if rows is None else (lambda fr: np.searchsorted(rows, fr))  # noqa: E731
    ok = np.all(np.isfinite(xn), -1)  # [F,V,J]

    def score(pk: tuple[int, int]) -> None:  # one (pair, lag): its own cells of cost and npts
        p, k = pk
        i, j = pairs[p]
        d = lags[k]
        f = 0.5 * (focal[i] + focal[j])
        m = ok[at(anchors), i] & ok[at(anchors + d), j]
        npts[p, k] = int(m.sum())
        if npts[p, k] < max(min_points, 8):
            return
        x1, x2 = xn[at(anchors), i][m], xn[at(anchors + d), j][m]
        cv2.setRNGSeed(int(seed) + p)  # OpenCV's generator is per thread: the same fit on any thread
        E, _ = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.USAC_FAST, prob=0.999,
                                    threshold=threshold_px / f, maxIters=int(max_iters))
        if E is None or E.shape[0] < 3 or not np.all(np.isfinite(E)):
            return
        r = sampson_px(E.reshape(-1, 3, 3), x1[None], x2[None], f)  # several solutions: the best
        cost[p, k] = float(np.nanmin(np.nanmedian(r, axis=-1)))
    for p in np.flatnonzero(fixed):  # a given matrix: every lag in one product, no fit
        i, j = pairs[p]
        x1 = xn[at(anchors), i]  # [A,J,2]
        x2 = xn[at(anchors[None] + lags[:, None]), j]  # [L,A,J,2]
        r = sampson_px(given[p], x1.reshape(1, -1, 2), x2.reshape(L, -1, 2), 0.5 * (focal[i] + focal[j]))
        npts[p] = np.isfinite(r).sum(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a lag with no point: NaN, as below
            cost[p] = np.where(npts[p] >= max(min_points, 8), np.nanmedian(r, axis=-1), np.nan)
    thread_map(score, [(p, k) for p in np.flatnonzero(~fixed) for k in range(L)])  # the fits on a thread per core
    return cost, npts


def camera_profile(v: int, offsets: np.ndarray, pairs: np.ndarray, lags: np.ndarray,
                   logc: np.ndarray) -> np.ndarray:
    """Mean log cost of camera v's pairs when v takes each offset in `lags`, the other
    cameras at `offsets`. logc [P,L] log pixels (NaN unknown). -> [L] (NaN: no pair scored)."""
    L = len(lags)
    lo = lags[0]
    rows = []
    for p, (i, j) in enumerate(pairs):
        if v not in (i, j):
            continue
        d = lags - offsets[i] if j == v else offsets[j] - lags  # the pair's lag o_j - o_i
        k = d - lo
        inside = (k >= 0) & (k < L)
        row = np.full(L, np.nan)
        row[inside] = logc[p, k[inside]]
        rows.append(row)
    if not rows:
        return np.full(L, np.nan)
    rows = np.stack(rows)
    n = np.isfinite(rows).sum(0)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(rows, 0) / np.maximum(n, 1), np.nan)


def total_cost(offsets: np.ndarray, pairs: np.ndarray, lags: np.ndarray, logc: np.ndarray) -> float:
    """Mean over pairs of the log cost at the pair's lag offsets[j] - offsets[i]; a lag outside
    the table or unscored counts as the pair's worst scored lag. logc [P,L]. -> float."""
    d = offsets[pairs[:, 1]] - offsets[pairs[:, 0]] - lags[0]
    inside = (d >= 0) & (d < len(lags))
    with np.errstate(invalid="ignore"):
        worst = np.nanmax(np.where(np.isfinite(logc), logc, -np.inf), axis=1)
    val = np.where(inside, logc[np.arange(len(pairs)), np.clip(d, 0, len(lags) - 1)], np.nan)
    val = np.where(np.isfinite(val), val, worst)
    ok = np.isfinite(val)
    return float(val[ok].mean()) if ok.any() else np.inf


def solve_offsets(V: int, pairs: np.ndarray, lags: np.ndarray, cost: np.ndarray,
                  cameras: np.ndarray | None = None, sweeps: int = 8) -> np.ndarray:
    """One offset per camera from pairwise lag costs, relative to camera 0 (or the first of
    `cameras`). Coordinate descent on the mean log cost of each camera's pairs (every camera
    moves, then all are re-referenced), from two starts: all zero, and each camera at its best
    lag with the reference camera; the start ending at the lower total_cost wins.
    pairs [P,2], lags [L] (consecutive ints), cost [P,L] pixels (NaN unknown), cameras [V] bool
    (those to solve; the others stay 0). -> offsets [V] int."""
    use = np.ones(V, bool) if cameras is None else np.asarray(cameras, bool)
    if use.sum() < 2 or len(pairs) == 0:
        return np.zeros(V, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(np.maximum(cost, 1e-6))
    ref = int(np.flatnonzero(use)[0])
    starts = [np.zeros(V, np.int64), np.zeros(V, np.int64)]
    for p, (i, j) in enumerate(pairs):
        if i == ref and np.isfinite(logc[p]).any():
            starts[1][j] = lags[int(np.nanargmin(logc[p]))]
    best, best_cost = None, np.inf
    for o in starts:
        o = o.copy()
        for _ in range(sweeps):
            changed = False
            for v in np.flatnonzero(use):
                prof = camera_profile(v, o, pairs, lags, logc)
                if not np.isfinite(prof).any():
                    continue
                b = lags[int(np.nanargmin(prof))]
                k = o[v] - lags[0]
                now = prof[k] if 0 <= k < len(lags) and np.isfinite(prof[k]) else np.inf
                if b != o[v] and prof[b - lags[0]] < now:  # strictly better: no cycling on ties
                    o[v], changed = b, True
            if not changed:
                break
        o = np.where(use, o - o[ref], 0)
        c = total_cost(o, pairs, lags, logc)
        if c < best_cost - 1e-12:
            best, best_cost = o, c
    return best if best is not None else np.zeros(V, np.int64)


def _reference(offsets: np.ndarray, use: np.ndarray) -> int:
    """The offset most usable cameras share (ties: camera 0's, i.e. the first usable one's)."""
    vals, counts = np.unique(offsets[use], return_counts=True)
    best = vals[counts == counts.max()]
    first = offsets[np.flatnonzero(use)[0]]
    return int(first) if first in best else int(best[np.argmin(np.abs(best))])


def estimate_offsets(kp2d: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None, max_lag: int = 10,
                     n_frames: int = 64, min_confidence: float = 0.05, threshold_px: float = 3.0,
                     max_iters: int = 100, min_points: int = 40, min_ratio: float = 1.25,
                     min_gain_px: float = 0.25, max_pairs_per_camera: int = 3, cameras=None,
                     seed: int = 0, usable: np.ndarray | None = None,
                     given_E: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Each view's frame offset relative to camera 0, from the keypoints alone.

    kp2d [F,V,J,3] (x, y, confidence; NaN missing) in original pixels; K [V,3,3]; dist [V,5]
    or None; cameras [V] bool: the views to consider (default all; the others get offset 0 and
    NaN evidence); usable [F,V,J] bool (default all): points treated as missing where False
    (estimate_offsets works in chunks of SYNC_CHUNK frames and normalises only the frames its
    anchors reach). The search covers [-max_lag, max_lag], shrunk so that at least 8 anchor
    frames fit (max_lag <= (F - 8) // 2); with fewer than 10 frames nothing is estimated.
    given_E [V,V,3,3]: for i < j, the essential matrix of a calibration trusted for pair (i, j)
    (x_j^T E x_i = 0), which scores its lags without a fit (lag_costs); NaN: fitted.

    Returns offsets [V] int (module convention: view v's frame f + offsets[v] shows camera
    0's instant f) and diagnostics: lags [L], pairs [P,2], cost_px [P,L], points [P,L],
    reference (the offset most cameras share), relative [V] (offsets - reference),
    given [P] (pairs scored under given_E), cost_at_offset_px / cost_at_reference_px [V]
    (geometric mean over the camera's pairs), ratio [V] (at reference / at offset; >= 1),
    sharpness [V] (its cost at the best other
    offset / at its own: near 1 = no evidence either way, e.g. a still person), clear [V]
    (relative != 0 with ratio >= min_ratio and a gain >= min_gain_px, and one of its pairs
    agreeing at some lag: pairs whose cost stays above BAD_PAIR_X x threshold_px at every lag
    are left out of the solve, as a view of bad keypoints has no offset to tell), agrees [V]
    (False: a view whose scored pairs agree at no lag: out of sync by more than max_lag, or its
    keypoints are of something else), max_lag, anchors
    (count), skipped (a reason, or "").
    """
    kp2d = np.asarray(kp2d, dtype=np.float64)
    if kp2d.ndim != 4 or kp2d.shape[-1] != 3:
        raise ValueError(f"sync: keypoints2d must be [F,V,J,3], got {kp2d.shape}")
    F, V = kp2d.shape[:2]
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (V, 3, 3):
        raise ValueError(f"sync: K must be [{V},3,3] for {V} views, got {K.shape}")
    use = np.ones(V, bool) if cameras is None else np.asarray(cameras, bool).copy()
    L = int(min(max_lag, max((F - 8) // 2, 0)))
    lags = np.arange(-L, L + 1)
    diag = {"lags": lags, "max_lag": L, "reference": 0, "given": np.zeros(0, bool),
            "relative": np.zeros(V, np.int64), "agrees": np.ones(V, bool),
            "cost_at_offset_px": np.full(V, np.nan), "cost_at_reference_px": np.full(V, np.nan),
            "ratio": np.full(V, np.nan), "sharpness": np.full(V, np.nan), "clear": np.zeros(V, bool),
            "anchors": 0, "skipped": ""}
    offsets = np.zeros(V, np.int64)
    if F < 10 or L < 1:
        diag.update(pairs=np.zeros((0, 2), np.int64), cost_px=np.zeros((0, len(lags))),
                    points=np.zeros((0, len(lags)), np.int64),
                    skipped=f"{F} frames: too few to compare lags (at least 10)")
        return offsets, diag
    # visibility counted in chunks; only the frames the anchors and their lags reach are kept
    # normalised (memory bounded by the chunk, not by F)
    anchors = anchor_frames(F, L, n_frames)
    rows = np.unique((anchors[:, None] + lags[None]).ravel())
    seen, co = np.zeros(V), np.zeros((V, V))
    for s in range(0, F, SYNC_CHUNK):
        part = kp2d[s:s + SYNC_CHUNK]
        if usable is not None:
            part = np.where(np.asarray(usable[s:s + SYNC_CHUNK], bool)[..., None], part, np.nan)
        vis = visible(part, K, dist, min_confidence).astype(np.float64)
        seen += vis.sum((0, 2))
        if V > 6:
            co += np.einsum("fvj,fuj->vu", vis, vis)
    part = kp2d[rows] if usable is None else np.where(np.asarray(usable[rows], bool)[..., None], kp2d[rows], np.nan)
    xn = normalised_points(part, K, dist, min_confidence)
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    use &= seen >= min_points
    pairs = _pairs(V)
    pairs = pairs[use[pairs[:, 0]] & use[pairs[:, 1]]]
    if use.sum() > 6:  # each camera with its best-covisible partners
        keep = np.zeros(len(pairs), bool)
        for v in np.flatnonzero(use):
            mine = np.flatnonzero((pairs[:, 0] == v) | (pairs[:, 1] == v))
            other = np.where(pairs[mine, 0] == v, pairs[mine, 1], pairs[mine, 0])
            keep[mine[np.argsort(-co[v, other], kind="stable")[:max_pairs_per_camera]]] = True
        pairs = pairs[keep]
    given = None if given_E is None else np.asarray(given_E, np.float64)[pairs[:, 0], pairs[:, 1]]
    cost, npts = lag_costs(xn, focal, pairs, lags, anchors, threshold_px, max_iters, min_points, seed, rows=rows,
                           given=given)
    diag.update(pairs=pairs, cost_px=cost, points=npts, anchors=int(len(anchors)),
                given=np.zeros(len(pairs), bool) if given is None else np.all(np.isfinite(given), axis=(1, 2)))
    if use.sum() < 2 or not np.isfinite(cost).any():
        diag["skipped"] = "fewer than 2 views share enough joints"
        return offsets, diag
    # a pair that agrees at no lag (bad keypoints in one of its views) says nothing about time
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        agreeing = np.nanmin(np.where(np.isfinite(cost), cost, np.inf), axis=1) <= BAD_PAIR_X * threshold_px
    raw_cost = cost
    cost = np.where(agreeing[:, None], cost, np.nan)
    diag["cost_px"] = cost
    offsets = solve_offsets(V, pairs, lags, cost, use)
    ref = _reference(offsets, use)
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(np.maximum(cost, 1e-6))
    for v in np.flatnonzero(use):
        prof = camera_profile(v, offsets, pairs, lags, logc)
        k_own, k_ref = offsets[v] + L, ref + L
        own = prof[k_own] if 0 <= k_own < len(lags) else np.nan
        at_ref = prof[k_ref] if 0 <= k_ref < len(lags) else np.nan
        others = np.delete(prof, k_own) if 0 <= k_own < len(lags) else prof
        diag["cost_at_offset_px"][v] = np.exp(own)
        diag["cost_at_reference_px"][v] = np.exp(at_ref)
        diag["ratio"][v] = np.exp(at_ref - own)
        if np.isfinite(others).any():
            diag["sharpness"][v] = np.exp(np.nanmin(others) - own)
    diag["reference"] = ref
    diag["relative"] = np.where(use, offsets - ref, 0)
    gain = diag["cost_at_reference_px"] - diag["cost_at_offset_px"]
    with np.errstate(invalid="ignore"):
        # a view none of whose pairs agrees at any lag (a shuffled view, another recording) has
        # no offset to tell, only bad keypoints: it is the rig's quality gate's to refuse
        agrees = np.array([bool(np.any(agreeing[(pairs[:, 0] == v) | (pairs[:, 1] == v)])) for v in range(V)])
        diag["clear"] = (diag["relative"] != 0) & (diag["ratio"] >= min_ratio) & (gain >= min_gain_px) & agrees
        # a view with pairs scored but none agreeing at any lag: out by more than max_lag, or bad keypoints
        scored = np.array([bool(np.isfinite(raw_cost[(pairs[:, 0] == v) | (pairs[:, 1] == v)]).any())
                           for v in range(V)])
        diag["agrees"] = agrees | ~scored | ~use
    return offsets, diag


def shift_view(kp2d: np.ndarray, v: int, offset: int) -> np.ndarray:
    """kp2d [F,V,J,3] with view v delayed by `offset` frames in this module's convention (its
    frame f + offset shows what the others show at f; NaN where it has no frame): a
    desynchronised copy for tests, or with -offset the alignment of an estimated offset."""
    out = np.array(kp2d, dtype=np.float64, copy=True)
    out[:, v] = np.nan
    F = len(out)
    if offset >= 0:
        out[offset:, v] = kp2d[:F - offset, v]
    else:
        out[:F + offset, v] = kp2d[-offset:, v]
    return out
