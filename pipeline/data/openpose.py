"""OpenPose and COCO keypoint files: one view's 2D keypoints, mapped onto the 17 joints.

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

Several people in a frame: `select_people` keeps one per frame (the choices are the
detector plug-in's `person` key, pipeline/detectors/openpose.py).

Bad files: a damaged per-frame file (not UTF-8, not JSON, not an object with a `people` list,
a person whose `pose_keypoints_2d` is not a flat list of numbers of length 3k, or whose point
count differs from the folder's layout) is read as a missing frame and named in a warning:
OpenPose writes each frame independently, so one bad file says nothing about the others, and a
missing frame is what labelling already handles. More than half of a folder damaged is an
error (the folder is not OpenPose output of this layout). Views of different layouts are
refused (a COCO "head" is not a BODY_25B head). Points more than half an image outside the
image are set to NaN and counted (`outside_image`).
"""
from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..joints import J, JOINTS


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


def _numbers_from_names(names: list[str], where) -> list[int]:
    """Frame numbers of per-frame files: the last integer of each name when those are unique,
    else the first position (counting from the end) whose integers are unique; sorted order
    when no name holds a number. ValueError naming the files otherwise (a stray or duplicated
    file would shift every frame after it)."""
    ints = [re.findall(r"\d+", Path(n).stem) for n in names]
    if not any(ints):
        return list(range(len(names)))
    bare = [n for n, i in zip(names, ints) if not i]
    if bare:
        raise ValueError(f"openpose: {where}: {len(bare)} file name(s) without a frame number, e.g. {bare[:3]}; "
                         "remove or rename them (the frame number is the last integer of the name)")
    for k in range(1, min(len(i) for i in ints) + 1):
        nums = [int(i[-k]) for i in ints]
        if len(set(nums)) == len(nums):
            return nums
    nums = [int(i[-1]) for i in ints]
    seen: dict[int, str] = {}
    for n, name in zip(nums, names):
        if n in seen:
            raise ValueError(f"openpose: {where}: {seen[n]} and {name} have the same frame number {n}; "
                             "keep one file per frame")
        seen[n] = name
    raise AssertionError("unreachable")


def _json_type(x) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null", bool: "boolean"}.get(
        type(x), "number" if isinstance(x, (int, float)) else type(x).__name__)


def _read_openpose_file(path: Path) -> tuple[list[np.ndarray], str | None]:
    """(people [K,3] each, None), or ([], why) when the file is damaged: not UTF-8, not JSON,
    not an object with a 'people' list, or a person whose pose_keypoints_2d is not a flat list
    of numbers whose length is a multiple of 3. A person without body keypoints is skipped."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        return [], f"cannot be read ({e.strerror or e})"
    except UnicodeDecodeError as e:
        return [], f"is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return [], f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
    if not isinstance(data, dict):
        return [], f"holds a JSON {_json_type(data)}, not an OpenPose object with a 'people' list"
    if "people" not in data:
        return [], "has no 'people' key"
    if not isinstance(data["people"], list):
        return [], f"has 'people': {_json_type(data['people'])}, not a list"
    people = []
    for i, p in enumerate(data["people"]):
        if not isinstance(p, dict):
            return [], f"person {i} is a JSON {_json_type(p)}, not an object"
        flat = p.get("pose_keypoints_2d", [])
        if not isinstance(flat, list) or any(isinstance(v, (list, dict, str, bool)) or v is None for v in flat):
            return [], f"person {i}: pose_keypoints_2d is not a flat list of numbers"
        arr = np.asarray(flat, dtype=np.float64)
        if arr.size == 0:
            continue
        if arr.size % 3:
            return [], (f"person {i}: pose_keypoints_2d has {arr.size} values, not a multiple of 3 "
                        "(x, y, confidence per point)")
        people.append(arr.reshape(-1, 3))
    return people, None


def _read_coco(src: Path) -> list[tuple[int, str, list[np.ndarray], str | None]]:
    try:
        data = json.loads(src.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"openpose: cannot read {src}: {e}") from e
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise ValueError(f"openpose: {src} is neither a folder of OpenPose files nor a COCO keypoint file "
                         "(an object with 'images' and 'annotations')")
    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise ValueError(f"openpose: {src}: 'images' and 'annotations' must be lists")
    try:
        images = sorted(data["images"], key=lambda im: im["id"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"openpose: {src}: every entry of 'images' needs an 'id' ({e})") from e
    numbers = _numbers_from_names([str(im.get("file_name", "")) or f"image{k}" for k, im in enumerate(images)], src) \
        if all(im.get("file_name") for im in images) else list(range(len(images)))
    by_id = {im["id"]: n for im, n in zip(images, numbers)}
    out: dict[int, list[np.ndarray]] = {n: [] for n in numbers}
    for k, a in enumerate(data["annotations"]):
        try:
            kp = np.asarray(a.get("keypoints", []), dtype=np.float64)
            score = float(a.get("score", 1.0))
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"openpose: {src}: annotation {k} is not an object with numeric 'keypoints' ({e})") from e
        if kp.ndim != 1 or kp.size % 3:
            raise ValueError(f"openpose: {src}: annotation {k} has {kp.size} keypoint values, not a multiple of 3")
        kp = kp.reshape(-1, 3)
        if a.get("image_id") in by_id and kp.size:
            # COCO visibility 0 means not labelled; 1/2 labelled: use the score if given
            conf = np.where(kp[:, 2] > 0, score, 0.0)
            out[by_id[a["image_id"]]].append(np.column_stack([kp[:, :2], conf]))
    return [(n, src.name, out[n], None) for n in numbers]


def _read_source(src: Path) -> list[tuple[int, str, list[np.ndarray], str | None]]:
    """[(frame number, file name, people [K,3] raw (zero confidence = missing), damage or None)]
    from a folder of OpenPose files or a COCO file, sorted by frame number."""
    if src.is_dir():
        files = sorted(src.glob("*.json"))
        if not files:
            raise ValueError(f"openpose: no .json files in {src}")
        numbers = _numbers_from_names([f.name for f in files], src)
        rows = [(n, f.name, *_read_openpose_file(f)) for n, f in zip(numbers, files)]
        return sorted(rows, key=lambda r: r[0])
    if src.is_file():
        return sorted(_read_coco(src), key=lambda r: r[0])
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


@dataclass(frozen=True)
class ViewKeypoints:
    """One view's keypoints as read from its JSON source.

    numbers [N] int64 frame numbers (one per file, damaged files included); kp [N,17,3];
    raw [N,K,3] the chosen person in the file's own layout (K = 0 when nobody was seen in the
    whole source); layout (None when nobody was seen); people [N] int number of people in each
    file (-1: damaged file); damaged {frame number: "<file> <what is wrong>"}; everyone
    [N,M,17,3] every person of each file in the file's order (the k-th person with body
    keypoints; NaN padding up to M, the most people in one file of the source); chosen [N]
    int, the chosen person's index in its file (its row of `everyone`; -1 where none)."""
    source: str
    numbers: np.ndarray
    kp: np.ndarray
    raw: np.ndarray
    layout: str | None
    people: np.ndarray
    damaged: dict
    everyone: np.ndarray | None = None
    chosen: np.ndarray | None = None


# A damaged file is read as a missing frame (one bad frame should not stop a long recording);
# when more than this share of a source's files are damaged the source itself is wrong
# (another format, not OpenPose output): an error.
MAX_DAMAGED_SHARE = 0.5


def _signature(src: Path) -> tuple:
    """What identifies a source's content cheaply (names, sizes, mtimes): the cache key, so an
    edited file is read again in a long-lived process."""
    files = sorted(src.glob("*.json")) if src.is_dir() else [src] if src.exists() else []
    return tuple((f.name, st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])


def read_view(src, fmt: str = "auto", person="largest", min_conf: float = 0.05) -> ViewKeypoints:
    """Read one view's keypoints (folder of OpenPose files or COCO file); see ViewKeypoints.
    ValueError naming the source for a missing source, an unknown layout, or when more than
    half of its files are damaged (naming the first); fewer damaged files are listed in
    `damaged` (their frames are NaN)."""
    p = Path(src).resolve()
    return _load_cached(str(p), fmt, person, float(min_conf), _signature(p))


@functools.lru_cache(maxsize=32)
def _load_cached(src: str, fmt: str, person, min_conf: float, signature: tuple) -> ViewKeypoints:
    rows = _read_source(Path(src))
    numbers = np.array([r[0] for r in rows], dtype=np.int64)
    damaged = {r[0]: f"{Path(src) / r[1]} {r[3]}" for r in rows if r[3] is not None}
    frames = []
    for _, _, people, why in rows:
        clean = []
        for q in people:
            q = q.copy()
            # OpenPose writes (0, 0, 0) for missing points; non-finite values are missing too
            q[~np.all(np.isfinite(q), axis=1) | (q[:, 2] < max(min_conf, 1e-12))] = np.nan
            clean.append(q)
        frames.append(clean)
    if fmt != "auto" and fmt not in LAYOUTS:
        raise ValueError(f"openpose: unknown format {fmt!r}; choose auto, {', '.join(LAYOUTS)}")
    counts = Counter(q.shape[0] for people in frames for q in people)
    layout = fmt if fmt != "auto" else None
    if layout is None and counts:
        K = counts.most_common(1)[0][0]
        sample = [q for people in frames for q in people if q.shape[0] == K][:200]
        try:
            layout = guess_layout(sample)
        except ValueError as e:
            raise ValueError(f"openpose: {src}: {e}") from None
    if layout is not None:
        K = len(LAYOUTS[layout])
        for i, (n, name, people, why) in enumerate(rows):
            bad = [j for j, q in enumerate(frames[i]) if q.shape[0] != K]
            if why is None and bad:
                damaged[n] = (f"{Path(src) / name} person {bad[0]} has {frames[i][bad[0]].shape[0]} points; "
                              f"the folder's layout {layout} has {K}")
    if len(damaged) > MAX_DAMAGED_SHARE * len(rows):
        first = damaged[min(damaged)]
        raise ValueError(f"openpose: cannot read {src}: {len(damaged)} of {len(rows)} keypoint files are damaged, e.g. {first}; "
                         "fix or remove them (check the format setting); a few damaged files are read as missing frames")
    people_n = np.array([-1 if n in damaged else len(f) for n, f in zip(numbers, frames)], dtype=np.int64)
    frames = [[] if n in damaged else f for n, f in zip(numbers, frames)]
    chosen = select_people(frames, person)
    names = LAYOUTS[layout] if layout is not None else ()
    raw = np.full((len(numbers), len(names), 3), np.nan)
    which = np.full(len(numbers), -1, np.int64)
    for i, q in enumerate(chosen):
        if q is not None:
            raw[i] = q
            which[i] = next(m for m, p in enumerate(frames[i]) if p is q)
    kp = to_joints17(raw, names) if layout is not None else np.full((len(numbers), J, 3), np.nan)
    M = max((len(f) for f in frames), default=0)
    allraw = np.full((len(numbers), max(M, 1), len(names), 3), np.nan)
    for i, ps in enumerate(frames):
        for m, q in enumerate(ps):
            allraw[i, m] = q
    everyone = to_joints17(allraw, names) if layout is not None else np.full((len(numbers), 1, J, 3), np.nan)
    return ViewKeypoints(src, numbers, kp, raw, layout, people_n, damaged, everyone, which)


def load_keypoints(src, fmt: str = "auto", person="largest", min_conf: float = 0.05,
                   raw: bool = False) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Read one view's keypoints. Returns (frame numbers [N] int64, keypoints [N,17,3], layout);
    raw=True: the chosen person's points in the file's own layout [N,K,3] (LAYOUTS[layout]
    names them) instead of the 17 joints, e.g. to calibrate a rig with the feet and face too.
    Damaged files give NaN frames (read_view lists them)."""
    v = read_view(src, fmt, person, min_conf)
    return v.numbers.copy(), (v.raw if raw else v.kp).copy(), v.layout


def read_people(sources, fmt: str = "auto", min_conf: float = 0.05, offsets=None):
    """Every person of every view, aligned by frame number. sources: one folder (or COCO
    file) per view; offsets [V] int (pipeline.geometry.sync's convention: view v's frame
    n + offsets[v] shows instant n; default 0). Returns (numbers [F]: the instants, the union of
    the views' frame numbers after shifting; kp [F,V,M,17,3], NaN where a view has no file or
    fewer people; views [V] ViewKeypoints). ValueError as read_view, or when layouts differ."""
    views = [read_view(s, fmt, "largest", min_conf) for s in sources]
    check_layouts(views)
    V = len(views)
    off = np.zeros(V, np.int64) if offsets is None else np.asarray(offsets, np.int64).reshape(V)
    shifted = [v.numbers - o for v, o in zip(views, off)]
    numbers = np.unique(np.concatenate(shifted)) if V else np.zeros(0, np.int64)
    M = max(v.everyone.shape[1] for v in views) if V else 1
    kp = np.full((len(numbers), V, M, J, 3), np.nan)
    for v, (vk, n) in enumerate(zip(views, shifted)):
        kp[np.searchsorted(numbers, n), v, :vk.everyone.shape[1]] = vk.everyone
    return numbers, kp, views


def check_layouts(views: list[ViewKeypoints]) -> str | None:
    """The one layout of all views (None when nobody is seen anywhere); ValueError naming the
    folders and their layouts when they differ (a COCO 'head' is not a BODY_25B head)."""
    found = {v.source: v.layout for v in views if v.layout is not None}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{Path(s).name} ({lay})" for s, lay in found.items())
        raise ValueError(f"openpose: the views' keypoint layouts differ: {listed}; every view must come from the "
                         "same detector and model (set format, or re-run the detector on the odd views)")
    return next(iter(found.values()), None)


def outside_image(kp: np.ndarray, size: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """Points far outside their image: kp [...,J,2|3], size [...,2] (w, h) -> bool [...,J];
    True beyond `margin` image sizes from the image (no detector places a point there)."""
    xy = np.asarray(kp, dtype=np.float64)[..., :2]
    s = np.asarray(size, dtype=np.float64)[..., None, :]
    with np.errstate(invalid="ignore"):
        return np.any((xy < -margin * s) | (xy > (1 + margin) * s), axis=-1)
