"""refine: the refinement unit, trained from the SS network's predictions on the training
frames and their pseudo-labels (pipeline.training.refiner.make_pairs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...training import refiner, pose3d
from ..artifacts import label_targets, split_frames
from ..config import module_section
from ..context import Context
from ..record import Output, Stage
from ..store import StoreError


def _defaults(preset: str, _plugin) -> dict:
    return module_section(refiner, preset)


def _validate(section) -> None:
    refiner.resolve_cfg(dict(section))


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    frames = split_frames(ds, 0)
    targets, mask = label_targets(ctx.open("label"))
    pred = np.asarray(pose3d.predict(ctx.result_path("train3d_ss"), ds, frames, progress=ctx.progress))
    m = mask[frames]
    some = m.any(-1)  # (frame, view) with at least one labelled joint
    if not some.any():
        raise StoreError("refine: no training frame has a pseudo-label")
    x, y = refiner.make_pairs(ctx.params, pred[some], targets[frames][some], m[some])
    ckpt = Path(refiner.train_refiner(ctx.params, x, y, ctx.files("train"), progress=ctx.progress))
    return {"result": ctx.relative(ckpt), "pairs": int(len(x))}


STAGE = Stage(
    name="refine", version=4, doc=__doc__.strip(), module=__name__,
    outputs=(Output("refine", "ru", inputs=("dataset", "label", "train3d_ss")),),
    build=build, defaults=_defaults, validate=_validate, result="result")
