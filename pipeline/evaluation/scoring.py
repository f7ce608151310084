"""Evaluation of 3D poses against ground truth: the paper's metrics, per action and overall.

Metrics (pipeline/metrics.py does the maths; this module decides what they are applied to):
  mpjpe   mean per-joint position error, mm, after root-centring both poses
  nmpjpe  MPJPE after the least-squares scale alignment of the prediction to the ground truth
  pmpjpe  MPJPE after Procrustes alignment (rotation, translation, scale)
  pck     fraction of joints within `pck_threshold` mm (paper: 150 mm)
  npck    PCK after the scale alignment (as NMPJPE)
  auc     area under the PCK curve, thresholds 0..`pck_threshold` mm
  pss_k   Pose Structure Score against the PSS reference (pipeline/pss.py), k = 50 and 100;
          mPSS@k is its mean

Units: ground truth is in mm, in each camera's frame. Predictions in mm (fully supervised,
or labels with known extrinsics) or in "mean bones" (self-supervised: scale-free labels,
pipeline/labels.py): `units="bones"` multiplies every prediction by ONE global scalar, the
dataset's `mean_bone_mm` attribute (its training subjects' mean bone length), as agreed in
the project's interfaces. NMPJPE, PMPJPE, NPCK and PSS do not depend on that scalar.

Masks: mask [F,V,J] marks ground-truth joints to score (False where the ground truth, or a
label, is unknown). MPJPE and PCK use every masked-in joint; the pose-level metrics that
align or cluster whole poses (NMPJPE, PMPJPE, NPCK, AUC, PSS) are computed only on complete
poses (all joints masked in) and are NaN elsewhere; summaries average what is defined.
A NaN prediction on a masked-in joint is an error (ValueError), not a silent hole.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.contract import ground_truth
from ..joints import J, ROOT, check_joints

METRICS = ("mpjpe", "nmpjpe", "pmpjpe", "pck", "npck", "auc")
# metrics where larger is better (used by the report to pick colours / worst frames)
HIGHER_IS_BETTER = frozenset({"pck", "npck", "auc"} | {f"mpss_k{k}" for k in (50, 100)})


def _validate(pred, gt, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    for name, a in (("predictions", pred), ("ground truth", gt)):
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"{name}: expected [F,V,J,3], got shape {a.shape}")
        check_joints(a, name)
    if pred.shape != gt.shape:
        raise ValueError(f"predictions {pred.shape} and ground truth {gt.shape} differ in shape "
                         "(frames, views or joints)")
    gt_ok = np.all(np.isfinite(gt), axis=-1) & np.all(np.isfinite(gt[..., ROOT:ROOT + 1, :]), axis=-1)
    if mask is None:
        mask = gt_ok
    else:
        mask = np.asarray(mask)
        if mask.shape != pred.shape[:-1]:
            raise ValueError(f"mask: expected shape {pred.shape[:-1]} (F,V,J), got {mask.shape}")
        mask = mask.astype(bool) & gt_ok
    bad = mask & ~np.all(np.isfinite(pred), axis=-1)
    if bad.any():
        f, v, j = np.argwhere(bad)[0]
        raise ValueError(f"predictions contain NaN/inf on {int(bad.sum())} scored joint(s), "
                         f"first at frame {f}, view {v}, joint {j}; mask them out or fix the model")
    return pred, gt, mask


def _rootrel(x: np.ndarray) -> np.ndarray:
    """Subtract the root joint where it is finite (predictions are root-relative already;
    a label whose root is unknown is left as it is, its joints masked out)."""
    r = x[..., ROOT:ROOT + 1, :]
    return x - np.where(np.isfinite(r), r, 0.0)


def per_pose_metrics(pred_mm: np.ndarray, gt_mm: np.ndarray, mask: np.ndarray,
                     pck_threshold: float = 150.0) -> dict[str, np.ndarray]:
    """The metrics of METRICS per pose. pred_mm, gt_mm [N,J,3] root-relative mm, mask [N,J]
    -> {name: float64 [N]} (NaN where undefined: no scored joint, or an incomplete pose for
    the whole-pose metrics)."""
    from . import metrics

    N = len(pred_mm)
    out = {m: np.full(N, np.nan) for m in METRICS}
    any_ok = mask.any(-1)
    full = mask.all(-1)
    if any_ok.any():
        p = np.where(mask[..., None], pred_mm, 0.0)[any_ok]
        g = np.where(mask[..., None], gt_mm, 0.0)[any_ok]
        m = mask[any_ok]
        out["mpjpe"][any_ok] = metrics.mpjpe(p, g, m)
        out["pck"][any_ok] = metrics.pck(p, g, threshold=pck_threshold, mask=m)
    if full.any():
        p, g = pred_mm[full], gt_mm[full]
        out["nmpjpe"][full] = metrics.nmpjpe(p, g)
        out["pmpjpe"][full] = metrics.pmpjpe(p, g)
        out["npck"][full] = metrics.pck(metrics.scale_align(p, g), g, threshold=pck_threshold)
        out["auc"][full] = metrics.auc(p, g, max_threshold=pck_threshold)
    return out


def _summarise(df, cols: list[str]) -> dict:
    """Means of `cols` over df's rows (NaN ignored); mpss_k* from pss_k*; n counts."""
    s = {}
    for c in cols:
        v = df[c].to_numpy(dtype=np.float64)
        name = c.replace("pss_k", "mpss_k") if c.startswith("pss_k") else c
        s[name] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    s["n_poses"] = int(len(df))
    s["n_scored"] = int(df["mpjpe"].notna().sum())
    s["n_complete"] = int(df["complete"].sum())
    return s


def score(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
             actions: Sequence[str] | None = None, *, units: str = "mm",
             mean_bone_mm: float | None = None, reference=None, ks: Sequence[int] = (50, 100),
             pck_threshold: float = 150.0, frame_ids: Sequence[int] | None = None,
             subjects: Sequence[str] | None = None, model: str | None = None) -> tuple[dict, "pd.DataFrame"]:
    """Score predictions against ground truth.

    pred [F,V,J,3]: root-relative, camera frame, in `units` ("mm", or "bones" = mean bone
        lengths, converted to mm with the scalar `mean_bone_mm`).
    gt [F,V,J,3]: camera frame, mm (absolute or root-relative: both are root-centred here).
    mask [F,V,J] bool or None (None = every finite ground-truth joint).
    actions [F] action name per frame (None: all "all"); subjects [F] optional; frame_ids [F]
        the frames' indices in the dataset store (default 0..F-1).
    reference: the PSS reference (pipeline.evaluation.pss.build_reference dict, or its zarr group);
        None skips PSS. ks: the k of the reference used for mPSS@k.

    Returns (summary, per_frame):
      summary = {"overall": {metric: mean, "mpss_k50": ..., "n_poses", "n_scored" (any joint
                             scored), "n_complete" (every joint scored)},
                 "per_action": {action: same}, "action_mean": {metric: mean of per-action means},
                 "units": units, "scale_mm": scalar applied, "pck_threshold": mm, "model": model}
      per_frame: pandas DataFrame, one row per (frame, view): frame (0..F-1), frame_id, view,
        action, [subject], complete, the metrics, and per k: cluster_pred_k, cluster_gt_k, pss_k.
    """
    import pandas as pd

    pred, gt, mask = _validate(pred, gt, mask)
    F, V = pred.shape[:2]
    if units == "mm":
        scale = 1.0
    elif units == "bones":
        if mean_bone_mm is None or not np.isfinite(mean_bone_mm) or mean_bone_mm <= 0:
            raise ValueError("units='bones' needs a positive mean_bone_mm (the dataset store's "
                             f"`mean_bone_mm` attribute), got {mean_bone_mm!r}")
        scale = float(mean_bone_mm)
    else:
        raise ValueError(f"units must be 'mm' or 'bones', got {units!r}")
    if actions is None:
        actions = ["all"] * F
    actions = np.asarray(actions, dtype=object)
    if actions.shape != (F,):
        raise ValueError(f"actions: expected {F} names (one per frame), got shape {actions.shape}")
    frame_ids = np.arange(F) if frame_ids is None else np.asarray(frame_ids)
    if frame_ids.shape != (F,):
        raise ValueError(f"frame_ids: expected shape ({F},), got {frame_ids.shape}")

    p = np.where(mask[..., None], _rootrel(pred * scale), 0.0).reshape(F * V, J, 3)
    g = np.where(mask[..., None], _rootrel(gt), 0.0).reshape(F * V, J, 3)
    m = mask.reshape(F * V, J)
    cols = per_pose_metrics(p, g, m, pck_threshold)
    full = m.all(-1)

    table = {"frame": np.repeat(np.arange(F), V), "frame_id": np.repeat(frame_ids, V),
             "view": np.tile(np.arange(V), F), "action": np.repeat(actions, V)}
    if subjects is not None:
        subjects = np.asarray(subjects, dtype=object)
        if subjects.shape != (F,):
            raise ValueError(f"subjects: expected shape ({F},), got {subjects.shape}")
        table["subject"] = np.repeat(subjects, V)
    table["complete"] = full
    table.update(cols)
    metric_cols = list(METRICS)
    if reference is not None:
        from . import pss as pss_mod

        for k in ks:
            C = pss_mod.centers_of(reference, k)
            cp = np.full(F * V, -1, dtype=np.int64)
            cg = np.full(F * V, -1, dtype=np.int64)
            if full.any():
                cp[full] = pss_mod.assign(p[full], C)
                cg[full] = pss_mod.assign(g[full], C)
            table[f"cluster_pred_k{k}"] = cp
            table[f"cluster_gt_k{k}"] = cg
            table[f"pss_k{k}"] = np.where(full, (cp == cg).astype(np.float64), np.nan)
            metric_cols.append(f"pss_k{k}")
    df = pd.DataFrame(table)
    if model is not None:
        df.insert(0, "model", model)

    per_action = {a: _summarise(d, metric_cols) for a, d in df.groupby("action", sort=True)}
    names = [c.replace("pss_k", "mpss_k") for c in metric_cols]
    action_mean = {n: float(np.nanmean([s[n] for s in per_action.values()])) for n in names} \
        if per_action else {}
    summary = {"overall": _summarise(df, metric_cols), "per_action": per_action,
               "action_mean": action_mean, "units": units, "scale_mm": scale,
               "pck_threshold": float(pck_threshold), "model": model}
    return summary, df


def write_per_frame(df, path: Path) -> Path:
    """Write the per-frame table as Parquet (pyarrow), atomically (temporary name, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    tmp.replace(path)
    return path


def read_per_frame(path: Path):
    """Read a per-frame table written by `write_per_frame` -> pandas DataFrame."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(path)).to_pandas()


def score_dataset(pred: np.ndarray, dataset, frames=None, *, units: str = "mm",
                     reference=None, mask: np.ndarray | None = None, model: str | None = None,
                     **kw) -> tuple[dict, "pd.DataFrame"]:
    """`score` against a dataset store's ground truth (see `ground_truth`); pred [f,V,J,3]
    for `frames`. In units="bones", the store's `mean_bone_mm` attribute is the scale."""
    g = ground_truth(dataset, frames)
    m = g["mask"] if mask is None else np.asarray(mask, dtype=bool) & g["mask"]
    if units == "bones" and g["mean_bone_mm"] is None and "mean_bone_mm" not in kw:
        raise ValueError("units='bones' but the dataset store has no `mean_bone_mm` attribute")
    kw.setdefault("mean_bone_mm", g["mean_bone_mm"])
    return score(pred, g["gt"], m, g["actions"], units=units, reference=reference,
                    frame_ids=g["frame_ids"], subjects=g["subjects"], model=model, **kw)


LABEL_MODES = ("known", "rig", "per-frame")


def label_table(sources: dict, dataset, frames: np.ndarray, label_cfg: dict, trained: tuple[str, str],
                trained_labels: dict, reference, ks, pck_threshold: float, client=None) -> dict:
    """The paper's Table 1 on a dataset: pseudo-labels of `frames` against ground truth, for
    each 2D source (name -> keypoints2d [f,V,J,3] at `frames`) and each labelling mode: with
    extrinsics (`known`, in mm, when the dataset has them) and without (`rig`, `per-frame`,
    in mean bones). The (source, mode) pair `trained` is the label stage's own output, given
    as `trained_labels` ({"labels", "valid", "frame_ok"} at `frames`); the others are
    labelled here with `label_cfg` (the per-frame mode's frames spread over a Dask `client`'s
    workers when one is given). Returns {row name: {"coverage", "summary"}}."""
    from ..geometry import labels as labelling
    from ..camera import Cameras

    rig = np.asarray(dataset["rig"][:])[frames]
    extrinsics = all(Cameras.from_store(dataset, g).has_extrinsics for g in np.unique(rig))
    rows = {}
    for name, kp in sources.items():
        for mode in LABEL_MODES:
            if mode == "known" and not extrinsics:
                continue
            if (name, mode) == tuple(trained):
                out = trained_labels
            else:
                out = {"labels": np.full(kp.shape, np.nan, np.float32), "valid": np.zeros(kp.shape[:3], bool),
                       "frame_ok": np.zeros(len(frames), bool)}
                for g in np.unique(rig):
                    sel = rig == g
                    cams = Cameras.from_store(dataset, g)
                    res = labelling.make_labels(kp[sel], cams if mode == "known" else cams.without_extrinsics(),
                                                {**label_cfg, "mode": mode}, client=client)
                    out["labels"][sel] = res["labels_cam_mm" if mode == "known" else "labels_cam"]
                    out["valid"][sel], out["frame_ok"][sel] = res["valid"], res["frame_ok"]
            ok = np.asarray(out["frame_ok"], dtype=bool)
            mask = np.asarray(out["valid"], dtype=bool) & np.all(np.isfinite(out["labels"]), -1)
            row = {"coverage": float(ok.mean()), "summary": {"overall": {}}}
            if ok.any():
                summary, _ = score_dataset(np.where(mask[ok][..., None], out["labels"][ok], np.nan), dataset,
                                              frames[ok], units="mm" if mode == "known" else "bones",
                                              mask=mask[ok], reference=reference, ks=ks, model="labels",
                                              pck_threshold=pck_threshold)
                row["summary"] = summary
            rows[f"{name} 2D, {mode}" + (" (trained on)" if (name, mode) == tuple(trained) else "")] = row
    return rows
