"""evaluate: FS, SS and SS + RU on the test split; the training labels against ground truth
(the paper's Table 1); the PSS stability study."""
from __future__ import annotations

import numpy as np

from ...data import contract
from ...evaluation import scoring as ev
from ...evaluation import pss
from ...training import refiner, pose3d
from ...detectors import gt as gt_detector
from ...registry import check_number, with_defaults
from ..artifacts import keypoints, label_rows, model_key, model_metrics, split_frames, write_predictions
from ..context import Context
from ..record import Output, Stage
from ..store import open_group, to_jsonable

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
    return to_jsonable(ev.label_table(sources, ds, train, lcfg, (det, mode), trained, ref, ks, pck))


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    c = ctx.params
    ref = pss.read_reference(ctx.open("pss_reference"))
    ks = tuple(ref["attrs"]["ks"])
    pck = float(c["pck_threshold"])
    test = split_frames(ds, 1)
    ss = np.asarray(pose3d.predict(ctx.result_path("train3d_ss"), ds, test, progress=ctx.progress))
    f, V = ss.shape[:2]
    preds = {"FS": (np.asarray(pose3d.predict(ctx.result_path("train3d_fs"), ds, test, progress=ctx.progress)), "mm"),
             "SS": (ss, "bones"),
             "SS + RU": (np.asarray(refiner.apply_refiner(ctx.result_path("refine"), ss.reshape(f * V, *ss.shape[2:])))
                         .reshape(ss.shape), "bones")}
    summaries = {}
    for name, (p, units) in preds.items():
        # NaN predictions: (frame, view)s whose image could not be decoded (dataset image_ok)
        summary, df = ev.score_dataset(p, ds, test, units=units, reference=ref, model=name, ks=ks,
                                          pck_threshold=pck, mask=np.isfinite(p).all(-1))
        write_predictions(ctx.group, name, p, units)
        table = f"per_frame_{model_key(name)}.parquet"
        ev.write_per_frame(df, ctx.work_dir / table)
        summaries[name] = {"summary": to_jsonable(summary), "per_frame": table}
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
                max_poses=pcfg["max_poses"], progress=ctx.progress)))
    ctx.group.attrs.update({"models": summaries, "labels": rows, "pss_stability": stab, "test_frames": int(len(test))})
    return {"metrics": {n: s["summary"]["overall"] for n, s in summaries.items()}}


STAGE = Stage(
    name="evaluate", version=2, doc=__doc__.strip(), module=__name__,
    outputs=(Output("evaluate", "metrics",
                    inputs=("dataset", "detect2d", "label", "train3d_ss", "train3d_fs", "refine", "pss_reference")),),
    build=build, defaults=_defaults, validate=_validate,
    summary=lambda r: {"metrics": model_metrics(open_group(r["location"]))})
