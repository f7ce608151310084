"""dataset: the configured adapter writes the dataset contract (docs/stores.md).

Two facts about the dataset the rest of the chain plans with, before anything runs:
- whether it carries 3D ground truth (`ground_truth_3d`): its adapter says so with a module
  attribute `GROUND_TRUTH_3D` (a bool, or a function of the adapter's section); an adapter
  that does not say has none. Without it the fully supervised baseline and the ground-truth
  metrics are left out of the plan, and the evaluation measures what needs no ground truth.
- its crop size follows the networks' input size (`train3d.input_size`, the preset's) unless
  `dataset.crop_size` is set; a set value that disagrees is refused naming both keys.
"""
from __future__ import annotations

import inspect

from ... import data
from .. import plugins
from ..context import Context
from ..record import Output, Stage
from ..store import StoreError

KIND = "dataset adapter"
REQUIRED = ("rig", "K", "R", "t", "dist", "size", "split", "frame_index")


def _defaults(preset: str, name: str | None) -> dict:
    return plugins.section(data.ADAPTERS, name, KIND, preset, {"name": name})


def _params(section) -> dict:
    return {k: v for k, v in section.items() if k != "name"}


def _validate(section) -> None:
    plugins.validate(data.ADAPTERS, section["name"], KIND, _params(section))


def _sources(section) -> list:
    return plugins.sources(data.ADAPTERS, section["name"], KIND, _params(section))


def ground_truth_3d(cfg) -> bool:
    """Whether the configured dataset carries 3D ground truth (its adapter's GROUND_TRUTH_3D)."""
    sec = cfg["dataset"]
    flag = getattr(plugins.module_of(data.ADAPTERS, sec["name"], KIND), "GROUND_TRUTH_3D", False)
    return bool(flag(_params(sec)) if callable(flag) else flag)


def _derive(cfg: dict, overridden: set) -> None:
    """The crops' size follows train3d.input_size: dataset.crop_size and, when the 2D network
    trains on the same crops, pretrain2d.input_size, each unless the user set it."""
    sec = cfg["dataset"]
    size = cfg["train3d"]["input_size"]
    from .pretrain2d import STAGE as PRETRAIN2D  # whether the 2D network trains on the crops too
    sizes = [("train3d.input_size", size)]
    if PRETRAIN2D.outputs[0].needed(cfg):
        if "pretrain2d.input_size" not in overridden:
            cfg["pretrain2d"]["input_size"] = size
        sizes.append(("pretrain2d.input_size", cfg["pretrain2d"]["input_size"]))
    if "crop_size" in sec and "dataset.crop_size" not in overridden:
        sec["crop_size"] = size
    crop = sec.get("crop_size", size)
    for key, n in sizes:
        if crop != n:
            what = "dataset.crop_size" if "crop_size" in sec else sizes[0][0]
            raise ValueError(f"{what} is {crop} but {key} is {n}: the networks train on the dataset's crops; "
                             f"set them equal (leave dataset.crop_size and pretrain2d.input_size unset and they "
                             "follow train3d.input_size)")


def build(ctx: Context) -> dict:
    name = ctx.section["name"]
    build_ = data.get_adapter(name)
    extra = {}
    if "associate" in inspect.signature(build_).parameters:  # several people per view (pose2sim)
        from ..calibrate import associate_people
        extra["associate"] = associate_people
    if "synchronise" in inspect.signature(build_).parameters:  # frame offsets from the keypoints (pose2sim)
        from ..calibrate import frame_offsets
        extra["synchronise"] = frame_offsets
    build_(ctx.params, ctx.group, progress=ctx.progress, **extra)
    missing = [k for k in REQUIRED if k not in ctx.group]
    if missing:
        raise StoreError(f"dataset adapter {name!r} did not write {missing}")
    n = int(ctx.group["rig"].shape[0])
    if n < 1:
        raise StoreError(f"dataset adapter {name!r} wrote no frame")
    return {"frames": n}


STAGE = Stage(
    name="dataset", version=7, doc=__doc__.strip(), module=__name__,
    outputs=(Output("dataset", name=lambda s: s["name"]),),
    build=build, defaults=_defaults, validate=_validate, sources=_sources,
    own_keys=("name",), plugin_key="name", plugins=lambda: plugins.modules(data.ADAPTERS), derive=_derive)
