"""The project's own 2D detector as a detect2d plug-in: the frozen integral 2D network.

`context["pretrain2d"]` is the path of the checkpoint written by pipeline.training.detector2d.train
(its final.pt, or the folder holding it). The network runs on the dataset's crops and its
outputs are mapped back to original-image pixels with the stored crop boxes. Confidence is
the heatmap's probability mass within 1.5 bins of the soft-argmax (models.integral).
It tracks the error only for a detector trained with heatmap_nll_weight > 0 (pipeline/pretrain2d.py).
A (frame, view) whose image is missing (the dataset's `image_ok` False: a video frame that
could not be decoded, its crop black) gets NaN keypoints: the network is not run on a blank.
The checkpoint is loaded with weights_only=True (pipeline.training.checkpoint).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training import detector2d
from ..registry import check_number, with_defaults

DEFAULTS: dict = {
    "min_confidence": 0.0,  # joints below this confidence become NaN (not detected)
}


def resolve_cfg(cfg: dict | None) -> dict:
    """DEFAULTS overridden by cfg; an unknown key, a wrong type or range is a one-line ValueError."""
    c = with_defaults(cfg, DEFAULTS, "network detector")
    check_number(c, "min_confidence", "network detector", lo=0.0, hi=1.0)
    return c


def detect(cfg: dict, dataset, frames: slice, context: dict) -> np.ndarray:
    """keypoints2d [f,V,J,3] (x, y, confidence) in original pixels for dataset frames `frames`;
    NaN where the confidence is below min_confidence and where the image is missing (image_ok)."""
    c = resolve_cfg(cfg)
    if not context or not context.get("pretrain2d"):
        raise ValueError("network detector needs context['pretrain2d']: the 2D network's checkpoint path")
    ckpt = Path(context["pretrain2d"])
    if ckpt.is_dir():
        ckpt = ckpt / "final.pt"
    kp = detector2d.predict(ckpt, dataset, frames, progress=False)
    low = kp[..., 2] < float(c["min_confidence"])
    kp[low] = np.nan
    return kp
