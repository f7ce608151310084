"""A contact sheet: the V views of one frame with the ground-truth skeleton drawn on each."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import zarr

from .plots import draw_skeleton_2d


def frame_sheet(dataset: zarr.Group, frame: int, upscale: int = 4, show_hidden: bool = True) -> np.ndarray:
    """RGB uint8 [S·upscale·2, V·S·upscale, 3]: the crops of `frame` (top row) and the same
    crops with the ground-truth skeleton (bottom row; hidden joints ringed in grey)."""
    if "images" not in dataset:
        raise ValueError("frame_sheet: the dataset store has no images")
    F = dataset["images"].shape[0]
    if not 0 <= frame < F:
        raise ValueError(f"frame_sheet: frame {frame} outside 0..{F - 1}")
    imgs = dataset["images"][frame]                     # [V,S,S,3] RGB
    kp = dataset["keypoints2d_gt"][frame]               # [V,J,3]
    box = dataset["crop_boxes"][frame]                  # [V,4]
    S = imgs.shape[1]
    top, bottom = [], []
    for v in range(imgs.shape[0]):
        big = cv2.resize(imgs[v], (S * upscale, S * upscale), interpolation=cv2.INTER_NEAREST)
        k = kp[v].astype(np.float64).copy()
        k[:, :2] = (k[:, :2] - box[v, :2]) * (S * upscale) / box[v, 2:]
        drawn = draw_skeleton_2d(big, k[:, :2], thickness=2, radius=4)
        if show_hidden:
            for j in np.flatnonzero((k[:, 2] < 0.5) & np.all(np.isfinite(k[:, :2]), 1)):
                cv2.circle(drawn, tuple(int(round(c)) for c in k[j, :2]), 7, (200, 200, 200), 2, cv2.LINE_AA)
        top.append(big)
        bottom.append(drawn)
        for row in (top, bottom):
            row.append(np.full((S * upscale, 4, 3), 255, np.uint8))
    return np.concatenate([np.concatenate(top[:-1], 1), np.concatenate(bottom[:-1], 1)], 0)


def save_sheet(dataset: zarr.Group, frame: int, path: str | Path, upscale: int = 4) -> Path:
    """Write frame_sheet as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), frame_sheet(dataset, frame, upscale)[..., ::-1]):
        raise ValueError(f"{path}: could not write the PNG")
    return path
