"""Several people per view: which detections are the same person across views and over time,
found without extrinsics, so that a rig can be calibrated from everyone and labels never mix
two people.

Input: every detection of every view, kp [F,V,M,J,3] (x, y, confidence; NaN where missing; M
the most people in one view's frame; detection m of view v at frame f is the m-th person of
that frame's file). The steps (`associate` runs them all):

1. `tracklets`: each view's detections linked over consecutive frames (Hungarian on the
   median joint displacement relative to the person's size); a link with a close rival is not
   made, so a tracklet rather breaks than switches people where they cross.
2. `pair_hypotheses`: for a camera pair, every long pairing of a tracklet of one view with a
   tracklet of the other gives an essential matrix (its pooled joints, USAC); each is scored
   on every pairing of every frame (median Sampson distance of the pair's joints under
   `frame_px`, one partner per detection and frame, mutual best), the best is refined on its
   consistent pairings. A wrong pairing (two people) explains nothing else; every right
   pairing, of any person, supports the one true geometry.
3. `match_frames`: per frame, detections of different views grouped into people, first with
   the pairs' essential matrices, then (after a rig is calibrated from those groups) with the
   rig: pairs under `pair_px` merged by increasing cost, a group of three or more views
   accepted only if every view reprojects within `reproj_px` after triangulating them all,
   and groups with disjoint views that triangulate together joined (a person split by
   occlusion).
4. `group_poses` and `track3d`: each group triangulated (a view reprojecting beyond
   `reproj_px` dropped), then linked over frames by 3D proximity (median joint distance in
   mean bones), helped by the 2D tracklets; people do not overlap in 3D as they do in images.
5. The subject: the track seen most, weighted by how central its detections are in their
   images (cameras are aimed at the subject); the other tracks are bystanders, kept for
   calibration.

`associate` returns person_index [F,V,P] (which detection is person p, -1 none; p = 0 the
subject), the people's keypoints [F,V,P,J,3] and diagnostics. Calibration is the caller's
(pipeline.geometry.calibration.calibrate on the associated people, see `rows`).
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .. import camera
from .epipolar import sampson_px
from .rig import all_pairs
from .tracks import group_poses, nanmedian, person_size, subject_scores, track3d
from .triangulate import essential_from_pose, relative_pose, triangulate_dlt

__all__ = ["DEFAULTS", "associate", "tracklets", "pair_hypotheses", "match_frames", "group_poses",
           "track3d", "rows", "normalise", "nanmedian", "subject_scores"]

DEFAULTS: dict = {
    "min_joints": 5,          # a detection with fewer usable joints is ignored
    "track_cost": 0.25,       # 2D tracklets: largest median joint step, as a share of the person's size
    "track_ratio": 1.5,       # ... and a rival link within this factor breaks the tracklet instead
    "min_pair_frames": 8,     # a tracklet pairing shorter than this proposes no hypothesis
    "max_hypotheses": 30,     # pairings (longest first) tried per camera pair
    "frame_px": 10.0,         # hypotheses: a pairing is consistent in a frame below this median Sampson distance
    "pair_px": 20.0,          # rig pass: candidate pairs below this median Sampson distance
    "reproj_px": 15.0,        # a group's views must reproject within this (median over joints) ...
    "reproj_share": 0.03,     # ... or this share of the person's size in the image, if larger (a detector's
                              # errors grow with the person: 15 px is 1.5 % of a person 1000 px tall)
    "pair_share": 0.02,       # the same for frame_px and pair_px
    "max_gap": 10,            # 3D tracks: frames a person may go unseen
    "track_bones": 0.5,       # 3D tracks: largest median joint step, mean bones, ...
    "track_bones_per_frame": 0.15,  # ... plus this per frame unseen
    "min_track_frames": 10,   # shorter tracks are not kept as people
    "max_people": 8,          # people kept (the subject and the bystanders seen longest)
    "min_motion_px": 5.0,     # rows: a person's frame calibrates only after it moved this much (median joint)
    "min_confidence": 0.05,
    "seed": 0,
}


def normalise(kp: np.ndarray, cams: camera.Cameras, min_confidence: float = 0.05) -> np.ndarray:
    """kp [F,V,M,J,3] pixels -> undistorted normalised points [F,V,M,J,2] (NaN where missing or
    below min_confidence)."""
    kp = np.asarray(kp, dtype=np.float64)
    F, V, M, J = kp.shape[:4]
    with np.errstate(invalid="ignore"):
        usable = np.all(np.isfinite(kp), -1) & (kp[..., 2] >= min_confidence)
    uv = np.where(usable[..., None], kp[..., :2], np.nan)
    xn = np.full(uv.shape, np.nan)
    for v in range(V):
        xn[:, v] = camera.undistort_points(uv[:, v].reshape(-1, 2), cams.K[v], cams.dist[v]).reshape(F, M, J, 2)
    return xn


# ----------------------------------------------------------------------------- 2D tracklets

def tracklets(kp: np.ndarray, max_cost: float = 0.25, ratio: float = 1.5, min_joints: int = 5) -> np.ndarray:
    """Each view's detections linked over consecutive frames. kp [F,V,M,J,>=2] -> tracklet id
    [F,V,M] int (-1: fewer than min_joints joints; ids unique within a view).

    Cost of linking detection a (frame f) to b (frame f+1): median joint displacement over the
    joints both have (at least min_joints) divided by the larger person's size (largest side
    of the joints' box). Hungarian per frame pair; a link costing more than max_cost, or with a
    rival link (same row or column) within `ratio` x its cost, is not made."""
    uv = np.asarray(kp, dtype=np.float64)[..., :2]
    F, V, M = uv.shape[:3]
    has = np.isfinite(uv[..., 0]).sum(-1) >= min_joints
    tid = np.full((F, V, M), -1, np.int64)
    if F == 0:
        return tid
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(uv, -2) - np.nanmin(uv, -2)  # [F,V,M,2]
    size = np.maximum(np.nan_to_num(span.max(-1), nan=1.0), 1.0)
    d = np.linalg.norm(uv[:-1, :, :, None] - uv[1:, :, None], axis=-1)  # [F-1,V,M,M,J]
    n = np.isfinite(d).sum(-1)
    C = nanmedian(d) / np.maximum(size[:-1, :, :, None], size[1:, :, None])
    C[(n < min_joints) | ~has[:-1, :, :, None] | ~has[1:, :, None]] = np.inf
    for v in range(V):
        nxt = int(has[0, v].sum())
        tid[0, v, has[0, v]] = np.arange(nxt)
        for f in range(F - 1):
            c = C[f, v]
            link = np.full(M, -1)
            if np.isfinite(c).any():
                r, k = linear_sum_assignment(np.where(np.isfinite(c), c, 1e9))
                for a, b in zip(r, k):
                    cost = c[a, b]
                    if not cost <= max_cost:
                        continue
                    rival = min(np.delete(c[a], b).min(initial=np.inf), np.delete(c[:, b], a).min(initial=np.inf))
                    if rival <= max_cost and rival < ratio * cost:
                        continue
                    link[b] = a
            for b in np.flatnonzero(has[f + 1, v]):
                if link[b] >= 0:
                    tid[f + 1, v, b] = tid[f, v, link[b]]
                else:
                    tid[f + 1, v, b] = nxt
                    nxt += 1
    return tid


# ----------------------------------------------------------------------------- pair hypotheses

def _pair_cost(E, x1, x2, focal: float, min_joints: int) -> np.ndarray:
    """Median Sampson distance (px) of paired detections x1, x2 [N,J,2] under E [3,3];
    inf where fewer than min_joints joints are seen in both. -> [N]."""
    d = sampson_px(E, x1, x2, focal)
    return np.where(np.isfinite(d).sum(-1) >= min_joints, nanmedian(d), np.inf)


def _mutual_best(ent: np.ndarray, d: np.ndarray, thr) -> np.ndarray:
    """Entries (frame, det a, det b) [N,3] whose cost d [N] is below thr (scalar or [N]) and the lowest of both
    their detections in that frame. -> bool [N]."""
    if len(ent) == 0:
        return np.zeros(0, bool)
    M = int(ent[:, 1:].max()) + 1
    ka = ent[:, 0] * M + ent[:, 1]
    kb = ent[:, 0] * M + ent[:, 2]
    size = int(ent[:, 0].max() + 1) * M
    ma, mb = np.full(size, np.inf), np.full(size, np.inf)
    np.minimum.at(ma, ka, d)
    np.minimum.at(mb, kb, d)
    return (d < thr) & (d <= ma[ka]) & (d <= mb[kb])


def pair_hypotheses(xn: np.ndarray, tid: np.ndarray, focal: np.ndarray, a: int, b: int, cfg: dict | None = None,
                    threshold_px: float = 4.0, max_points: int = 300, max_score_frames: int = 400) -> dict | None:
    """The essential matrix of cameras a, b from person pairings, without extrinsics.

    xn [F,V,M,J,2] normalised points, tid [F,V,M] tracklets, focal [V] px. Every pairing of a
    tracklet of view a with one of view b seen together in at least min_pair_frames frames
    (the max_hypotheses longest) gives candidates E (cv2.findEssentialMat, USAC_DEFAULT, on at
    most max_points of its pooled joints); each is scored on all pairings of up to
    max_score_frames frames: sum of (1 - d / frame_px) over the mutual-best pairings with
    median Sampson distance d < frame_px. The best is refined on its consistent pairings while
    that raises the score. Returns {E [3,3], score, consistent (pairings), pairings (all),
    frames, hypotheses} or None when no pairing is long enough."""
    c = {**DEFAULTS, **(cfg or {})}
    mj = int(c["min_joints"])
    f_ab = 0.5 * (focal[a] + focal[b])
    size = person_size(xn, focal)
    ok = np.isfinite(xn[..., 0])
    has_a, has_b = tid[:, a] >= 0, tid[:, b] >= 0
    common = (ok[:, a][:, :, None] & ok[:, b][:, None]).sum(-1)  # [F,M,M]
    cand = has_a[:, :, None] & has_b[:, None] & (common >= mj + 1)
    ent = np.argwhere(cand)  # (frame, det a, det b)
    if len(ent) == 0:
        return None
    X1, X2 = xn[ent[:, 0], a, ent[:, 1]], xn[ent[:, 0], b, ent[:, 2]]  # [N,J,2]
    thr = np.maximum(float(c["frame_px"]), float(c["pair_share"]) * 0.5 * (size[ent[:, 0], a, ent[:, 1]]
                                                                          + size[ent[:, 0], b, ent[:, 2]]))
    key = tid[ent[:, 0], a, ent[:, 1]] * (int(tid[:, b].max()) + 1) + tid[ent[:, 0], b, ent[:, 2]]
    keys, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    frames = np.unique(ent[:, 0])
    if len(frames) > max_score_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_score_frames).round().astype(int)]
    sc = np.isin(ent[:, 0], frames)

    def score(E):
        d = _pair_cost(E, X1[sc], X2[sc], f_ab, mj)
        s = _mutual_best(ent[sc], d, thr[sc])
        return float(np.sum(1.0 - d[s] / thr[sc][s]))

    def fit(x1, x2, iters):
        m = np.all(np.isfinite(x1), 1) & np.all(np.isfinite(x2), 1)
        x1, x2 = x1[m], x2[m]
        if len(x1) < 15:
            return []
        if len(x1) > max_points * (1 if iters <= 100 else 10):
            s = rng.choice(len(x1), max_points * (1 if iters <= 100 else 10), replace=False)
            x1, x2 = x1[s], x2[s]
        E, _ = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.USAC_DEFAULT, prob=0.99,
                                    threshold=threshold_px / f_ab, maxIters=iters)
        return [] if E is None or E.shape[0] < 3 else list(E.reshape(-1, 3, 3)[:3])

    rng = np.random.default_rng(int(c["seed"]) + 1000 * a + b)
    best, best_s, n_hyp = None, -1.0, 0
    longest = np.flatnonzero(cnt >= int(c["min_pair_frames"]))
    longest = longest[np.argsort(-cnt[longest], kind="stable")[:int(c["max_hypotheses"])]]
    for k in longest:
        cv2.setRNGSeed(int(c["seed"]) + int(k))
        rows_ = np.flatnonzero(inv == k)
        for E in fit(X1[rows_].reshape(-1, 2), X2[rows_].reshape(-1, 2), 100):
            n_hyp += 1
            s = score(E)
            if s > best_s:
                best, best_s = E, s
    if best is None:
        return None
    for _ in range(3):  # refine on every consistent pairing
        d = _pair_cost(best, X1, X2, f_ab, mj)
        sel = _mutual_best(ent, d, thr)
        new = fit(X1[sel].reshape(-1, 2), X2[sel].reshape(-1, 2), 500)
        if not new:
            break
        s = score(new[0])
        if s <= best_s:
            break
        best, best_s = new[0], s
    d = _pair_cost(best, X1, X2, f_ab, mj)
    sel = _mutual_best(ent, d, thr)
    return {"E": best, "score": best_s, "consistent": int(sel.sum()), "pairings": int(len(ent)),
            "frames": int(len(np.unique(ent[:, 0]))), "hypotheses": n_hyp}


# ----------------------------------------------------------------------------- per-frame groups

def _reproj(xs, R, t, focal):
    """xs [k,J,2] normalised points of k views, R [k,3,3], t [k,3], focal [k]: N-view DLT, then
    each view's median reprojection error in px [k] (NaN with fewer than 3 joints)."""
    w = np.isfinite(xs[..., 0]).astype(float)
    X, _ = triangulate_dlt(xs.transpose(1, 0, 2), w.T, R, t)  # [J,3]
    Xc = np.einsum("vab,jb->vja", R, X) + t[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.linalg.norm(Xc[..., :2] / Xc[..., 2:3] - xs, axis=-1) * focal[:, None]
    return np.where(np.isfinite(e).sum(-1) >= 3, nanmedian(e), np.nan)


def match_frames(xn: np.ndarray, focal: np.ndarray, pair_E: dict, cfg: dict | None = None,
                 R: np.ndarray | None = None, t: np.ndarray | None = None) -> np.ndarray:
    """Per frame, detections of different views grouped into people.

    xn [F,V,M,J,2]; focal [V]; pair_E {(a, b): E [3,3]} for the pairs to use (a < b). Pairs of
    detections with median Sampson distance below the threshold (pair_px with a rig, frame_px
    without) are merged by increasing cost, never two detections of one view. Without a rig
    (R, t None) every pair inside a group must be consistent (complete linkage); with a rig
    [V,3,3], [V,3] a group of three or more views must reproject within reproj_px in every
    view after triangulating them all, and groups with disjoint views that pass that test
    together are joined. -> group [F,V,M] int (-1: in no group of two or more views)."""
    c = {**DEFAULTS, **(cfg or {})}
    F, V, M, J = xn.shape[:4]
    mj = int(c["min_joints"])
    with_rig = R is not None
    base = float(c["pair_px"] if with_rig else c["frame_px"])
    rep = float(c["reproj_px"])
    has = np.isfinite(xn[..., 0]).sum(-1) >= mj
    size = np.nan_to_num(person_size(xn, focal), nan=0.0)  # [F,V,M]
    cost = {}
    for (a, b), E in pair_E.items():
        X1 = np.repeat(xn[:, a][:, :, None], M, 2).reshape(-1, J, 2)
        X2 = np.repeat(xn[:, b][:, None], M, 1).reshape(-1, J, 2)
        d = _pair_cost(E, X1, X2, 0.5 * (focal[a] + focal[b]), mj).reshape(F, M, M)
        d[~(has[:, a][:, :, None] & has[:, b][:, None])] = np.inf
        # a pair's threshold grows with the people's size in the images
        tol = np.maximum(base, float(c["pair_share"]) * 0.5 * (size[:, a][:, :, None] + size[:, b][:, None]))
        cost[(a, b)] = np.where(d < tol, d / tol, np.inf)  # in units of the threshold: below 1 is consistent
    thr = 1.0
    group = np.full((F, V, M), -1, np.int64)

    def pair_ok(f, A, B):
        for v1, i1 in A:
            for v2, i2 in B:
                d = cost[(v1, v2)][f, i1, i2] if v1 < v2 else cost[(v2, v1)][f, i2, i1]
                if not d < thr:
                    return False
        return True

    def rig_ok(f, mem):
        if len(mem) < 3:
            return True
        vs = np.array([v for v, _ in mem])
        e = _reproj(np.stack([xn[f, v, i] for v, i in mem]), R[vs], t[vs], focal[vs])
        tol = max(rep, float(c["reproj_share"]) * float(np.median([size[f, v, i] for v, i in mem])))
        return np.isfinite(e).sum() >= 2 and bool(np.all(np.nan_to_num(e, nan=0.0) <= tol))

    for f in range(F):
        edges = []
        for (a, b), d in cost.items():
            i, k = np.nonzero(d[f] < thr)
            edges += [(d[f, x, y], a, x, b, y) for x, y in zip(i, k)]
        if not edges:
            continue
        edges.sort()
        where, members = {}, {}
        for n, (v, i) in enumerate(zip(*np.nonzero(has[f]))):
            where[(v, i)] = n
            members[n] = [(v, i)]
        for _, a, i, b, k in edges:
            ga, gb = where[(a, i)], where[(b, k)]
            if ga == gb:
                continue
            A, B = members[ga], members[gb]
            if {v for v, _ in A} & {v for v, _ in B}:
                continue
            if not (rig_ok(f, A + B) if with_rig else pair_ok(f, A, B)):
                continue
            members[ga] = A + B
            members.pop(gb)
            for n in B:
                where[n] = ga
        multi = [g for g, m in members.items() if len(m) >= 2]
        if with_rig:  # a person split by occlusion: groups with disjoint views that triangulate together
            joined = True
            while joined:
                joined = False
                for x in range(len(multi)):
                    for y in range(x + 1, len(multi)):
                        A, B = members.get(multi[x]), members.get(multi[y])
                        if A is None or B is None or {v for v, _ in A} & {v for v, _ in B}:
                            continue
                        if rig_ok(f, A + B):
                            members[multi[x]] = A + B
                            members.pop(multi[y])
                            joined = True
                multi = [g for g, m in members.items() if len(m) >= 2]
        for k, g in enumerate(multi):
            for v, i in members[g]:
                group[f, v, i] = k
    return group


def rows(people_kp: np.ndarray, min_motion_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The associated people as calibration rows: people_kp [F,V,P,J,3] -> kp [N,V,J,3] (one row
    per (frame, person) seen by at least two views) and their (frame, person) [N,2]. With
    min_motion_px > 0 a person's row is kept only when its joints moved more than that (median
    over joints and views, pixels) since its last kept row, or more of them are seen: a person standing still adds the same correspondences
    again and again, which weighs the rig towards its few points and slows the refinement."""
    F, V, P = people_kp.shape[:3]
    seen = np.isfinite(people_kp[..., 0]).any(-1)  # [F,V,P]
    ok = seen.sum(1) >= 2  # [F,P]
    if min_motion_px > 0:
        for p in range(P):
            last = None
            for f in np.flatnonzero(ok[:, p]):
                cur = people_kp[f, :, p, :, :2]
                if last is not None:
                    moved = nanmedian(np.linalg.norm(cur - last, axis=-1).ravel())
                    if not moved > min_motion_px and np.isfinite(cur[..., 0]).sum() <= np.isfinite(last[..., 0]).sum():
                        ok[f, p] = False
                        continue
                last = cur
    f, p = np.nonzero(ok)
    return people_kp[f, :, p], np.stack([f, p], 1)


def _gather(kp: np.ndarray, index: np.ndarray) -> np.ndarray:
    """kp [F,V,M,J,3], index [F,V,P] (-1 none) -> [F,V,P,J,3] (NaN where none)."""
    F, V, P = index.shape
    out = kp[np.arange(F)[:, None, None], np.arange(V)[None, :, None], np.maximum(index, 0)]
    return np.where((index >= 0)[..., None, None], out, np.nan)


def associate(kp: np.ndarray, cams: camera.Cameras, cfg: dict | None = None, *, calibrate=None,
              names=None, log=None) -> dict:
    """Which detections are the same person, across views and frames. See the module docstring.

    kp [F,V,M,J,3] every detection; cams: intrinsics (and size) of the V cameras; with finite
    extrinsics those are used, else the rig is estimated: first from the pairs' hypotheses,
    then again from the people found with it. `calibrate(kp_rows [N,V,J,3], cams, final) ->
    Cameras` estimates a rig from associated rows (the caller's: pipeline.geometry.labels
    calibrate in rig mode; `final` False for the intermediate rig, which may skip refinement);
    needed without extrinsics. names [V] for messages; log(str) for progress notes.

    Returns dict: person_index [F,V,P] int (detection of person p in each view, -1; p = 0 the
    subject), people_kp [F,V,P,J,3], cams (the rig the association used, with extrinsics),
    and diagnostics: tracklets (per view), pair_score / pair_consistent [P2] over
    rig.all_pairs(V) (NaN without extrinsics estimation), groups (per frame), tracks, scores
    {track: subject score}, subject_frames (frames the subject is seen in two views or more).
    ValueError (naming the pairs) when fewer than two cameras can be related.
    """
    c = {**DEFAULTS, **(cfg or {})}
    say = log or (lambda s: None)
    kp = np.asarray(kp, dtype=np.float64)
    if kp.ndim != 5 or kp.shape[-1] != 3:
        raise ValueError(f"people: detections must be [F,V,M,J,3], got {kp.shape}")
    F, V, M, J = kp.shape[:4]
    names = [f"camera {v}" for v in range(V)] if names is None else list(names)
    xn = normalise(kp, cams, float(c["min_confidence"]))
    focal = 0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1])
    tid = tracklets(kp, float(c["track_cost"]), float(c["track_ratio"]), int(c["min_joints"]))
    diag: dict = {"tracklets": [int(len(np.unique(tid[:, v][tid[:, v] >= 0]))) for v in range(V)]}
    pairs = all_pairs(V)
    if cams.has_extrinsics:
        rig = cams
    else:
        if calibrate is None:
            raise ValueError("people: without extrinsics, associate needs a calibrate function")
        pair_E, sc, cons = {}, np.full(len(pairs), np.nan), np.zeros(len(pairs), np.int64)
        for p, (a, b) in enumerate(pairs):
            h = pair_hypotheses(xn, tid, focal, int(a), int(b), c)
            if h is not None and h["consistent"] >= int(c["min_pair_frames"]):
                pair_E[(int(a), int(b))] = h["E"]
                sc[p], cons[p] = h["score"], h["consistent"]
        diag.update(pair_score=sc, pair_consistent=cons)
        say("people: pair hypotheses " + ", ".join(f"{names[a]}-{names[b]} {n}" for (a, b), n in zip(pairs, cons)))
        if not pair_E:
            raise ValueError("people: no camera pair shares a person consistently (pairings per pair: "
                             + ", ".join(f"{names[a]}-{names[b]}: {n}" for (a, b), n in zip(pairs, cons))
                             + "); the views may not overlap, or the detections are not of these cameras")
        g0 = match_frames(xn, focal, pair_E, c)
        people0 = _gather(kp, _index_from_groups(g0))
        rig = calibrate(rows(people0)[0], cams, False)
    placed = np.all(np.isfinite(rig.R), axis=(1, 2))
    g = match_frames(xn, focal, _rig_E(rig.R, rig.t), c, rig.R, rig.t)
    fr, D, P3, scale, _ = group_poses(xn, g, rig.R, rig.t, focal, float(c["reproj_px"]),
                                      reproj_share=float(c["reproj_share"]))
    tl = np.where(D >= 0, tid[fr[:, None], np.arange(V)[None], np.maximum(D, 0)], -1)
    trk = track3d(fr, P3, scale, F, tl, int(c["max_gap"]), float(c["track_bones"]),
                  float(c["track_bones_per_frame"]))
    scores = subject_scores(kp, fr, D, trk, cams.size)
    nfr = {int(k): int(len(np.unique(fr[trk == k]))) for k in np.unique(trk)}
    keep = [k for k in sorted(scores, key=lambda k: -scores[k]) if nfr[k] >= int(c["min_track_frames"])]
    keep = keep[:int(c["max_people"])]
    if not keep:
        raise ValueError(f"people: nobody is seen by two cameras for {c['min_track_frames']} frames "
                         f"({len(fr)} (frame, person) groups in {F} frames)")
    index = np.full((F, V, len(keep)), -1, np.int64)
    for p, k in enumerate(keep):
        sel = np.flatnonzero(trk == k)
        index[fr[sel], :, p] = D[sel]
    diag.update(groups=int(len(fr)), tracks=int(len(np.unique(trk))), scores={p: scores[k] for p, k in enumerate(keep)},
                subject_frames=int(((index[:, :, 0] >= 0).sum(1) >= 2).sum()), placed=placed)
    return {"person_index": index, "people_kp": _gather(kp, index), "cams": rig, "diag": diag}


def _index_from_groups(group: np.ndarray) -> np.ndarray:
    """group [F,V,M] (per-frame group ids) -> index [F,V,G] (detection of group g, -1)."""
    F, V, M = group.shape
    G = max(int(group.max()) + 1, 1)
    index = np.full((F, V, G), -1, np.int64)
    f, v, m = np.nonzero(group >= 0)
    index[f, v, group[f, v, m]] = m
    return index


def _rig_E(R: np.ndarray, t: np.ndarray) -> dict:
    """{(a, b): E_ab} for every pair of placed cameras (X_b = R_ab X_a + t_ab)."""
    out = {}
    for a, b in all_pairs(len(R)):
        if np.all(np.isfinite(R[[a, b]])) and np.all(np.isfinite(t[[a, b]])):
            Rr, tr = relative_pose(R[a], t[a], R[b], t[b])
            out[(int(a), int(b))] = essential_from_pose(Rr, tr)
    return out
