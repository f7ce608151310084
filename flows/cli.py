"""`epipose`: run the pipeline, or inspect a store.

    epipose run [--preset cpu|paper] [--set section.key=value ...] [--only STAGE] [--detector NAME]
                [--root DIR_OR_URL] [--no-progress]
    epipose inspect STORE [--plot DIR] [--frames N]
    epipose inspect OUTPUT [--preset ...] [--set ...]  # OUTPUT: label, evaluate, train3d_ss, ... of that configuration
    epipose calibrate --keypoints DIR --intrinsics FILE --out FILE [--height MM | --camera-distance A B MM]
                      [--reference FILE] [--sync check|correct|off]
    epipose calibrate --videos DIR --detector NAME --intrinsics FILE --out FILE ...
    epipose export STORE|label|evaluate [--preset ...] [--set ...] --out DIR [--model "SS + RU"|SS|FS] [--height MM | --camera-distance A B MM]
                   [--units m|mm|cm]                   # labels or predictions as TRC + CSV (mm, upright)
    epipose config [--preset ...] [--set ...]          # print the resolved configuration
    epipose clean [--preset ...] [--set ...] [--superseded] [--yes]
                                                       # leftovers of interrupted runs (dry run without --yes)

A user's mistake (a bad key, value, file or input) is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

USER_ERRORS = (ValueError, FileNotFoundError)


def _env() -> None:
    # Prefect runs in its ephemeral mode unless PREFECT_API_URL points at a server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu", help="named preset: cpu (default) or paper")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration key, e.g. --set label.mode=known (repeatable)")
    p.add_argument("--detector", default=None, help="2D detector (shorthand for --set detect2d.detector=NAME)")
    p.add_argument("--root", default=None, help="artifact root: a folder or an fsspec URL (default artifacts/)")


def _fail(cmd: str, e: BaseException | str) -> int:
    print(f"epipose {cmd}: {e}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    _env()
    ap = argparse.ArgumentParser(prog="epipose", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the pipeline (cached: complete stage outputs are reused)")
    _add_config_args(r)
    r.add_argument("--only", default=None, help="rebuild this stage (and run what it needs)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are drawn only on a terminal anyway; logs say every ~10 %%)")
    i = sub.add_parser("inspect", help="describe a stage output (shapes, provenance, label quality)")
    i.add_argument("store", help="location of a stage output (…/<dataset>/<stage>/<name>-<fingerprint>), or an "
                   "output's name (dataset, detect2d, label, train3d_ss, refine, evaluate, ...) in the configuration "
                   "given by --preset/--set")
    _add_config_args(i)
    i.add_argument("--plot", default=None, metavar="DIR", help="also write PNG figures into DIR")
    i.add_argument("--frames", type=int, default=4, help="frames drawn by --plot")
    cal = sub.add_parser("calibrate", help="calibrate a rig from the people it films (no board)")
    src = cal.add_mutually_exclusive_group(required=True)
    src.add_argument("--keypoints", metavar="DIR", help="one folder of OpenPose JSON per camera, in camera order by "
                     "sorted folder name (Pose2Sim's pose/ folder)")
    src.add_argument("--videos", metavar="DIR", help="one video per camera (sorted by name); needs --detector")
    cal.add_argument("--detector", default=None, help="2D detector for --videos (e.g. mediapipe)")
    cal.add_argument("--intrinsics", required=True, metavar="FILE",
                     help="calibration TOML in Pose2Sim's layout: intrinsics, distortion, image size (extrinsics ignored)")
    cal.add_argument("--out", required=True, metavar="FILE", help="calibration TOML to write (with _rig.png, _report.json)")
    scale = cal.add_mutually_exclusive_group()
    scale.add_argument("--height", type=float, metavar="MM", help="the subject's standing height: metric scale")
    scale.add_argument("--camera-distance", nargs=3, metavar=("A", "B", "MM"),
                       help="a known distance between cameras A and B (indices in camera order)")
    cal.add_argument("--reference", metavar="FILE", help="a calibration TOML to compare with (rotation error per "
                     "camera pair); also the scale when neither --height nor --camera-distance is given")
    cal.add_argument("--sync", choices=("check", "correct", "off"), default="check",
                     help="views out of sync: refuse (check, default), shift them (correct), or do not look (off)")
    cal.add_argument("--format", default="auto", help="keypoint layout: auto, body25b, body25, coco17")
    e = sub.add_parser("export", help="labels or predictions as world trajectories (TRC for OpenSim/Pose2Sim, CSV)")
    e.add_argument("store", help="a label store (its labels) or an evaluation store (a model's predictions): its "
                   "location, or `label` / `evaluate` in the configuration given by --preset/--set")
    _add_config_args(e)
    e.add_argument("--out", required=True, metavar="DIR", help="folder for <what>.trc, <what>.csv and export.json")
    e.add_argument("--model", default=None, help="evaluation store: 'SS + RU' (default when present), 'SS' or 'FS'")
    escale = e.add_mutually_exclusive_group()
    escale.add_argument("--height", type=float, metavar="MM", help="the subject's standing height: millimetres and "
                        "an upright world from the subject, whatever the dataset's calibration")
    escale.add_argument("--camera-distance", nargs=3, metavar=("A", "B", "MM"),
                        help="a known distance between cameras A and B (indices in camera order)")
    e.add_argument("--units", default="m", choices=("m", "mm", "cm"), help="TRC units (default m, OpenSim's); CSV is mm")
    c = sub.add_parser("config", help="print the resolved configuration as JSON")
    _add_config_args(c)
    k = sub.add_parser("clean", help="list (or with --yes delete) what interrupted and replaced runs left")
    _add_config_args(k)
    k.add_argument("--superseded", action="store_true",
                   help="also complete outputs of this dataset that this configuration does not use")
    k.add_argument("--yes", action="store_true", help="delete them (default: only list)")
    a = ap.parse_args(argv)

    from pipeline.orchestration import StoreError
    errors = USER_ERRORS + (StoreError,)
    if a.cmd == "calibrate":
        return _calibrate(a, errors)
    if a.cmd == "export":
        return _export(a, errors)
    if a.cmd == "inspect":
        from pipeline.orchestration.inspection import inspect_store
        try:
            print(inspect_store(_location(a), plot_dir=a.plot, n_frames=a.frames))
        except errors as e:
            return _fail("inspect", e)
        return 0
    from flows.epipolarpose import check_chain, resolve_config
    try:
        cfg = resolve_config(a.preset, a.overrides, a.detector, a.root)
        if a.cmd == "run":  # refused here, before Prefect starts, as in the flow
            check_chain(cfg, a.only)
    except errors as e:
        return _fail(a.cmd, e)
    if a.cmd == "config":
        print(json.dumps(cfg, indent=2, default=str))
        return 0
    if a.cmd == "clean":
        try:
            return _clean(cfg, a.superseded, a.yes)
        except errors as e:
            return _fail("clean", e)
    from flows.epipolarpose import epipolarpose, format_metrics, format_stages
    state = epipolarpose(preset=a.preset, overrides=a.overrides, only=a.only, detector=a.detector,
                         root=a.root, progress=not a.no_progress and sys.stderr.isatty(), return_state=True)
    if state.is_failed():
        return _fail("run", state.message or "the run failed")
    summary = state.result()
    print(format_stages(summary))
    if summary.get("metrics"):
        print()
        print(format_metrics(summary["metrics"]))
    if summary.get("report"):
        print(f"\nreport: {summary['report']}")
    return 0


def _calibrate(a, errors) -> int:
    """epipose calibrate: one line on stderr and status 2 for a user's mistake or a refused rig
    (nothing written then); each warning (a camera left out: naming it and why) one line on stderr."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = _calibrate_run(a, errors)
    if rc == 0:  # a refusal stays one line
        for msg in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
            print(f"epipose calibrate: warning: {msg}", file=sys.stderr)
    return rc


def _calibrate_run(a, errors) -> int:
    import numpy as np

    from pipeline.orchestration import calibrate as cal
    cfg = {"sync": a.sync, "format": a.format}
    try:
        cal.check_out(a.out)  # before minutes of work
        if a.height is not None:
            cfg["height_mm"] = a.height
        if a.camera_distance is not None:
            cfg["camera_distance"] = _camera_distance(a.camera_distance)
        if a.videos is not None:
            if not a.detector:
                raise ValueError("--videos needs --detector NAME (e.g. mediapipe)")
            keypoints = cal.detect_videos(a.videos, a.detector, a.intrinsics)
        else:
            if a.detector:
                raise ValueError("--detector is for --videos; --keypoints are already detections")
            keypoints = a.keypoints
        res = cal.run(keypoints, a.intrinsics, cfg, reference=a.reference,
                      log=print)  # progress on stdout: stderr carries only a failure's one line
        paths = cal.write(res, a.out, a.intrinsics)
    except errors as e:
        return _fail("calibrate", e)
    rep = cal.report(res)
    for cam in rep["cameras"]:
        rms = cam["reprojection_rms_px"]
        print(f"{cam['name']:>12}: {'placed' if cam['placed'] else 'LEFT OUT: ' + cam['status']}"
              + (f", reprojection {rms:.1f} px RMS" if rms is not None else ""))
    print(f"scale: {rep['scale_source']}; up from {rep['up_from']}; subject {rep['stature_mm']:.0f} mm tall; "
          f"{rep['people']} people; subject triangulated in {100 * rep['frames_labelled_share']:.0f} % of frames; "
          f"{rep['seconds']:.1f} s")
    if "pair_err_deg" in res:
        err = res["pair_err_deg"]
        print("rotation error vs reference (deg): " + ", ".join(f"{k} {v:.2f}" for k, v in
              rep["rotation_error_deg_vs_reference"].items()) + f"; mean {np.nanmean(err):.2f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _camera_distance(arg) -> list | None:
    if arg is None:
        return None
    try:
        return [int(arg[0]), int(arg[1]), float(arg[2])]
    except ValueError:
        raise ValueError(f"--camera-distance takes two camera indices and millimetres, got {' '.join(arg)}") from None


def _location(a) -> str:
    """The store to read: a.store as given (a path or URL), or, when it names an output of the
    plan (label, evaluate, train3d_ss, ...), where the configuration of --preset/--set/--detector/
    --root keeps it."""
    if "/" in a.store or os.path.exists(a.store):
        return a.store
    from pipeline.orchestration import ArtifactStore, open_group, plan
    from flows.epipolarpose import resolve_config
    cfg = resolve_config(a.preset, a.overrides, a.detector, a.root)
    arts = plan(cfg, ArtifactStore(cfg["store"]["root"]))
    key = a.store if a.store in arts else {"train3d": "train3d_ss"}.get(a.store, a.store)
    if key not in arts:
        raise ValueError(f"{a.store!r} is neither a store's location nor an output of the plan "
                         f"({', '.join(k for k, v in arts.items() if v)})")
    art = arts[key]
    if art is None:
        raise ValueError(f"{a.store}: this configuration has no such output (not in its plan)")
    try:
        open_group(art.location, "r")
    except Exception:
        raise ValueError(f"{a.store}: not built yet for this configuration ({art.location}); run `epipose run` "
                         "with the same --preset/--set first") from None
    return art.location


def _export(a, errors) -> int:
    from pipeline.orchestration.export import export_store
    try:
        res = export_store(_location(a), a.out, model=a.model, height_mm=a.height,
                           camera_distance=_camera_distance(a.camera_distance), units=a.units)
    except errors as e:
        return _fail("export", str(e).removeprefix("export: "))
    print(f"{res['labelled']}/{res['frames']} frames placed; world: {res['world']}")
    print("wrote " + ", ".join(str(p) for p in res["files"]))
    return 0


def _clean(cfg: dict, superseded: bool, yes: bool) -> int:
    """Working folders no run is writing, moved-aside outputs, orphaned locks; with
    `superseded`, complete outputs of the dataset outside this configuration's plan."""
    from pipeline.orchestration import ArtifactStore, plan
    store = ArtifactStore(cfg["store"]["root"])
    ds = cfg["dataset"]["name"]
    found = store.leftovers(ds)
    if superseded:
        keep = {art.location for art in plan(cfg, store).values() if art is not None}
        found += [(loc, "superseded", int(store.fs.du(loc))) for loc in store.list(ds) if loc not in keep]
    for loc, kind, size in found:
        print(f"{kind:<11}{size / 2 ** 20:>9.1f} MB  {loc}")
    total = sum(size for _, _, size in found) / 2 ** 20
    if not found:
        print(f"nothing to clean under {store.root}/{ds}")
    elif yes:
        for loc, _, _ in found:
            store.remove(loc)
        print(f"removed {len(found)} ({total:.1f} MB)")
    else:
        print(f"{len(found)} ({total:.1f} MB); run again with --yes to delete them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
