"""dataset: the configured adapter writes the dataset contract (docs/stores.md)."""
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


def build(ctx: Context) -> dict:
    name = ctx.section["name"]
    build_ = data.get_adapter(name)
    extra = {}
    if "associate" in inspect.signature(build_).parameters:  # several people per view (pose2sim)
        from ..calibrate import associate_people
        extra["associate"] = associate_people
    build_(ctx.params, ctx.group, progress=ctx.progress, **extra)
    missing = [k for k in REQUIRED if k not in ctx.group]
    if missing:
        raise StoreError(f"dataset adapter {name!r} did not write {missing}")
    n = int(ctx.group["rig"].shape[0])
    if n < 1:
        raise StoreError(f"dataset adapter {name!r} wrote no frame")
    return {"frames": n}


STAGE = Stage(
    name="dataset", version=4, doc=__doc__.strip(), module=__name__,
    outputs=(Output("dataset", name=lambda s: s["name"]),),
    build=build, defaults=_defaults, validate=_validate, sources=_sources,
    own_keys=("name",), plugin_key="name", plugins=lambda: plugins.modules(data.ADAPTERS))
