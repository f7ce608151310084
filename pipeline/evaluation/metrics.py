"""3D pose metrics: MPJPE, NMPJPE, PMPJPE, PCK, AUC, and the alignments behind them.

Inputs are poses [...,J,3] in mm; every metric first makes both root-relative (joint
pipeline.joints.ROOT at the origin), so absolute positions never matter. All return one value
per pose, shape [...]. An optional mask [...,J] (bool) drops joints; joints that are NaN
in either input are dropped too. A pose with no usable joint gives NaN.

- MPJPE: mean Euclidean joint error after root alignment (Human3.6M protocol #1).
- NMPJPE: Rhodin et al. 2018 ("Learning Monocular 3D Human Pose Estimation from Multi-view
  Images"): the prediction is scaled by the per-pose least-squares optimal s = <p,g>/<p,p>
  over the root-relative joints, then MPJPE. (Not the official EpipolarPose code's variant,
  which normalises both poses by their norms.)
- PMPJPE: MPJPE after the least-squares similarity transform (rotation, scale,
  translation; Umeyama / Procrustes) with a reflection guard (det R = +1).
- PCK: fraction of joints within `threshold` mm; AUC: mean PCK over thresholds
  0, 5, ..., max_threshold mm (31 values for 150 mm, as Mehta et al. 2017).
"""
from __future__ import annotations

import numpy as np

from ..joints import ROOT, check_joints


def _prepare(pred, gt, mask):
    """Root-relative float64 copies and the usable-joint mask [...,J]."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    check_joints(pred, "pred")
    check_joints(gt, "gt")
    if pred.shape[-1] != 3 or gt.shape[-1] != 3:
        raise ValueError(f"metrics: poses must end in [J,3], got pred {pred.shape}, gt {gt.shape}")
    try:
        shape = np.broadcast_shapes(pred.shape, gt.shape)
    except ValueError:
        raise ValueError(f"metrics: pred {pred.shape} and gt {gt.shape} do not broadcast") from None
    pred, gt = np.broadcast_to(pred, shape), np.broadcast_to(gt, shape)
    pred = pred - pred[..., ROOT:ROOT + 1, :]
    gt = gt - gt[..., ROOT:ROOT + 1, :]
    ok = np.all(np.isfinite(pred), -1) & np.all(np.isfinite(gt), -1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        try:
            ok = ok & np.broadcast_to(mask, ok.shape)
        except ValueError:
            raise ValueError(f"metrics: mask {mask.shape} does not match poses {shape[:-1]}") from None
    pred = np.where(ok[..., None], pred, 0.0)
    gt = np.where(ok[..., None], gt, 0.0)
    return pred, gt, ok


def _mean_err(pred, gt, ok):
    err = np.linalg.norm(pred - gt, axis=-1)
    n = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (err * ok).sum(-1) / n, np.nan)


def joint_errors(pred, gt, mask=None) -> np.ndarray:
    """Per-joint Euclidean error after root alignment [...,J] (NaN where not usable)."""
    p, g, ok = _prepare(pred, gt, mask)
    return np.where(ok, np.linalg.norm(p - g, axis=-1), np.nan)


def mpjpe(pred, gt, mask=None) -> np.ndarray:
    """Mean per-joint position error after root alignment. [...,J,3] x2 -> [...]."""
    return _mean_err(*_prepare(pred, gt, mask))


def _scale(p, g, ok):
    pp = np.einsum("...jk,...jk->...", p, p)
    pg = np.einsum("...jk,...jk->...", p, g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pp > 0, pg / pp, np.nan)


def scale_align(pred, gt, mask=None) -> np.ndarray:
    """Root-relative pred scaled by s = <pred,gt>/<pred,pred> (Rhodin et al. 2018). -> [...,J,3]."""
    p, g, ok = _prepare(pred, gt, mask)
    s = _scale(p, g, ok)
    out = s[..., None, None] * p
    return np.where(ok[..., None], out, np.nan)


def nmpjpe(pred, gt, mask=None) -> np.ndarray:
    """MPJPE after the per-pose optimal scale of the root-relative prediction. -> [...]."""
    p, g, ok = _prepare(pred, gt, mask)
    return _mean_err(_scale(p, g, ok)[..., None, None] * p, g, ok)


def _similarity(p, g, ok):
    """Least-squares s, R, t with s R p + t ≈ g over ok joints (Umeyama 1991). Batched."""
    w = ok.astype(np.float64)[..., None]
    n = np.maximum(w.sum(-2, keepdims=True), 1)
    mp = (w * p).sum(-2, keepdims=True) / n
    mg = (w * g).sum(-2, keepdims=True) / n
    pc, gc = (p - mp) * w, (g - mg) * w
    H = np.swapaxes(gc, -1, -2) @ pc  # [...,3,3] = Σ g pᵀ
    U, S, Vt = np.linalg.svd(H)
    # reflection guard: flip the smallest singular direction when det(U Vt) < 0
    d = np.sign(np.linalg.det(U @ Vt))
    d = np.where(d == 0, 1.0, d)
    D = np.ones(S.shape)
    D[..., -1] = d
    R = (U * D[..., None, :]) @ Vt
    var_p = (pc ** 2).sum((-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(var_p > 0, (S * D).sum(-1) / var_p, np.nan)
    t = mg[..., 0, :] - s[..., None] * np.einsum("...ij,...j->...i", R, mp[..., 0, :])
    return s, R, t


def procrustes(pred, gt, mask=None) -> np.ndarray:
    """pred aligned to gt by the optimal similarity transform (rotation without reflection,
    isotropic scale, translation), both root-relative first. [...,J,3] -> [...,J,3]; NaN where
    a joint is not usable."""
    p, g, ok = _prepare(pred, gt, mask)
    s, R, t = _similarity(p, g, ok)
    out = s[..., None, None] * np.einsum("...ij,...nj->...ni", R, p) + t[..., None, :]
    return np.where(ok[..., None], out, np.nan)


def pmpjpe(pred, gt, mask=None) -> np.ndarray:
    """MPJPE after similarity Procrustes alignment (protocol #2). -> [...]."""
    p, g, ok = _prepare(pred, gt, mask)
    s, R, t = _similarity(p, g, ok)
    al = s[..., None, None] * np.einsum("...ij,...nj->...ni", R, p) + t[..., None, :]
    return _mean_err(al, g, ok)


def pck(pred, gt, threshold: float = 150.0, mask=None) -> np.ndarray:
    """Fraction of usable joints with error < threshold mm, after root alignment. -> [...] in [0,1]."""
    p, g, ok = _prepare(pred, gt, mask)
    err = np.linalg.norm(p - g, axis=-1)
    n = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, ((err < threshold) & ok).sum(-1) / n, np.nan)


def auc(pred, gt, max_threshold: float = 150.0, step: float = 5.0, mask=None) -> np.ndarray:
    """Area under the PCK curve for thresholds 0, step, ..., max_threshold (mean PCK). -> [...]."""
    p, g, ok = _prepare(pred, gt, mask)
    err = np.linalg.norm(p - g, axis=-1)
    n = ok.sum(-1)
    th = np.arange(0.0, max_threshold + step / 2, step)
    hits = ((err[..., None] < th) & ok[..., None]).sum(-2)  # [...,T]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits.mean(-1) / n, np.nan)
