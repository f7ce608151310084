"""dataset: the configured adapter writes the dataset contract (docs/stores.md).

Two facts about the dataset the rest of the chain plans with, before anything runs:
- whether it carries 3D ground truth (`ground_truth_3d`): its adapter says so with a module
  attribute `GROUND_TRUTH_3D` (a bool, or a function of the adapter's section); an adapter
  that does not say has none. Without it the fully supervised baseline and the ground-truth
  metrics are left out of the plan, and the evaluation measures what needs no ground truth.
- its crop size follows the networks' input size (`train3d.input_size`, the preset's) unless
  `dataset.crop_size` is set; a set value that disagrees is refused naming both keys.
- an adapter whose crops need a detector's person boxes (`CROPS_NEED_DETECTOR`: a folder of
  videos) gets `crops_from` = the chain's 2D detector, with its settings, when that detector
  finds people in videos on its own (`FINDS_PEOPLE`); its crops, and so everything trained
  on them, follow the detector. When none can place crops and a network would train on them,
  the run is refused before anything is built, naming the keys to set.
"""
from __future__ import annotations

import inspect
from typing import Mapping

from ... import data, detectors
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
    files = plugins.sources(data.ADAPTERS, section["name"], KIND, _params(section))
    crops = section.get("crops_from")
    if isinstance(crops, str) and crops != "auto":  # the detector placing the crops reads these too
        files = [*files, *plugins.sources(detectors.DETECTORS, crops, "detector", section.get("crops_detector") or {})]
    return files


def _finds_people(name: str) -> bool:
    return bool(getattr(plugins.module_of(detectors.DETECTORS, name, "detector"), "FINDS_PEOPLE", False))


def _adapter_flag(sec, attr: str):
    """A module attribute of the section's dataset adapter (GROUND_TRUTH_3D, CROPS_NEED_DETECTOR), False if absent."""
    return getattr(plugins.module_of(data.ADAPTERS, sec["name"], KIND), attr, False)


def _crops_detector(cfg: dict, overridden: set) -> None:
    """crops_from "auto" -> the detect2d detector (and its settings) when it finds people in
    videos, else null."""
    sec = cfg["dataset"]
    if not _adapter_flag(sec, "CROPS_NEED_DETECTOR"):
        return
    det = cfg["detect2d"]
    if sec.get("crops_from", "auto") == "auto":
        finds = _finds_people(det["detector"])
        sec["crops_from"] = det["detector"] if finds else None
        if finds and "dataset.crops_detector" not in overridden:
            from .detect2d import detector_params
            sec["crops_detector"] = dict(detector_params(det))
    if sec["crops_from"] is not None:
        plugins.validate(detectors.DETECTORS, sec["crops_from"], "detector", sec.get("crops_detector") or {})


def check_crops(cfg: Mapping, stages) -> None:
    """Refuse, before anything is built, a chain through `stages` whose networks would train on
    crops the dataset cannot make (a folder of videos whose crops no detector places)."""
    sec = cfg["dataset"]
    if not _adapter_flag(sec, "CROPS_NEED_DETECTOR") or sec.get("crops_from") is not None:
        return
    from .pretrain2d import STAGE as PRETRAIN2D
    from .train3d import STAGE as TRAIN3D
    trains = [s.name for s in (PRETRAIN2D, TRAIN3D) if s.name in stages and any(o.needed(cfg) for o in s.outputs)]
    if trains:
        det = cfg["detect2d"]["detector"]
        finders = sorted(n for n in detectors.DETECTORS if _finds_people(n))
        why = ("dataset.crops_from is null" if _finds_people(det)
               else f"the 2D detector {det!r} does not find people in videos on its own")
        raise ValueError(f"dataset {sec['name']!r} stores no crops for {' and '.join(trains)} to train on: {why}. "
                         f"Use a detector that finds people ({', '.join(finders)}; e.g. --detector mediapipe) or set "
                         "dataset.crops_from to one of them; for labels and a calibration only, run up to the label "
                         "stage (epipose run --only label)")


def ground_truth_3d(cfg) -> bool:
    """Whether the configured dataset carries 3D ground truth (its adapter's GROUND_TRUTH_3D)."""
    sec = cfg["dataset"]
    flag = _adapter_flag(sec, "GROUND_TRUTH_3D")
    return bool(flag(_params(sec)) if callable(flag) else flag)


def _derive(cfg: dict, overridden: set) -> None:
    """The crops' size follows train3d.input_size: dataset.crop_size and, when the 2D network
    trains on the same crops, pretrain2d.input_size, each unless the user set it. The crops'
    detector follows detect2d's (`_crops_detector`)."""
    _crops_detector(cfg, overridden)
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


def find_people(name: str, cfg: dict, group, progress: bool):
    """keypoints2d [F,V,J,3] of every frame of a dataset group being built, from the detector
    plug-in `name` with settings `cfg` (for an adapter that places its crops with them)."""
    return detectors.get_detector(name)({**detectors.detector_defaults(name), **cfg}, group, slice(None),
                                        {"progress": progress})


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
    if "find_people" in inspect.signature(build_).parameters:  # crops placed by a detector (videos)
        extra["find_people"] = find_people
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
    own_keys=("name",), plugin_key="name", derive=_derive,
    plugins=lambda: plugins.modules(data.ADAPTERS) + plugins.modules(detectors.DETECTORS))
