"""Real footage end to end: the Pose2Sim demo (4 real cameras, 100 frames, one person).

detect2d from its OpenPose JSON (BODY_25B) and from MediaPipe BlazePose on its videos ->
rig calibration from the 2D joints alone (pipeline.geometry.labels.calibrate, mode "rig": the
Qualisys calibration is NOT used) -> left/right swaps found with the estimated rig
(pipeline/swaps.py), fixed, and the rig calibrated again -> labels.

Compared with the demo's Qualisys calibration:
- rotation error (degrees) of every camera pair's relative rotation, rig vs Qualisys;
- PMPJPE (mm) between the rig-mode labels (scale-free) and the labels triangulated from the
  same 2D keypoints with the Qualisys calibration (mode "known", mm), per frame and view;
- the floor: plain least-squares bundle adjustment (pipeline/rig.py, loss "linear") started
  AT the Qualisys rig moves to where the keypoints' reprojection error is least; its
  distance from Qualisys is what no calibration from these keypoints can beat.
- swaps: 10 % of (frame, view, limb) left/right swaps injected into the OpenPose keypoints,
  found with the estimated rig: precision and recall;
- bad input together: 20 % of (frame, view) emptied (no person) and 10 % swaps, the whole chain
  again (calibrate, fix swaps, calibrate).
Also: export of the 3D (Qualisys triangulation) to TRC and CSV, read back and compared with
Pose2Sim's own TRC; a PNG figure.
Calibration from people (bench/people.py: its docstring says how the footage is made): the
recording with bystanders in every view (rot_err_deg_bystanders, against rot_err_deg_single and
the same data with the true association), one view desynchronised and corrected
(sync_offset_err_frames), deliberately corrupted inputs (refused_bad_rigs / bad_rigs), the
`epipose calibrate` command on the recording (calibrate_s), a multi-person synthetic studio.

    .venv/bin/python bench/real.py [--quick] [--root PROJECT] [--out DIR] [--no-people]

--quick: MediaPipe on the first 48 frames only, no bad-input run (about a minute on 2 busy cores). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save  # noqa: E402

from pipeline.geometry import label_settings, labels, rig  # noqa: E402
from pipeline.camera import Cameras, rotation_angle_deg  # noqa: E402
from pipeline.joints import J  # noqa: E402
from pipeline.evaluation.metrics import pmpjpe  # noqa: E402
from tests.swaps import GROUPS, apply_swaps, fix_swaps  # noqa: E402

SHARED_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiview" / "pose2sim_demo"


def pair_errors(R_est: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """Geodesic error (deg) of each pair's relative rotation R_j R_iᵀ. R [V,3,3] -> [P]."""
    p = rig.all_pairs(len(R_ref))
    rel = lambda R: R[p[:, 1]] @ np.swapaxes(R[p[:, 0]], 1, 2)  # noqa: E731
    return rotation_angle_deg(rel(R_est), rel(R_ref))


def calibrate_with_swaps(kp: np.ndarray, cams: Cameras, cfg: dict, rounds: int = 3):
    """Rig calibration, swap fixing with the estimated rig, again until no swap is left."""
    kp = np.asarray(kp, dtype=np.float64)
    n_swaps, first = 0, None
    for _ in range(rounds):
        est, info = labels.calibrate(kp, cams.without_extrinsics(), cfg)
        first = first if first is not None else est
        kp_fixed, sw, _ = fix_swaps(kp, est, {})
        if not sw.any():
            break
        n_swaps += int(sw.sum())
        kp = kp_fixed
    return est, info, kp, n_swaps, first


def compare_labels(kp: np.ndarray, est: Cameras, ref: Cameras, cfg: dict):
    """PMPJPE (mm) per (frame, view) between rig-mode and known-mode labels of the same kp."""
    lr = labels.label_chunk(kp, est, {**cfg, "mode": "rig"})
    lk = labels.label_chunk(kp, ref, {**cfg, "mode": "known"})
    ok = lr["frame_ok"] & lk["frame_ok"]
    a = lr["labels_cam"][ok].astype(np.float64)
    b = lk["labels_cam_mm"][ok].astype(np.float64)
    e = pmpjpe(a.reshape(-1, J, 3), b.reshape(-1, J, 3)).reshape(a.shape[:2])
    return e, ok, lr, lk


def floor_rotation(kp: np.ndarray, ref: Cameras, cfg: dict) -> np.ndarray:
    """Least-squares BA started at the reference rig: where the keypoints pull it. -> [P] deg."""
    c = labels.resolve_cfg(cfg)
    xn, w = label_settings.normalised(kp, ref, c)
    R0 = ref.R @ ref.R[0].T
    t0 = ref.t - np.einsum("vab,b->va", R0, ref.t[0])
    t0 = t0 / np.linalg.norm(t0[1])
    R, _, _ = rig.bundle_adjust(xn, w, ref.K, R0, t0, 400, "linear", 1.0, 200)
    return pair_errors(R, ref.R)


def inject_swaps(kp: np.ndarray, est: Cameras, rate: float, seed: int = 0):
    """Swap a fraction of (frame, view, limb) groups; precision/recall of fix_swaps with est."""
    rng = np.random.default_rng(seed)
    truth = rng.random(kp.shape[:2] + (len(GROUPS),)) < rate
    bad = apply_swaps(kp, truth, "fix")
    _, found, info = fix_swaps(bad, est, {})
    tp = int((found & truth).sum())
    return {"injected": int(truth.sum()), "found": int(found.sum()), "true_positives": tp,
            "precision": tp / max(int(found.sum()), 1), "recall": tp / max(int(truth.sum()), 1),
            "ambiguous": info["n_ambiguous"]}


def figure(path: Path, res: dict, frame_img, kp_bad, kp_fixed, lab_rig, lab_known, R0):
    import matplotlib.pyplot as plt

    from pipeline.evaluation.plots import draw_skeleton_2d, plot_skeleton_3d
    fig = plt.figure(figsize=(16, 9))
    ax = fig.add_subplot(2, 3, 1)
    names = list(res)
    P = len(res[names[0]]["pair_err"])
    x = np.arange(P)
    wbar = 0.8 / (2 * len(names))
    for k, n in enumerate(names):
        ax.bar(x + (2 * k) * wbar, res[n]["pair_err"], wbar, label=f"{n}: rig (no calibration)")
        ax.bar(x + (2 * k + 1) * wbar, res[n]["floor"], wbar, alpha=0.5, label=f"{n}: LSQ optimum from Qualisys")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="goal 1°")
    ax.set_xticks(x + 0.4 - wbar, [f"{i}-{j}" for i, j in rig.all_pairs(4)])
    ax.set_xlabel("camera pair")
    ax.set_ylabel("relative rotation error vs Qualisys (deg)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 3, 2)
    for n in names:
        e = res[n]["pmpjpe_frames"]
        ax.plot(res[n]["frames_ok"], e, label=f"{n}: mean {np.nanmean(e):.1f} mm")
    ax.axhline(15.0, color="k", ls="--", lw=1, label="goal 15 mm")
    ax.set_xlabel("frame")
    ax.set_ylabel("PMPJPE rig vs Qualisys triangulation (mm)")
    ax.legend(fontsize=8)
    if frame_img is not None:
        ax = fig.add_subplot(2, 3, 3)
        ax.imshow(np.concatenate([draw_skeleton_2d(frame_img, kp_bad, 4, 8),
                                  draw_skeleton_2d(frame_img, kp_fixed, 4, 8)], 1))
        ax.set_title("MediaPipe, cam02: as detected | swaps fixed (left blue, right red)", fontsize=9)
        ax.axis("off")
    for k, (n, (a, b)) in enumerate(zip(names, zip(lab_rig, lab_known))):
        ax = fig.add_subplot(2, 3, 4 + k, projection="3d")
        from pipeline.evaluation.metrics import procrustes
        al = procrustes(a[None], b[None])[0]
        # camera 0 is a portrait camera: turn both into the Z-up world to stand them up
        plot_skeleton_3d(ax, b @ R0, color="k", alpha=0.6, label="Qualisys calibration", camera_frame=False)
        plot_skeleton_3d(ax, al @ R0, color="tab:orange", label="rig from 2D only", camera_frame=False)
        ax.set_title(f"{n}: one frame's labels, world axes (Procrustes-aligned)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--root", default=None, help="Pose2Sim project (default: ../shared demo, else PyPI)")
    ap.add_argument("--out", default="artifacts/bench_real")
    ap.add_argument("--no-people", action="store_true", help="skip the calibration from people (bench/people.py)")
    args = ap.parse_args()
    import zarr

    from pipeline.data import get_adapter
    from pipeline.detectors import get_detector
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = args.root or (str(SHARED_DEMO) if SHARED_DEMO.is_dir() else None)
    g = zarr.group(store=zarr.storage.MemoryStore())
    t0 = time.perf_counter()
    get_adapter("pose2sim")({"root": root, "images": False}, g, progress=False)
    ref = Cameras.from_store(g, 0)
    F, V = g["frame_index"].shape[0], ref.V
    print(f"dataset: {g.attrs['source']}  {F} frames, {V} views, sizes {ref.size.astype(int).tolist()} "
          f"({time.perf_counter() - t0:.1f} s)")
    kps, times = {}, {}
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        kps["openpose"] = get_detector("openpose")({}, g, slice(None), {})
    times["openpose"] = time.perf_counter() - t
    for wmsg in wlist:
        print("  openpose:", wmsg.message)
    try:
        import mediapipe  # noqa: F401
        n_mp = 48 if args.quick else F
        t = time.perf_counter()
        mp = np.full((F, V, J, 3), np.nan, np.float32)
        mp[:n_mp] = get_detector("mediapipe")({}, g, slice(0, n_mp), {"progress": False})
        times["mediapipe"] = time.perf_counter() - t
        kps["mediapipe"] = mp[:n_mp]
    except ImportError as e:
        print(f"mediapipe skipped: {e}")
    for n, kp in kps.items():
        none = np.all(np.isnan(kp[..., 0]), axis=-1)
        print(f"detect2d {n}: {kp.shape[0]} frames in {times[n]:.1f} s; (frame, view) without a person: "
              f"{int(none.sum())}; joints missing: {np.isnan(kp[..., 0]).mean():.1%}")

    cfg = {"mode": "rig"}
    res, lab_rig, lab_known, figs = {}, [], [], {}
    for n, kp in kps.items():
        t = time.perf_counter()
        est, info, kp_fixed, n_sw, first = calibrate_with_swaps(kp, ref, cfg)
        cal_s = time.perf_counter() - t
        err = pair_errors(est.R, ref.R)
        err_first = pair_errors(first.R, ref.R)
        e, ok, lr, lk = compare_labels(kp_fixed, est, ref, cfg)
        floor = floor_rotation(kp_fixed, ref, cfg)
        res[n] = {"pair_err": err, "floor": floor, "pmpjpe_frames": np.nanmean(e, axis=1),
                  "frames_ok": np.flatnonzero(ok), "pmpjpe": float(np.nanmean(e)), "n_swaps": n_sw,
                  "rot_first": float(err_first.mean()), "ba_rms": info.get("ba_rms_px_after", float("nan"))}
        f = int(np.flatnonzero(ok)[len(np.flatnonzero(ok)) // 2])
        lab_rig.append(lr["labels_cam"][f, 0].astype(np.float64))
        lab_known.append(lk["labels_cam_mm"][f, 0].astype(np.float64))
        figs[n] = (kp, kp_fixed)
        print(f"{n}: rig calibration {cal_s:.1f} s, swaps fixed {n_sw}; pair rotation error (deg) "
              f"{np.round(err, 2).tolist()} mean {err.mean():.2f} max {err.max():.2f} "
              f"(before swap fixing: mean {err_first.mean():.2f}); BA rms {res[n]['ba_rms']:.1f} px")
        print(f"{n}: least-squares optimum of these keypoints, from the Qualisys rig: mean {floor.mean():.2f} deg "
              f"(max {floor.max():.2f}); ratio rig / floor {err.mean() / max(floor.mean(), 1e-9):.2f}")
        print(f"{n}: PMPJPE rig vs Qualisys-triangulated labels: mean {res[n]['pmpjpe']:.1f} mm, "
              f"median {np.nanmedian(e):.1f} mm over {int(ok.sum())} frames x {V} views")
    if len(res) == 2:
        a, b = res["openpose"], res["mediapipe"]
        print(f"ratio mediapipe / openpose: rotation {b['pair_err'].mean() / a['pair_err'].mean():.2f}, "
              f"PMPJPE {b['pmpjpe'] / a['pmpjpe']:.2f}")

    # swaps injected into OpenPose, found with the rig estimated from 2D alone
    est_op, _, kp_op, _, _ = calibrate_with_swaps(kps["openpose"], ref, cfg)
    sw = inject_swaps(kp_op, est_op, 0.10)
    print(f"swaps: {sw['injected']} injected (10 %), found {sw['found']}: precision {sw['precision']:.3f}, "
          f"recall {sw['recall']:.3f}, ambiguous {sw['ambiguous']}")

    # the recording's own (Qualisys) calibration against its keypoints: the known-mode check
    from pipeline.geometry.calibration import calibrate as calibrate_known
    names = [str(n) for n in g.attrs.get("views", [f"camera {v}" for v in range(V)])]
    with warnings.catch_warnings(record=True) as wgiven:
        warnings.simplefilter("always")
        _, dk = calibrate_known(kp_op, ref, {"mode": "known"}, names=names)
    given = {f"{names[i]}-{names[j]}": [round(float(a), 2), round(float(b), 2)]
             for (i, j), a, b in zip(dk["baseline_pairs"], dk["baseline_given_px"], dk["baseline_epipolar_px"])}
    flagged = [str(m.message) for m in wgiven if "given calibration" in str(m.message)]
    print("given calibration vs the keypoints' own epipolar geometry (median Sampson px, given / fitted): "
          + ", ".join(f"{k} {a:.1f} / {b:.1f}" for k, (a, b) in given.items()))
    print("  " + (flagged[0] if flagged else "no pair flagged"))

    # bad input together: 20 % of (frame, view) without a person and 10 % swaps, then the same chain
    rng = np.random.default_rng(1)
    bad = apply_swaps(kps["openpose"], rng.random((F, V, len(GROUPS))) < 0.10, "fix")
    bad[rng.random((F, V)) < 0.20] = np.nan
    if not args.quick:
        est_bad, _, kp_bad_fixed, n_bad_sw, first_bad = calibrate_with_swaps(bad, ref, cfg)
        err_bad = pair_errors(est_bad.R, ref.R)
        e_bad, ok_bad, _, _ = compare_labels(kp_bad_fixed, est_bad, ref, cfg)
        print(f"openpose with 20 % (frame, view) emptied and 10 % swaps: {n_bad_sw} swaps fixed; rotation error mean "
              f"{err_bad.mean():.2f} deg (before swap fixing {pair_errors(first_bad.R, ref.R).mean():.2f}; clean "
              f"{res['openpose']['pair_err'].mean():.2f}); PMPJPE {np.nanmean(e_bad):.1f} mm over {int(ok_bad.sum())} frames")

    # export: the Qualisys triangulation (world, Z-up, mm) to TRC and CSV, read back
    from pipeline.data.trc import read_trc, write_csv, write_trc
    from pipeline.geometry.triangulate import triangulate_dlt
    c = labels.resolve_cfg(cfg)
    xn, w = label_settings.normalised(kp_op, ref, c)
    X, okX = triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), ref.R, ref.t)
    trc = write_trc(out_dir / "openpose_qualisys.trc", X, float(g.attrs["fps"]), up="z")
    write_csv(out_dir / "openpose_qualisys.csv", X, float(g.attrs["fps"]))
    _, Xb, _, _ = read_trc(trc)
    trc_err = float(np.nanmax(np.abs(Xb - np.einsum("ij,fnj->fni", np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0.]]), X))))
    p2s = sorted(Path(g.attrs["source"]).glob("*.trc")) if Path(g.attrs["source"]).is_dir() else []
    p2s = [p for p in p2s if "filt" not in p.name]
    vs_p2s = None
    if p2s:
        from pipeline.data.pose2sim import trc_to_joints17
        names, T, _, _ = read_trc(p2s[0])
        Tj = trc_to_joints17(names, T)
        vs_p2s = float(np.nanmedian(np.linalg.norm(Tj[:, [3, 6, 13, 16]] - Xb[:, [3, 6, 13, 16]], axis=-1)))
        print(f"export: TRC round trip max error {trc_err:.4f} mm; ankles/wrists vs Pose2Sim's own TRC: median "
              f"{vs_p2s:.1f} mm (same axes, same units)")

    frame_img = None
    if "mediapipe" in figs and g.attrs.get("videos"):
        from pipeline.data.videos import iter_frames
        kp, kp_fixed = figs["mediapipe"]
        diff = np.any(np.abs(np.nan_to_num(kp[:, 1]) - np.nan_to_num(kp_fixed[:, 1])) > 0, axis=(-1, -2))
        f = int(np.flatnonzero(diff)[len(np.flatnonzero(diff)) // 2]) if diff.any() else 0
        (_, img), = list(iter_frames(g.attrs["videos"][1], [f]))
        frame_img = img
        fig_kp = (kp[f, 1], kp_fixed[f, 1])
    else:
        fig_kp = (None, None)
    png = out_dir / "real.png"
    figure(png, res, frame_img, fig_kp[0], fig_kp[1], lab_rig, lab_known, ref.R[0])
    print(f"figure: {png}")
    fig = {"frames": int(F), "views": int(V)}
    for n, r in res.items():
        fig[f"rot_err_deg_{n}"] = round(float(r["pair_err"].mean()), 3)
        fig[f"rot_err_max_deg_{n}"] = round(float(r["pair_err"].max()), 3)
        fig[f"rot_floor_deg_{n}"] = round(float(r["floor"].mean()), 3)
        fig[f"pmpjpe_mm_{n}"] = round(r["pmpjpe"], 2)
        fig[f"swaps_fixed_{n}"] = r["n_swaps"]
        fig[f"detect_s_{n}"] = round(times[n], 1)
    if not args.quick:
        fig.update({"rot_err_deg_openpose_bad_input": round(float(err_bad.mean()), 3),
                    "pmpjpe_mm_openpose_bad_input": round(float(np.nanmean(e_bad)), 2)})
    fig.update({"given_vs_fitted_px": given, "given_calibration_flagged": bool(flagged),
                "swap_precision": round(sw["precision"], 3), "swap_recall": round(sw["recall"], 3),
                "trc_vs_pose2sim_mm": None if vs_p2s is None else round(vs_p2s, 1), "quick": bool(args.quick)})
    if not args.no_people and Path(g.attrs["source"]).is_dir():
        from bench.people import bench as people_bench
        fig.update(people_bench(out_dir / "people", Path(g.attrs["source"]), quick=args.quick))
    save("real", fig, args.quick)


if __name__ == "__main__":
    main()
