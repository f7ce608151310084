"""report: the markdown report with its figures (pipeline/report.py), from the evaluation,
the training curves and the stage timings of the outputs it reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data import contract
from ...evaluation import pss, report
from ...evaluation import scoring as ev
from ...registry import check_number, with_defaults
from ...training.checkpoint import training_record
from ..artifacts import read_predictions, split_frames
from ..context import Context
from ..record import Output, Stage
from ..store import read_provenance

DEFAULTS = {"n_worst": 6}
# the training outputs whose curves the report draws: (plan key, title, loss)
CURVES = (("pretrain2d", "2D detector", "smooth L1 + heatmap terms, crop coordinates"),
          ("train3d_ss", "SS", "smooth L1, pseudo-labels"),
          ("train3d_fs", "FS", "smooth L1, ground truth"),
          ("refine", "RU", "L1, intermediate + final, motion-capture targets"),
          ("refine_labels", "RU (labels)", "L1, intermediate + final, pseudo-label targets"))


def _start(ctx: Context, rec: dict) -> str:
    """What a network started from, in words: the plan's 2D detector, a file, or at random."""
    if rec.get("init"):
        if ctx.has("pretrain2d") and Path(rec["init"]) == ctx.result_path("pretrain2d"):
            return "the 2D detector"
        return Path(rec["init"]).name
    return f"backbone {Path(rec['pretrained']).name}" if rec.get("pretrained") else "random"


def _validate(section) -> None:
    c = with_defaults(dict(section), DEFAULTS, "report")
    check_number(c, "n_worst", "report", lo=0, integer=True)


class TakeFrames:
    """Lazy view of an array's rows `idx` (the report reads only the frames it shows)."""

    def __init__(self, arr, idx):
        self.arr, self.idx = arr, np.asarray(idx)
        self.shape = (len(self.idx),) + tuple(arr.shape[1:])
        self.dtype = arr.dtype
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows = self.idx[key[0]]
        if np.ndim(rows) == 0:
            return np.asarray(self.arr[(int(rows),) + key[1:]])
        return np.asarray(self.arr.get_orthogonal_selection((rows,)))[(slice(None),) + key[1:]]

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.arr.get_orthogonal_selection((self.idx,)))
        return a if dtype is None else a.astype(dtype)


def build(ctx: Context) -> dict:
    e = ctx.open("evaluate")
    eloc = ctx.input("evaluate").local_path()
    ds = ctx.open("dataset")
    test = split_frames(ds, 1)
    models, preds = {}, {}
    for name, m in dict(e.attrs["models"]).items():
        models[name] = {"summary": m["summary"], "per_frame": ev.read_per_frame(eloc / m["per_frame"])}
        preds[name] = read_predictions(e, name)
    samples = {"predictions": preds}
    if "poses3d_world" in ds:
        samples["gt"] = contract.ground_truth(ds, test)["gt"]
    if "images" in ds:
        samples["images"] = TakeFrames(ds["images"], test)
    timings, training = {}, {}
    for key in ctx.output.inputs:
        if not ctx.has(key):
            continue
        prov = read_provenance(ctx.input(key).location)
        if prov.get("seconds") is not None:
            timings[key] = float(prov["seconds"])
    for key, title, note in CURVES:
        if ctx.has(key):
            rec = training_record(ctx.result_path(key))
            training[title] = {"loss": [float(x) for x in rec["losses"] or []],
                               "images_per_s": rec["images_per_s"], "note": note,
                               "validation": list(rec.get("validation") or []), "start": _start(ctx, rec)}
    results = {"dataset": ctx.cfg["dataset"]["name"], "labels": dict(e.attrs.get("labels", {})),
               "models": models, "pss_reference": pss.read_reference(ctx.open("pss_reference")),
               "pss_stability": list(e.attrs.get("pss_stability", [])), "samples": samples,
               "without_ground_truth": dict(e.attrs.get("without_ground_truth") or {}),
               "n_worst": int(ctx.params["n_worst"]), "timings": timings, "training": training,
               "config": {"preset": ctx.preset,
                          "fingerprints": {k: a.fingerprint for k, a in ctx.plan.items() if a is not None}}}
    path = report.write_report(results, ctx.work_dir)
    return {"result": ctx.relative(path)}


STAGE = Stage(
    name="report", version=13, doc=__doc__.strip(), module=__name__,
    outputs=(Output("report", "report", inputs=("dataset", "evaluate", "pss_reference", "pretrain2d",
                                                 "train3d_ss", "train3d_fs", "refine", "refine_labels", "label",
                                                 "detect2d")),),
    build=build, defaults=lambda preset, _p: dict(DEFAULTS), validate=_validate, result="result",
    summary=lambda r: {"report": r["result"]})
