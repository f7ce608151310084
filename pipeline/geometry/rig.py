"""Static-rig calibration from body joints alone: pool correspondences over frames, estimate
every camera pair once, chain the pairs into one rig, refine it by bundle adjustment.

The rig's frame is camera 0's (R₀ = I, t₀ = 0) and its scale is fixed by |C₁ - C₀| = 1:
without known extrinsics the metric scale is unobservable. Intrinsics are given. A camera that
cannot be placed is left out (NaN pose); the frame and the gauge are then those of the first
two placed cameras.

`baseline_evidence` tells, from the pooled keypoints alone, whether two views have any
baseline: views whose keypoints coincide (a duplicated view), or whose rays one rotation maps
onto each other within the detector's noise (the same centre: a duplicate or a camera only
turned), cannot triangulate.
"""
from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..camera import rotation_magnitude_deg, vector_angle
from ..cores import thread_map
from . import bundle, epipolar, schur
from . import triangulate as tri


class RigRefused(ValueError):
    """A rig beyond the quality gate's thresholds: the message names the cameras and pairs."""


# The quality gate's thresholds (calibrate_rig's defaults; pipeline.geometry.calibration passes
# the label configuration's gate_* keys); docs/calibration.md says what they were chosen from.
GATE = {
    "max_loop_deg": 20.0,     # a pair whose rotation does not close within this around any camera triplet is not used
    "max_initial_px": 30.0,   # the chained rig's median reprojection error before refinement (else refused, no BA)
    "max_rms_px": 20.0,       # a camera whose reprojection RMS after refinement exceeds this is left out (or refused)
    "min_kept": 0.5,          # ... as is one whose share of observations kept by the refinement is below this
    "max_focal_ratio": 1.3,   # refused when a camera's focal length fitted in the refinement is off by more (either way)
}


def all_pairs(V: int) -> np.ndarray:
    """All camera pairs (i < j) in a fixed order. -> [V(V-1)/2, 2] int."""
    return np.array(list(itertools.combinations(range(V), 2)), dtype=np.int64).reshape(-1, 2)


def pool_pair(xn: np.ndarray, w: np.ndarray, i: int, j: int, max_points: int = 20000, seed: int = 0):
    """Correspondences of views i, j pooled over frames and joints.

    xn [F,V,J,2] normalised points, w [F,V,J] usable weight (> 0 = usable). Returns x1, x2
    [N,2] and their (frame, joint) indices [N,2]; at most max_points, a deterministic
    evenly-spread subsample.
    """
    ok = (w[:, i] > 0) & (w[:, j] > 0)
    f, jj = np.nonzero(ok)
    if len(f) > max_points:
        sel = np.random.default_rng(seed).choice(len(f), max_points, replace=False)
        sel.sort()
        f, jj = f[sel], jj[sel]
    return xn[f, i, jj], xn[f, j, jj], np.stack([f, jj], 1)


def chain_pairs(V: int, pairs: np.ndarray, ests: list, xn: np.ndarray, w: np.ndarray,
                focal: np.ndarray, root: int = 0):
    """Chain relative poses into one rig along a maximum spanning tree (weight: inliers).

    Camera `root` is the origin (R = I, t = 0); the first edge fixes the unit baseline; each
    later camera k, reached from a placed camera m, gets R_k = R_mk R_m and t_k = R_mk t_m +
    s t_mk with the scale s from the joints already triangulated by the placed cameras (median
    of per-point least-squares scales). An edge whose scale cannot be fixed (fewer than 3
    joints seen by camera k and two placed cameras) is skipped. Returns R [V,3,3], t [V,3]
    (NaN for cameras that cannot be reached), order (placed cameras in chaining order) and
    notes {camera: why it was not placed} for the cameras with an estimated pair that still
    could not be placed.
    """
    R = np.full((V, 3, 3), np.nan)
    t = np.full((V, 3), np.nan)
    placed = {root}
    R[root], t[root] = np.eye(3), np.zeros(3)
    order = [root]
    notes: dict[int, str] = {}
    edges = {(int(a), int(b)): e for (a, b), e in zip(pairs, ests) if e.ok}
    skipped: set = set()
    while len(placed) < V:
        cand = [(e.n_inliers, a, b) for (a, b), e in edges.items()
                if (a in placed) != (b in placed) and (a, b) not in skipped]
        if not cand:
            break
        _, a, b = max(cand)
        e = edges[(a, b)]
        # pose of b relative to a: X_b = R_ab X_a + t_ab
        if a in placed:
            m, k, Rmk, tmk = a, b, e.R, e.t
        else:  # invert the edge
            m, k, Rmk, tmk = b, a, e.R.T, -e.R.T @ e.t
        Rk = Rmk @ R[m]
        if len(placed) == 1:
            s = 1.0
        else:
            s = _chain_scale(Rk, Rmk @ t[m], tmk, sorted(placed), R, t, k, xn, w, focal)
            if not np.isfinite(s):
                skipped.add((a, b))
                notes[k] = "too few joints seen with two placed cameras to fix its distance"
                continue
        R[k], t[k] = Rk, Rmk @ t[m] + s * tmk
        placed.add(k)
        notes.pop(k, None)
        order.append(k)
    return R, t, order, notes


def rotation_fit(x1: np.ndarray, x2: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The rotation that best maps view 1's rays onto view 2's (Kabsch on unit rays, trimmed:
    rays farther than 3x the median angle are dropped and the fit repeated). x1, x2 [N,2]
    normalised points. -> R [3,3] (x2 ~ R x1 for a camera turned about its centre), angles
    [N] radians between R r1 and r2 (the parallax a rotation cannot explain; camera.vector_angle)."""
    r1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    r2 = np.concatenate([x2, np.ones((len(x2), 1))], 1)
    r1 /= np.linalg.norm(r1, axis=1, keepdims=True)
    r2 /= np.linalg.norm(r2, axis=1, keepdims=True)
    keep = np.ones(len(r1), bool)
    for _ in range(iterations):
        U, _, Vt = np.linalg.svd(r2[keep].T @ r1[keep])
        R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        ang = vector_angle(r1 @ R.T, r2)
        keep = ang <= 3.0 * np.median(ang) + 1e-15
    return R, ang


def baseline_evidence(uv: np.ndarray, xn: np.ndarray, w: np.ndarray, K: np.ndarray,
                      pairs: np.ndarray | None = None, max_points: int = 3000, threshold_px: float = 3.0,
                      coincide_px: float = 1.0, seed: int = 0, R: np.ndarray | None = None,
                      t: np.ndarray | None = None) -> dict:
    """Per camera pair, the evidence that the two views have no baseline.

    uv [F,V,J,2] pixels, xn [F,V,J,2] undistorted normalised points, w [F,V,J] (> 0 usable),
    K [V,3,3]; pairs [P,2] (default all_pairs(V)). On the pooled joints both views see (at
    most max_points): points [P]; coincide [P], the share whose pixel positions differ by
    less than coincide_px (a duplicated view); rotation_px [P], the median angle (in pixels)
    between the rays a best-fit rotation maps (rotation_fit): two views from one centre are
    related by a rotation alone, up to the detector's noise; epipolar_px [P], the median
    Sampson distance of a robust essential matrix (cv2.findEssentialMat, USAC), the noise
    gauge. The ratio rotation_px / epipolar_px separates one centre (small) from cameras a few
    degrees apart (large), even for a person standing still (the margin: tests of
    baseline_evidence). With a given rig R [V,3,3], t [V,3]: given_px [P], the same median
    Sampson distance under the rig's own essential matrix (how well the given calibration
    explains the keypoints, against epipolar_px, how well their own geometry does). NaN where
    fewer than 30 points.
    """
    V = xn.shape[1]
    pairs = all_pairs(V) if pairs is None else np.asarray(pairs).reshape(-1, 2)
    P = len(pairs)
    out = {"points": np.zeros(P, np.int64), "coincide": np.full(P, np.nan),
           "rotation_px": np.full(P, np.nan), "epipolar_px": np.full(P, np.nan), "given_px": np.full(P, np.nan)}

    def one(p: int) -> None:  # pair p's own cells of out
        i, j = pairs[p]
        x1, x2, fj = pool_pair(xn, w, i, j, max_points, seed + p)
        n = len(x1)
        out["points"][p] = n
        if n < 30:
            return
        d = np.linalg.norm(uv[fj[:, 0], i, fj[:, 1]] - uv[fj[:, 0], j, fj[:, 1]], axis=-1)
        out["coincide"][p] = float(np.mean(d < coincide_px))
        f = 0.25 * (K[i, 0, 0] + K[i, 1, 1] + K[j, 0, 0] + K[j, 1, 1])
        out["rotation_px"][p] = float(np.median(rotation_fit(x1, x2)[1]) * f)
        cv2.setRNGSeed(int(seed) + p)
        E, _ = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.USAC_FAST, prob=0.999,
                                    threshold=threshold_px / f, maxIters=500)
        if E is not None and E.shape[0] >= 3 and np.all(np.isfinite(E)):
            r = epipolar.sampson_px(E.reshape(-1, 3, 3), x1[None], x2[None], f)
            out["epipolar_px"][p] = float(np.nanmin(np.nanmedian(r, axis=-1)))
        if R is not None and t is not None:
            Rr, tr = tri.relative_pose(R[i], t[i], R[j], t[j])
            out["given_px"][p] = float(np.nanmedian(epipolar.sampson_px(tri.essential_from_pose(Rr, tr), x1, x2, f)))
    thread_map(one, range(P))  # the pairs' OpenCV fits, on a thread per core
    return out


def _dlt(xn, w, R, t):
    """triangulate_dlt for xn [F,V,J,2], w [F,V,J] -> X [F,J,3], ok [F,J]."""
    return tri.triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), R, t)


def _robust_points(xn, w, R, t, focal, threshold_px):
    """Points from the views that agree: each view pair's two-view DLT is a candidate,
    triangulate.consensus_outliers drops the observations the consensus rejects, DLT on the
    rest. xn [f,V,J,2], w [f,V,J] -> X [f,J,3], ok [f,J], the weights without outliers [f,V,J]."""
    V = R.shape[0]
    if V < 3:
        X, ok = _dlt(xn, w, R, t)
        return X, ok, w
    cand, cok = zip(*(_dlt(xn[:, [a, b]], w[:, [a, b]], R[[a, b]], t[[a, b]]) for a, b in all_pairs(V)))
    out = tri.consensus_outliers(np.stack(cand, 1), np.stack(cok, 1), xn, w, R, t, focal, threshold_px)
    w = np.where(out, 0.0, w)
    X, ok = _dlt(xn, w, R, t)
    return X, ok, w


def _chain_scale(Rk, a, b, placed, R, t, k, xn, w, focal):
    """Scale s of camera k's translation a + s b from joints triangulated by placed cameras
    (NaN when fewer than 3 such joints are seen by camera k)."""
    Pv = np.array(placed)
    X, ok = _dlt(xn[:, Pv], w[:, Pv], R[Pv], t[Pv])  # [F,J,3]
    ok = ok & (w[:, k] > 0)
    X, x = X[ok], xn[:, k][ok]
    if len(X) < 3:
        return np.nan
    r = np.concatenate([x, np.ones((len(x), 1))], 1)
    A = X @ Rk.T + a
    c = np.cross(r, A)
    d = np.cross(r, np.broadcast_to(b, r.shape))
    s = -(c * d).sum(1) / np.maximum((d * d).sum(1), 1e-300)
    return float(np.median(s))


def _select_frames(w: np.ndarray, max_frames: int) -> np.ndarray:
    """Frames for bundle adjustment: evenly spread over those seen best. w [F,V,J] -> indices."""
    score = ((w > 0).sum(1) >= 2).sum(1)
    good = np.flatnonzero(score >= max(3, 0.5 * score.max())) if score.size else np.array([], int)
    if len(good) > max_frames:
        good = good[np.linspace(0, len(good) - 1, max_frames).round().astype(int)]
    return good


def _deadline(deadline: float):
    """least_squares callback that stops the solve once time.perf_counter() passes deadline."""
    def cb(intermediate_result):
        if time.perf_counter() > deadline:
            raise StopIteration
    return cb


def _residuals(R, t, X, args) -> np.ndarray:
    """Reprojection residuals [2 nobs] px of the observations args = (opt, ocam, obs, foc, ...)."""
    opt, ocam, obs, foc = args[:4]
    return schur.linearise(R, t, np.ones(len(R)), X, opt, ocam, obs, foc, jac=False)[0].ravel()


def _solve(R, t, X, keep, args, loss, f_scale_px, max_nfev, deadline, verbose, fit_focal=False):
    """One refinement on the observations `keep` (their points seen at least twice): the Schur
    Levenberg-Marquardt (schur.solve) for least squares, fit_focal with it; scipy's trf with
    the sparse Jacobian (bundle.Jacobian) for a robust loss. -> R, t, X, info (nfev, status, s)."""
    opt, ocam, obs, foc, npt, ncam, gauge_w = args
    used = np.flatnonzero(np.bincount(opt[keep], minlength=npt) > 0)
    remap = np.full(npt, -1)
    remap[used] = np.arange(len(used))
    sub = (remap[opt[keep]], ocam[keep], obs[keep], foc[keep])
    if loss == "linear" or fit_focal:
        Rn, tn, s, Xu, info = schur.solve(R, t, X[used], *sub, gauge_w, fit_focal=fit_focal, max_nfev=max_nfev,
                                          deadline=deadline)
        if verbose:
            print(f"bundle adjustment: cost {info['cost']:.6g} after {info['nfev']} evaluations, status {info['status']}")
    else:
        p = np.concatenate([np.concatenate([Rotation.from_matrix(R[1:]).as_rotvec(), t[1:]], 1).ravel(), X[used].ravel()])
        a = (*sub, len(used), ncam, gauge_w)
        sol = least_squares(bundle.residuals, p, jac=bundle.Jacobian(a[0], a[1], len(used), ncam), method="trf",
                            tr_solver="lsmr", loss=loss, f_scale=f_scale_px, x_scale="jac", max_nfev=max_nfev,
                            verbose=verbose, args=a, callback=_deadline(deadline))
        Rn, tn, Xu, _ = bundle.unpack(sol.x, ncam, len(used))
        s, info = np.ones(len(R)), {"nfev": sol.nfev, "status": sol.status}
    X = X.copy()
    X[used] = Xu
    return Rn, tn, X, {**info, "s": s}


def bundle_adjust(xn: np.ndarray, w: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                  max_frames: int = 2000, loss: str = "linear", f_scale_px: float = 3.0,
                  max_nfev: int = 50, trim_px: float = 12.0, verbose: int = 0, max_initial_px: float = np.inf,
                  names=None, max_seconds: float = np.inf, fit_focal: bool = False, start=None):
    """Refine every camera (all but camera 0, the frame) and the joints jointly.

    Reprojection residuals in pixels (normalised residual x focal) over at most max_frames
    frames; Levenberg-Marquardt with the points eliminated (pipeline.geometry.schur), or with
    a robust `loss` scipy.optimize.least_squares (trf, lsmr) with the exact sparse Jacobian
    (pipeline.geometry.bundle).
    One more residual keeps |C₁ - C₀| = 1 (the gauge of scale). Robustness: observations
    whose residual exceeds max(trim_px, 3 x the robust σ) are dropped, and the solve repeated
    once from the refined rig (a robust loss in trf converges far more slowly); the
    initial points come from the views that agree (_robust_points: a detector's gross errors
    would pull a plain DLT and slow the solve down);
    `loss` ("huber", "soft_l1", ...) with f_scale_px adds a robust loss on top.
    xn [F,V,J,2], w [F,V,J], K [V,3,3], R [V,3,3], t [V,3].
    The time is bounded: at most max_frames frames, 2 x max_nfev evaluations and max_seconds
    (the solve stops there and returns where it is: the gate judges the result); and a start
    whose median reprojection error exceeds max_initial_px is refused (RigRefused naming the
    cameras, names [V]) before any solving: a garbage rig is not polished for minutes.
    fit_focal: then one more solve from the result, on the kept observations, with a factor on
    each camera's focal length (schur.solve's fit_focal) free: ba_focal_scale_camera [V] (f_true /
    f_given: a focal given x0.6 shows about 1.67; NaN without fit_focal). The rig returned is
    the one with the given focal lengths; the extra solve shares the time bound.
    start: start_points' result for these arguments, when already computed.
    Returns R, t, info (observations kept, residual RMS before/after, evaluations; per camera
    ba_rms_px_camera [V] over its kept observations, ba_kept_camera [V], the share kept, and
    ba_focal_scale_camera [V]).
    """
    t_start = time.perf_counter()
    V = len(R)
    fr, X0, okX, wf = start_points(xn, w, K, R, t, max_frames, trim_px) if start is None else start  # X0 [f,J,3]
    if len(fr) == 0:
        raise ValueError("bundle_adjust: no frame sees a joint in two views")
    fi, ji = np.nonzero(okX)
    npt = len(fi)
    obs_pt, obs_cam = [], []
    for v in range(V):
        seen = wf[fi, v, ji] > 0
        obs_pt.append(np.flatnonzero(seen))
        obs_cam.append(np.full(seen.sum(), v))
    opt_all = np.concatenate(obs_pt)
    ocam_all = np.concatenate(obs_cam)
    obs_all = xn[fr[fi[opt_all]], ocam_all, ji[opt_all]]
    foc_all = 0.5 * (K[ocam_all, 0, 0] + K[ocam_all, 1, 1])
    ncam = V - 1
    gauge_w = np.sqrt(len(opt_all))
    args_all = (opt_all, ocam_all, obs_all, foc_all, npt, ncam, gauge_w)
    Rs, ts, X = np.concatenate([np.eye(3)[None], R[1:]]), np.concatenate([np.zeros((1, 3)), t[1:]]), X0[fi, ji]
    r_first = _residuals(Rs, ts, X, args_all)
    e0 = np.linalg.norm(r_first.reshape(-1, 2), axis=1)
    med0 = np.array([np.median(e0[ocam_all == v]) if np.any(ocam_all == v) else np.nan for v in range(V)])
    if np.nanmedian(e0) > max_initial_px or np.any(med0 > 2 * max_initial_px):
        nm = [f"camera {v}" for v in range(V)] if names is None else list(names)
        worst = ", ".join(f"{nm[v]} {med0[v]:.0f} px" for v in np.argsort(-np.nan_to_num(med0))[:3])
        raise RigRefused(f"the chained rig explains the joints badly before refinement: median reprojection error "
                         f"{np.nanmedian(e0):.0f} px (limit {max_initial_px:g}; worst cameras {worst}); "
                         "the pairs' relative poses disagree (wrong people matched, unsynchronised views or "
                         "wrong intrinsics?)")
    nfev = 0
    keep = np.ones(len(opt_all), bool)
    deadline = t_start + max_seconds
    for _ in range(2):
        r = np.linalg.norm(_residuals(Rs, ts, X, args_all).reshape(-1, 2), axis=1)
        sigma = 1.4826 * np.median(r) / np.sqrt(np.log(4.0))  # Rayleigh median -> per-axis σ
        keep = r <= max(trim_px, 3.0 * 2.0 * sigma)
        # a point left with one observation is unconstrained along its ray: held where it is
        keep &= np.bincount(opt_all[keep], minlength=npt)[opt_all] >= 2
        Rs, ts, X, sol = _solve(Rs, ts, X, keep, args_all, loss, f_scale_px, max_nfev, deadline, verbose)
        nfev += sol["nfev"]
    scales = np.full(V, np.nan)
    if fit_focal:  # once more with a factor on each camera's focal length (the rig returned is the one above)
        sf = _solve(Rs, ts, X, keep, args_all, "linear", f_scale_px, max_nfev, deadline, verbose, fit_focal=True)[3]
        scales = sf["s"]
        nfev += sf["nfev"]
    Rn, tn = Rs, ts / np.linalg.norm(ts[1])  # exact unit baseline
    r_all = _residuals(Rs, ts, X, args_all).reshape(-1, 2)
    r_last = r_all[keep].ravel()
    rn = np.linalg.norm(r_all, axis=1)
    cam_rms = np.array([np.sqrt(np.mean(rn[keep & (ocam_all == v)] ** 2)) if np.any(keep & (ocam_all == v))
                        else np.nan for v in range(V)])
    cam_kept = np.array([np.mean(keep[ocam_all == v]) if np.any(ocam_all == v) else 0.0 for v in range(V)])
    info = {"ba_rms_px_camera": cam_rms, "ba_kept_camera": cam_kept, "ba_focal_scale_camera": scales,
            "ba_median_px_before": float(np.median(e0)), "ba_frames": int(len(fr)), "ba_points": int(npt),
            "ba_observations": int(len(opt_all)),
            "ba_kept": int(keep.sum()),
            "ba_rms_px_before": float(np.sqrt(np.mean(r_first ** 2))),
            "ba_rms_px_after": float(np.sqrt(np.mean(r_last ** 2))),
            "ba_median_px_after": float(np.median(np.abs(r_last))),
            "ba_nfev": int(nfev), "ba_status": int(sol["status"])}
    return Rn, tn, info


def calibrate_rig(xn: np.ndarray, w: np.ndarray, K: np.ndarray, method: str = "essential",
                  threshold_px: float = 2.0, max_points: int = 20000, seed: int = 0,
                  ba: bool = True, ba_frames: int = 2000, ba_loss: str = "linear", ba_f_scale_px: float = 3.0,
                  ba_max_nfev: int = 50, min_inlier_ratio: float = 0.5, robust: int | None = None,
                  names=None, gate: dict | None = None, ba_max_seconds: float = 20.0):
    """Calibrate a static rig from normalised joints xn [F,V,J,2] with weights w [F,V,J].

    Every pair is estimated from its pooled joints; the pairs that worked are chained from the
    lowest-numbered camera of the largest group of cameras they connect (camera 0 when it is
    placed), then bundle-adjusted. A camera that cannot be placed (no estimated pair links it
    to that group, or its distance cannot be fixed) is left out: its R, t are NaN and
    info["unplaced"] says why. Returns R [V,3,3], t [V,3] (the root camera = world, unit
    baseline between the first two placed cameras) and a dict of diagnostics: pairs [P,2],
    pair_inliers, pair_points, pair_rot_deg, pair_reproj_px, pair_failure [P], placed [V]
    bool, unplaced {camera: reason}, chain_order, bundle-adjustment figures. ValueError when
    no pair at all can be estimated, naming each pair (names [V]: camera names) and why.

    The quality gate (`gate`, GATE's keys; thresholds there): pair_loop_deg [P] is each pair's
    smallest rotation loop-closure error over the camera triplets it closes; a pair above
    max_loop_deg is not chained (failure INCONSISTENT). Before refinement a rig whose median
    reprojection error exceeds max_initial_px is refused (RigRefused); after it, a camera
    whose RMS exceeds max_rms_px or whose kept share is below min_kept is left out (reason in
    unplaced) and the rest refined again; fewer than two cameras left is RigRefused, naming
    each camera and why. With three or more cameras placed, a camera whose focal factor
    (bundle_adjust's fit_focal, ba_focal_scale_camera) lies outside [1 / max_focal_ratio,
    max_focal_ratio] refuses the rig (RigRefused naming it, the fitted and the given focal
    length, worst first): the refinement would spread its error over every camera.
    """
    g = {**GATE, **(gate or {})}
    nm = [f"camera {v}" for v in range(xn.shape[1])] if names is None else list(names)
    V = xn.shape[1]
    if V < 2:
        raise ValueError(f"rig calibration needs at least 2 cameras, got {V}")
    pairs = all_pairs(V)

    def estimate(p: int) -> epipolar.PairEstimate:
        i, j = pairs[p]
        x1, x2, _ = pool_pair(xn, w, i, j, max_points, seed + p)
        # the detector's noise level is unknown: widen the inlier threshold until most
        # pooled correspondences agree (3, 6, 12, 24 px by default)
        for k in range(4):
            e = _best_estimate(x1, x2, K[i], K[j], method, threshold_px * 2 ** k,
                               cv2.USAC_MAGSAC if robust is None else robust, seed + p, min_inlier_ratio)
            e.info["threshold_px"] = threshold_px * 2 ** k
            if e.failure != epipolar.TOO_FEW_INLIERS:
                break
        return e
    ests = thread_map(estimate, range(len(pairs)))  # the pairs' OpenCV fits, on a thread per core
    loop = loop_closure(ests, pairs, V)
    for p in np.flatnonzero(loop > g["max_loop_deg"]):
        ests[p] = epipolar.failed(epipolar.INCONSISTENT, ests[p].n_points, ests[p].n_inliers,
                                 loop_deg=float(loop[p]), rot_deg=ests[p].rot_deg)
    info = {"pairs": pairs, "pair_loop_deg": loop,
            "pair_points": np.array([e.n_points for e in ests]),
            "pair_inliers": np.array([e.n_inliers for e in ests]),
            "pair_rot_deg": np.array([e.rot_deg for e in ests]),
            "pair_reproj_px": np.array([e.reproj_px for e in ests]),
            "pair_failure": np.array([e.failure for e in ests], dtype=np.int8),
            "pair_threshold_px": np.array([e.info.get("threshold_px", np.nan) for e in ests]),
            "pair_sampson_px": np.array([e.info.get("sampson_px", np.nan) for e in ests]),
            "pair_estimator": [e.info.get("estimator", "") for e in ests]}
    if not any(e.ok for e in ests):
        nm = [f"camera {v}" for v in range(V)] if names is None else list(names)
        why = "; ".join(f"{nm[i]}-{nm[j]}: {epipolar.FAILURES[e.failure]}" for (i, j), e in zip(pairs, ests)
                        if e.failure != epipolar.NO_JOINTS)
        raise ValueError(f"rig calibration: no camera pair could be estimated ({why or 'no joints'})")
    root = _largest_group_root(V, pairs, ests)
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    R, t, order, notes = chain_pairs(V, pairs, ests, xn, w, focal, root=root)
    placed = np.all(np.isfinite(R), axis=(1, 2))
    unplaced = {}
    for v in np.flatnonzero(~placed):
        mine = [(int(a), int(b), e) for (a, b), e in zip(pairs, ests) if v in (a, b)]
        why = "; ".join(f"pair {a}-{b}: {epipolar.FAILURES[e.failure]}" for a, b, e in mine if not e.ok)
        unplaced[int(v)] = notes.get(int(v)) or (
            f"no estimated pair links it to the placed cameras ({why})" if why
            else "its estimated pairs link it only to cameras that cannot be placed")
    info["chain_order"] = np.array(order)
    info["placed"] = placed
    info["unplaced"] = unplaced
    idx = np.flatnonzero(placed)
    if len(idx) < 2:
        raise ValueError(f"rig calibration: fewer than 2 cameras could be placed ({unplaced})")
    t = t / np.linalg.norm(t[idx[1]])  # the gauge: |C_b - C_root| = 1 for the first two placed cameras
    start = None
    if ba and len(idx) > 2:
        # a camera the chained rig cannot explain is left out before refinement (no minutes spent on it)
        start = start_points(xn[:, idx], w[:, idx], K[idx], R[idx], t[idx], ba_frames)  # the refinement's too
        med0 = initial_errors(xn[:, idx], w[:, idx], K[idx], R[idx], t[idx], start=start)
        info["initial_px_camera"] = np.full(V, np.nan)
        info["initial_px_camera"][idx] = med0
        worse = [k for k in range(len(idx)) if med0[k] > g["max_initial_px"]]
        if worse and len(worse) <= len(idx) - 2:
            for k in worse:
                unplaced[int(idx[k])] = (f"the chained rig reprojects its joints {med0[k]:.0f} px away (median, gate "
                                         f"{g['max_initial_px']:g} px): its relative poses disagree with the others'")
            R[idx[worse]], t[idx[worse]] = np.nan, np.nan
            idx = np.delete(idx, worse)
            start = None
            Rn = R[idx] @ R[idx[0]].T
            tn = t[idx] - np.einsum("vab,b->va", Rn, t[idx[0]])
            tn /= np.linalg.norm(camera_centre(Rn[1], tn[1]))
            R[idx], t[idx] = Rn, tn
    if ba:
        for attempt in range(2):
            Rb, tb, bainfo = bundle_adjust(xn[:, idx], w[:, idx], K[idx], R[idx], t[idx], ba_frames, ba_loss,
                                           ba_f_scale_px, ba_max_nfev, max_initial_px=g["max_initial_px"],
                                           names=[nm[v] for v in idx], max_seconds=ba_max_seconds / (1 + attempt),
                                           fit_focal=len(idx) > 2, start=start if attempt == 0 else None)
            rms, kept = bainfo["ba_rms_px_camera"], bainfo["ba_kept_camera"]
            bad = [k for k in range(len(idx)) if not (rms[k] <= g["max_rms_px"] and kept[k] >= g["min_kept"])]
            if not bad or attempt == 1:
                break
            for k in bad:
                unplaced[int(idx[k])] = (f"its reprojection error after refinement is {rms[k]:.1f} px RMS with "
                                         f"{100 * kept[k]:.0f} % of its joints kept (gate: at most "
                                         f"{g['max_rms_px']:g} px, at least {100 * g['min_kept']:.0f} %)")
            R[idx[bad]], t[idx[bad]] = np.nan, np.nan
            idx = np.delete(idx, bad)
            if len(idx) < 2:
                raise RigRefused("rig calibration refused: " + "; ".join(f"{nm[v]}: {why}" for v, why in unplaced.items()))
            # bundle_adjust holds the first camera at the origin: re-express the rig in its frame
            Rn = R[idx] @ R[idx[0]].T
            tn = t[idx] - np.einsum("vab,b->va", Rn, t[idx[0]])
            tn /= np.linalg.norm(camera_centre(Rn[1], tn[1]))
            R[idx], t[idx] = Rn, tn
        rms, kept = bainfo["ba_rms_px_camera"], bainfo["ba_kept_camera"]
        bad = [k for k in range(len(idx)) if not (rms[k] <= g["max_rms_px"] and kept[k] >= g["min_kept"])]
        if bad:
            raise RigRefused("rig calibration refused: " + "; ".join(
                f"{nm[idx[k]]}: reprojection error {rms[k]:.1f} px RMS with {100 * kept[k]:.0f} % of its joints kept "
                f"after refinement (gate: at most {g['max_rms_px']:g} px, at least {100 * g['min_kept']:.0f} %)"
                for k in bad) + "; the cameras' keypoints do not agree on one rig (wrong people matched, "
                "unsynchronised views or wrong intrinsics?)")
        R[idx], t[idx] = Rb, tb
        cams_rms = np.full(V, np.nan)
        cams_rms[idx] = rms
        bainfo["ba_rms_px_camera"] = cams_rms
        cams_kept = np.zeros(V)
        cams_kept[idx] = kept
        bainfo["ba_kept_camera"] = cams_kept
        info.update(bainfo)
        placed = np.all(np.isfinite(R), axis=(1, 2))
        info["placed"] = placed
        info["ba_focal_scale_camera"] = np.full(V, np.nan)
        info["ba_focal_scale_camera"][idx] = s = bainfo["ba_focal_scale_camera"]
        r = g["max_focal_ratio"]
        off = [k for k in np.argsort(-np.abs(np.nan_to_num(np.log(s)))) if s[k] < 1 / r or s[k] > r]
        if off:
            raise RigRefused("rig calibration refused: " + "; ".join(
                f"{nm[idx[k]]}'s joints fit a focal length of {s[k] * 0.5 * (K[idx[k], 0, 0] + K[idx[k], 1, 1]):.0f} px "
                f"where its intrinsics give {0.5 * (K[idx[k], 0, 0] + K[idx[k], 1, 1]):.0f} px (x{s[k]:.2f}; gate: within "
                f"x{r:g} either way)" for k in off) + f"; check {nm[idx[off[0]]]}'s intrinsics (focal length, image "
                "size, the camera's order in the calibration file)")
    return R, t, info


def start_points(xn, w, K, R, t, max_frames: int = 2000, trim_px: float = 12.0):
    """The refinement's starting points: the frames it uses (_select_frames) and their joints
    triangulated by the views that agree (_robust_points). xn [F,V,J,2], w [F,V,J], K, R [V,3,3],
    t [V,3] -> frames [f], X [f,J,3], ok [f,J], the weights without outliers [f,V,J]."""
    fr = _select_frames(w, max_frames)
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    return (fr, *_robust_points(xn[fr], w[fr], R, t, focal, 2.5 * trim_px))


def initial_errors(xn, w, K, R, t, max_frames: int = 2000, trim_px: float = 12.0, start=None) -> np.ndarray:
    """Each camera's median reprojection error (px) of the joints triangulated by the views that
    agree (start_points, or `start` when given), before any refinement. xn [F,V,J,2], w [F,V,J],
    K, R [V,3,3], t [V,3]. -> [V] (NaN where a camera sees none of them)."""
    fr, X, ok, _ = start_points(xn, w, K, R, t, max_frames, trim_px) if start is None else start
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    Xc = np.einsum("vab,fjb->fvja", R, X) + t[None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.linalg.norm(Xc[..., :2] / Xc[..., 2:3] - xn[fr], axis=-1) * focal[None, :, None]
    seen = (w[fr] > 0) & ok[:, None]
    return np.array([np.median(e[:, v][seen[:, v]]) if seen[:, v].any() else np.nan for v in range(len(R))])


def camera_centre(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """C = -Rᵀ t for R [3,3], t [3]."""
    return -R.T @ t


def loop_closure(ests: list, pairs: np.ndarray, V: int) -> np.ndarray:
    """Per pair, the smallest rotation loop-closure error (deg) over the camera triplets it
    belongs to: R_ik ≈ R_jk R_ij when all three pairs were estimated. NaN where no triplet
    closes (fewer than three cameras, or a pair failed). -> [P]."""
    index = {(int(a), int(b)): p for p, (a, b) in enumerate(pairs)}
    out = np.full(len(pairs), np.nan)
    for i, j, k in itertools.combinations(range(V), 3):
        pij, pjk, pik = index[(i, j)], index[(j, k)], index[(i, k)]
        if not (ests[pij].ok and ests[pjk].ok and ests[pik].ok):
            continue
        err = float(rotation_magnitude_deg((ests[pjk].R @ ests[pij].R).T @ ests[pik].R))
        for p in (pij, pjk, pik):
            out[p] = err if not np.isfinite(out[p]) else min(out[p], err)
    return out


def _best_estimate(x1, x2, K1, K2, method: str, threshold_px: float, robust: int, seed: int,
                   min_inlier_ratio: float) -> epipolar.PairEstimate:
    """The pair's estimate by `robust` and by cv2.USAC_DEFAULT, whichever gives the lower
    median Sampson distance over all pooled points (a least-median criterion): with a few per
    cent of gross outliers USAC_MAGSAC alone can be off by degrees where USAC_DEFAULT is not;
    on clean joints MAGSAC is the more accurate one, and the criterion keeps it."""
    f = 0.25 * (K1[0, 0] + K1[1, 1] + K2[0, 0] + K2[1, 1])
    best = None
    for name, code in (("configured", robust), ("usac_default", cv2.USAC_DEFAULT)):
        if best is not None and code == robust:
            continue
        # the degeneracy test depends on the points alone: the second estimator reaches here
        # only when the first found them not degenerate (it costs a homography fit on all points)
        e = epipolar.estimate_pair(x1, x2, K1, K2, method=method, threshold_px=threshold_px, robust=code,
                                   seed=seed, min_inlier_ratio=min_inlier_ratio, check_degenerate=best is None)
        if e.ok:
            r = epipolar.sampson_px(tri.essential_from_pose(e.R, e.t), x1, x2, f)
            e.info["sampson_px"] = float(np.nanmedian(r))
            e.info["estimator"] = name
        if best is None or (e.ok and (not best.ok or e.info["sampson_px"] < best.info["sampson_px"])):
            best = e
        if e.failure == epipolar.DEGENERATE:  # the points decide that, not the estimator
            break
    return best


def _largest_group_root(V: int, pairs: np.ndarray, ests: list) -> int:
    """Lowest-numbered camera of the largest group connected by estimated pairs (ties: the
    group with the lowest-numbered camera)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    ok = np.array([e.ok for e in ests], bool)
    A = coo_matrix((np.ones(ok.sum()), (pairs[ok, 0], pairs[ok, 1])), shape=(V, V))
    _, lab = connected_components(A, directed=False)
    sizes = np.bincount(lab)
    best = [c for c in range(len(sizes)) if sizes[c] == sizes.max()]
    return int(min(np.flatnonzero(np.isin(lab, best))))
