"""2D detector plug-ins.

A detector is `detect(cfg: dict, dataset: zarr.Group, frames: slice, context: dict) -> np.ndarray`
returning keypoints2d [f, V, J, 3] (x, y, confidence) in original-image pixels, NaN where the
detector saw nothing. `context` carries the paths of upstream artifacts a detector needs
(e.g. context["pretrain2d"] for the project's own network); a detector may put more arrays
of the same frames in context["arrays"] (name -> [f, V, ...]: openpose's person_index), which
the detect2d stage stores beside keypoints2d. Its module exposes `DEFAULTS`.
"""
from __future__ import annotations

from ..registry import resolve

__all__ = ["DETECTORS", "NEEDS_NETWORK", "detector_defaults", "get_detector", "needs_network"]

DETECTORS = {
    "gt": "pipeline.detectors.gt:detect",              # ground-truth 2D, optional noise model
    "network": "pipeline.detectors.network:detect",    # the project's integral 2D network (frozen)
    "openpose": "pipeline.detectors.openpose:detect",  # OpenPose / COCO JSON keypoints
    "mediapipe": "pipeline.detectors.mediapipe:detect",  # BlazePose full, offline (extra [mediapipe])
}


# Detectors that run the project's own 2D network (the pretrain2d stage trains it for them).
NEEDS_NETWORK = frozenset({"network"})


def needs_network(name: str) -> bool:
    return name in NEEDS_NETWORK


def get_detector(name: str):
    return resolve(DETECTORS, name, "detector")


def detector_defaults(name: str) -> dict:
    import importlib
    resolve(DETECTORS, name, "detector")
    return dict(importlib.import_module(DETECTORS[name].partition(":")[0]).DEFAULTS)
