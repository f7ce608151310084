"""Readers and writers of the artifact kinds that more than one stage touches, so that no
stage reads another's zarr keys: the dataset contract's splits, a label store's training
targets, a training output's checkpoint, the PSS reference, the evaluation's predictions."""
from __future__ import annotations

import numpy as np


def split_frames(dataset, split: int) -> np.ndarray:
    """Frame indices of a split (0 train, 1 test) of a dataset store."""
    return np.flatnonzero(np.asarray(dataset["split"][:]) == split)


def image_ok(dataset) -> np.ndarray | None:
    """[F, V] bool: crops that were decoded (None when the store does not say: all were)."""
    return np.asarray(dataset["image_ok"][:], dtype=bool) if "image_ok" in dataset else None


def label_targets(labels) -> tuple[np.ndarray, np.ndarray]:
    """A label store's training targets [F,V,J,3] (mean bones, camera frames) and the mask
    [F,V,J] of joints usable for training (labelled, in a labelled frame, finite)."""
    targets = np.asarray(labels["labels_cam"][:], dtype=np.float32)
    mask = np.asarray(labels["valid"][:], dtype=bool) & np.asarray(labels["frame_ok"][:], dtype=bool)[:, None, None]
    return targets, mask & np.all(np.isfinite(targets), axis=-1)


def label_rows(labels, frames: np.ndarray, known: bool) -> dict:
    """A label store's labels, valid joints and labelled frames at `frames` (mm in `known` mode)."""
    key = "labels_cam_mm" if known and "labels_cam_mm" in labels else "labels_cam"
    return {k: np.asarray(labels[a].get_orthogonal_selection((frames,)))
            for k, a in (("labels", key), ("valid", "valid"), ("frame_ok", "frame_ok"))}


def keypoints(detect2d, frames: np.ndarray | None = None) -> np.ndarray:
    kp = detect2d["keypoints2d"]
    return np.asarray(kp[:] if frames is None else kp.get_orthogonal_selection((frames,)))


def model_key(name: str) -> str:
    """The evaluation's array suffix of a model name: "SS + RU" -> "ss_ru",
    "SS + RU (labels)" -> "ss_ru_labels"."""
    import re
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def model_metrics(evaluation) -> dict:
    """Overall metrics per model of an evaluation store: {model: {metric: value}}; for a dataset
    without 3D ground truth, the figures measured without it (stages/evaluate.py)."""
    out = {name: m["summary"]["overall"] for name, m in dict(evaluation.attrs.get("models", {})).items()}
    if not out:
        out = dict(dict(evaluation.attrs.get("without_ground_truth") or {}).get("models") or {})
    return out


def write_predictions(group, name: str, pred: np.ndarray, units: str) -> str:
    from .arrays import write_arrays
    key = f"pred_{model_key(name)}"
    write_arrays(group, {key: pred.astype(np.float32)})
    group[key].attrs["units"] = units
    return key


def read_predictions(group, name: str):
    return group[f"pred_{model_key(name)}"]
