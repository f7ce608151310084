"""A held-out validation set for the training loop, scored after every epoch.

The validation frames are whole clips of the training split (`validation_frames`: never a
test clip, so never a test person), left out of training. After each epoch the loop
(loop.fit) predicts them and records the validation loss (the training loss, on these
samples, without augmentation) and, in the targets' units made millimetres by `mm_per_unit`:
- MPJPE: mean joint distance after root alignment (pipeline/evaluation/metrics.py's mpjpe);
- NMPJPE: the same after scaling each prediction by s = <p,t>/<p,p> (metrics.nmpjpe).
The targets are the training targets (pseudo-labels for SS, ground truth for FS): a curve
that falls for training and rises here shows overfitting.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..joints import ROOT


@dataclass
class Validation:
    """Held-out samples as loop.fit takes them: images (an ImageSource), samples [M,2] (frame,
    view), targets [M,J,D] in network units, mask [M,J]; mm_per_unit converts network units to
    millimetres (None: figures stay in network units, named so)."""
    images: object
    samples: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    mm_per_unit: float | None = None


def validation_frames(dataset, clips: int) -> np.ndarray:
    """Frame indices of the `clips` last clips of the training split (split == 0) of a dataset
    store, in order ([] for clips = 0). ValueError when that would leave no training clip."""
    clips = int(clips)
    if clips <= 0:
        return np.zeros(0, np.int64)
    split = np.asarray(dataset["split"][:])
    clip = np.asarray(dataset["clip"][:]) if "clip" in dataset else np.zeros(len(split), np.int64)
    train = np.unique(clip[split == 0])
    if len(train) <= clips:
        raise ValueError(f"train3d: val_clips = {clips} would hold out every training clip ({len(train)}); "
                         "lower val_clips or set it to 0")
    held = train[-clips:]
    return np.flatnonzero((split == 0) & np.isin(clip, held)).astype(np.int64)


def pose_errors(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample MPJPE and NMPJPE of pred against target [M,J,D] over mask [M,J], in their
    units; NaN for a sample with no valid joint. Both made root-relative first (3D: D = 3)."""
    p = np.asarray(pred, np.float64)
    t = np.asarray(target, np.float64)
    m = np.asarray(mask, bool)
    if p.shape[-1] == 3:
        p, t = p - p[:, ROOT:ROOT + 1], t - t[:, ROOT:ROOT + 1]
    p, t = np.where(m[..., None], p, 0.0), np.where(m[..., None], t, 0.0)
    n = m.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mpjpe = np.where(n > 0, np.linalg.norm(p - t, axis=-1).sum(-1) / n, np.nan)
        pp, pt = np.einsum("mjd,mjd->m", p, p), np.einsum("mjd,mjd->m", p, t)
        s = np.where(pp > 0, pt / pp, np.nan)
        nmpjpe = np.where(n > 0, np.linalg.norm(s[:, None, None] * p - t, axis=-1).sum(-1) / n, np.nan)
    return mpjpe, nmpjpe
