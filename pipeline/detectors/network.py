"""The project's own 2D detector as a detect2d plug-in: the frozen integral 2D network.

`context["pretrain2d"]` is the path of the checkpoint written by pipeline.pretrain2d.train
(its final.pt, or the folder holding it). The network runs on the dataset's crops and its
outputs are mapped back to original-image pixels with the stored crop boxes. Confidence is
the heatmap's probability mass within 1.5 bins of the soft-argmax (models.integral).
It tracks the error only for a detector trained with heatmap_nll_weight > 0 (pipeline/pretrain2d.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import pretrain2d

DEFAULTS: dict = {
    "min_confidence": 0.0,  # joints below this confidence become NaN (not detected)
}


def detect(cfg: dict, dataset, frames: slice, context: dict) -> np.ndarray:
    """keypoints2d [f,V,J,3] (x, y, confidence) in original pixels for dataset frames `frames`."""
    unknown = set(cfg or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"network detector: unknown configuration keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **(cfg or {})}
    if not context or not context.get("pretrain2d"):
        raise ValueError("network detector needs context['pretrain2d']: the 2D network's checkpoint path")
    ckpt = Path(context["pretrain2d"])
    if ckpt.is_dir():
        ckpt = ckpt / "final.pt"
    kp = pretrain2d.predict(ckpt, dataset, frames, progress=False)
    low = kp[..., 2] < float(c["min_confidence"])
    kp[low] = np.nan
    return kp
