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

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..joints import ROOT

log = logging.getLogger("pipeline")


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
    store, in order ([] for clips = 0, and, with a warning, when that would leave no training
    clip: a dataset of one training clip trains on it, without validation)."""
    clips = int(clips)
    if clips <= 0:
        return np.zeros(0, np.int64)
    split = np.asarray(dataset["split"][:])
    clip = np.asarray(dataset["clip"][:]) if "clip" in dataset else np.zeros(len(split), np.int64)
    train = np.unique(clip[split == 0])
    if len(train) <= clips:
        log.warning("train3d: val_clips = %d would hold out every training clip (%d): no validation", clips,
                    len(train))
        return np.zeros(0, np.int64)
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


def scorer(val: Validation, beta: float, batch_size: int) -> Callable:
    """A function model -> {"loss", "mpjpe", "nmpjpe", "units"} scoring an IntegralPoseNet (3D)
    on the held-out samples: root-relative predictions, the training loss (smooth L1 with
    `beta`, masked mean over joints and coordinates) and the mean per-sample MPJPE / NMPJPE
    (pose_errors) in mm when val.mm_per_unit is set. The model is left in the mode it came in."""
    import torch
    import torch.nn.functional as nnf

    from . import augment as aug

    t = np.asarray(val.targets, np.float32)
    t = t - t[:, ROOT:ROOT + 1]
    m = np.asarray(val.mask, bool)
    mm = float(val.mm_per_unit) if val.mm_per_unit else 1.0

    def score(model) -> dict:
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        out = []
        try:
            with torch.inference_mode():
                for s in range(0, len(val.samples), batch_size):
                    f, v = val.samples[s:s + batch_size, 0], val.samples[s:s + batch_size, 1]
                    x = aug.normalise(aug.to_float(torch.from_numpy(val.images.get(f, v)).to(device)))
                    out.append(model(x).float().cpu().numpy())
        finally:
            model.train(was)
        p = np.concatenate(out)
        p = p - p[:, ROOT:ROOT + 1]
        err = nnf.smooth_l1_loss(torch.from_numpy(p), torch.from_numpy(t), beta=beta, reduction="none").sum(-1).numpy()
        loss = float((err * m).sum() / max(m.sum(), 1) / 3)
        e, n = pose_errors(p * mm, t * mm, m)
        return {"loss": loss, "mpjpe": float(np.nanmean(e)), "nmpjpe": float(np.nanmean(n)),
                "units": "mm" if val.mm_per_unit else "network units"}
    return score
