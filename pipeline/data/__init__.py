"""Dataset adapters: each writes the dataset contract (docs/stores.md) into a zarr group.

An adapter is `build(cfg: dict, out: zarr.Group, progress: bool = True) -> None`; its module
also exposes `DEFAULTS: dict` (its configuration keys and default values).
"""
from __future__ import annotations

from ..registry import resolve

__all__ = ["ADAPTERS", "adapter_defaults", "get_adapter", "calibration", "contract", "crowd", "fetch", "motion",
           "openpose", "render", "rigs", "trc"]

ADAPTERS = {
    "studio": "pipeline.data.studio:build",
    "h36m": "pipeline.data.h36m:build",
    "pose2sim": "pipeline.data.pose2sim:build",
    "videos": "pipeline.data.videos:build",
}


def get_adapter(name: str):
    return resolve(ADAPTERS, name, "dataset adapter")


def adapter_defaults(name: str) -> dict:
    import importlib
    resolve(ADAPTERS, name, "dataset adapter")
    return dict(importlib.import_module(ADAPTERS[name].partition(":")[0]).DEFAULTS)
