"""The `h36m` adapter: Human3.6M in its public layout.

    <root>/metadata.xml                                   cameras (the release's <w0> vector)
    <root>/S1/MyPoseFeatures/D3_Positions/<Action>.cdf    'Pose' [1, F, 96]: 32 joints, world mm
    <root>/S1/Videos/<Action>.<camera id>.mp4             the four videos of each action
    (or <root>/S1/Images/<Action>.<camera id>/*.jpg|png   extracted frames, sorted by name)

Protocol (the paper's, and the literature's): train on S1, S5, S6, S7, S8, test on S9, S11,
every 64th test frame; train frames every `train_every`-th (default 5: 10 fps from 50).

Cameras: <w0> holds, for camera c (0-3) and subject s (1-11), six numbers at 6·(11c + s - 1):
Euler angles (a0, a1, a2) in radians and T, the camera centre in world mm, with the
world-to-camera rotation R = Rx(a0)·Ry(a1)·Rz(a2) (standard right-handed axis rotations),
so X_cam = R (X - T) and t = -R T (as mmpose's Human3.6M preprocessing reads it: its
R = (Rx Ry Rz)ᵀ is camera-to-world, applied to row vectors); and for camera c nine
intrinsics at 264 + 9c: f (2), c (2), k1 k2 k3, p1 p2. One rig per subject (G = subjects).
Distortion is stored in OpenCV's slots (k1, k2, p1, p2, k3) with the release's p1, p2; the
release's own projection (`project_release`, its code's project_point_radial) weighs the
tangential terms differently from OpenCV's model (up to about 1.4 px apart near the image
borders), so keypoints2d_gt here is the release's formula applied to the 3D ground truth, the
projection that produced its D2_Positions (tests/test_data_h36m.py checks it against them).
Actions: S1's `TakingPhoto` and `WalkingDog` are the others' `Photo` and `WalkDog`
(`ACTION_ALIASES`): attrs["actions"] names them the same way, as the standard loaders do.
Visibility: Human3.6M annotates none; a joint is 1 inside the image, 0 outside.
The 17 joints are the usual subset of the 32: 0 1 2 3 6 7 8 12 13 14 15 17 18 19 25 26 27.

A frame that cannot be read (a video that ends early, a frame that does not decode, an
unreadable image file) gives a black crop flagged in `image_ok` [F, V] (False) with a warning
naming the file and frames. A sequence that cannot be read at all (a pose file that does not
load, a video that does not open, views whose frame counts disagree; e.g. older copies of S11
`Directions` on camera 54138969) is skipped with a warning naming it (attrs["skipped"]). `sources(cfg)` lists the files a build reads (metadata.xml, CDFs,
videos or frame images) for the dataset's fingerprint.
"""
from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import zarr
from tqdm.auto import tqdm

from ..camera import Cameras, world_to_camera
from ..joints import JOINTS
from .motion import mean_bone_mm
from .render import crop_boxes
from ..registry import with_defaults

# the store holds 3D ground truth (poses3d_world): the chain plans the FS baseline and GT metrics
GROUND_TRUTH_3D = True

DEFAULTS: dict = {
    "root": None,                                  # folder in the public layout
    "train_subjects": ["S1", "S5", "S6", "S7", "S8"],
    "test_subjects": ["S9", "S11"],
    "train_every": 5,
    "test_every": 64,
    "actions": None,                               # sequences ('Walking 1') or actions ('Walking', 'Photo'); None = all
    "cameras": ["54138969", "55011271", "58860488", "60457274"],
    "crop_size": 256,
    "crop_margin": 0.1,
    "frame_tolerance": 2,                          # views may differ by this many frames (then cut to the shortest)
    "chunk": 64,
}
# S1's file names for two actions, and the name every other subject (and the literature) uses
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
H36M_17 = np.array([0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27])
FPS = 50.0
LICENCE = "Human3.6M licence (vision.imar.ro/human3.6m): academic, non-commercial use"


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def read_metadata(path: Path, subjects: list[str], cameras: list[str], sizes: dict | None = None) -> dict[str, Cameras]:
    """Cameras per subject from metadata.xml. sizes {camera id: (w, h)} (default 1000x1000).

    Raises ValueError naming the file when <w0> is missing or too short for the cameras
    and subjects asked for."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"{path}: cannot read Human3.6M metadata ({e})") from None
    w0 = root.find("w0")
    if w0 is None or not w0.text:
        raise ValueError(f"{path}: no <w0> camera vector")
    try:
        w = np.array(w0.text.strip().strip("[]").split(), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: <w0> is not a list of numbers") from None
    ids = [e.text for e in root.findall("dbcameras/index2id/*")] or list(DEFAULTS["cameras"])
    out = {}
    for subj in subjects:
        s = int(subj.lstrip("S"))
        K, R, t, dist, size = [], [], [], [], []
        for cam in cameras:
            if cam not in ids:
                raise ValueError(f"{path}: camera {cam!r} is not among its cameras {ids}")
            c = ids.index(cam)
            e0, i0 = 6 * (11 * c + s - 1), 264 + 9 * c
            if len(w) < max(e0 + 6, i0 + 9):
                raise ValueError(f"{path}: <w0> has {len(w)} numbers, too few for camera {cam} of {subj}")
            a, T = w[e0:e0 + 3], w[e0 + 3:e0 + 6]
            Rc = _rx(a[0]) @ _ry(a[1]) @ _rz(a[2])          # world -> camera
            f, cc, k, p = w[i0:i0 + 2], w[i0 + 2:i0 + 4], w[i0 + 4:i0 + 7], w[i0 + 7:i0 + 9]
            K.append([[f[0], 0, cc[0]], [0, f[1], cc[1]], [0, 0, 1]])
            R.append(Rc)
            t.append(-Rc @ T)
            dist.append([k[0], k[1], p[0], p[1], k[2]])
            size.append((sizes or {}).get(cam, (1000.0, 1000.0)))
        out[subj] = Cameras(np.array(K), np.array(R), np.array(t), np.array(dist), np.array(size, dtype=np.float64))
    return out


def action_name(stem: str) -> str:
    """A sequence's action without its take number, S1's aliases mapped: 'TakingPhoto 1' -> 'Photo'."""
    a = re.sub(r"\s*\d+$", "", stem)
    return ACTION_ALIASES.get(a, a)


def _canonical(stem: str) -> str:
    """A sequence name with S1's aliases mapped, its take number kept: 'WalkingDog 1' -> 'WalkDog 1'."""
    m = re.match(r"(.*?)(\s*\d*)$", stem)
    return ACTION_ALIASES.get(m.group(1), m.group(1)) + m.group(2)


def project_release(Xc: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Human3.6M's projection (its code's project_point_radial, as 3d-pose-baseline ships it):
    camera-frame points Xc [...,N,3] -> pixels [...,N,2], K [...,3,3], dist [...,5] in the
    store's slots (k1, k2, p1, p2, k3). With x, y = X/Z, Y/Z and r2 = x² + y²:
    d = 1 + k1 r2 + k2 r2² + k3 r2³ + p1 y + p2 x; x' = x d + p2 r2; y' = y d + p1 r2;
    u = fx x' + cx, v = fy y' + cy. (OpenCV's tangential terms are 2 p1 x y + p2 (r2 + 2x²) and
    p1 (r2 + 2y²) + 2 p2 x y.)"""
    x, y = Xc[..., 0] / Xc[..., 2], Xc[..., 1] / Xc[..., 2]
    k1, k2, p1, p2, k3 = (np.asarray(dist)[..., i, None] for i in range(5))
    r2 = x * x + y * y
    d = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3 + p1 * y + p2 * x
    xd, yd = x * d + p2 * r2, y * d + p1 * r2
    K = np.asarray(K)
    return np.stack([K[..., 0, 0, None] * xd + K[..., 0, 2, None], K[..., 1, 1, None] * yd + K[..., 1, 2, None]], -1)


def read_poses(path: Path) -> np.ndarray:
    """D3_Positions CDF -> [F, 17, 3] world mm (Z up)."""
    import cdflib  # only Human3.6M needs it
    try:
        pose = np.asarray(cdflib.CDF(str(path)).varget("Pose"), dtype=np.float64)
    except Exception as e:  # cdflib raises several types for bad files
        raise ValueError(f"{path}: cannot read the CDF pose file ({type(e).__name__}: {e})") from None
    pose = pose.reshape(-1, pose.shape[-1])
    if pose.shape[-1] != 96:
        raise ValueError(f"{path}: 'Pose' has {pose.shape[-1]} values per frame, expected 96 (32 joints)")
    return pose.reshape(-1, 32, 3)[:, H36M_17]


class _Frames:
    """Sequential frame reader for a video file or a folder of images."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not self.files:
                raise ValueError(f"{path}: no images in the frame folder")
            img = cv2.imread(str(self.files[0]))
            if img is None:
                raise ValueError(f"{self.files[0]}: unreadable image")
            self.count, self.size = len(self.files), (img.shape[1], img.shape[0])
        else:
            self.files = None
            cap = cv2.VideoCapture(str(path))
            ok, img = cap.read() if cap.isOpened() else (False, None)
            if not ok:
                raise ValueError(f"{path}: unreadable video")
            self.count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.size = (img.shape[1], img.shape[0])
            cap.release()

    def read(self, wanted: np.ndarray):
        """Yield (index, RGB image, or None where it cannot be read) for the sorted frame
        indices `wanted` (a video that ends early or a frame that does not decode gives None)."""
        wanted = set(int(i) for i in wanted)
        if self.files is not None:
            for i in sorted(wanted):
                img = cv2.imread(str(self.files[i])) if i < len(self.files) else None
                yield i, (img[..., ::-1] if img is not None else None)
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            last = max(wanted)
            ended = False
            for i in range(last + 1):
                ok = not ended and cap.grab()
                ended = not ok
                if i in wanted:
                    img = cap.retrieve()[1] if ok else None
                    yield i, (img[..., ::-1] if img is not None else None)
        finally:
            cap.release()

    def name(self, i: int) -> str:
        return str(self.files[i]) if self.files is not None and i < len(self.files) else f"{self.path} frame {i}"


def crop_image(img: np.ndarray, box: np.ndarray, S: int) -> np.ndarray:
    """Crop box (x0, y0, w, h) of img to S x S with the store's convention (crop (u, v) <->
    (x0 + u·w/S, y0 + v·h/S)); black outside the image; low-pass first when shrinking."""
    s = box[2] / S
    if s > 1.5:
        # only the region under the box needs blurring
        x0, y0 = int(np.floor(box[0])) - 8, int(np.floor(box[1])) - 8
        x1, y1 = int(np.ceil(box[0] + box[2])) + 8, int(np.ceil(box[1] + box[3])) + 8
        H, W = img.shape[:2]
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if xb > xa and yb > ya:
            roi = cv2.GaussianBlur(np.ascontiguousarray(img[ya:yb, xa:xb]), (0, 0), 0.45 * s)
            M = np.array([[s, 0, box[0] - xa], [0, s, box[1] - ya]])
            return cv2.warpAffine(roi, M, (S, S), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    M = np.array([[s, 0, box[0]], [0, s, box[1]]])
    return cv2.warpAffine(np.ascontiguousarray(img), M, (S, S), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _sources(root: Path, subj: str, action: str, cameras: list[str]) -> list[Path]:
    out = []
    for cam in cameras:
        vid = root / subj / "Videos" / f"{action}.{cam}.mp4"
        img = root / subj / "Images" / f"{action}.{cam}"
        if img.is_dir():
            out.append(img)
        elif vid.exists():
            out.append(vid)
        else:
            raise ValueError(f"{vid}: missing (neither the video nor an Images/{action}.{cam} folder exists)")
    return out


def _views_present(root: Path, subj: str, action: str) -> list[str]:
    vids = [p.name[len(action) + 1:-4] for p in (root / subj / "Videos").glob(f"{action}.*.mp4")]
    imgs = [p.name[len(action) + 1:] for p in (root / subj / "Images").glob(f"{action}.*") if p.is_dir()]
    return sorted(set(vids) | set(imgs))


def _discover(cfg: dict) -> tuple[Path, Path, list[str], list[str], list[tuple[str, str, Path]]]:
    """(root, metadata.xml, camera ids, subjects, [(subject, action, cdf)]) by listing only;
    ValueError naming the missing file or folder."""
    if not cfg["root"]:
        raise ValueError("h36m: set 'root' to the folder holding metadata.xml and S1, S5, ...")
    root = Path(cfg["root"])
    cams_ids = list(cfg["cameras"])
    V = len(cams_ids)
    if V < 2 or len(set(cams_ids)) != V:
        raise ValueError(f"h36m: cameras {cams_ids}: give at least 2 different cameras (triangulation needs 2 views)")
    subjects = list(cfg["train_subjects"]) + list(cfg["test_subjects"])
    meta = root / "metadata.xml"
    if not meta.is_file():
        raise ValueError(f"{meta}: missing (Human3.6M's camera metadata)")

    # --- what exists: (subject, action) with poses and one source per camera
    items = []
    for subj in subjects:
        pdir = root / subj / "MyPoseFeatures" / "D3_Positions"
        if not pdir.is_dir():
            raise ValueError(f"{pdir}: missing (subject {subj} has no 3D poses)")
        for cdf in sorted(pdir.glob("*.cdf")):
            action = cdf.stem
            wanted = cfg["actions"]
            if action.startswith("_ALL") or (wanted and not {action, _canonical(action), action_name(action)} & set(wanted)):
                continue
            present = _views_present(root, subj, action)
            if len(present) != V or set(present) != set(cams_ids):
                raise ValueError(f"{root / subj / 'Videos' / action}.*: {len(present)} camera views {present} "
                                 f"but the calibration has {V} cameras {cams_ids}")
            items.append((subj, action, cdf))
    if not items:
        raise ValueError(f"{root}: no actions found for subjects {subjects}")
    return root, meta, cams_ids, subjects, items


def sources(cfg: dict) -> list[Path]:
    """Every file a build with this configuration reads: metadata.xml, the pose CDFs of the
    chosen subjects and actions, and their videos (or the image files of their frame
    folders). Sorted absolute paths, by listing only."""
    cfg = with_defaults(cfg, DEFAULTS, "h36m")
    root, meta, cams_ids, _, items = _discover(cfg)
    files = {meta.resolve()}
    for subj, action, cdf in items:
        files.add(cdf.resolve())
        for src in _sources(root, subj, action, cams_ids):
            if src.is_dir():
                files.update(p.resolve() for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            else:
                files.add(src.resolve())
    return sorted(files)


def build(cfg: dict, out: zarr.Group, progress: bool = True) -> None:
    """Write the dataset contract for Human3.6M (public layout) into `out`, with image_ok
    [F, V] (False where a frame could not be read: its crop is black; warned, naming the
    video and frames; a view of a sequence none of whose frames read is an error).

    Resumable: a rerun with the same configuration skips the sequences whose images were
    written (attrs['sequences_done']); the arrays without images are rewritten (cheap)."""
    cfg = with_defaults(cfg, DEFAULTS, "h36m")
    root, meta, cams_ids, subjects, items = _discover(cfg)
    V, S = len(cams_ids), int(cfg["crop_size"])

    # --- frames per item; a sequence that cannot be read is skipped, named in a warning
    sizes = {}  # camera id -> (w, h) of its first readable sequence
    poses, subj_idx, clip_idx, split, fidx, readers, item_rows = [], [], [], [], [], [], []
    clips, actions, skipped = [], {}, []
    for subj, action, cdf in items:
        try:
            P = read_poses(cdf)
            srcs = _sources(root, subj, action, cams_ids)
            frames = [_Frames(s) for s in srcs]
            counts = [f.count for f in frames]
            for cam, f, src in zip(cams_ids, frames, srcs):
                if f.size != sizes.get(cam, f.size):
                    raise ValueError(f"{src}: frame size {f.size} differs from the camera's other sequences {sizes[cam]}")
            if max(counts) - min(counts) > cfg["frame_tolerance"]:
                worst = srcs[int(np.argmax(np.abs(np.array(counts) - np.median(counts))))]
                raise ValueError(f"{worst}: frame counts differ across views {dict(zip(map(str, srcs), counts))}")
        except ValueError as e:
            warnings.warn(f"h36m: sequence {subj}/{action} skipped, it cannot be read: {e}", stacklevel=2)
            skipped.append(f"{subj}/{action}: {e}")
            continue
        for cam, f in zip(cams_ids, frames):
            sizes.setdefault(cam, f.size)
        n = min(min(counts), len(P))
        test = subj in cfg["test_subjects"]
        keep = np.arange(0, n, int(cfg["test_every"] if test else cfg["train_every"]))
        name = f"{subj}/{action}"
        ci = len(clips)
        clips.append(name)
        actions[name] = action_name(action)
        row0 = sum(len(p) for p in poses)
        poses.append(P[keep])
        subj_idx.append(np.full(len(keep), subjects.index(subj)))
        clip_idx.append(np.full(len(keep), ci))
        split.append(np.full(len(keep), int(test)))
        fidx.append(keep)
        readers.append((frames, keep, row0, subj))
    if not poses:
        raise ValueError(f"{root}: none of the {len(items)} sequences could be read (first: {skipped[0]})")
    rigs = read_metadata(meta, subjects, cams_ids, sizes)
    poses = np.concatenate(poses)
    F = len(poses)
    subj_idx, clip_idx, split, fidx = (np.concatenate(a) for a in (subj_idx, clip_idx, split, fidx))

    # --- geometry per frame (rig = subject)
    G = np.stack([rigs[s].K for s in subjects]), np.stack([rigs[s].R for s in subjects]), \
        np.stack([rigs[s].t for s in subjects]), np.stack([rigs[s].dist for s in subjects]), \
        np.stack([rigs[s].size for s in subjects])
    K, R, t, dist, size = (a[subj_idx] for a in G)                         # [F,V,...]
    Xc = world_to_camera(poses[:, None], R, t)                             # [F,V,J,3]
    uv = project_release(Xc, K, dist)                                      # [F,V,J,2], the release's formula
    boxes = crop_boxes(uv, Xc[..., 0, 2], K[..., 0, 0], margin=float(cfg["crop_margin"]))
    inside = ((uv[..., 0] >= 0) & (uv[..., 0] <= size[:, :, None, 0] - 1)
              & (uv[..., 1] >= 0) & (uv[..., 1] <= size[:, :, None, 1] - 1) & (Xc[..., 2] > 0))
    kp = np.concatenate([uv, inside[..., None]], -1).astype(np.float32)

    def arr(name, data, dims, chunks=None):
        a = out.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks or data.shape,
                             dimension_names=dims, overwrite=True)
        a[...] = data

    arr("poses3d_world", poses.astype(np.float32), ("frame", "joint", "xyz"))
    arr("keypoints2d_gt", kp, ("frame", "view", "joint", "xyv"))
    arr("crop_boxes", boxes.astype(np.float32), ("frame", "view", "box"))
    arr("rig", subj_idx.astype(np.int16), ("frame",))
    for name, a, dims in zip(("K", "R", "t", "dist", "size"), G,
                             (("row", "col"), ("row", "col"), ("xyz",), ("coef",), ("wh",))):
        arr(name, a.astype(np.float64), ("rig", "view") + dims)
    arr("subject", subj_idx.astype(np.int16), ("frame",))
    arr("clip", clip_idx.astype(np.int16), ("frame",))
    arr("split", split.astype(np.int16), ("frame",))
    arr("frame_index", fidx.astype(np.int32), ("frame",))
    # resumable: sequences whose images are written are counted in attrs['sequences_done']
    from .studio import config_hash
    chash = config_hash(cfg)
    done = int(out.attrs.get("sequences_done", 0)) if (out.attrs.get("config_hash") == chash
                                                        and "images" in out and "image_ok" in out) else 0
    if done == 0:
        out.create_array("images", shape=(F, V, S, S, 3), dtype=np.uint8, chunks=(int(cfg["chunk"]), 1, S, S, 3),
                         dimension_names=("frame", "view", "y", "x", "rgb"), overwrite=True)
        out.create_array("image_ok", shape=(F, V), dtype=bool, chunks=(int(cfg["chunk"]), V), fill_value=False,
                         dimension_names=("frame", "view"), overwrite=True)
    images, image_ok = out["images"], out["image_ok"]
    train = split == 0
    out.attrs.update({
        "dataset": "h36m", "subjects": subjects, "clips": clips, "actions": actions, "fps": FPS,
        "crop_size": S, "licence": LICENCE, "source": f"Human3.6M public layout at {root}",
        "joints": list(JOINTS), "mean_bone_mm": mean_bone_mm(poses[train]) if train.any() else None,
        "protocol": f"train {cfg['train_subjects']} every {cfg['train_every']}th frame; "
                    f"test {cfg['test_subjects']} every {cfg['test_every']}th frame",
        "world": "Z up, millimetres (Human3.6M's world)", "cameras": cams_ids,
        "rig": {"kind": "human3.6m", "n_views": V, "cameras": cams_ids,
                "note": "one calibration per subject: rig index g = subject index"},
        "config": {k: v for k, v in cfg.items()}, "config_hash": chash, "sequences_done": done,
        "skipped": skipped,
    })

    # --- images: the V sources of a sequence decoded in lockstep, written in frame blocks
    chunk = int(cfg["chunk"])
    bar = tqdm(total=F * V, desc="h36m frames", disable=not progress)
    for q, (frames, keep, row0, subj) in enumerate(readers):
        if q < done:
            bar.update(len(keep) * V)
            continue
        gens = [fr.read(keep) for fr in frames]
        for b0 in range(0, len(keep), chunk):
            n = min(chunk, len(keep) - b0)
            block = np.zeros((n, V, S, S, 3), np.uint8)
            good = np.zeros((n, V), bool)
            for k in range(n):
                for v, gen in enumerate(gens):
                    i, img = next(gen)
                    if img is not None:
                        block[k, v] = crop_image(img, boxes[row0 + b0 + k, v].astype(np.float64), S)
                        good[k, v] = True
                bar.update(V)
            images[row0 + b0:row0 + b0 + n] = block
            image_ok[row0 + b0:row0 + b0 + n] = good
        out.attrs["sequences_done"] = q + 1
    bar.close()
    ok = np.asarray(image_ok[:])
    for frames, keep, row0, subj in readers:
        for v, fr in enumerate(frames):
            bad = keep[~ok[row0:row0 + len(keep), v]]
            if len(bad) == len(keep):
                raise ValueError(f"{fr.path}: none of its {len(keep)} frames used could be read; replace it")
            if len(bad):
                warnings.warn(f"h36m: {len(bad)} of {len(keep)} frames of {fr.path} could not be read (frames "
                              f"{', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''}); their crops are "
                              "black and image_ok is False there", stacklevel=2)
    out.attrs["complete"] = True
