"""A generic folder of synchronised videos (one per camera), calibration optional.

Layout: `root/*.mp4|*.avi|*.mov|*.mkv` (one file per view, sorted by name, or the names in
cfg["views"]); optionally a calibration: a Pose2Sim TOML (pipeline/data/pose2sim.py reads it)
or a JSON `{"K": [V,3,3], "dist": [V,5], "R": ..., "t": ... (mm)}` (R, t may be absent: the
self-supervised setting). Without any calibration the intrinsics are a guess (focal length
= `focal_guess` x the longer image side, principal point at the centre) and R, t are NaN.

Bad input handled here: views of different resolutions (each view keeps its own size and K),
portrait or sideways videos (OpenCV applies the container's rotation flag; `rotate` turns
views by 90/180/270 degrees clockwise more where the flag is missing, and K, size follow),
videos of unequal length or truncated (a header promising more frames than decode is
warned; the store stops at the shortest decodable length, with a warning), differing frame
rates (warned). Refused with a ValueError naming the file, camera or key: fewer than 2 videos,
an unreadable video, a calibration that cannot be read or whose arrays have the wrong shape,
calibrated image sizes that differ from the videos' (rotated or resized footage), duplicated
cameras and non-finite or non-rotation extrinsics (camera.check_rig), an empty frame range.

Resumable: every array is written with overwrite, so a run killed part-way and started again
on the same group ends identical to an uninterrupted one. `sources(cfg)` lists the files a
build reads (videos, calibration) for the dataset's fingerprint.

The store gets the cameras, frame indices and the video paths (attrs `videos`, `rotate`) so a
detector (pipeline/detectors/mediapipe.py) can read the frames; `keypoints2d_gt` is NaN.

Crops (`images` [F,V,S,S,3], `crop_boxes`, `image_ok`) need a person box, which only a 2D
detector gives: `crops_from` names the detector plug-in whose keypoints place the square
box (`crop_margin` times their extent; a frame where it finds nobody takes the nearest
frame's box). The dataset stage passes `find_people(name, cfg, group, progress) -> [F,V,J,3]`
(this package does not import the detectors) and by default ("auto") names the chain's own
2D detector when it is one that finds people in videos (MediaPipe, OpenPose JSON). With
`crops_from` null no crops are stored: labels and calibration work, no network can train.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import zarr

from tqdm import tqdm

from ..camera import Cameras, check_rig
from ..joints import JOINTS, J
from ..registry import with_defaults
from .calibration import read_toml_calibration

DEFAULTS: dict = {
    "root": None,            # folder of videos (required)
    "views": None,           # file names in view order; None: every video in root, sorted
    "calibration": None,     # None: look for *.toml / calibration.json in root; False: none
    "rotate": None,          # per view 0, 90, 180 or 270 (clockwise), applied after decoding
    "focal_guess": 1.2,      # focal length guess as a multiple of the longer side (no calibration)
    "frames": None,          # [start, stop) frame range; None: all frames of the shortest video
    "fps": None,             # None: read from the first video
    "crop_size": 256,
    "crops_from": "auto",    # detector whose keypoints place the crops; "auto": the chain's detect2d
                             # detector when it finds people in videos; null: no crops
    "crops_detector": {},    # that detector's settings ("auto": detect2d's)
    "crop_margin": 1.3,      # the square crop is this many times the keypoints' extent
    "test_fraction": 0.0,    # the last fraction of frames is the test split
    "subject": "subject",
    "clip": None,            # None: the folder's name
}

# crops need a detector's keypoints: the dataset stage resolves crops_from and passes find_people
CROPS_NEED_DETECTOR = True
BLOCK = 64   # frames per crop block (and per images chunk)
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_ROT = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def video_info(path, check_end: bool = True) -> dict:
    """Width, height (after OpenCV's own rotation), frame count and fps of a video.

    "frames" is the number of frames that decode: the header's count ("header_frames") when
    its last frame reads, else counted by decoding (a truncated file keeps its header's count).
    ValueError naming the file when it cannot be opened or has no readable frame."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path} (missing, not a video, or a codec OpenCV lacks)")
    try:
        ok, frame = cap.read()
        if not ok:
            raise ValueError(f"video {path} has no readable frame")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
        readable = n
        if check_end:
            last_ok = n == 1
            if n > 1:
                cap.set(cv2.CAP_PROP_POS_FRAMES, n - 1)
                last_ok = cap.read()[0]
            if not last_ok:
                readable = _count_frames(path)
        return {"w": frame.shape[1], "h": frame.shape[0], "frames": readable, "header_frames": n, "fps": fps}
    finally:
        cap.release()


def _count_frames(path) -> int:
    """Frames that decode, counted from the start (the slow path, for damaged files)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def warn_truncated(infos: list[dict], paths, what: str) -> None:
    """Warn naming each video whose header promises more frames than decode."""
    for info, p in zip(infos, paths):
        if 0 < info["frames"] < info["header_frames"]:
            warnings.warn(f"{what}: {p}: its header says {info['header_frames']} frames but only {info['frames']} "
                          "decode (truncated or damaged file); the frames after that are not used", stacklevel=3)


def frame_range(frames, what: str) -> tuple[int, int] | None:
    """cfg["frames"] as (start, stop) with 0 <= start < stop; None for all frames.
    ValueError naming the setting otherwise."""
    if frames is None:
        return None
    try:
        a, b = frames
        if isinstance(a, bool) or isinstance(b, bool) or int(a) != a or int(b) != b:
            raise TypeError
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: frames must be [start, stop) as two integers, got {frames!r}") from None
    if a < 0 or b <= a:
        raise ValueError(f"{what}: frames [{a}, {b}) is empty or negative; give [start, stop) with 0 <= start < stop")
    return a, b


def rotate_image(img: np.ndarray, degrees: int) -> np.ndarray:
    """Turn an image clockwise by 0/90/180/270 degrees."""
    if degrees not in _ROT:
        raise ValueError(f"rotate must be 0, 90, 180 or 270, got {degrees}")
    return img if _ROT[degrees] is None else cv2.rotate(img, _ROT[degrees])


def rotate_intrinsics(K: np.ndarray, size: np.ndarray, degrees: int) -> tuple[np.ndarray, np.ndarray]:
    """K [3,3] and size (w, h) of an image turned clockwise by `degrees` (pixel-centre convention
    of cv2.rotate: (x, y) -> (h-1-y, x) for 90 degrees)."""
    w, h = float(size[0]), float(size[1])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if degrees == 0:
        return K.copy(), np.array([w, h])
    if degrees == 180:
        return np.array([[fx, 0, w - 1 - cx], [0, fy, h - 1 - cy], [0, 0, 1.0]]), np.array([w, h])
    if degrees == 90:
        return np.array([[fy, 0, h - 1 - cy], [0, fx, cx], [0, 0, 1.0]]), np.array([h, w])
    if degrees == 270:
        return np.array([[fy, 0, cy], [0, fx, w - 1 - cx], [0, 0, 1.0]]), np.array([h, w])
    raise ValueError(f"rotate must be 0, 90, 180 or 270, got {degrees}")


def rotation_camera_R(degrees: int) -> np.ndarray:
    """The rotation about the optical axis that a clockwise image turn applies to camera axes:
    R_new = Rz @ R_old (so a calibration made on unrotated frames still holds)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def iter_frames(path, indices: np.ndarray, rotate: int = 0):
    """Yield (index, RGB frame [H,W,3] uint8 or None) for the sorted frame indices of a video.

    Reads sequentially (seeking in compressed video is unreliable); a frame that cannot be
    decoded gives None.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return
    if np.any(np.diff(indices) < 0):
        raise ValueError("iter_frames: indices must be sorted")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        pos = 0
        if indices[0] > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(indices[0]))
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if pos != indices[0]:   # seeking refused: decode from the start
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                pos = 0
        want = iter(indices.tolist())
        target = next(want)
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            while target is not None and target == pos:
                yield target, rotate_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), rotate)
                target = next(want, None)
            if target is None:
                return
            pos += 1
        while target is not None:    # past the end
            yield target, None
            target = next(want, None)
    finally:
        cap.release()


def square_box(kp: np.ndarray, margin: float = 1.25) -> np.ndarray:
    """A square box (x0, y0, w, h) around the finite keypoints kp [...,J,2|3], enlarged by
    `margin`; NaN where no keypoint is finite. -> [...,4]."""
    xy = np.asarray(kp, dtype=np.float64)[..., :2]
    ok = np.all(np.isfinite(xy), axis=-1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(np.where(ok, xy, np.nan), axis=-2)
        hi = np.nanmax(np.where(ok, xy, np.nan), axis=-2)
    c = (lo + hi) / 2
    side = np.max(hi - lo, axis=-1) * margin
    side = np.maximum(side, 16.0)
    return np.concatenate([c - side[..., None] / 2, side[..., None], side[..., None]], axis=-1)


def fill_boxes(boxes: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Fill NaN boxes [F,V,4] with the nearest valid box in time of the same view, or the
    centred square of the image (size [V,2]) when a view has none."""
    out = boxes.copy()
    F, V = boxes.shape[:2]
    for v in range(V):
        ok = np.all(np.isfinite(boxes[:, v]), axis=-1)
        if not ok.any():
            s = float(min(size[v]))
            out[:, v] = [(size[v][0] - s) / 2, (size[v][1] - s) / 2, s, s]
            continue
        idx = np.flatnonzero(ok)
        near = idx[np.clip(np.searchsorted(idx, np.arange(F)), 0, len(idx) - 1)]
        prev = idx[np.clip(np.searchsorted(idx, np.arange(F)) - 1, 0, len(idx) - 1)]
        pick = np.where(np.abs(prev - np.arange(F)) <= np.abs(near - np.arange(F)), prev, near)
        out[:, v] = boxes[pick, v]
    return out


def crop(img: np.ndarray, box: np.ndarray, S: int) -> np.ndarray:
    """Crop box (x0, y0, w, h) of img to S x S (black outside the image); crop pixel (u, v) is
    original (x0 + u w / S, y0 + v h / S)."""
    x0, y0, w, h = (float(b) for b in box)
    A = np.array([[S / w, 0, -x0 * S / w], [0, S / h, -y0 * S / h]])
    return cv2.warpAffine(img, A, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def guess_cameras(sizes: np.ndarray, focal_guess: float) -> Cameras:
    """Intrinsics guessed from image sizes [V,2]; no extrinsics."""
    V = len(sizes)
    K = np.zeros((V, 3, 3))
    f = focal_guess * sizes.max(axis=1)
    K[:, 0, 0] = K[:, 1, 1] = f
    K[:, 0, 2] = (sizes[:, 0] - 1) / 2
    K[:, 1, 2] = (sizes[:, 1] - 1) / 2
    K[:, 2, 2] = 1
    nan = np.full((V, 3, 3), np.nan)
    return Cameras(K, nan, np.full((V, 3), np.nan), np.zeros((V, 5)), sizes.astype(np.float64))


def write_contract(out: zarr.Group, cams: Cameras, F: int, frame_index: np.ndarray, attrs: dict,
                   test_fraction: float = 0.0) -> None:
    """Write the dataset contract's keypoint-free arrays (one rig, one subject, one clip)."""
    V = cams.V
    # overwrite: a run killed after these were written is resumed on the same group
    out.create_array("keypoints2d_gt", data=np.full((F, V, J, 3), np.nan, np.float32), overwrite=True,
                     chunks=(max(min(F, 1024), 1), V, J, 3), dimension_names=("frame", "view", "joint", "xyc"))
    for name, arr, dims in (("K", cams.K, ("rig", "view", "r", "c")), ("R", cams.R, ("rig", "view", "r", "c")),
                            ("t", cams.t, ("rig", "view", "xyz")), ("dist", cams.dist, ("rig", "view", "coef")),
                            ("size", cams.size, ("rig", "view", "wh"))):
        out.create_array(name, data=np.asarray(arr, np.float64)[None], dimension_names=dims, overwrite=True)
    n_test = int(np.ceil(test_fraction * F)) if test_fraction > 0 else 0
    split = np.zeros(F, np.int16)
    if n_test:
        split[F - n_test:] = 1
    for name, arr in (("rig", np.zeros(F, np.int16)), ("subject", np.zeros(F, np.int16)),
                      ("clip", np.zeros(F, np.int16)), ("split", split),
                      ("frame_index", np.asarray(frame_index, np.int32))):
        out.create_array(name, data=arr, dimension_names=("frame",), overwrite=True)
    out.attrs.update({"joints": list(JOINTS), **attrs})


def _field(d: dict, key: str, shape: tuple, path: Path, default=None) -> np.ndarray:
    """d[key] as a float64 array of `shape`; ValueError naming the file and key otherwise."""
    if key not in d:
        return default
    try:
        a = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: '{key}' is not an array of numbers (expected shape {shape})") from None
    if a.shape != shape:
        raise ValueError(f"{path}: '{key}' has shape {a.shape}, expected {shape}")
    return a


def _read_json_calibration(path: Path, V: int, sizes: np.ndarray) -> Cameras:
    """calibration.json {"K": [V,3,3], "dist": [V,4|5], "R": [V,3,3], "t": [V,3] mm, "size": [V,2]}."""
    try:
        d = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the calibration JSON ({e})") from None
    if not isinstance(d, dict) or "K" not in d:
        raise ValueError(f"{path}: calibration JSON needs at least 'K' [V,3,3]")
    K = _field(d, "K", (V, 3, 3), path)
    dist = np.zeros((V, 5))
    if "dist" in d:
        try:
            dd = np.asarray(d["dist"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: 'dist' is not an array of numbers") from None
        if dd.ndim != 2 or dd.shape[0] != V or not 4 <= dd.shape[1] <= 5:
            raise ValueError(f"{path}: 'dist' has shape {dd.shape}, expected ({V}, 5) (k1, k2, p1, p2[, k3])")
        dist[:, :dd.shape[1]] = dd
    R = _field(d, "R", (V, 3, 3), path, np.full((V, 3, 3), np.nan))
    t = _field(d, "t", (V, 3), path, np.full((V, 3), np.nan))
    size = _field(d, "size", (V, 2), path, sizes)
    for name, a in (("K", K), ("dist", dist)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: '{name}' holds non-finite values")
    if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
        raise ValueError(f"{path}: 'K' has non-positive focal lengths")
    return Cameras(K, R, t, dist, np.asarray(size, np.float64))


def check_sizes(cal_size: np.ndarray, video_size: np.ndarray, names: list[str], cal_path, videos, what: str,
                tol: float = 16.0) -> None:
    """Refuse videos whose size (w, h) differs from the calibrated one by more than `tol` px
    (rotated or resized footage: the intrinsics would not hold), naming cameras and files."""
    bad = [v for v in range(len(names)) if np.any(np.abs(np.asarray(video_size[v]) - np.asarray(cal_size[v])) > tol)]
    if bad:
        listed = "; ".join(f"{names[v]}: {Path(videos[v]).name} is {int(video_size[v][0])}x{int(video_size[v][1])}, "
                           f"calibrated {int(cal_size[v][0])}x{int(cal_size[v][1])}" for v in bad)
        raise ValueError(f"{what}: video sizes disagree with the calibration {cal_path}: {listed}. Rotated videos? "
                         "turn them (or set rotate) or recalibrate; resized videos? use the calibrated originals")


def find_videos(root: Path, views=None) -> list[Path]:
    if views is not None:
        paths = [root / v for v in views]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"videos: missing files {missing}")
        return paths
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXT and p.is_file())
    if not paths:
        raise ValueError(f"videos: no video files ({', '.join(VIDEO_EXT)}) in {root}")
    return paths


def _discover(c: dict) -> tuple[Path, list[Path], Path | None]:
    """(root, video paths, calibration path or None) of a configuration, by listing only."""
    if c["root"] is None:
        raise ValueError("videos: set cfg['root'] to the folder of synchronised videos")
    root = Path(c["root"])
    if not root.is_dir():
        raise ValueError(f"videos: {root} is not a folder")
    paths = find_videos(root, c["views"])
    if len(paths) < 2:
        raise ValueError(f"videos: {root} has {len(paths)} video ({', '.join(p.name for p in paths)}); "
                         "triangulation needs at least 2 synchronised views")
    cal = c["calibration"]
    if cal is None:
        tomls = sorted(root.glob("*.toml")) + sorted(root.glob("calibration/*.toml"))
        js = root / "calibration.json"
        cal = tomls[0] if tomls else js if js.is_file() else False
    if cal is False:
        return root, paths, None
    cal = Path(cal)
    if not cal.is_absolute() and not cal.exists():
        cal = root / cal
    if not cal.is_file():
        raise ValueError(f"videos: calibration file {cal} does not exist")
    return root, paths, cal


def sources(cfg: dict) -> list[Path]:
    """Every file a build with this configuration reads (videos, calibration): sorted, absolute."""
    c = with_defaults(cfg, DEFAULTS, "videos")
    _, paths, cal = _discover(c)
    return sorted({p.resolve() for p in paths + ([cal] if cal else [])})


def build(cfg: dict, out: zarr.Group, progress: bool = True, find_people=None) -> None:
    """Write the dataset contract for a folder of synchronised videos, and the crops around
    the person `find_people` locates with the detector `crops_from` (see the module's doc)."""
    c = with_defaults(cfg, DEFAULTS, "videos")
    crops_from = c["crops_from"]
    if crops_from == "auto":
        crops_from = None  # resolved by the dataset stage; called on its own: no crops
    if crops_from is not None and not isinstance(crops_from, str):
        raise ValueError(f"videos: crops_from must be a detector name, 'auto' or null, got {crops_from!r}")
    if crops_from is not None and find_people is None:
        raise ValueError(f"videos: crops_from {crops_from!r} needs the dataset stage to run the detector "
                         "(build through `epipose run`, or pass find_people)")
    if not isinstance(c["crops_detector"], dict):
        raise ValueError(f"videos: crops_detector must be a mapping of detector settings, got {c['crops_detector']!r}")
    margin = float(c["crop_margin"])
    if not np.isfinite(margin) or margin < 1.0:
        raise ValueError(f"videos: crop_margin must be a number >= 1 (the crop's side over the keypoints' extent), "
                         f"got {c['crop_margin']!r}")
    root, paths, cal = _discover(c)
    V = len(paths)
    rotate = list(c["rotate"]) if c["rotate"] is not None else [0] * V
    if len(rotate) != V or any(r not in _ROT for r in rotate):
        raise ValueError(f"videos: rotate must list 0/90/180/270 for each of the {V} views, got {rotate}")
    rng = frame_range(c["frames"], "videos")
    infos = [video_info(p) for p in paths]
    warn_truncated(infos, paths, "videos")
    raw_sizes = np.array([[i["w"], i["h"]] for i in infos], dtype=np.float64)
    n = min(i["frames"] for i in infos)
    if len({i["frames"] for i in infos}) > 1:
        lengths = ", ".join(f"{p.name} {i['frames']}" for p, i in zip(paths, infos))
        warnings.warn(f"videos: unequal lengths ({lengths}); using the first {n} frames", stacklevel=2)
    fps = [i["fps"] for i in infos]
    if max(fps) - min(fps) > 0.01 * max(fps):
        warnings.warn(f"videos: frame rates differ ({', '.join(f'{p.name} {f:g}' for p, f in zip(paths, fps))}): "
                      "frame i of each video is taken as the same instant; check the synchronisation", stacklevel=2)
    start, stop = (0, n) if rng is None else (rng[0], min(rng[1], n))
    if stop <= start:
        raise ValueError(f"videos: frames [{start}, {stop}) is empty: the shortest video has {n} frames")
    names = [p.stem for p in paths]
    # calibration (in the videos' own orientation, before `rotate`)
    if cal is None:
        cams = guess_cameras(raw_sizes, float(c["focal_guess"]))
        calibrated = False
    elif cal.name.endswith(".toml"):
        _, cams = read_toml_calibration(cal)
        if cams.V != V:
            raise ValueError(f"videos: calibration {cal} has {cams.V} cameras for {V} videos "
                             f"({', '.join(p.name for p in paths)})")
        check_sizes(cams.size, raw_sizes, names, cal, paths, "videos")
        cams = Cameras(cams.K, cams.R, cams.t, cams.dist, raw_sizes)
        calibrated = True
    else:
        cams = _read_json_calibration(cal, V, raw_sizes)
        check_sizes(cams.size, raw_sizes, names, cal, paths, "videos")
        cams = Cameras(cams.K, cams.R, cams.t, cams.dist, raw_sizes)
        calibrated = True
    check_rig(cams, names, what=f"videos: calibration {cal}" if cal else "videos")
    # apply the requested rotations to the cameras (intrinsics and the camera axes)
    K, R, t, size = cams.K.copy(), cams.R.copy(), cams.t.copy(), cams.size.copy()
    for v, deg in enumerate(rotate):
        if deg:
            K[v], size[v] = rotate_intrinsics(K[v], size[v], deg)
            Rz = rotation_camera_R(deg)
            R[v], t[v] = Rz @ R[v], Rz @ t[v]
    cams = Cameras(K, R, t, cams.dist if not any(rotate) else _rotated_dist(cams.dist, rotate), size)
    F = stop - start
    write_contract(out, cams, F, np.arange(start, stop), {
        "dataset": "videos", "subjects": [c["subject"]], "clips": [c["clip"] or root.name], "actions": {},
        "fps": float(c["fps"] or infos[0]["fps"]), "crop_size": int(c["crop_size"]), "licence": "user data",
        "source": str(root.resolve()), "videos": [str(p.resolve()) for p in paths], "rotate": rotate,
        "views": names, "calibrated": calibrated, "images_stored": False, "crops_from": crops_from,
    }, float(c["test_fraction"]))
    if crops_from is None:
        for name in ("images", "image_ok", "crop_boxes"):  # a rebuild without crops leaves none behind
            if name in out:
                del out[name]
        return
    kp = np.asarray(find_people(crops_from, dict(c["crops_detector"]), out, progress), dtype=np.float64)
    if kp.shape != (F, V, J, 3):
        raise ValueError(f"videos: detector {crops_from!r} returned keypoints of shape {kp.shape}, "
                         f"expected {(F, V, J, 3)} (frames, views, joints, x/y/confidence)")
    boxes = square_box(kp, margin)
    found = np.all(np.isfinite(boxes), axis=-1)
    empty = [names[v] for v in range(V) if not found[:, v].any()]
    if empty:
        raise ValueError(f"videos: the detector {crops_from!r} found nobody in {', '.join(empty)} "
                         f"(frames {start}-{stop - 1}): no crop can be placed; check those videos, or set "
                         "dataset.crops_from to another detector")
    if not found.all():
        warnings.warn(f"videos: detector {crops_from!r} found nobody in "
                      + ", ".join(f"{names[v]} on {int((~found[:, v]).sum())} of {F} frames"
                                  for v in range(V) if not found[:, v].all())
                      + "; those crops take the nearest frame's box", stacklevel=2)
    boxes = fill_boxes(boxes, cams.size).astype(np.float32)
    out.create_array("crop_boxes", data=boxes, dimension_names=("frame", "view", "box"), overwrite=True)
    write_crops(out, paths, names, np.arange(start, stop), boxes, int(c["crop_size"]), infos, progress,
                what="videos", hint="replace the video, or set dataset.crops_from to null (labels only)", rotate=rotate)
    out.attrs.update({"images_stored": True, "person_found": found.mean(0).round(4).tolist()})


def _rotated_dist(dist: np.ndarray, rotate: list[int]) -> np.ndarray:
    """Radial terms survive a quarter turn; tangential ones become (p1, p2) -> (p2, -p1) for
    each 90 degrees clockwise (x' = -y, y' = x in normalised coordinates)."""
    out = dist.copy()
    for v, deg in enumerate(rotate):
        p1, p2 = dist[v, 2], dist[v, 3]
        for _ in range(deg // 90):
            p1, p2 = p2, -p1
        out[v, 2], out[v, 3] = p1, p2
    return out


def ranges(nums) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8' (at most 8 runs shown)."""
    nums = sorted(int(n) for n in nums)
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:8])
    return text + (f", ... ({len(runs) - 8} more runs)" if len(runs) > 8 else "")


def write_crops(out: zarr.Group, videos: list[Path], cam_names: list[str], numbers: np.ndarray, boxes: np.ndarray,
                S: int, infos: list[dict], progress: bool, offsets: np.ndarray | None = None, *,
                what: str = "videos", hint: str = "replace the video", rotate: list[int] | None = None) -> None:
    """images [F,V,S,S,3] and image_ok [F,V], per (view, block of BLOCK frames), resuming the
    blocks attrs["crops"] records as done (the record is bound to the boxes, frames, videos and
    S it was made for). Warns naming the video and frames that do not decode; ValueError when
    none of a view's frames decode."""
    F, V = boxes.shape[:2]
    for v, info in enumerate(infos):
        if numbers[0] + (0 if offsets is None else offsets[v]) >= info["frames"]:
            raise ValueError(f"{what}: {videos[v]} ({cam_names[v]}) has {info['frames']} readable frames but the "
                             f"store's frames are {numbers[0]}-{numbers[-1]}: no crop of this view can be read "
                             "(wrong video, or JSON numbered from another start?)")
    key = hashlib.sha256(boxes.tobytes() + numbers.astype(np.int64).tobytes()
                         + (b"" if offsets is None else np.asarray(offsets, np.int64).tobytes())
                         + json.dumps([[str(q) for q in videos], S] + ([list(map(int, rotate))] if rotate and any(rotate) else [])
                                      ).encode()).hexdigest()[:16]
    state = dict(out.attrs.get("crops") or {})
    nb = -(-F // BLOCK)
    intact = ("images" in out and out["images"].shape == (F, V, S, S, 3) and "image_ok" in out
              and out["image_ok"].shape == (F, V))
    if state.get("key") != key or not intact:
        out.create_array("images", shape=(F, V, S, S, 3), dtype=np.uint8, chunks=(min(BLOCK, F), 1, S, S, 3),
                         dimension_names=("frame", "view", "y", "x", "rgb"), overwrite=True)
        out.create_array("image_ok", shape=(F, V), dtype=bool, chunks=(min(BLOCK, F), V), fill_value=False,
                         dimension_names=("frame", "view"), overwrite=True)
        state = {"key": key, "done": []}
        out.attrs["crops"] = state
    img, okarr = out["images"], out["image_ok"]
    done = set(state["done"])
    bar = tqdm(total=F * V, desc=f"{what} crops", disable=not progress)
    for v, path in enumerate(videos):
        for b in range(nb):
            a = b * BLOCK
            ids = numbers[a:a + BLOCK] + (0 if offsets is None else offsets[v])
            if v * nb + b in done:
                bar.update(len(ids))
                continue
            block = np.zeros((len(ids), 1, S, S, 3), np.uint8)
            good = np.zeros(len(ids), bool)
            inside = np.flatnonzero(ids >= 0)  # a view shifted by frame_offsets may start later
            for k, (_, frame) in zip(inside, iter_frames(path, ids[inside], int(rotate[v]) if rotate else 0)):
                if frame is not None:
                    block[k, 0] = crop(frame, boxes[a + k, v], S)
                    good[k] = True
            bar.update(len(ids))
            img[a:a + len(ids), v:v + 1] = block
            okarr[a:a + len(ids), v] = good
            done.add(v * nb + b)
            out.attrs["crops"] = {"key": key, "done": sorted(done)}
    bar.close()
    ok = np.asarray(okarr[:])
    for v in range(V):
        bad = numbers[~ok[:, v]]
        if len(bad) == F:
            raise ValueError(f"{what}: no frame of {videos[v]} ({cam_names[v]}) could be decoded at the store's frames "
                             f"{numbers[0]}-{numbers[-1]}; {hint}")
        if len(bad):
            warnings.warn(f"{what}: {videos[v]} ({cam_names[v]}): {len(bad)} of {F} frames could not be decoded "
                          f"(frame numbers {ranges(bad)}); their crops are black and image_ok is False there",
                          stacklevel=3)
