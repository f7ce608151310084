"""evaluate: FS, SS, SS + RU (the paper's unit, trained on motion capture) and SS + RU
(labels) (the self-contained unit) on the test split; the training labels against ground truth
(the paper's Table 1); the PSS stability study. On a dataset without 3D ground truth (no FS
in the plan): what can be measured without it (pipeline/evaluation/selfcheck.py), in the
attribute `without_ground_truth`: the labels' reprojection error per camera, and SS and both
SS + RU against the labels, across views, and in mPSS against the (mocap) reference, on the
test split, or on every frame when the dataset holds none out (stated with the figures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data import contract
from ...evaluation import scoring as ev
from ...evaluation import pss, selfcheck
from ...camera import Cameras
from ...geometry import label_world
from ...training import refiner, pose3d
from ...cores import available_cores
from ...detectors import gt as gt_detector
from ...registry import check_number, with_defaults
from ..artifacts import (keypoints, label_rows, label_targets, model_key, model_metrics, split_frames,
                         write_predictions)
from ..cluster import dask_client, worth_a_cluster
from ..context import Context
from ..record import Output, Stage
from ..store import open_group, read_provenance, to_jsonable

# the refinement units the evaluation applies to SS: (model row, plan key)
REFINERS = (("SS + RU", "refine"), ("SS + RU (labels)", "refine_labels"))

# stability_runs: k-means restarts of the paper's PSS stability study (0: skip it)
DEFAULTS = {"pck_threshold": 150.0, "label_rows": True, "stability_runs": 5}
PRESETS = {"cpu": {}, "paper": {"stability_runs": 100}}


def _defaults(preset: str, _plugin) -> dict:
    return {**DEFAULTS, **PRESETS[preset]}


def _validate(section) -> None:
    c = with_defaults(dict(section), DEFAULTS, "evaluate")
    check_number(c, "pck_threshold", "evaluate", lo=1e-9)
    check_number(c, "stability_runs", "evaluate", lo=0, integer=True)
    if c["stability_runs"] == 1:
        raise ValueError("evaluate: stability_runs must be 0 (skip the study) or at least 2")


def _gt_2d_params(preset: str) -> dict:
    """The gt detector's settings in this preset (the paper's GT 2D: no noise)."""
    from . import detect2d
    return {k: v for k, v in detect2d.STAGE.defaults(preset, "gt").items() if k not in detect2d.OWN}


def _label_rows(ctx: Context, ds, ref, ks, pck) -> dict:
    train = split_frames(ds, 0)
    if not len(train):
        return {}
    det, mode = ctx.cfg["detect2d"]["detector"], ctx.cfg["label"]["mode"]
    sources = {det: keypoints(ctx.open("detect2d"), train)}
    if det != "gt" and "keypoints2d_gt" in ds and np.isfinite(ds["keypoints2d_gt"][0]).any():
        sources["gt"] = np.asarray(gt_detector.detect(_gt_2d_params(ctx.preset), ds, slice(None), {}))[train]
    from .label import OWN as LABEL_OWN
    lcfg = {k: v for k, v in ctx.cfg["label"].items() if k not in LABEL_OWN}
    trained = label_rows(ctx.open("label"), train, known=mode == "known")
    # the per-frame rows (a RANSAC per frame and pair) on every core: on Dask's workers by the
    # label stage's rule (cluster.worth_a_cluster; a LocalCluster only with cores to spread
    # over), else on make_labels' threads
    d = ctx.cfg["dask"]
    spread = worth_a_cluster(d, len(train)) and bool(d.get("address") or available_cores() > 1)
    client, close = dask_client(d) if spread else (None, lambda: None)
    try:
        return to_jsonable(ev.label_table(sources, ds, train, lcfg, (det, mode), trained, ref, ks, pck, client=client))
    finally:
        close()


def _frame_numbers(group, frames: np.ndarray) -> None:
    """The predictions' frame coordinate: the dataset rows they were made for."""
    from ..arrays import write_arrays
    write_arrays(group, {"frame": np.asarray(frames, dtype=np.int64)})


def _label_cameras(ds, lab, mode: str, g: int) -> Cameras | None:
    """The cameras labels of rig g were made with: the dataset's (known), the estimated rig (rig);
    None in per-frame mode (a relative pose per frame, no rig)."""
    if mode == "known":
        return Cameras.from_store(ds, g)
    if mode == "rig" and "R_est" in lab:
        return Cameras.from_store(lab, g, "_est")
    return None


def _labels_without_gt(ctx: Context, ds, lab, mode: str) -> dict:
    """The labels' median reprojection error per camera over every labelled frame."""
    kp = keypoints(ctx.open("detect2d"))
    rig = np.asarray(ds["rig"][:])
    labels = np.asarray(lab["labels_cam"][:], float)
    valid = np.asarray(lab["valid"][:], bool) & np.asarray(lab["frame_ok"][:], bool)[:, None, None]
    scale = np.asarray(lab["scale"][:], float)
    err = np.full(kp.shape[:3], np.nan)
    for g in np.unique(rig):
        cams = _label_cameras(ds, lab, mode, int(g))
        if cams is None:
            return {}
        sel = np.flatnonzero(rig == g)
        X = label_world.world_poses(labels[sel], valid[sel], scale[sel], cams.R, label_world.root_positions(kp[sel], cams))
        err[sel] = label_world.reprojection_px(X, kp[sel], cams)
    views = ds.attrs.get("views")
    V = kp.shape[1]
    return {"frames": f"all {len(rig)} frames, {int(np.asarray(lab['frame_ok'][:]).sum())} labelled",
            "views": [str(v) for v in views] if isinstance(views, list) and len(views) == V else [str(v) for v in range(V)],
            "reprojection_px": selfcheck.per_camera(err).tolist(), "labelled_share": valid.any(-1).mean(0).tolist()}


def _without_gt(ctx: Context, ds, ref: dict, ks: tuple) -> dict:
    """SS and SS + RU judged without ground truth; the labels' reprojection error (selfcheck)."""
    lab = ctx.open("label")
    mode = ctx.cfg["label"]["mode"]
    frames, which = split_frames(ds, 1), "the test split"
    if not len(frames):
        frames = np.arange(int(ds["rig"].shape[0]))
        which = ("every frame: the dataset holds none out, so these are the frames SS and RU trained on "
                 "(a fit, not a generalisation; hold frames out with dataset.test_fraction)")
    ss = np.asarray(pose3d.predict(ctx.result_path("train3d_ss"), ds, frames, progress=ctx.progress))
    f, V = ss.shape[:2]
    preds = {"SS": ss}
    for name, key in REFINERS:
        if ctx.has(key):
            preds[name] = np.asarray(refiner.apply_refiner(ctx.result_path(key), ss.reshape(f * V, *ss.shape[2:]))
                                     ).reshape(ss.shape)
    targets, mask = label_targets(lab)
    L, M = targets[frames], mask[frames]
    mb = ds.attrs.get("mean_bone_mm")
    s = float(mb) if mb else 1.0
    units = "mm" if mb else "mean bones"
    rig = np.asarray(ds["rig"][:])[frames]
    R = {}
    for g in np.unique(rig):
        cams = _label_cameras(ds, lab, mode, int(g)) or Cameras.from_store(ds, int(g))
        R[int(g)] = cams.R  # NaN where not placed: those views are left out of the consistency
    Rf = np.stack([R[int(g)] for g in rig]) if len(rig) else np.zeros((0, V, 3, 3))
    models = {}
    _frame_numbers(ctx.group, frames)
    for name, p in preds.items():
        write_predictions(ctx.group, name, p, "bones")
        a = selfcheck.against_labels(p * s, L * s, M)
        vc = selfcheck.view_consistency(p * s, Rf)
        with np.errstate(invalid="ignore"):
            m = {f"labels_{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in a.items()}
            m["view_consistency"] = float(np.nanmean(vc)) if np.isfinite(vc).any() else float("nan")
        m.update(selfcheck.label_pss(p, L, M, ref, ks))
        m.update({"n_poses": int(np.isfinite(a["mpjpe"]).sum()), "units": units})
        models[name] = m
    note = ""
    if mb:
        note = (f"Millimetres through one scalar, the dataset's prior mean bone length {float(mb):.1f} mm "
                f"({ds.attrs.get('mean_bone_source', 'the dataset')}).")
    return {"frames": f"{which} ({len(frames)} frames x {V} views)", "units": units, "models": models,
            "labels": _labels_without_gt(ctx, ds, lab, mode), "note": note,
            "reference": ref["attrs"].get("poses_from", "the PSS reference")}


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    c = ctx.params
    ref = pss.read_reference(ctx.open("pss_reference"))
    ks = tuple(ref["attrs"]["ks"])
    pck = float(c["pck_threshold"])
    if not ctx.has("train3d_fs"):  # no 3D ground truth (stages/dataset.py ground_truth_3d)
        res = to_jsonable(_without_gt(ctx, ds, ref, ks))
        ctx.group.attrs.update({"models": {}, "labels": {}, "pss_stability": [], "without_ground_truth": res})
        return {"metrics": res["models"]}
    test = split_frames(ds, 1)
    ss = np.asarray(pose3d.predict(ctx.result_path("train3d_ss"), ds, test, progress=ctx.progress))
    f, V = ss.shape[:2]
    preds = {"FS": (np.asarray(pose3d.predict(ctx.result_path("train3d_fs"), ds, test, progress=ctx.progress)), "mm"),
             "SS": (ss, "bones")}
    notes = {}
    for name, key in REFINERS:
        if ctx.has(key):
            preds[name] = (np.asarray(refiner.apply_refiner(ctx.result_path(key), ss.reshape(f * V, *ss.shape[2:])))
                           .reshape(ss.shape), "bones")
            prov = read_provenance(ctx.input(key).location, ctx.store.storage_options)
            if prov.get("ru_targets"):
                notes[name] = f"RU targets: {prov['ru_targets']}; inputs: {prov.get('ru_inputs', '?')}"
    summaries = {}
    _frame_numbers(ctx.group, test)
    for name, (p, units) in preds.items():
        # NaN predictions: (frame, view)s whose image could not be decoded (dataset image_ok)
        summary, df = ev.score_dataset(p, ds, test, units=units, reference=ref, model=name, ks=ks,
                                          pck_threshold=pck, mask=np.isfinite(p).all(-1))
        write_predictions(ctx.group, name, p, units)
        table = f"tables/per_frame_{model_key(name)}.parquet"
        ev.write_per_frame(df, ctx.files("tables") / Path(table).name)
        summaries[name] = {"summary": to_jsonable(summary), "per_frame": table,
                           **({"note": notes[name]} if name in notes else {})}
    rows = _label_rows(ctx, ds, ref, ks, pck) if c["label_rows"] else {}
    stab = []
    runs = int(c["stability_runs"])
    if runs >= 2:
        gt = contract.ground_truth(ds, test)
        full = gt["mask"].all(-1) & np.isfinite(ss).all((-2, -1))
        train_poses = pss.reference_poses(ds, split_frames(ds, 0))
        pcfg = ctx.cfg["pss_reference"]
        for k in ks:
            stab.append(to_jsonable(pss.stability(
                train_poses, k, runs=runs, seed=int(pcfg["seed"]),
                pred=ss[full] * float(ds.attrs.get("mean_bone_mm", 1.0)), gt=gt["gt"][full],
                init=pcfg["init"], n_init=int(pcfg["n_init"]), max_poses=pcfg["max_poses"], progress=ctx.progress)))
    ctx.group.attrs.update({"models": summaries, "labels": rows, "pss_stability": stab, "test_frames": int(len(test))})
    return {"metrics": {n: s["summary"]["overall"] for n, s in summaries.items()}}


STAGE = Stage(
    name="evaluate", version=11, doc=__doc__.strip(), module=__name__,
    outputs=(Output("evaluate", "metrics",
                    inputs=("dataset", "detect2d", "label", "train3d_ss", "train3d_fs", "refine", "refine_labels",
                            "pss_reference")),),
    build=build, defaults=_defaults, validate=_validate,
    summary=lambda r: {"metrics": model_metrics(open_group(r["location"]))})
