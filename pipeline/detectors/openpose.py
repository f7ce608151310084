"""Import 2D keypoints from OpenPose or COCO JSON files: any external detector enters here.

Sources (one per view):
- a folder of OpenPose per-frame files (`{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}`),
  one file per frame, the frame number being the last integer in the file name
  (`cam01.0012.json`, `video_000000000012_keypoints.json`);
- a COCO keypoint file (`{"images": [...], "annotations": [{"image_id", "keypoints"}]}`), the
  frame number being the last integer in each image's `file_name` (else its position).

Layouts, mapped onto the 17 joints of pipeline/joints.py (all three share these rules):

| joint      | BODY_25B                 | BODY_25                 | COCO-17                 |
|------------|--------------------------|-------------------------|-------------------------|
| pelvis     | mid(LHip, RHip)          | mid(LHip, RHip)         | mid(left_hip, right_hip)|
| hips, knees, ankles, shoulders, elbows, wrists | same names | same names | same names   |
| spine      | mean(hips, shoulders)    | mean(hips, shoulders)   | mean(hips, shoulders)   |
| thorax     | mid(LShoulder, RShoulder)| mid(LShoulder, RShoulder)| mid(shoulders)         |
| neck       | Nose                     | Nose                    | nose                    |
| head       | HeadTop                  | mid(LEar, REar)         | mid(left_ear, right_ear)|

The pelvis and thorax are midpoints (not BODY_25's MidHip/Neck) so that every layout gives
the same physical points. "head" is the head top only where the layout has one; otherwise
the mid-ear point, which is a consistent point across views (what triangulation needs) but
not Human3.6M's head top. A derived joint's confidence is the minimum of its sources'.

Several people in a frame: `person` = "largest" (box of confident keypoints, area x mean
confidence), "track" (largest in the clip's first frame with a person, then the one whose
box overlaps the previous choice most; always replayed from the clip's start, so chunks agree),
"first", or an integer index. A missing file or a frame without a person gives NaN for that
(frame, view) and is counted in the warning and in `context["flags"]["openpose"]`.
"""
from __future__ import annotations

import functools
import json
import re
import warnings
from pathlib import Path

import numpy as np
import zarr

from ..joints import J, JOINTS
from ..registry import with_defaults

DEFAULTS: dict = {
    "format": "auto",       # "auto", "body25b", "body25", "coco17"
    "person": "largest",    # "largest", "track", "first", or an integer index
    "min_conf": 0.05,       # keypoints below this confidence become NaN
    "json_dirs": None,      # None: the dataset's attrs["openpose_json"]; else one folder/file per view
}

COCO17 = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
          "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
LAYOUTS: dict[str, tuple[str, ...]] = {
    "coco17": COCO17,
    # OpenPose BODY_25B (openpose_train): COCO-17 then upper neck, head top and feet
    "body25b": COCO17 + ("upper_neck", "head_top", "l_big_toe", "l_small_toe", "l_heel",
                         "r_big_toe", "r_small_toe", "r_heel"),
    # OpenPose BODY_25 (the default model)
    "body25": ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
               "mid_hip", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye",
               "r_ear", "l_ear", "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel"),
}

# target joint -> alternatives (the first whose names all exist in the layout wins); each
# alternative is averaged
_HIPS, _SHOULDERS = ("l_hip", "r_hip"), ("l_shoulder", "r_shoulder")
RULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "pelvis": (_HIPS,),
    "spine": (_HIPS + _SHOULDERS,),
    "thorax": (_SHOULDERS,),
    "neck": (("nose",),),
    "head": (("head_top",), ("l_ear", "r_ear"), ("l_eye", "r_eye")),
}


def mapping_for(names: tuple[str, ...]) -> list[list[int]]:
    """For each of the 17 joints, the indices (into `names`) averaged to make it."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for joint in JOINTS:
        for alt in RULES.get(joint, ((joint,),)):
            if all(n in index for n in alt):
                out.append([index[n] for n in alt])
                break
        else:
            raise ValueError(f"keypoint layout lacks the points needed for joint {joint!r}")
    return out


def map_points(P: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Points P [...,K,D] (2D or 3D, NaN missing) in layout `names` -> [...,17,D] by the rules
    above; an averaged joint is NaN unless all its sources are present."""
    P = np.asarray(P, dtype=np.float64)
    if P.shape[-2] != len(names):
        raise ValueError(f"expected [...,{len(names)},D] points for this layout, got {P.shape}")
    return np.stack([P[..., src, :].mean(axis=-2) for src in mapping_for(names)], axis=-2)


def to_joints17(kp: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Source keypoints kp [...,K,3] (x, y, conf; NaN missing) in layout `names` -> [...,17,3].

    Averaged joints are NaN unless every source is present; confidence = min of sources.
    """
    kp = np.asarray(kp, dtype=np.float64)
    if kp.shape[-2] != len(names) or kp.shape[-1] != 3:
        raise ValueError(f"expected keypoints [...,{len(names)},3] for this layout, got {kp.shape}")
    xy = map_points(kp[..., :2], names)
    conf = np.stack([kp[..., src, 2].min(axis=-1) for src in mapping_for(names)], axis=-1)
    out = np.concatenate([xy, conf[..., None]], axis=-1)
    out[~np.all(np.isfinite(out), axis=-1)] = np.nan
    return out


def guess_layout(people: list[np.ndarray]) -> str:
    """Tell BODY_25 from BODY_25B by where point 8 lies: BODY_25's MidHip is the midpoint of
    points 9 and 12 (its hips); in BODY_25B point 8 is an elbow. people: arrays [K,3]."""
    K = {p.shape[0] for p in people}
    if K == {17}:
        return "coco17"
    if K != {25}:
        raise ValueError(f"cannot guess the keypoint layout from {sorted(K)} points per person; "
                         "set format to body25b, body25 or coco17")
    d = []
    for p in people:
        xy = np.where(p[:, 2:3] > 0, p[:, :2], np.nan)
        span = np.nanmax(xy, axis=0) - np.nanmin(xy, axis=0) if np.isfinite(xy).any() else [np.nan]
        d.append(np.linalg.norm(xy[8] - (xy[9] + xy[12]) / 2) / max(np.nanmax(span), 1e-9))
    med = np.nanmedian(d) if np.isfinite(d).any() else np.nan
    if not np.isfinite(med):
        raise ValueError("cannot guess the keypoint layout (no person with hips and point 8); set format")
    return "body25" if med < 0.05 else "body25b"


def _frame_number(name: str) -> int | None:
    nums = re.findall(r"\d+", Path(name).stem)
    return int(nums[-1]) if nums else None


def _read_openpose_file(path: Path) -> list[np.ndarray]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"openpose: cannot read {path}: {e}") from e
    people = []
    for p in data.get("people", []):
        flat = np.asarray(p.get("pose_keypoints_2d", []), dtype=np.float64)
        if flat.size == 0 or flat.size % 3:
            continue
        people.append(flat.reshape(-1, 3))
    return people


def _read_source(src: Path) -> dict[int, list[np.ndarray]]:
    """frame number -> people [K,3] (raw, zero confidence = missing) from a folder or a COCO file."""
    if src.is_dir():
        files = sorted(src.glob("*.json"))
        if not files:
            raise ValueError(f"openpose: no .json files in {src}")
        numbers = [_frame_number(f.name) for f in files]
        if None in numbers or len(set(numbers)) != len(numbers):
            numbers = list(range(len(files)))       # no usable numbers: sorted order
        return {n: _read_openpose_file(f) for n, f in zip(numbers, files)}
    if src.is_file():
        data = json.loads(src.read_text())
        if "annotations" not in data or "images" not in data:
            raise ValueError(f"openpose: {src} is neither a folder of OpenPose files nor a COCO keypoint file")
        images = sorted(data["images"], key=lambda im: im["id"])
        numbers = [_frame_number(im.get("file_name", "")) for im in images]
        if None in numbers or len(set(numbers)) != len(numbers):
            numbers = list(range(len(images)))
        by_id = {im["id"]: n for im, n in zip(images, numbers)}
        out: dict[int, list[np.ndarray]] = {n: [] for n in numbers}
        for a in data["annotations"]:
            kp = np.asarray(a.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
            if a.get("image_id") in by_id and kp.size:
                # COCO visibility 0 means not labelled; 1/2 labelled: use the score if given
                conf = np.where(kp[:, 2] > 0, float(a.get("score", 1.0)), 0.0)
                out[by_id[a["image_id"]]].append(np.column_stack([kp[:, :2], conf]))
        return out
    raise ValueError(f"openpose: keypoint source {src} does not exist")


def _box(p: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of a person's finite keypoints; NaN if none."""
    ok = np.all(np.isfinite(p[:, :2]), axis=1)
    if not ok.any():
        return np.full(4, np.nan)
    return np.concatenate([p[ok, :2].min(0), p[ok, :2].max(0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _size_score(p: np.ndarray) -> float:
    b = _box(p)
    if not np.all(np.isfinite(b)):
        return -1.0
    return float((b[2] - b[0]) * (b[3] - b[1]) * np.nanmean(p[:, 2]))


def select_people(frames: list[list[np.ndarray]], person) -> list[np.ndarray | None]:
    """One person [K,3] (or None) per frame. frames: per frame the candidates (missing = NaN)."""
    out: list[np.ndarray | None] = []
    prev = None
    for people in frames:
        if not people:
            out.append(None)
            continue
        if isinstance(person, (int, np.integer)) and not isinstance(person, bool):
            out.append(people[person] if person < len(people) else None)
            continue
        if person == "first":
            out.append(people[0])
            continue
        if person not in ("largest", "track"):
            raise ValueError(f"openpose: person must be 'largest', 'track', 'first' or an int, got {person!r}")
        best = max(range(len(people)), key=lambda i: _size_score(people[i]))
        if person == "track" and prev is not None:
            ious = [_iou(prev, _box(p)) if np.all(np.isfinite(_box(p))) else 0.0 for p in people]
            if max(ious) > 0.1:
                best = int(np.argmax(ious))
        chosen = people[best]
        if np.all(np.isfinite(_box(chosen))):
            prev = _box(chosen)
        out.append(chosen)
    return out


@functools.lru_cache(maxsize=32)
def _load_cached(src: str, fmt: str, person, min_conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    raw = _read_source(Path(src))
    numbers = np.array(sorted(raw), dtype=np.int64)
    frames = []
    for n in numbers:
        people = []
        for p in raw[int(n)]:
            p = p.copy()
            p[p[:, 2] < max(min_conf, 1e-12)] = np.nan   # OpenPose writes (0, 0, 0) for missing points
            people.append(p)
        frames.append(people)
    layout = fmt
    if fmt == "auto":
        sample = [p for people in frames for p in people][:200]
        layout = guess_layout(sample) if sample else "coco17"
    if layout not in LAYOUTS:
        raise ValueError(f"openpose: unknown format {fmt!r}; choose auto, {', '.join(LAYOUTS)}")
    names = LAYOUTS[layout]
    for people in frames:
        for p in people:
            if p.shape[0] != len(names):
                raise ValueError(f"openpose: {src} has a person with {p.shape[0]} points; layout {layout} has {len(names)}")
    chosen = select_people(frames, person)
    raw = np.full((len(numbers), len(names), 3), np.nan)
    for i, p in enumerate(chosen):
        if p is not None:
            raw[i] = p
    return numbers, to_joints17(raw, names), raw, layout


def load_keypoints(src, fmt: str = "auto", person="largest", min_conf: float = 0.05,
                   raw: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Read one view's keypoints. Returns (frame numbers [N] int64, keypoints [N,17,3], layout);
    raw=True: the chosen person's points in the file's own layout [N,K,3] (LAYOUTS[layout]
    names them) instead of the 17 joints, e.g. to calibrate a rig with the feet and face too."""
    numbers, kp, raw_kp, layout = _load_cached(str(Path(src).resolve()), fmt, person, float(min_conf))
    return numbers.copy(), (raw_kp if raw else kp).copy(), layout


def _sources(cfg: dict, dataset: zarr.Group) -> dict[int, list[str]]:
    """clip index -> one source per view."""
    src = cfg["json_dirs"] if cfg["json_dirs"] is not None else dataset.attrs.get("openpose_json")
    if src is None:
        raise ValueError("openpose: no keypoint files: set json_dirs or build the dataset with attrs['openpose_json']")
    clips = list(dataset.attrs.get("clips", []))
    if isinstance(src, dict):
        missing = [c for c in clips if c not in src]
        if missing:
            raise ValueError(f"openpose: no keypoint folders for clips {missing}")
        return {i: list(src[c]) for i, c in enumerate(clips)}
    if isinstance(src, (str, Path)):
        src = [src]
    return {i: list(src) for i in range(max(len(clips), 1))}


def detect(cfg: dict, dataset: zarr.Group, frames: slice, context: dict) -> np.ndarray:
    """keypoints2d [f,V,J,3] of the store's `frames`, read from the JSON files."""
    c = with_defaults(cfg, DEFAULTS, "openpose detector")
    F = dataset["frame_index"].shape[0]
    start, stop, step = frames.indices(F)
    ids = np.arange(start, stop, step)
    frame_index = np.asarray(dataset["frame_index"][:])[ids]
    clip = np.asarray(dataset["clip"][:])[ids] if "clip" in dataset else np.zeros(len(ids), np.int64)
    V = dataset["K"].shape[1]
    sources = _sources(c, dataset)
    out = np.full((len(ids), V, J, 3), np.nan, dtype=np.float32)
    missing_file = no_person = 0
    for ci in np.unique(clip):
        views = sources[int(ci)]
        if len(views) != V:
            raise ValueError(f"openpose: {len(views)} keypoint sources for {V} views")
        rows = np.flatnonzero(clip == ci)
        for v, src in enumerate(views):
            numbers, kp, _ = load_keypoints(src, c["format"], c["person"], c["min_conf"])
            pos = np.searchsorted(numbers, frame_index[rows])
            pos = np.clip(pos, 0, max(len(numbers) - 1, 0))
            found = (len(numbers) > 0) & (numbers[pos] == frame_index[rows])
            missing_file += int((~found).sum())
            vals = kp[pos[found]]
            no_person += int(np.all(np.isnan(vals[..., 0]), axis=-1).sum())
            out[rows[found], v] = vals
    if missing_file or no_person:
        context.setdefault("flags", {})["openpose"] = {"missing_file": missing_file, "no_person": no_person}
        warnings.warn(f"openpose: {missing_file} (frame, view) without a file and {no_person} without a person: NaN",
                      stacklevel=2)
    return out
