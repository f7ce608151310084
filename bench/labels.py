"""Label benchmark: accuracy of the three labelling modes and throughput of the triangulation.

One run, the same synthetic 2D for every method (random plausible 17-joint poses from
tests.synth, a 4-camera Human3.6M-like rig, f ≈ 1150 px):
  1. label PMPJPE (mm, against the ground truth in each camera's frame) and failure rate of
     `per-frame`, `rig` and `known` at σ = 0, 2, 5 px;
  2. throughput of the project's labelling (label_chunk, known rig, neighbour pairs,
     polynomial triangulation + vector median) vs a per-pair Python loop over
     cv2.correctMatches + cv2.triangulatePoints (the authors' method), in camera pairs/s;
  3. the time for 1.2 M pairs x 17 joints (Human3.6M scale) on `--workers` threads;
  4. rig calibration without extrinsics on 2,000 frames at σ = 2 px, clean and with 5 % gross
     outliers: the largest rotation error over camera pairs, the time, and the error against the
     frames the bundle adjustment sees (label.ba_frames: 400, 1,000, 2,000); the bundle
     adjustment's solver (pipeline.geometry.schur) against scipy.optimize.least_squares (trf,
     the exact sparse Jacobian of pipeline.geometry.bundle) on one problem, side by side: the
     true rig and joints of 2,000 frames perturbed, σ = 2 px (ba_speedup_vs_scipy, and the
     costs each reaches);
  5. memory and speed at 100,000 frames (tracemalloc peak over the input's bytes) of
     triangulate_dlt and of the label path (make_labels, known rig), and label frames/s.
The last line is one JSON object with the figures. `--quick` runs a smaller version (< 1 min).
numpy runs on one thread (OMP_NUM_THREADS=1 unless set); OpenCV's robust fits (the pairs', the
sync and baseline checks') run on a thread per core (pipeline.cores.thread_map: `fit_threads`).

    python bench/labels.py [--quick] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import camera  # noqa: E402
from pipeline.cores import available_cores  # noqa: E402
from pipeline.geometry import labels
from pipeline.evaluation import metrics
from tests import synth
from pipeline.geometry import triangulate as tri  # noqa: E402


def make_rig():
    try:
        from pipeline.data.rigs import h36m_like_rig
        return h36m_like_rig(4, seed=0), "pipeline.data.rigs.h36m_like_rig(4, seed=0)"
    except ImportError:  # the dataset module is not there: the same rig, inline
        return synth.ring_rig([45, 135, 225, 315], radius_mm=5000, height_mm=1600), "synth.ring_rig"


def accuracy(cams, n_frames, n_per_frame, sigmas, seed=0):
    P = synth.random_poses(n_frames, seed=seed)
    gt = camera.world_to_camera(P[:, None], cams.R[None], cams.t[None])
    gt = gt - gt[:, :, :1]
    res = {}
    for s in sigmas:
        kp = synth.observe(P, cams, s, seed=seed + 1)
        for mode in ("known", "rig", "per-frame"):
            n = n_per_frame if mode == "per-frame" else n_frames
            t0 = time.perf_counter()
            out = labels.make_labels(kp[:n], cams, {"mode": mode})
            dt = time.perf_counter() - t0
            # Procrustes includes scale, so canonical labels compare with millimetres directly
            e = metrics.pmpjpe(out["labels_cam"].astype(np.float64), gt[:n], out["valid"])
            fail = float(np.mean(out["failure"] != 0))
            res[(mode, s)] = {"pmpjpe_mm": float(np.nanmean(e)) if np.isfinite(e).any() else float("nan"),
                              "fail_rate": fail, "frames": n, "seconds": dt,
                              "failures": {labels.FAILURES[int(c)]: int(k) for c, k in
                                           zip(*np.unique(out["failure"], return_counts=True)) if c != 0}}
            if mode == "rig":
                Rt = tri.relative_pose(cams.R[0], cams.t[0], cams.R, cams.t)[0]
                res[(mode, s)]["rot_err_deg_max"] = float(camera.rotation_angle_deg(out["R_est"], Rt).max())
            print(f"σ={s:>3} px  {mode:>9}: PMPJPE {res[(mode, s)]['pmpjpe_mm']:7.2f} mm   "
                  f"failed {100 * fail:5.1f} % of {n} frames   ({dt:.1f} s)"
                  + (f"   rig rotation error ≤ {res[(mode, s)]['rot_err_deg_max']:.3f}°" if mode == "rig" else ""),
                  flush=True)
    return res


def pair_loop(kp, cams, pairs):
    """The authors' way: one cv2.correctMatches + cv2.triangulatePoints call per frame pair."""
    out = []
    Pm = cams.P
    for f in range(len(kp)):
        for i, j in pairs:
            x1 = np.ascontiguousarray(kp[f, i, :, :2])[None]
            x2 = np.ascontiguousarray(kp[f, j, :, :2])[None]
            Fm = _fundamental(cams, i, j)
            c1, c2 = cv2.correctMatches(Fm, x1, x2)
            X = cv2.triangulatePoints(Pm[i], Pm[j], c1[0].T, c2[0].T)
            out.append((X[:3] / X[3]).T)
    return out


_FCACHE = {}


def _fundamental(cams, i, j):
    if (i, j) not in _FCACHE:
        R, t = tri.relative_pose(cams.R[i], cams.t[i], cams.R[j], cams.t[j])
        E = tri.essential_from_pose(R, t)
        _FCACHE[(i, j)] = np.linalg.inv(cams.K[j]).T @ E @ np.linalg.inv(cams.K[i])
    return _FCACHE[(i, j)]


def throughput(cams, n_loop_frames, chunk_frames, n_chunks, workers, repeats=2, seed=0):
    P = synth.random_poses(chunk_frames, seed=seed + 7)
    kp = synth.observe(P, cams, 2.0, seed=seed + 8)
    cfg = {"mode": "known"}
    used = labels.select_pairs(labels.viewing_angles(cams.R), "neighbours", labels.DEFAULTS["n_neighbours"],
                               labels.DEFAULTS["max_pair_angle_deg"])
    pairs = labels.rigmod.all_pairs(cams.V)[used]
    # the machine is shared: interleave the two, best of `repeats` each
    loop_pps = ours_pps = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        pair_loop(kp[:n_loop_frames], cams, pairs)
        loop_pps = max(loop_pps, n_loop_frames * len(pairs) / (time.perf_counter() - t0))
        t0 = time.perf_counter()  # ours, one thread, one chunk
        out = labels.label_chunk(kp, cams, cfg)
        ours_pps = max(ours_pps, out["pair_used"].sum() / (time.perf_counter() - t0))
    # Human3.6M scale: n_chunks chunks (the same 2D relabelled; the work is identical) on `workers` threads
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        n_pairs = sum(r["pair_used"].sum() for r in ex.map(lambda _: labels.label_chunk(kp, cams, cfg), range(n_chunks)))
    big_s = time.perf_counter() - t0
    return {"pairs_per_frame": len(pairs), "loop_pairs_per_s": loop_pps, "ours_pairs_per_s_1thread": ours_pps,
            "pairs_per_s": n_pairs / big_s, "big_pairs": int(n_pairs), "big_seconds": big_s}


def pair_rot_err_deg(cams, R_est) -> float:
    """Largest rotation error (deg) over camera pairs of an estimated rig against the truth."""
    errs = []
    for i, j in labels.rigmod.all_pairs(cams.V):
        Rt = cams.R[j] @ cams.R[i].T
        Re = R_est[j] @ R_est[i].T
        errs.append(float(camera.rotation_angle_deg(Re[None], Rt[None])[0]))
    return max(errs)


def calibration(cams, n_frames, ba_frames_list, seed=0):
    """Rig calibration (labels.calibrate, mode rig) on n_frames at σ = 2 px, clean and with 5 %
    outliers; for each, the default refinement timed and the error against label.ba_frames."""
    from pipeline.geometry import calibration as cal
    P = synth.random_poses(n_frames, seed=seed)
    blind = camera.Cameras(cams.K, np.full_like(cams.R, np.nan), np.full_like(cams.t, np.nan), cams.dist, cams.size)
    out = {}
    for rate, tag in ((0.0, ""), (0.05, "_outliers5")):
        kp = synth.observe(P, cams, 2.0, seed=seed + 1, outlier_rate=rate)
        curve = {}
        for bf in ba_frames_list:
            t0 = time.perf_counter()
            _, d = cal.calibrate(kp, blind, {"mode": "rig", "ba_frames": bf})
            dt = time.perf_counter() - t0
            curve[bf] = pair_rot_err_deg(cams, d["R_est"])
            print(f"calibration, {n_frames} frames, σ=2 px, {100 * rate:.0f} % outliers, ba_frames {bf}: "
                  f"rotation error ≤ {curve[bf]:.4f}° over pairs ({dt:.1f} s)", flush=True)
            if bf == labels.DEFAULTS["ba_frames"]:
                out[f"rig_rot_err_deg_max_s2{tag}"] = curve[bf]
                if not tag:
                    out["calibrate_s_2k" if n_frames == 2000 else f"calibrate_s_{n_frames}"] = dt
        out[f"rig_rot_err_deg_by_ba_frames{tag}"] = {str(k): round(v, 4) for k, v in curve.items()}
    return out


def ba_solvers(cams, n_frames=2000, seed=0, repeats=3):
    """One bundle adjustment solved by schur.solve and by scipy's trf from the same start (the
    true rig in camera 0's frame and the true joints, perturbed by 0.01), best of `repeats`
    interleaved runs each."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation
    from pipeline.geometry import bundle, schur
    from pipeline.geometry import calibration as cal
    P = synth.random_poses(n_frames, seed=seed)
    kp = synth.observe(P, cams, 2.0, seed=seed + 1)
    xn, w, _ = cal.screened(kp, cams, cal.resolve_cfg({"mode": "rig"}))
    R = cams.R @ cams.R[0].T
    t = cams.t - np.einsum("vab,b->va", R, cams.t[0])
    k = np.linalg.norm(-R[1].T @ t[1])
    t = t / k
    Xw = (P.reshape(-1, 3) @ cams.R[0].T + cams.t[0]) / k  # camera 0's frame, unit baseline [F J,3]
    npt = len(Xw)
    seen = w.transpose(0, 2, 1).reshape(npt, cams.V) > 0
    opt, ocam = np.nonzero(seen)
    obs = xn.transpose(0, 2, 1, 3).reshape(npt, cams.V, 2)[opt, ocam]
    foc = 0.5 * (cams.K[ocam, 0, 0] + cams.K[ocam, 1, 1])
    two = np.bincount(opt, minlength=npt) >= 2
    keep = two[opt]
    used = np.flatnonzero(two)
    remap = np.full(npt, -1)
    remap[used] = np.arange(len(used))
    opt, ocam, obs, foc, X = remap[opt[keep]], ocam[keep], obs[keep], foc[keep], Xw[used]
    rng = np.random.default_rng(seed + 2)
    R0, t0 = R.copy(), t.copy()
    for c in range(1, cams.V):
        R0[c] = Rotation.from_rotvec(rng.normal(0, 0.01, 3)).as_matrix() @ R[c]
        t0[c] = t[c] + rng.normal(0, 0.01, 3)
    X0 = X + rng.normal(0, 0.01, X.shape)
    gw = np.sqrt(len(opt))
    ncam = cams.V - 1
    p0 = np.concatenate([np.concatenate([Rotation.from_matrix(R0[1:]).as_rotvec(), t0[1:]], 1).ravel(), X0.ravel()])
    args = (opt, ocam, obs, foc, len(X), ncam, gw)
    schur.solve(R0, t0, X0, opt, ocam, obs, foc, gw)  # compiled (cached) before timing
    ts, tq = [], []
    for _ in range(repeats):
        t_ = time.perf_counter()
        info = schur.solve(R0, t0, X0, opt, ocam, obs, foc, gw)[-1]
        ts.append(time.perf_counter() - t_)
        t_ = time.perf_counter()
        sol = least_squares(bundle.residuals, p0, jac=bundle.Jacobian(opt, ocam, len(X), ncam), method="trf",
                            tr_solver="lsmr", x_scale="jac", max_nfev=50, args=args)
        tq.append(time.perf_counter() - t_)
    out = {"ba_observations": int(len(opt)), "ba_schur_s": min(ts), "ba_scipy_s": min(tq),
           "ba_speedup_vs_scipy": min(tq) / min(ts), "ba_cost_schur": float(info["cost"]), "ba_cost_scipy": float(sol.cost),
           "ba_cost_scipy_minus_schur": float(sol.cost - info["cost"]),
           "ba_evaluations_schur": int(info["nfev"]), "ba_evaluations_scipy": int(sol.nfev)}
    print(f"bundle adjustment, {len(opt):,} observations: schur {min(ts):.2f} s ({info['nfev']} evaluations), "
          f"scipy trf {min(tq):.2f} s ({sol.nfev}): x{out['ba_speedup_vs_scipy']:.1f}; cost (½ Σ r², px²) "
          f"{info['cost']:.4f} vs {sol.cost:.4f}", flush=True)
    return out


def memory(cams, n_frames, seed=0):
    """tracemalloc peak / input bytes of triangulate_dlt (4 views, every joint of n_frames) and of
    make_labels (known rig) at n_frames; label frames/s (best of 2, untraced, 20,000 frames)."""
    import tracemalloc
    kp = synth.observe(synth.random_poses(n_frames, seed=seed + 3), cams, 2.0, seed=seed + 4)
    x = camera.normalise_points(kp[..., :2], cams.K[None]).transpose(0, 2, 1, 3).reshape(-1, cams.V, 2)
    w = kp[..., 2].transpose(0, 2, 1).reshape(-1, cams.V)
    res = {}
    for name, fn, nbytes in (("dlt", lambda: tri.triangulate_dlt(x, w, cams.R, cams.t), x.nbytes + w.nbytes),
                             ("labels", lambda: labels.make_labels(kp, cams, {"mode": "known"}), kp.nbytes)):
        tracemalloc.start()
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del r
        res[f"peak_mb_100k_over_input_{name}"] = peak / nbytes
        res[f"peak_mb_{name}"] = peak / 2 ** 20
        print(f"{name} at {n_frames} frames: peak {peak / 2 ** 20:.0f} MB over an input of {nbytes / 2 ** 20:.0f} MB "
              f"= {peak / nbytes:.2f}x ({n_frames / dt:,.0f} frames/s traced)", flush=True)
    best = {"labels": 0.0, "dlt": 0.0}
    n = min(20000, n_frames)
    for _ in range(2):
        t0 = time.perf_counter()
        labels.make_labels(kp[:n], cams, {"mode": "known"})
        best["labels"] = max(best["labels"], n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        tri.triangulate_dlt(x[:n * 17], w[:n * 17], cams.R, cams.t)
        best["dlt"] = max(best["dlt"], n / (time.perf_counter() - t0))
    res["label_frames_per_s"], res["dlt_frames_per_s"] = best["labels"], best["dlt"]
    res["memory_frames"] = n_frames
    print(f"label path {best['labels']:,.0f} frames/s, triangulate_dlt {best['dlt']:,.0f} frames/s "
          f"({n} frames, 4 views, numpy on one thread, the OpenCV fits of the checks on {available_cores()})",
          flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    ap.add_argument("--workers", type=int, default=2, help="threads for the Human3.6M-scale run")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cams, rig_name = make_rig()
    print(f"rig: {rig_name}; {cams.V} cameras, f ≈ {cams.K[:, 0, 0].mean():.0f} px", flush=True)
    if args.quick:
        acc = accuracy(cams, 300, 60, (0, 2, 5))
        thr = throughput(cams, 250, 5000, 8, args.workers, repeats=3)
    else:
        acc = accuracy(cams, 2000, 400, (0, 2, 5))
        thr = throughput(cams, 1000, 20000, 15, args.workers)  # 15 x 20,000 frames x 4 pairs = 1.2 M pairs
    h36m_pairs = 1.2e6
    speedup = thr["ours_pairs_per_s_1thread"] / thr["loop_pairs_per_s"]
    print(f"per-pair cv2 loop: {thr['loop_pairs_per_s']:,.0f} pairs/s;  ours (1 thread, best of interleaved runs): "
          f"{thr['ours_pairs_per_s_1thread']:,.0f} pairs/s  ->  x{speedup:.1f}")
    print(f"ours on {args.workers} threads: {thr['big_pairs']:,} pairs x 17 joints in {thr['big_seconds']:.1f} s "
          f"= {thr['pairs_per_s']:,.0f} pairs/s; 1.2 M pairs: {h36m_pairs / thr['pairs_per_s']:.1f} s"
          + ("" if thr["big_pairs"] >= h36m_pairs else " (projected from this run)"))
    calib = calibration(cams, 2000, (2000,) if args.quick else (400, 1000, 2000))
    solvers = ba_solvers(cams, 500 if args.quick else 2000)
    mem = memory(cams, 20_000 if args.quick else 100_000)
    k2, r2 = acc[("known", 2)], acc[("rig", 2)]
    fig = {
        "rig_over_known_pmpjpe_s2": r2["pmpjpe_mm"] / k2["pmpjpe_mm"],
        "rig_fail_rate_s2": r2["fail_rate"],
        "per_frame_fail_rate_s2": acc[("per-frame", 2)]["fail_rate"],
        **{f"pmpjpe_mm_{m.replace('-', '_')}_s{s}": round(v["pmpjpe_mm"], 3) for (m, s), v in acc.items()},
        **{f"fail_rate_{m.replace('-', '_')}_s{s}": round(v["fail_rate"], 4) for (m, s), v in acc.items()},
        "rig_rot_err_deg_s2": r2["rot_err_deg_max"],
        # the paper's per-frame mode (a robust fit per frame and pair), one thread
        "per_frame_frames_per_s_s2": acc[("per-frame", 2)]["frames"] / acc[("per-frame", 2)]["seconds"],
        "speedup_vs_pair_loop": speedup,
        "speedup_vs_pair_loop_threads": thr["pairs_per_s"] / thr["loop_pairs_per_s"],
        "loop_pairs_per_s": thr["loop_pairs_per_s"],
        "pairs_per_s": thr["pairs_per_s"],
        "h36m_1p2M_pairs_s": h36m_pairs / thr["pairs_per_s"],
        "h36m_measured": bool(thr["big_pairs"] >= h36m_pairs),
        **calib, **solvers, **mem,
        "workers": args.workers,
        "fit_threads": available_cores(),
        "quick": args.quick,
    }
    save("labels", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fig.items()}, args.quick)
    # calibrate_s_2k and the frames/s are absolute times: valid only on an otherwise idle machine


if __name__ == "__main__":
    main()
