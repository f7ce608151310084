"""Left/right swaps by a 2D detector, found by multi-view consistency, then fixed or flagged.

A detector that mistakes the left leg for the right (common when a person is seen from the
back or the side) gives keypoints that no 3D point explains across views. Per frame and limb
group (legs: hips, knees, ankles; arms: shoulders, elbows, wrists; the pairs of
pipeline/joints.py) every hypothesis of which views are swapped (2^V of them) is scored by
the reprojection error of the group triangulated under it (confidence-weighted DLT,
pipeline/triangulate.py); the best replaces "none swapped" when

    cost_best < ratio * cost_none   and   cost_none - cost_best > min_px   (pixels)

Scoring all hypotheses, not one view at a time, also finds two views swapped together (a
leave-one-view-out test misses them: the other swapped view spoils the triangulation).
Needs three views or more and cameras with extrinsics (known, or estimated by rig
calibration, which is robust to a few swaps: calibrate, fix, calibrate again). With two views
a swap cannot be attributed to either view; `pair_inconsistency` gives the epipolar costs.

`mode`: "fix" exchanges the group's left and right keypoints, "flag" sets them to NaN,
"none" only reports.
"""
from __future__ import annotations

import numpy as np

from pipeline.geometry import triangulate as tri
from pipeline.camera import Cameras, undistort_points
from pipeline.joints import JOINTS, LR_PAIRS
from pipeline.registry import with_defaults

DEFAULTS: dict = {
    "mode": "fix",     # "fix", "flag" or "none"
    "ratio": 0.6,      # the best hypothesis must cost below this fraction of "none swapped"
    "min_px": 5.0,     # ... and lower by at least this many pixels
    "min_conf": 0.0,   # keypoints with confidence below this are ignored
    "chirality": 0.5,  # |det[right, up, forward]| above this tells a body from its mirror image
    "use_chirality": "ties",  # "ties": only for half/half splits; "mirrors": for any pair whose
                              # fewer-flips member is not "none" (finds 3-of-4 swaps; trusts the
                              # nose to point forward, which a strongly twisted trunk breaks)
}

GROUPS: dict[str, tuple[tuple[int, int], ...]] = {
    "legs": tuple(p for p in LR_PAIRS if any(k in JOINTS[p[0]] for k in ("hip", "knee", "ankle"))),
    "arms": tuple(p for p in LR_PAIRS if any(k in JOINTS[p[0]] for k in ("shoulder", "elbow", "wrist"))),
}


def _normalised(kp: np.ndarray, cams: Cameras, min_conf: float) -> tuple[np.ndarray, np.ndarray]:
    """kp [F,V,J,3] -> undistorted normalised points [F,V,J,2] and weights [F,V,J]."""
    F, V, J = kp.shape[:3]
    xn = np.stack([undistort_points(kp[:, v, :, :2].reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, J, 2)
                   for v in range(V)], axis=1)
    conf = np.nan_to_num(kp[..., 2], nan=0.0)
    w = np.where(np.all(np.isfinite(xn), -1) & (conf >= min_conf), np.maximum(conf, 1e-6), 0.0)
    return xn, w


def hypotheses(V: int) -> np.ndarray:
    """Every assignment of "swapped" to V views, [2^V, V] bool, row 0 = none swapped."""
    if V > 12:
        raise ValueError(f"swaps: {V} views give 2^{V} hypotheses; split the rig")
    h = np.arange(2 ** V)
    return ((h[:, None] >> np.arange(V)) & 1).astype(bool)


def hypothesis_costs(kp: np.ndarray, cams: Cameras, min_conf: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean reprojection error (px) of each limb group under every swap hypothesis.

    For hypothesis h the group's left/right labels are exchanged in the views h marks, the
    group's joints are triangulated from all views (confidence-weighted DLT) and reprojected.
    kp [F,V,J,3] pixels; cams with extrinsics. Returns costs [F,G,H] (NaN where fewer than two
    views see the group), the hypotheses [H,V], and the group's first pair (hips, shoulders)
    as triangulated under each hypothesis, right minus left [F,G,H,3]. G follows GROUPS.
    """
    kp = np.asarray(kp, dtype=np.float64)
    if kp.ndim != 4 or kp.shape[-1] != 3 or kp.shape[2] != len(JOINTS):
        raise ValueError(f"swaps: keypoints must be [F,V,{len(JOINTS)},3], got {kp.shape}")
    if not cams.has_extrinsics:
        raise ValueError("swaps: cameras need extrinsics (known, or estimated by rig calibration)")
    F, V = kp.shape[:2]
    if V < 3:
        raise ValueError("swaps: telling which view is swapped needs at least 3 views; use pair_inconsistency for 2")
    if cams.V != V:
        raise ValueError(f"swaps: {cams.V} cameras for {V} views")
    xn, w = _normalised(kp, cams, min_conf)
    focal = 0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1])
    hyp = hypotheses(V)
    costs = np.full((F, len(GROUPS), len(hyp)), np.nan)
    right = np.full((F, len(GROUPS), len(hyp), 3), np.nan)
    for g, pairs in enumerate(GROUPS.values()):
        idx = np.array([j for p in pairs for j in p])
        sw = np.array([j for l, r in pairs for j in (r, l)])
        # [H,F,V,n,...]: the group's points under each hypothesis
        x = np.where(hyp[:, None, :, None, None], xn[None][:, :, :, sw], xn[None][:, :, :, idx])
        ww = np.where(hyp[:, None, :, None], w[None][:, :, :, sw], w[None][:, :, :, idx])
        X, ok = tri.triangulate_dlt(np.moveaxis(x, 2, -2), np.moveaxis(ww, 2, -1), cams.R, cams.t)  # [H,F,n,3]
        Xc = np.einsum("vab,hfnb->hfvna", cams.R, X) + cams.t[None, None, :, None, :]
        proj = Xc[..., :2] / Xc[..., 2:3]
        d = np.linalg.norm(proj - x, axis=-1) * focal[None, None, :, None]     # [H,F,V,n]
        used = (ww > 0) & ok[:, :, None, :] & np.isfinite(d)
        n = used.sum(axis=(-1, -2))
        with np.errstate(invalid="ignore"):
            costs[:, g] = (np.where(used, d, 0).sum(axis=(-1, -2)) / np.where(n > 0, n, np.nan)).T
        right[:, g] = np.moveaxis(X[:, :, 1] - X[:, :, 0], 0, 1)   # idx = (l, r, ...): r - l
    return costs, hyp, right


def body_chirality(kp: np.ndarray, cams: Cameras, right: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """det[right, up, forward] of unit vectors: about -1 for a correctly labelled body (its right
    side to the right when facing forward, in a right-handed world), +1 mirrored.

    up = thorax - pelvis and forward = nose - thorax (its part orthogonal to up) are
    triangulated from the keypoints as they are (midpoints and the nose do not change under a
    left/right swap). right [...,3]
    broadcasts against [F, ..., 3]. Returns [F, ...] (NaN where unknown).
    """
    from pipeline.joints import INDEX
    xn, w = _normalised(kp, cams, min_conf)
    sel = [INDEX["pelvis"], INDEX["thorax"], INDEX["neck"]]
    X, ok = tri.triangulate_dlt(xn[:, :, sel].transpose(0, 2, 1, 3), w[:, :, sel].transpose(0, 2, 1),
                                cams.R, cams.t)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    up = unit(X[:, 1] - X[:, 0])
    fwd = X[:, 2] - X[:, 1]
    # the nose sits above the thorax as well as in front: keep only its forward part
    fwd = fwd - np.einsum("...a,...a->...", fwd, up)[..., None] * up
    extra = right.ndim - 2
    up = unit(up).reshape(up.shape[:1] + (1,) * extra + (3,))
    fwd = unit(fwd).reshape(fwd.shape[:1] + (1,) * extra + (3,))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("...a,...a->...", unit(right), np.cross(up, fwd))


def apply_swaps(kp: np.ndarray, swapped: np.ndarray, mode: str = "fix") -> np.ndarray:
    """Exchange ("fix") or blank ("flag") the groups marked in swapped [F,V,G]; kp [F,V,J,3]."""
    if mode not in ("fix", "flag", "none"):
        raise ValueError(f"swaps: mode must be 'fix', 'flag' or 'none', got {mode!r}")
    out = np.array(kp, dtype=np.float64, copy=True)
    if mode == "none":
        return out
    for g, pairs in enumerate(GROUPS.values()):
        m = swapped[..., g]
        for l, r in pairs:
            if mode == "fix":
                out[m, l], out[m, r] = kp[m, r], kp[m, l]
            else:
                out[m, l] = np.nan
                out[m, r] = np.nan
    return out


def fix_swaps(kp: np.ndarray, cams: Cameras, cfg: dict | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Find left/right swaps and fix or flag them. kp [F,V,J,3].

    Per frame and limb group the hypothesis of least reprojection error wins over "nothing
    swapped" when cost < ratio * cost_none and cost_none - cost > min_px. A hypothesis and its
    mirror (every view flipped) explain the views equally well: the one flipping fewer views
    is taken; a tie (half the views each way) goes to the one with a human body's handedness
    (body_chirality) when that is clear, else it is flagged (NaN) whatever the mode, except
    "none". Swaps in every view at once are consistent and cannot be seen.
    Returns (keypoints [F,V,J,3], swapped [F,V,G] bool, info: costs, ambiguous [F,G], counts).
    """
    c = with_defaults(cfg, DEFAULTS, "swaps")
    kp = np.asarray(kp, dtype=np.float64)
    costs, hyp, right = hypothesis_costs(kp, cams, float(c["min_conf"]))     # [F,G,H], [H,V]
    V = hyp.shape[1]
    nflip = hyp.sum(1)
    # rank: cost first; among (near-)equal costs fewer flipped views first
    key = np.where(np.isfinite(costs), costs, np.inf) + 1e-6 * nflip
    best = np.argmin(key, axis=-1)                                     # [F,G]
    # a hypothesis and its mirror fit equally well; the one flipping fewer views was taken.
    # When both flip half the views, the body's handedness decides (a twisted trunk can fool
    # it, so it is used for these ties only)
    H = len(hyp)
    mirror = (H - 1) - best
    chir = body_chirality(kp, cams, np.take_along_axis(right, best[..., None, None], 2)[:, :, 0],
                          float(c["min_conf"]))                        # [F,G]
    tie = 2 * nflip[best] == V
    decided = np.abs(np.nan_to_num(chir)) > float(c["chirality"])
    if c["use_chirality"] not in ("ties", "mirrors"):
        raise ValueError(f"swaps: use_chirality must be 'ties' or 'mirrors', got {c['use_chirality']!r}")
    judge = tie if c["use_chirality"] == "ties" else (best != 0) & (mirror != 0)
    best = np.where(judge & decided & (chir > 0), mirror, best)
    c_best = np.take_along_axis(costs, best[..., None], -1)[..., 0]
    c_none = costs[..., 0]
    with np.errstate(invalid="ignore"):
        accept = (best != 0) & (c_best < float(c["ratio"]) * c_none) & (c_none - c_best > float(c["min_px"]))
    ambiguous = accept & (2 * nflip[best] == V) & ~decided
    swapped = np.where(accept[..., None], hyp[best], False).transpose(0, 2, 1)   # [F,V,G]
    out = apply_swaps(kp, swapped & ~ambiguous[:, None, :], c["mode"])
    if c["mode"] != "none" and ambiguous.any():
        for g, pairs in enumerate(GROUPS.values()):
            m = ambiguous[:, g][:, None] & swapped[:, :, g]
            for l, r in pairs:
                out[m, l] = np.nan
                out[m, r] = np.nan
    info = {"costs_px": costs, "hypotheses": hyp, "best": best, "ambiguous": ambiguous,
            "n_swapped": int(swapped.sum()), "n_ambiguous": int(ambiguous.sum()), "groups": list(GROUPS)}
    return out, swapped, info


def pair_inconsistency(kp: np.ndarray, cams: Cameras, i: int, j: int, min_conf: float = 0.0):
    """Two views: mean symmetric epipolar distance (px) of each group as labelled and with one
    view's left/right exchanged. -> cost_asis, cost_flip [F,G]. Which view is wrong is unknown."""
    kp = np.asarray(kp, dtype=np.float64)
    xn, w = _normalised(kp, cams, min_conf)
    Rij = cams.R[j] @ cams.R[i].T
    tij = cams.t[j] - Rij @ cams.t[i]
    E = tri.essential_from_pose(Rij, tij)
    fi = 0.5 * (cams.K[i, 0, 0] + cams.K[i, 1, 1])
    fj = 0.5 * (cams.K[j, 0, 0] + cams.K[j, 1, 1])

    def dist(a, b):  # a in view i, b in view j: [...,2] -> px
        ah = np.concatenate([a, np.ones(a.shape[:-1] + (1,))], -1)
        bh = np.concatenate([b, np.ones(b.shape[:-1] + (1,))], -1)
        l2 = np.einsum("ab,...b->...a", E, ah)
        l1 = np.einsum("ba,...b->...a", E, bh)
        e = np.abs(np.einsum("...a,...a->...", bh, l2))
        return 0.5 * (fj * e / np.linalg.norm(l2[..., :2], axis=-1) + fi * e / np.linalg.norm(l1[..., :2], axis=-1))

    F = kp.shape[0]
    asis = np.full((F, len(GROUPS)), np.nan)
    flip = np.full((F, len(GROUPS)), np.nan)
    for g, pairs in enumerate(GROUPS.values()):
        idx = np.array([k for p in pairs for k in p])
        sw = np.array([k for l, r in pairs for k in (r, l)])
        d_as = dist(xn[:, i, idx], xn[:, j, idx])
        d_fl = dist(xn[:, i, sw], xn[:, j, idx])
        both = np.isfinite(d_as) & np.isfinite(d_fl)
        n = both.sum(-1)
        with np.errstate(invalid="ignore"):
            asis[:, g] = np.where(n > 0, np.where(both, d_as, 0).sum(-1) / n, np.nan)
            flip[:, g] = np.where(n > 0, np.where(both, d_fl, 0).sum(-1) / n, np.nan)
    return asis, flip
