"""train3d: the integral 3D network on the pseudo-labels (self-supervised, SS) and on ground
truth (fully supervised, FS, the baseline). Each trains in its output's working folder,
where the training loop keeps checkpoints and resumes from them after an interruption.
The baseline is planned only for a dataset with 3D ground truth (stages/dataset.py
`ground_truth_3d`)."""
from __future__ import annotations

from pathlib import Path

from ...training import pose3d
from ..artifacts import label_targets
from ..config import module_section
from ..context import Context
from ..record import Output, Stage


def _has_gt(cfg) -> bool:
    from .dataset import ground_truth_3d
    return ground_truth_3d(cfg)


def _defaults(preset: str, _plugin) -> dict:
    return module_section(pose3d, preset)


def _validate(section) -> None:
    pose3d.resolve_cfg({**section, "preset": "cpu"})


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    if ctx.output.params["targets"] == "labels":
        targets, mask = label_targets(ctx.open("label"))
    else:
        targets, mask = None, None  # ground truth, in mm
    ckpt = Path(pose3d.train({**ctx.params, "preset": ctx.preset}, ds, targets, mask, ctx.work_dir / "train",
                              progress=ctx.progress))
    return {"result": ctx.relative(ckpt)}


STAGE = Stage(
    name="train3d", version=6, doc=__doc__.strip(), module=__name__,
    outputs=(Output("train3d_ss", "ss", inputs=("dataset", "label"), params={"targets": "labels"}),
             # the baseline depends on the dataset only: a new detector does not retrain it
             Output("train3d_fs", "fs", inputs=("dataset",), params={"targets": "ground truth"}, needed=_has_gt)),
    parallel=True, build=build, defaults=_defaults, validate=_validate, result="result")
