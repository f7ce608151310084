"""`epipose calibrate`: a rig calibrated from the people it films, for a user's own cameras.

Input: one folder of OpenPose JSON per camera (camera order = sorted folder names, Pose2Sim's
`pose/<cam>_json` layout) and a calibration TOML in Pose2Sim's layout whose extrinsics are
ignored (its intrinsics, distortion and image sizes are used; its sections must be in the same
camera order). Or videos and a detector (`videos=`, `detector=`): the detector's people.

Steps: every person of every view (pipeline/detectors/openpose.read_people); which detections
are the same person (pipeline/geometry/people.associate); the rig from every associated
person (pipeline/geometry/calibration.calibrate, rig mode, with its quality gate); the subject's
frame offsets (pipeline/geometry/sync), refused (`sync` "check") or corrected ("correct": the
views are re-read shifted and everything is done again); the metric scale and the upright
world (pipeline/geometry/world). Output: the calibration TOML in Pose2Sim's layout (rotation as
Rodrigues, translation in metres; readable by Pose2Sim, anipose and our pose2sim adapter),
beside it a PNG of the rig and a per-camera report (JSON). A refused rig raises RigRefused
(ValueError) and writes nothing.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from ..camera import Cameras, rotation_angle_deg
from ..geometry import epipolar, label_settings, people, rig, sync, world
from ..geometry.calibration import calibrate as calibrate_cameras
from ..geometry.triangulate import triangulate_dlt
from ..registry import check_choice, check_number, with_defaults

DEFAULTS: dict = {
    "format": "auto",         # keypoint layout of the JSON (openpose importer)
    "min_confidence": 0.05,
    "sync": "check",          # check: refuse clearly desynchronised views | correct: shift them | off
    "sync_max_lag": 10,
    "offsets": None,          # per-camera frame offsets to apply (pipeline.geometry.sync's convention)
    "height_mm": None,        # the subject's standing height: metric scale
    "camera_distance": None,  # [a, b, mm]: a known distance between cameras a and b (indices)
    "min_labelled": 0.2,      # the subject must triangulate in at least this share of frames
    "label": {},              # pipeline.geometry.labels configuration overrides (rig mode)
    "people": {},             # pipeline.geometry.people configuration overrides
}


def resolve_cfg(cfg: dict | None) -> dict:
    c = with_defaults(cfg, DEFAULTS, "calibrate")
    check_choice(c, "sync", ("check", "correct", "off"), "calibrate")
    check_number(c, "sync_max_lag", "calibrate", lo=1, integer=True)
    check_number(c, "min_labelled", "calibrate", lo=0.0, hi=1.0)
    check_number(c, "height_mm", "calibrate", lo=1.0, allow_none=True)
    if c["camera_distance"] is not None:
        d = c["camera_distance"]
        if not (isinstance(d, (list, tuple)) and len(d) == 3 and float(d[2]) > 0):
            raise ValueError(f"calibrate: camera_distance must be [camera a, camera b, mm > 0], got {d!r}")
    label_settings.resolve_cfg({"mode": "rig", **c["label"]})
    with_defaults(c["people"], people.DEFAULTS, "calibrate.people")
    return c


def read_intrinsics(path) -> tuple[list[str], Cameras]:
    """A Pose2Sim calibration TOML's camera names and intrinsics (extrinsics dropped)."""
    from ..data.calibration import read_toml_calibration
    names, cams = read_toml_calibration(Path(path))
    return names, cams.without_extrinsics()


def keypoint_folders(root) -> list[Path]:
    """One folder per camera: the sub-folders of root holding .json files, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"calibrate: keypoint folder {root} does not exist")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))
    if len(dirs) < 2:
        raise ValueError(f"calibrate: {root} holds {len(dirs)} folder(s) of OpenPose .json files; put each camera's "
                         "files in its own sub-folder (Pose2Sim's pose/<camera>_json layout), at least two")
    return dirs


def _calibrate_rows(c: dict, names):
    lcfg = {"mode": "rig", "sync": "off", **c["label"]}

    def run(kp_rows, cams, final):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", label_settings.LabelWarning)
            est, info = calibrate_cameras(kp_rows, cams.without_extrinsics(), {**lcfg, "ba": bool(final and lcfg.get("ba", True))},
                                         names=names)
        run.info = info
        return est
    run.info = {}
    return run


def associate_people(everyone: np.ndarray, cams: Cameras, names: list[str]) -> np.ndarray:
    """pipeline.geometry.people.associate with rigs estimated by geometry.calibration (rig mode,
    sync off): what the dataset stage passes to the pose2sim adapter as `associate`.
    everyone [F,V,M,J,3], cams (with extrinsics: used as they are) -> person_index [F,V,P]."""
    run = _calibrate_rows(resolve_cfg({}), names)
    return people.associate(everyone, cams, calibrate=run, names=names)["person_index"]


def frame_offsets(everyone: np.ndarray, cams: Cameras, names: list[str]) -> np.ndarray:
    """Each view's frame offset (pipeline.geometry.sync's convention; 0 where not clear) from
    every associated person: a rig from the people (extrinsics ignored, sync off), then
    check_sync. What the dataset stage passes to the pose2sim adapter as `synchronise` for
    frame_offsets "auto". everyone [F,V,M,J,3] -> offsets [V] int. ValueError (naming the
    view) for a view that agrees with no other at any offset."""
    c = resolve_cfg({"sync": "off"})
    res = calibrate_people(everyone, cams, names, c, log=lambda s: None)
    off, d = check_sync(res, cams, c)
    lost = [names[v] for v in np.flatnonzero(~d["agrees"])]
    if lost:
        raise ValueError(f"frame offsets: {', '.join(lost)}: its keypoints agree with no other view's at any frame "
                         f"offset within ±{c['sync_max_lag']} frames; give frame_offsets by hand or remove that view")
    return off.astype(np.int64)


def calibrate_people(kp: np.ndarray, cams: Cameras, names: list[str], cfg: dict | None = None, log=print) -> dict:
    """The rig from every associated person of kp [F,V,M,J,3] with intrinsics cams (extrinsics
    ignored). Returns dict: cams (unit baseline, camera 0's frame), association (people.associate),
    info (calibration.calibrate's rig diagnostics), subject [F,V,J,3], subject_index [F,V], X [F,J,3]
    (the subject triangulated, rig units), labelled (share of frames with the subject
    triangulated), offsets [V] and sync diagnostics. RigRefused / ValueError on a refused rig."""
    c = resolve_cfg(cfg)
    run = _calibrate_rows(c, names)
    cams = cams.without_extrinsics()
    assoc = people.associate(kp, cams, c["people"], calibrate=run, names=names, log=log)
    sub = assoc["people_kp"][:, :, 0]
    rows, _ = people.rows(assoc["people_kp"], float({**people.DEFAULTS, **c["people"]}["min_motion_px"]))
    t0 = time.perf_counter()
    est = run(rows, cams, True)
    info = run.info
    log(f"calibrate: rig from {len(rows)} (frame, person) rows of {assoc['people_kp'].shape[2]} people "
        f"in {time.perf_counter() - t0:.1f} s")
    lc = label_settings.resolve_cfg({"mode": "rig", **c["label"]})
    xn, w = label_settings.normalised(sub, est, lc)
    placed = np.all(np.isfinite(est.R), axis=(1, 2))
    w[:, ~placed] = 0
    X, ok = triangulate_dlt(np.where(np.isfinite(xn), xn, 0).transpose(0, 2, 1, 3), w.transpose(0, 2, 1),
                            np.where(placed[:, None, None], est.R, np.eye(3)), np.where(placed[:, None], est.t, 0))
    labelled = float(np.mean(ok.sum(-1) >= 8)) if len(ok) else 0.0
    return {"cams": est, "association": assoc, "info": info, "subject": sub,
            "subject_index": assoc["person_index"][:, :, 0], "X": X, "labelled": labelled}


def check_sync(res: dict, cams: Cameras, c: dict) -> tuple[np.ndarray, dict]:
    """pipeline.geometry.sync on the associated people's keypoints (every person's joints side
    by side: more correspondences at every lag than the subject alone): offsets [V] (0 where
    not clear) and the estimate's diagnostics."""
    pk = res["association"]["people_kp"]  # every associated person: their joints side by side
    every = pk.reshape(pk.shape[0], pk.shape[1], -1, 3)
    off, d = sync.estimate_offsets(every, res["cams"].K, res["cams"].dist, max_lag=c["sync_max_lag"],
                                   min_confidence=c["min_confidence"],
                                   cameras=np.all(np.isfinite(res["cams"].R), axis=(1, 2)))
    return np.where(d["clear"], d["relative"], 0), d


def run(keypoints, intrinsics, cfg: dict | None = None, reference=None, log=print) -> dict:
    """The whole command without writing: read, associate, calibrate, check/correct the
    synchronisation, scale and stand the rig upright. keypoints: a folder of per-camera JSON
    folders; intrinsics: a Pose2Sim TOML; reference: a calibration TOML to compare with (and
    to scale from when no other source is given). Returns the result dict of calibrate_people
    plus names, world (world.to_world), scale_source, pair_err_deg [P] vs reference, offsets,
    sync, seconds."""
    from ..data.openpose import read_people
    t0 = time.perf_counter()
    c = resolve_cfg(cfg)
    names, cams = read_intrinsics(intrinsics)
    if c["camera_distance"] is not None:
        a, b = c["camera_distance"][:2]
        if not (0 <= int(a) < cams.V and 0 <= int(b) < cams.V and int(a) != int(b)):
            raise ValueError(f"calibrate: camera_distance names cameras {a} and {b}; give two different indices in "
                             f"0..{cams.V - 1} ({', '.join(f'{v} {n}' for v, n in enumerate(names))})")
    if isinstance(keypoints, np.ndarray):  # detections already made (detect_videos): [F,V,M,J,3]
        if keypoints.ndim != 5 or keypoints.shape[1] != cams.V:
            raise ValueError(f"calibrate: detections {keypoints.shape} do not match the {cams.V} cameras of {intrinsics}")

        def read(off):
            return keypoints if off is None else shift(keypoints, off)
    else:
        folders = keypoint_folders(keypoints)
        if len(folders) != cams.V:
            raise ValueError(f"calibrate: {len(folders)} keypoint folders ({', '.join(f.name for f in folders)}) for "
                             f"the {cams.V} cameras of {intrinsics} ({', '.join(names)}); give one folder per camera, "
                             "in the calibration's order")

        def read(off):
            kp = read_people(folders, c["format"], c["min_confidence"], off)[1]
            _check_sizes(kp, cams, names, folders)
            return kp
    offsets = None if c["offsets"] is None else np.asarray(c["offsets"], np.int64)
    res = None
    for attempt in range(2):
        kp = read(offsets)
        log(f"calibrate: {kp.shape[0]} frames, {cams.V} cameras, up to {kp.shape[2]} people per view")
        res = calibrate_people(kp, cams, names, c, log)
        if c["sync"] == "off":
            res["offsets"], res["sync"] = np.zeros(cams.V, np.int64) if offsets is None else offsets, {}
            break
        off, d = check_sync(res, cams, c)
        res["sync"] = d
        lost = [names[v] for v in np.flatnonzero(~d["agrees"])]
        if lost:
            raise rig.RigRefused(f"calibrate: {', '.join(lost)}: its keypoints agree with no other view's at any frame "
                                 f"offset within ±{c['sync_max_lag']} frames (out of sync by more, or of another "
                                 "recording); remove that view or fix its synchronisation")
        if not np.any(off):
            res["offsets"] = np.zeros(cams.V, np.int64) if offsets is None else offsets
            break
        desc = ", ".join(f"{names[v]} {int(off[v]):+d}" for v in np.flatnonzero(off))
        if c["sync"] == "check" or attempt == 1:
            raise ValueError(f"calibrate: views out of sync by about ({desc}) frames (a view's frame f+offset shows what "
                             "the others show at frame f); run again with --sync correct to shift them, or fix the "
                             "recording")
        log(f"calibrate: views out of sync ({desc} frames): shifting them and calibrating again")
        offsets = off if offsets is None else offsets + off
    if res["labelled"] < c["min_labelled"]:
        raise rig.RigRefused(f"calibrate: the subject triangulates in only {100 * res['labelled']:.0f} % of the frames "
                             f"with this rig (gate: at least {100 * c['min_labelled']:.0f} %); the rig is not trusted")
    ref_cams = None
    if reference is not None:
        from ..data.calibration import read_toml_calibration
        rn, ref_cams = read_toml_calibration(Path(reference))
        if ref_cams.V != cams.V:
            raise ValueError(f"calibrate: reference {reference} has {ref_cams.V} cameras, the keypoints {cams.V}")
        res["pair_err_deg"] = pair_errors(res["cams"].R, ref_cams.R)
    est = res["cams"]
    dist = c["camera_distance"]
    source = {"distance": tuple(dist)} if dist is not None else {"height_mm": c["height_mm"]} \
        if c["height_mm"] is not None else {"reference": ref_cams} if ref_cams is not None else None
    if source is not None:
        scale, what = world.metric_scale(est.R, est.t, res["X"], **source)
    else:
        scale, what = 1.0, "none (unit: the distance of the first two placed cameras)"
        warnings.warn("calibrate: no scale source (--height, --camera-distance or --reference): the rig's unit is the "
                      "distance of its first two placed cameras, written as 1 mm (0.001 in the TOML's metres)",
                      stacklevel=2)
    res["world"] = world.to_world(est.R, est.t, res["X"], scale)
    res.update(names=names, scale=scale, scale_source=what, seconds=time.perf_counter() - t0)
    return res


def shift(kp: np.ndarray, offsets) -> np.ndarray:
    """kp [F,V,...] with view v read offsets[v] frames later (sync's convention: its frame
    f + offsets[v] shows instant f); NaN where a view has no such frame."""
    out = np.full_like(kp, np.nan)
    F = len(kp)
    for v, o in enumerate(np.asarray(offsets, np.int64)):
        if o >= 0:
            out[:F - o, v] = kp[o:, v]
        else:
            out[-o:, v] = kp[:F + o, v]
    return out


def detect_videos(folder, detector: str, intrinsics) -> np.ndarray:
    """Run a 2D detector (pipeline/detectors, e.g. mediapipe) on a folder of videos (one per
    camera, sorted by name) with the TOML's intrinsics. -> detections [F,V,1,J,3]."""
    import tempfile

    import zarr

    from ..data import get_adapter
    from ..detectors import get_detector
    names, cams = read_intrinsics(intrinsics)
    with tempfile.TemporaryDirectory() as tmp:
        cal = Path(tmp) / "calibration.json"  # intrinsics only: the videos adapter's JSON calibration
        cal.write_text(json.dumps({"K": cams.K.tolist(), "dist": cams.dist.tolist(), "size": cams.size.tolist()}))
        g = zarr.group(store=zarr.storage.MemoryStore())
        get_adapter("videos")({"root": str(folder), "calibration": str(cal)}, g, progress=False)
        if g["K"].shape[1] != cams.V:
            raise ValueError(f"calibrate: {g['K'].shape[1]} videos in {folder} for the {cams.V} cameras of {intrinsics}")
        try:
            detect = get_detector(detector)
            kp = detect({}, g, slice(None), {"progress": True})
        except ImportError as e:  # an optional detector whose package is not installed
            raise ValueError(f"calibrate: detector {detector!r} needs a package that is not installed ({e})") from None
    return np.asarray(kp, dtype=np.float64)[:, :, None]


def _check_sizes(kp, cams, names, folders):
    """Keypoints far outside a camera's calibrated image: the wrong calibration for these folders."""
    uv = kp[..., :2].reshape(kp.shape[0], kp.shape[1], -1, 2)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hi = np.nanpercentile(uv, 99, axis=(0, 2))  # [V,2]
    for v in range(cams.V):
        if np.any(hi[v] > 1.5 * cams.size[v]):
            raise ValueError(f"calibrate: the keypoints of {folders[v].name} reach ({hi[v, 0]:.0f}, {hi[v, 1]:.0f}) px, far "
                             f"outside the {cams.size[v, 0]:g}x{cams.size[v, 1]:g} image of {names[v]} in the "
                             "calibration: wrong calibration file or camera order?")


def pair_errors(R_est: np.ndarray, R_ref: np.ndarray) -> np.ndarray:
    """Geodesic error (deg) of each camera pair's relative rotation R_j R_iᵀ (rig.all_pairs
    order), estimate vs reference. R [V,3,3] -> [P] (NaN where a camera was left out)."""
    p = rig.all_pairs(len(R_ref))
    rel = lambda R: R[p[:, 1]] @ np.swapaxes(R[p[:, 0]], 1, 2)  # noqa: E731
    return rotation_angle_deg(rel(R_est), rel(R_ref))


def report(res: dict) -> dict:
    """Per-camera report (JSON-ready): placed, reason left out, reprojection RMS, share of joints
    kept, initial error, focal factor (rig.bundle_adjust's fit_focal), centre (m) and rotation (Rodrigues) in the world; rig figures."""
    info, names, W = res["info"], res["names"], res["world"]
    status = info.get("camera_status", ["ok"] * len(names))
    C = -np.einsum("vji,vj->vi", W["R"], W["t"]) / 1000.0
    cams = []
    for v, n in enumerate(names):
        g = lambda k: None if k not in info or not np.isfinite(info[k][v]) else round(float(info[k][v]), 3)  # noqa: E731
        cams.append({"name": n, "placed": bool(np.all(np.isfinite(W["R"][v]))), "status": status[v],
                     "reprojection_rms_px": g("ba_rms_px_camera"), "kept_share": g("ba_kept_camera"),
                     "initial_median_px": g("initial_px_camera"), "focal_factor": g("ba_focal_scale_camera"),
                     "centre_m": None if not np.all(np.isfinite(C[v])) else np.round(C[v], 4).tolist(),
                     "sync_offset_frames": int(res.get("offsets", np.zeros(len(names)))[v])})
    pairs = rig.all_pairs(len(names))
    out = {"cameras": cams, "scale_source": res["scale_source"], "mm_per_unit": res["scale"],
           "up_from": W["source"], "stature_mm": round(float(W["stature"] * res["scale"]), 1),
           "frames_labelled_share": round(res["labelled"], 3), "seconds": round(res["seconds"], 2),
           "people": int(res["association"]["people_kp"].shape[2]),
           "pairs": [{"cameras": [names[a], names[b]], "inliers": int(info["rig_pair_inliers"][p]),
                      "points": int(info["rig_pair_points"][p]),
                      "loop_closure_deg": None if not np.isfinite(info["rig_pair_loop_deg"][p])
                      else round(float(info["rig_pair_loop_deg"][p]), 2),
                      "failure": epipolar.FAILURES[int(info["rig_pair_failure"][p])]}
                     for p, (a, b) in enumerate(pairs)],
           "bundle_adjustment": {k: (round(float(v), 3) if np.isscalar(v) else None)
                                 for k, v in info.items() if k.startswith("ba_") and np.isscalar(v)}}
    if "pair_err_deg" in res:
        out["rotation_error_deg_vs_reference"] = {f"{names[a]}-{names[b]}": round(float(e), 3)
                                                  for (a, b), e in zip(pairs, res["pair_err_deg"])}
    return out


def figure(path: Path, res: dict) -> None:
    """PNG: the rig from above and from the side (cameras as arrows along their view), the
    subject's pelvis path and one pose, in the upright world."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..joints import BONES
    W, names = res["world"], res["names"]
    C = -np.einsum("vji,vj->vi", W["R"], W["t"]) / 1000.0
    Z = W["R"][:, 2, :]  # optical axes in the world
    X = W["X"] / 1000.0
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (i, j), lab in zip(axes, ((0, 1), (0, 2)), (("x (m)", "y (m)"), ("x (m)", "z (m, up)"))):
        for v in range(len(names)):
            if not np.all(np.isfinite(C[v])):
                continue
            ax.plot(C[v, i], C[v, j], "ks")
            ax.annotate("", xy=(C[v, i] + 0.6 * Z[v, i], C[v, j] + 0.6 * Z[v, j]), xytext=(C[v, i], C[v, j]),
                        arrowprops=dict(arrowstyle="->", color="tab:blue"))
            ax.text(C[v, i], C[v, j], f" {names[v]}", fontsize=8)
        ax.plot(X[:, 0, i], X[:, 0, j], "-", color="tab:orange", lw=1, label="subject's pelvis")
        ok = np.flatnonzero(np.isfinite(X[:, :, 0]).sum(1) >= 12)
        if len(ok):
            P = X[ok[len(ok) // 2]]
            for a, b in BONES:
                ax.plot(P[[a, b], i], P[[a, b], j], "-", color="tab:red", lw=1.5)
        ax.set_xlabel(lab[0])
        ax.set_ylabel(lab[1])
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    axes[0].set_title("from above")
    axes[1].set_title(f"from the side (scale: {res['scale_source']})", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def check_out(out) -> Path:
    """The calibration file to write, checked before any work: not a folder, a .toml name.
    ValueError naming it otherwise."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"calibrate: --out {out} is a folder; give the calibration file to write, e.g. {out}/calibration.toml")
    if out.suffix.lower() != ".toml":
        raise ValueError(f"calibrate: --out {out}: the calibration is written as TOML (Pose2Sim's layout); "
                         "give a file name ending in .toml")
    return out


def write(res: dict, out, intrinsics) -> list[Path]:
    """The calibration TOML (Pose2Sim layout, world of to_world, metres; only the placed
    cameras, a left-out one warned about), beside it <stem>_rig.png and <stem>_report.json.
    -> the three paths. ValueError naming the file when it cannot be written."""
    try:
        return _write(res, check_out(out), intrinsics)
    except OSError as e:
        Path(str(out) + ".partial").unlink(missing_ok=True)
        raise ValueError(f"calibrate: cannot write {out} ({e.strerror or e})") from None


def _write(res: dict, out: Path, intrinsics) -> list[Path]:
    from ..data.calibration import write_toml_calibration
    W = res["world"]
    placed = np.all(np.isfinite(W["R"]), axis=(1, 2))
    if not placed.all():
        left = [f"{res['names'][v]} ({res['info'].get('camera_status', [''] * len(placed))[v]})"
                for v in np.flatnonzero(~placed)]
        warnings.warn(f"calibrate: left out {', '.join(left)}: written without it", stacklevel=2)
    _, cams = read_intrinsics(intrinsics)
    idx = np.flatnonzero(placed)
    final = Cameras(cams.K[idx], W["R"][idx], W["t"][idx], cams.dist[idx], cams.size[idx])
    rms = res["info"].get("ba_rms_px_after", float("nan"))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_toml_calibration(out, [res["names"][v] for v in idx], final, error_px=rms)
    png = out.with_name(out.stem + "_rig.png")
    figure(png, res)
    rep = out.with_name(out.stem + "_report.json")
    rep.write_text(json.dumps(report(res), indent=2))
    return [out, png, rep]


__all__ = ["DEFAULTS", "run", "write", "check_out", "frame_offsets", "report", "figure", "calibrate_people", "associate_people", "read_intrinsics",
           "keypoint_folders", "pair_errors", "resolve_cfg"]
