"""What can be measured without 3D ground truth: footage of one's own cameras.

No ground truth means no MPJPE against the truth. What remains measurable, and what each
figure says:

- label reprojection error (px, per camera): the pseudo-labels put back in their rig's world
  (pipeline/geometry/label_world.py) and projected into each camera, against the 2D keypoints
  they were triangulated from. It measures how well one 3D pose explains the views; it cannot
  see an error every view shares (a detector's systematic bias).
- agreement with the labels (MPJPE, NMPJPE, PMPJPE of a model's prediction against the
  pseudo-label of the same frame and view): how well the network reproduces its training
  signal. On frames it trained on this is a fit, on held-out frames a generalisation error
  against labels that carry their own error (the first figure bounds neither).
- multi-view consistency: a monocular network sees each view alone; its predictions of one
  instant, turned into one frame by the rig's rotations (R_vᵀ p_v), should be the same pose.
  The mean over view pairs of the MPJPE between them (`view_consistency`). The labels' own
  consistency is 0 by construction (one 3D pose seen from every camera).
- mPSS against a mocap reference: the Pose Structure Score (pipeline/evaluation/pss.py) of
  (prediction, label) pairs, with k-means centres of motion-capture poses seen by virtual
  cameras around the subject (`virtual_rotations`, `mocap_reference_poses`) where the
  dataset has no poses to cluster.

Units: predictions and labels are in "mean bones" (root-relative, divided by the pose's mean
bone length); with the dataset's prior `mean_bone_mm` (Pose2Sim's own triangulation, when the
project has one) they are shown in millimetres through that one scalar.
Shapes: pred, labels [f,V,J,3]; masks [f,V,J]; R [V,3,3] or [f,V,3,3].
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from ..camera import look_at
from ..joints import J, ROOT
from . import metrics

__all__ = ["virtual_rotations", "mocap_reference_poses", "view_consistency", "against_labels", "label_pss",
           "per_camera", "markdown"]


def virtual_rotations(n_yaw: int = 12, elevations_deg=(0.0, 20.0), distance_mm: float = 4000.0,
                      target_height_mm: float = 1000.0) -> np.ndarray:
    """World-to-camera rotations [n_yaw * len(elevations), 3, 3] of cameras around a subject in
    a Z-up world: on a circle every 360/n_yaw degrees, looking at the subject's pelvis height
    from `elevations_deg` above the horizontal (OpenCV axes, pipeline.camera.look_at)."""
    if n_yaw < 1 or not len(elevations_deg):
        raise ValueError("virtual_rotations: need at least one yaw and one elevation")
    out = []
    target = np.array([0.0, 0.0, target_height_mm])
    for el in np.radians(np.asarray(elevations_deg, float)):
        if not -np.pi / 2 < el < np.pi / 2:
            raise ValueError("virtual_rotations: elevations must lie strictly between -90 and 90 degrees")
        for yaw in np.arange(n_yaw) * 2 * np.pi / n_yaw:
            c = target + distance_mm * np.array([np.cos(el) * np.cos(yaw), np.cos(el) * np.sin(yaw), np.sin(el)])
            out.append(look_at(c, target)[0])
    return np.stack(out)


def mocap_reference_poses(world: np.ndarray, R: np.ndarray) -> np.ndarray:
    """World poses [N,J,3] (mm, Z up) seen by cameras with rotations R [K,3,3] -> root-relative
    camera-frame poses [N*K,J,3] (the frame the PSS scores poses in)."""
    world = np.asarray(world, dtype=np.float64)
    if world.ndim != 3 or world.shape[1:] != (J, 3):
        raise ValueError(f"mocap reference: poses must be [N,{J},3], got {world.shape}")
    rel = world - world[:, ROOT:ROOT + 1]
    return np.einsum("kab,njb->knja", np.asarray(R, float), rel).reshape(-1, J, 3)


def view_consistency(pred: np.ndarray, R: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per frame, the mean over pairs of views (both predicted) of the MPJPE between their
    predictions turned into the rig's world orientation (R_vᵀ p_v): [f], in pred's units, NaN
    where fewer than two views were predicted. R [V,3,3] or [f,V,3,3] world-to-camera."""
    pred = np.asarray(pred, dtype=np.float64)
    f, V = pred.shape[:2]
    R = np.broadcast_to(np.asarray(R, float), (f, V, 3, 3))
    ok = np.all(np.isfinite(pred), -1) if mask is None else np.asarray(mask, bool) & np.all(np.isfinite(pred), -1)
    placed = np.all(np.isfinite(R), axis=(-2, -1))  # [f,V]
    rel = pred - pred[:, :, ROOT:ROOT + 1]
    W = np.einsum("fvji,fvkj->fvki", np.where(placed[..., None, None], R, 0.0), np.where(ok[..., None], rel, 0.0))
    use = ok & placed[..., None] & ok[:, :, ROOT:ROOT + 1]
    errs = []
    for a, b in combinations(range(V), 2):
        both = use[:, a] & use[:, b]
        e = np.where(both, np.linalg.norm(W[:, a] - W[:, b], axis=-1), 0.0).sum(-1)
        n = both.sum(-1)
        errs.append(np.where(n > 1, e / np.maximum(n, 1), np.nan))
    if not errs:
        return np.full(f, np.nan)
    E = np.stack(errs, -1)
    n = np.isfinite(E).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(np.isfinite(E), E, 0.0).sum(-1) / np.maximum(n, 1), np.nan)


def against_labels(pred: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict:
    """MPJPE, NMPJPE and PMPJPE (pipeline.evaluation.metrics) of each (frame, view)'s
    prediction against its label, over the joints `mask` marks (valid labels, finite
    predictions): {"mpjpe", "nmpjpe", "pmpjpe": [f,V]} in the inputs' units (NaN where the
    root or fewer than 4 joints are usable)."""
    pred = np.asarray(pred, np.float64)
    labels = np.asarray(labels, np.float64)
    ok = np.asarray(mask, bool) & np.all(np.isfinite(pred), -1) & np.all(np.isfinite(labels), -1)
    use = ok[..., ROOT] & (ok.sum(-1) >= 4)
    out = {}
    for name, fn in (("mpjpe", metrics.mpjpe), ("nmpjpe", metrics.nmpjpe), ("pmpjpe", metrics.pmpjpe)):
        v = np.full(use.shape, np.nan)
        if use.any():
            v[use] = fn(pred[use], labels[use], ok[use])
        out[name] = v
    return out


def label_pss(pred: np.ndarray, labels: np.ndarray, mask: np.ndarray, reference: dict, ks) -> dict:
    """mPSS@k of (prediction, label) pairs whose label is complete (every joint valid) and whose
    prediction is finite: {"mpss_k{k}": value, "n_pairs": n}; NaN values when no pair is complete."""
    from .pss import mpss
    pred = np.asarray(pred, np.float64)
    labels = np.asarray(labels, np.float64)
    full = np.asarray(mask, bool).all(-1) & np.all(np.isfinite(pred), (-2, -1)) & np.all(np.isfinite(labels), (-2, -1))
    out = {"n_pairs": int(full.sum())}
    for k in ks:
        out[f"mpss_k{int(k)}"] = float(mpss(pred[full], labels[full], reference, int(k))) if full.any() else float("nan")
    return out


def per_camera(err: np.ndarray) -> np.ndarray:
    """Median over frames and joints of a [F,V,J] error per camera: [V] (NaN where none)."""
    E = np.asarray(err, float)
    out = np.full(E.shape[1], np.nan)
    for v in range(E.shape[1]):
        e = E[:, v][np.isfinite(E[:, v])]
        if e.size:
            out[v] = float(np.median(e))
    return out


def _f(v, nd: int = 1) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "–"
    return f"{v:.{nd}f}" if np.isfinite(v) else "–"


def markdown(result: dict) -> list[str]:
    """The report's section for an evaluation without ground truth (the evaluate stage's
    `without_ground_truth` attribute): its frame set, the label reprojection table and the
    models' table, every unit stated."""
    if not result:
        return []
    unit = result.get("units", "mean bones")
    md = ["## Without 3D ground truth", "",
          "The dataset carries no 3D ground truth, so nothing here is an error against the truth: "
          "the labels are judged by how well they explain the 2D keypoints, the networks by how "
          "well they agree with the labels and with themselves across views (pipeline/evaluation/selfcheck.py "
          "says what each figure can and cannot see).", ""]
    lab = result.get("labels") or {}
    if lab:
        names = lab.get("views") or [str(v) for v in range(len(lab.get("reprojection_px", [])))]
        rows = [f"| {n} | {_f(px)} | {_f(100 * float(u), 1)} |"
                for n, px, u in zip(names, lab.get("reprojection_px", []), lab.get("labelled_share", []))]
        md += [f"**Labels** ({lab.get('frames', '')}): median reprojection error per camera of the labels "
               "put back in their rig's world, against the 2D keypoints they were made from.", "",
               "| camera | median reprojection (px) | labelled (% of frames) |", "|---|---|---|", *rows, ""]
    models = result.get("models") or {}
    if models:
        ks = sorted({int(k[len("mpss_k"):]) for m in models.values() for k in m if k.startswith("mpss_k")})
        head = ["model", f"MPJPE vs labels ({unit})", f"NMPJPE vs labels ({unit})", f"PMPJPE vs labels ({unit})",
                f"view consistency ({unit})"] + [f"mPSS@{k} vs labels (%)" for k in ks] + ["poses"]
        rows = []
        for name, m in models.items():
            rows.append([name, _f(m.get("labels_mpjpe")), _f(m.get("labels_nmpjpe")), _f(m.get("labels_pmpjpe")),
                         _f(m.get("view_consistency"))] + [_f(100 * float(m.get(f"mpss_k{k}", np.nan))) for k in ks]
                        + [str(m.get("n_poses", "–"))])
        md += [f"**Models** on {result.get('frames', 'the evaluated frames')}. View consistency: mean over view pairs "
               "of the MPJPE between one instant's predictions turned into the rig's world orientation. mPSS: "
               f"clusters of {result.get('reference', 'the PSS reference')}.", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]
    if result.get("note"):
        md += [result["note"], ""]
    return md
