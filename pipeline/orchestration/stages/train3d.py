"""train3d: the integral 3D network on the pseudo-labels (self-supervised, SS) and on ground
truth (fully supervised, FS, the baseline). Each trains in its output's working folder,
where the training loop keeps checkpoints and resumes from them after an interruption.
The baseline is planned only for a dataset with 3D ground truth (stages/dataset.py
`ground_truth_3d`). Both start from the pretrain2d network when the plan trains one (`init:
pretrain2d`, the paper's recipe: its 3D networks start from the MPII-trained 2D one), every
layer but the output one; otherwise, or with `init: null`, from `pretrained` or at random,
with the preset's longer from-scratch schedule (pose3d.FROM_SCRATCH) where the user set no
epochs. The checkpoint's cfg records the file it started from."""
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


# the value of train3d.init that names the pretrain2d stage's network (else: a file, or null)
FROM_PRETRAIN2D = "pretrain2d"


def _defaults(preset: str, _plugin) -> dict:
    return {**module_section(pose3d, preset), "init": FROM_PRETRAIN2D}


def _given_init_file(section) -> str | None:
    """section["init"] when it names a file (FROM_PRETRAIN2D names a network of the plan)."""
    return None if section.get("init") == FROM_PRETRAIN2D else section.get("init")


def _validate(section) -> None:
    pose3d.resolve_cfg({**section, "init": _given_init_file(section), "preset": "cpu"})


def starts_from_2d(cfg) -> bool:
    """Whether this configuration's 3D trainings start from a network (init: a file, or the
    pretrain2d network when the plan trains one: that stage's `needed`)."""
    from .pretrain2d import STAGE as PRETRAIN2D
    init = cfg["train3d"].get("init")
    return init is not None and (init != FROM_PRETRAIN2D or PRETRAIN2D.outputs[0].needed(cfg))


def _sources(section) -> list:
    """The weight files it starts from (the pretrain2d network is an input, not a source)."""
    from ...training.loop import start_files
    return start_files({**section, "init": _given_init_file(section)})


def _derive(cfg: dict, overridden: set) -> None:
    """A plan whose 3D networks start from scratch takes the preset's from-scratch schedule
    (pose3d.FROM_SCRATCH), unless the user set any of its keys (a schedule is one choice)."""
    scratch = pose3d.FROM_SCRATCH.get(cfg["preset"], {})
    if starts_from_2d(cfg) or any(f"train3d.{k}" in overridden for k in scratch):
        return
    cfg["train3d"].update(scratch)


def uses_init(cfg, key: str) -> bool:
    """Output.uses of the 3D trainings: the pretrain2d network is read only to start from it."""
    return key != "pretrain2d" or cfg["train3d"].get("init") == FROM_PRETRAIN2D


def init_file(ctx: Context, section) -> str | None:
    """The checkpoint a 3D network of this plan starts from: section["init"], with
    FROM_PRETRAIN2D read as the pretrain2d network (None when the plan trains none)."""
    init = section.get("init")
    if init != FROM_PRETRAIN2D:
        return init
    return str(ctx.result_path("pretrain2d")) if ctx.has("pretrain2d") else None


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    if ctx.output.params["targets"] == "labels":
        targets, mask = label_targets(ctx.open("label"))
    else:
        targets, mask = None, None  # ground truth, in mm
    cfg = {**ctx.params, "preset": ctx.preset, "init": init_file(ctx, ctx.params)}
    ckpt = Path(pose3d.train(cfg, ds, targets, mask, ctx.work_dir / "train", progress=ctx.progress))
    return {"result": ctx.relative(ckpt)}


STAGE = Stage(
    name="train3d", version=7, doc=__doc__.strip(), module=__name__,
    outputs=(Output("train3d_ss", "ss", inputs=("dataset", "label", "pretrain2d"), params={"targets": "labels"},
                    uses=uses_init),
             # the baseline depends on the dataset (and the 2D network it starts from) only: another
             # detector that also uses the project's network does not retrain it
             Output("train3d_fs", "fs", inputs=("dataset", "pretrain2d"), params={"targets": "ground truth"},
                    needed=_has_gt, uses=uses_init)),
    parallel=True, build=build, defaults=_defaults, validate=_validate, derive=_derive,
    sources=_sources, result="result")
