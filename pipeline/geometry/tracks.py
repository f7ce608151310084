"""People over time: the per-frame groups of pipeline/geometry/people.py triangulated with a rig
(`group_poses`), linked into tracks by 3D proximity (`track3d`: people overlap in images, not
in space), and scored as the recording's subject (`subject_scores`). Shapes as people.py:
xn [F,V,M,J,2] normalised detections, group [F,V,M] per-frame group ids.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from .triangulate import triangulate_dlt

__all__ = ["group_poses", "track3d", "subject_scores", "nanmedian", "person_size"]


def person_size(xn: np.ndarray, focal: np.ndarray) -> np.ndarray:
    """Each detection's size in pixels: the larger side of its joints' box. xn [F,V,M,J,2]
    normalised, focal [V] -> [F,V,M] (NaN without joints)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(xn, -2) - np.nanmin(xn, -2)
        return np.nanmax(span, -1) * focal[None, :, None]


def nanmedian(d: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where none). [...,N] -> [...]. Equals
    np.nanmedian (tested), without its slow path for rows holding NaN."""
    s = np.sort(d, -1)
    n = np.isfinite(d).sum(-1)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(s, np.clip(n // 2, 0, d.shape[-1] - 1)[..., None], -1)[..., 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def group_poses(xn: np.ndarray, group: np.ndarray, R: np.ndarray, t: np.ndarray, focal: np.ndarray,
                reproj_px: float = 15.0, min_views: int = 2, reproj_share: float = 0.0):
    """Every (frame, group) of `match_frames` triangulated with the rig (N-view DLT); twice, the
    view reprojecting worst beyond reproj_px (or reproj_share x the group's median person size
    in pixels, if larger) is dropped and the rest triangulated again.

    xn [F,V,M,J,2], group [F,V,M], R [V,3,3], t [V,3] (NaN: camera not placed, not used),
    focal [V]. -> frame [N], det [N,V] (detection per view, -1), pose [N,J,3] (rig units),
    scale [N] (mean bone length, rig units), err [N,V] px."""
    from .labels import canonical_scale
    F, V, M, J = xn.shape[:4]
    G = max(int(group.max()) + 1, 1)
    det = np.full((F, G, V), -1, np.int64)
    fi, vi, mi = np.nonzero(group >= 0)
    det[fi, group[fi, vi, mi], vi] = mi
    placed = np.all(np.isfinite(R), axis=(1, 2)) & np.all(np.isfinite(t), axis=1)
    det[..., ~placed] = -1
    f_, g_ = np.nonzero((det >= 0).sum(-1) >= min_views)
    D = det[f_, g_]
    Rs, ts = np.where(placed[:, None, None], R, np.eye(3)), np.where(placed[:, None], t, 0.0)
    X = np.where((D >= 0)[..., None, None], xn[f_[:, None], np.arange(V)[None], np.maximum(D, 0)], np.nan)
    N = len(D)
    sz = np.where(D >= 0, person_size(xn, focal)[f_[:, None], np.arange(V)[None], np.maximum(D, 0)], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tol = np.maximum(reproj_px, reproj_share * np.nan_to_num(np.nanmedian(sz, 1), nan=0.0))[:, None]
    P3 = np.full((N, J, 3), np.nan)
    err = np.full((N, V), np.nan)
    for it in range(3):
        w = np.isfinite(X[..., 0]).astype(float)
        P3, ok = triangulate_dlt(X.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), Rs, ts)
        Xc = np.einsum("vab,njb->nvja", Rs, P3) + ts[None, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            e = np.linalg.norm(Xc[..., :2] / Xc[..., 2:3] - X, axis=-1) * focal[None, :, None]
        err = nanmedian(e)
        if it == 2:
            break
        bad = (err > tol) & (D >= 0)
        worst = np.argmax(np.where(bad, err, -1.0), 1)
        drop = np.flatnonzero(bad[np.arange(N), worst])
        D[drop, worst[drop]] = -1
        X[drop, worst[drop]] = np.nan
    keep = ((D >= 0).sum(-1) >= min_views) & ok.any(-1)
    return f_[keep], D[keep], P3[keep], canonical_scale(P3[keep]), err[keep]


def track3d(frames: np.ndarray, pose: np.ndarray, scale: np.ndarray, F: int, tl: np.ndarray | None = None,
            max_gap: int = 10, base: float = 0.5, per_frame: float = 0.15) -> np.ndarray:
    """People of consecutive frames linked into tracks by 3D proximity.

    frames [N], pose [N,J,3], scale [N] (mean bone) from group_poses; tl [N,V] the 2D
    tracklet of each view's detection (-1 none). Cost between a track's last pose (seen at
    frame f0) and a pose at frame f: median joint distance / mean bone, divided by 1 + the
    number of views continuing the track's 2D tracklets; a link is allowed below base +
    per_frame x (f - f0) (twice that when two views continue the tracklets) and never to a
    pose none of whose views continue it while one of them continues another live track.
    Hungarian per frame; a track unseen for more than max_gap frames ends. -> track [N] int."""
    N = len(frames)
    V = tl.shape[1] if tl is not None else 0
    order = np.argsort(frames, kind="stable")
    starts = np.searchsorted(frames[order], np.arange(F + 1))
    track = np.full(N, -1, np.int64)
    active: list[list] = []  # [id, last frame, pose, scale, tracklets [V]]
    nxt = 0
    for f in range(F):
        idx = order[starts[f]:starts[f + 1]]
        active = [a for a in active if f - a[1] <= max_gap]
        if len(idx) and active:
            C = np.full((len(active), len(idx)), np.inf)
            owner = {(v, a[4][v]): n for n, a in enumerate(active) for v in range(V) if a[4][v] >= 0}
            for n, (_, f0, p, s, tls) in enumerate(active):
                cost = nanmedian(np.linalg.norm(pose[idx] - p[None], axis=-1)) / (0.5 * (s + scale[idx]))
                gate = np.full(len(idx), base + per_frame * (f - f0))
                if tl is not None:
                    same = ((tl[idx] == tls[None]) & (tl[idx] >= 0)).sum(-1)
                    other = np.array([any(owner.get((v, tl[i, v]), n) != n for v in range(V) if tl[i, v] >= 0)
                                      for i in idx], bool)
                    cost = np.where(other & (same == 0), np.inf, cost / (1.0 + same))
                    gate = np.where(same >= 2, 2 * gate, gate)
                C[n] = np.where(cost < gate, cost, np.inf)
            r, k = linear_sum_assignment(np.where(np.isfinite(C), C, 1e9))
            for n, b in zip(r, k):
                if np.isfinite(C[n, b]):
                    i = idx[b]
                    track[i] = active[n][0]
                    tls = active[n][4] if tl is None else np.where(tl[i] >= 0, tl[i], active[n][4])
                    active[n] = [active[n][0], f, pose[i], scale[i], tls]
        for i in idx:
            if track[i] < 0:
                track[i] = nxt
                active.append([nxt, f, pose[i], scale[i], tl[i].copy() if tl is not None else np.zeros(0, int)])
                nxt += 1
    return track


def subject_scores(kp: np.ndarray, frames: np.ndarray, det: np.ndarray, track: np.ndarray, size: np.ndarray) -> dict:
    """How much each track looks like the recording's subject: the sum over its observations
    of (usable joints / J) x (1 - distance of the person's box centre from the image centre /
    half the image diagonal). kp [F,V,M,J,3], frames [N], det [N,V], track [N], size [V,2].
    -> {track: score}."""
    J = kp.shape[3]
    n_, v_ = np.nonzero(det >= 0)
    p = kp[frames[n_], v_, det[n_, v_]]  # [K,J,3]
    seen = np.isfinite(p[..., 0])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = 0.5 * (np.nanmin(p[..., :2], 1) + np.nanmax(p[..., :2], 1))
    half = 0.5 * np.linalg.norm(size[v_], axis=-1)
    off = np.linalg.norm(centre - 0.5 * size[v_], axis=-1) / half
    w = seen.sum(-1) / J * np.clip(1.0 - np.nan_to_num(off, nan=1.0), 0.0, 1.0)
    out: dict[int, float] = {}
    np_tr = track[n_]
    for k in np.unique(track):
        out[int(k)] = float(w[np_tr == k].sum())
    return out
