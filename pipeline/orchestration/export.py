"""`epipose export`: labels or predictions as world trajectories in millimetres, upright, as
TRC (OpenSim, Pose2Sim) and CSV.

What is exported: a label store's labels, or an evaluation store's predictions of one model
(`SS`, `SS + RU`, `FS`), each frame placed in the world of the cameras the labels were made
with (pipeline/geometry/label_world.py): the root triangulated again from the 2D keypoints,
the root-relative pose turned out of each camera's frame (predictions: the mean over views)
and scaled back to the rig's unit (labels: each frame's own scale; predictions: the median
label scale of their rig, one number for the subject). The world (below) is always fitted to
the labels, so a model's predictions land in the same world as the labels it learned from.

Where the world comes from, in this order:
- `height_mm` or `camera_distance` given: the rig's own frame made metric and upright by
  pipeline/geometry/world.py (`metric_scale`, `to_world`: z up, the origin on the floor below
  the subject, x along camera 0's horizontal view);
- else the dataset's calibration when every camera of the rig is placed in it: `known`
  labels are already in its world; a rig estimated from the people is moved onto it by the
  similarity of the camera centres (`align_similarity`); up is the dataset's `world_up`
  attribute, else the coordinate axis nearest the subject's body axis;
- else a ValueError that says to give the subject's height or a camera distance.

Files, in `out_dir`: `<what>[_<clip>].trc` (OpenSim's Y up, metres by default, frames
numbered from the clip's first frame + 1 as Pose2Sim numbers them, NaN where a frame was not
labelled), `<what>[_<clip>].csv` (the world as described, mm, z up unless `export.json`
says otherwise) and `export.json` (the source store, the world's origin and unit, the up
vector, the frames written and labelled). Poses [F,J,3] in the 17-joint order of
pipeline/joints.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..camera import Cameras
from ..data import trc
from ..geometry import label_world, world
from .artifacts import keypoints, model_key
from .store import open_group, read_provenance

__all__ = ["MODELS", "export_store", "world_of_rig"]

MODELS = ("SS + RU", "SS", "FS")


def _input(prov: dict, name: str, location: str):
    loc = (prov.get("inputs") or {}).get(name, {}).get("location")
    if not loc:
        raise ValueError(f"export: {location} names no `{name}` input in its provenance; was it written by the pipeline?")
    return open_group(loc, "r")


def _nearest_axis(v: np.ndarray) -> np.ndarray:
    k = int(np.argmax(np.abs(v)))
    out = np.zeros(3)
    out[k] = np.sign(v[k])
    return out


def world_of_rig(X: np.ndarray, cams: Cameras, ds_cams: Cameras | None, known: bool, world_up=None,
                 height_mm: float | None = None, camera_distance=None) -> dict:
    """Poses X [F,J,3] in the rig of `cams` (its unit) -> {"X" [F,J,3] mm, "up" [3], "world"
    (a sentence: where the world and its scale come from), "s", "Q" [3,3], "d" [3]: the
    similarity Xw = s Q X + d applied}. ds_cams: the dataset's calibration of the same cameras
    (None or unplaced when it has none); known: X is already in it (mm)."""
    if height_mm is not None or camera_distance is not None:
        Rf = cams.R
        s, src = world.metric_scale(Rf, cams.t, X, height_mm=height_mm, distance=camera_distance)
        w = world.to_world(Rf, cams.t, X, s)
        return {"X": w["X"], "up": np.array([0.0, 0.0, 1.0]), "s": s, "Q": w["A"], "d": s * w["b"],
                "world": f"upright from the subject (up from the {w['source']}; origin on the floor below the "
                         f"subject; x along camera 0's view), scale from {src}"}
    if ds_cams is None or not ds_cams.has_extrinsics:
        raise ValueError("export: the dataset has no calibration to place the poses in; give the subject's height "
                         "(--height MM) or a known distance between two cameras (--camera-distance A B MM) "
                         "for millimetres and an upright world")
    if known:
        Xw, how, s, Q, d = X, "the dataset's calibration (the labels were made with it)", 1.0, np.eye(3), np.zeros(3)
    else:
        ok = np.all(np.isfinite(cams.R), axis=(1, 2))
        s, Q, d = world.align_similarity(cams.centers, np.where(ok[:, None], ds_cams.centers, np.nan), cams.R, ds_cams.R)
        Xw = s * np.einsum("ab,fjb->fja", Q, X) + d
        how = ("the dataset's calibration: the estimated rig moved onto it by the similarity of the camera "
               "centres (scale, rotation, offset)")
    if world_up is not None and np.shape(world_up) == (3,):
        up = np.asarray(world_up, dtype=np.float64)
        how += "; up from the dataset (world_up)"
    else:
        up = _nearest_axis(world.up_and_floor(Xw)["up"])
        how += "; up: the calibration's axis nearest the subject's body axis"
    return {"X": Xw, "up": up / np.linalg.norm(up), "world": how, "s": s, "Q": Q, "d": d}


def _label_cams(ds, lab, mode: str, g: int) -> Cameras:
    if mode == "known":
        return Cameras.from_store(ds, g)
    if mode == "rig" and "R_est" in lab:
        return Cameras.from_store(lab, g, "_est")
    raise ValueError(f"export: labels of mode {mode!r} hold no rig to place them in (a relative pose per frame); "
                     "label with label.mode=rig (or known, with a calibration) to export trajectories")


def _source(location: str, model: str | None):
    """-> (what, label store, dataset, detect2d, poses [f,V,J,3] or None for labels, frames [f], units)."""
    g = open_group(location, "r")
    prov = read_provenance(location) or {}
    stage = prov.get("stage")
    if stage == "label":
        if model is not None:
            raise ValueError("export: --model is for an evaluation store; a label store exports its labels")
        return "labels", g, _input(prov, "dataset", location), _input(prov, "detect2d", location), None, None, None
    if stage != "evaluate":
        raise ValueError(f"export: {location} is a {stage or 'unknown'} store; give a label store "
                         "(…/label/<mode>-<fingerprint>) or an evaluation store (…/evaluate/metrics-<fingerprint>)")
    have = [m for m in MODELS if f"pred_{model_key(m)}" in g]
    if model is None:
        if not have:
            raise ValueError(f"export: {location} holds no predictions")
        model = have[0]
    if model not in have:
        raise ValueError(f"export: {location} has no predictions of {model!r}; it has {', '.join(have) or 'none'}")
    arr = g[f"pred_{model_key(model)}"]
    frames = np.asarray(g["frame"][:], dtype=np.int64)
    return (model, _input(prov, "label", location), _input(prov, "dataset", location),
            _input(prov, "detect2d", location), np.asarray(arr[:], dtype=np.float64), frames,
            str(arr.attrs.get("units", "bones")))


def export_store(location: str, out_dir, model: str | None = None, height_mm: float | None = None,
                 camera_distance=None, units: str = "m") -> dict:
    """Write the TRC, CSV and export.json of a label or evaluation store into out_dir (module
    docstring). -> {"files": [Path], "frames": int, "labelled": int, "world": str}."""
    if units not in trc.UNITS:
        raise ValueError(f"export: units must be one of {sorted(trc.UNITS)}, got {units!r}")
    what, lab, ds, det, pred, pframes, punits = _source(str(location), model)
    mode = dict(lab.attrs.get("provenance", {})).get("config", {}).get("section", {}).get("mode", "rig")
    n = int(ds["rig"].shape[0])
    rig = np.asarray(ds["rig"][:], dtype=np.int64)
    kp = keypoints(det)
    scale = np.asarray(lab["scale"][:], dtype=np.float64)
    frame_ok = np.asarray(lab["frame_ok"][:], dtype=bool)
    scale = np.where(frame_ok, scale, np.nan)
    if pred is not None and punits == "mm" and mode != "known":
        raise ValueError(f"export: {what}'s predictions are in mm but the labels' rig has no metric unit; "
                         "export the SS models, or label in known mode")
    labels = np.asarray(lab["labels_cam"][:], dtype=np.float64)
    valid_all = np.asarray(lab["valid"][:], bool) & frame_ok[:, None, None]
    Xall = np.full((n, kp.shape[2], 3), np.nan)
    up_of, how_of = {}, {}
    for gi in np.unique(rig):
        sel = np.flatnonzero(rig == gi)
        cams = _label_cams(ds, lab, mode, int(gi))
        root = label_world.root_positions(kp[sel], cams)
        L = label_world.world_poses(labels[sel], valid_all[sel], scale[sel], cams.R, root)
        if not np.isfinite(L).any():
            continue
        try:
            ds_cams = Cameras.from_store(ds, int(gi))
        except ValueError:
            ds_cams = None
        w = world_of_rig(L, cams, ds_cams, mode == "known", ds.attrs.get("world_up"), height_mm, camera_distance)
        if pred is None:
            Xall[sel] = w["X"]
        else:
            pos = np.full(n, -1)
            pos[pframes] = np.arange(len(pframes))
            P = np.full((len(sel), *pred.shape[1:]), np.nan)
            have = pos[sel] >= 0
            P[have] = pred[pos[sel][have]]
            s = 1.0 if punits == "mm" else float(np.nanmedian(scale[sel])) if np.isfinite(scale[sel]).any() else np.nan
            X = label_world.views_to_world(P, s, cams.R, root)
            Xall[sel] = w["s"] * np.einsum("ab,fjb->fja", w["Q"], X) + w["d"]
        up_of[int(gi)], how_of[int(gi)] = w["up"], w["world"]
    if not up_of:
        raise ValueError(f"export: no frame of {location} could be placed in the world (no labelled frame, or no "
                         "frame where two placed cameras see the root joint)")
    return _write(what, Xall, ds, rig, up_of, how_of, Path(out_dir), units, str(location), pframes)


def _write(what, Xall, ds, rig, up_of, how_of, out: Path, units: str, location: str, pframes) -> dict:
    clips = list(ds.attrs.get("clips") or ["clip"])
    clip = np.asarray(ds["clip"][:], dtype=np.int64)
    fidx = np.asarray(ds["frame_index"][:], dtype=np.int64)
    fps = float(ds.attrs.get("fps") or 0) or None
    stem = model_key(what)
    files, rows = [], []
    use = np.zeros(len(rig), bool)
    use[np.arange(len(rig)) if pframes is None else pframes] = True
    for c in np.unique(clip[use]):
        sel = np.flatnonzero((clip == c) & use)
        order = sel[np.argsort(fidx[sel])]
        first, last = int(fidx[order[0]]), int(fidx[order[-1]])
        X = np.full((last - first + 1, Xall.shape[1], 3), np.nan)  # a constant rate: gaps stay NaN rows
        X[fidx[order] - first] = Xall[order]
        gi = int(rig[order[0]])
        if gi not in up_of:
            continue
        name = stem if len(np.unique(clip[use])) == 1 else f"{stem}_{clips[c]}"
        files.append(trc.write_trc(out / f"{name}.trc", X, fps or 1.0, units=units, up=up_of[gi], start_frame=first + 1))
        files.append(trc.write_csv(out / f"{name}.csv", X, fps, frame_index=np.arange(first, last + 1)))
        rows.append({"clip": str(clips[c]), "trc": files[-2].name, "csv": files[-1].name, "first_frame": first,
                     "frames": int(len(X)), "placed": int(np.isfinite(X).all(-1).any(-1).sum()),
                     "up": np.round(up_of[gi], 6).tolist(), "world": how_of[gi]})
    meta = {"source": location, "what": what, "units_csv": "mm", "units_trc": units, "fps": fps,
            "trc_axes": "OpenSim: Y up (the world's up), X and Z horizontal", "clips": rows,
            "fps_note": None if fps else "the dataset states no frame rate: TRC times assume 1 frame per second"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(meta, indent=1))
    files.append(out / "export.json")
    return {"files": files, "frames": sum(r["frames"] for r in rows), "labelled": sum(r["placed"] for r in rows),
            "world": "; ".join(sorted({r["world"] for r in rows}))}
