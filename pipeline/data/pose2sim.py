"""Pose2Sim project folders: calibration (TOML or Qualisys .qca.txt) + OpenPose JSON + videos.

A Pose2Sim project holds (names as in Pose2Sim's demos, old and new layouts both found):
- `calibration/*.toml` (or `calib-2d/`): one section per camera with `size`, `matrix`,
  `distortions` (k1, k2, p1, p2), `rotation` (Rodrigues) and `translation` (metres), the
  world-to-camera transform of OpenCV (X_cam = R X + t); Pose2Sim's demo world is Z-up.
  Pose2Sim's triangulation reads these values as they are; we convert metres to mm.
- or `calibration/*.qca.txt`: Qualisys' XML. Converted as Pose2Sim's own reader does:
  focal length, principal point and distortion terms divided by 64 (Qualisys stores them in
  1/64 sub-pixel units) and the principal point shifted by the video window's corner; the
  transform gives the camera's orientation M and centre C (mm) in the world, and
  R = diag(1, -1, -1) M, t = -R C (Qualisys cameras look down their -z axis).
- `pose/<cam>_json/` (or `pose-2d/`): OpenPose JSON per frame (pipeline/detectors/openpose.py
  reads them; their folders go to attrs["openpose_json"]).
- `videos/<cam>.mp4` (optional): frames for crops and for pipeline/detectors/mediapipe.py.

Camera folders and videos are matched to the calibration's cameras by the number in their
names (cam1_json <-> cam01), else by sorted order. A JSON file's frame number (the last
integer in its name) is taken as the index of the video frame it was detected on. There is no 2D or 3D ground truth:
`keypoints2d_gt` is NaN and `poses3d_world` is absent; Pose2Sim's own triangulation (TRC), when
present, only gives the prior `mean_bone_mm` (attrs) used to express self-supervised
predictions in millimetres.

With `cfg["root"] = None` the Pose2Sim demo (4 cameras, 100 frames, BSD-3) is fetched from PyPI
into the cache: calibration, JSON and TRC from the `pose2sim==0.2.6` wheel, videos from
`pose2sim==0.10.49` (`pip download`; nothing else is contacted).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from ..camera import Cameras, rodrigues_to_matrix
from ..export import read_trc
from ..joints import J, bone_lengths
from . import videos as vid
from ..registry import with_defaults

DEFAULTS: dict = {
    "root": None,             # Pose2Sim project folder; None: fetch the demo from PyPI
    "cache_dir": None,        # where the demo is unpacked; None: $EPIPOSE_CACHE or artifacts/cache
    "calibration": None,      # None: the first calibration/*.toml, else *.qca.txt
    "images": True,           # store crops around the OpenPose person box when videos exist
    "crop_size": 256,
    "crop_margin": 1.3,       # the square crop is this many times the keypoints' extent
    "person": "largest",      # person selection in the JSON (pipeline/detectors/openpose.py)
    "format": "auto",         # keypoint layout of the JSON
    "frames": None,           # [start, stop) of frame numbers; None: all
    "test_fraction": 0.0,     # the last fraction of the frames is the test split
    "subject": "demo",
}

DEMO = {
    "0.2.6": {"Pose2Sim/Demo/calib-2d/": "calibration/", "Pose2Sim/Demo/pose-2d/": "pose/",
              "Pose2Sim/Demo/pose-3d/": "pose-3d/"},
    "0.10.49": {"Pose2Sim/Demo_SinglePerson/videos/": "videos/"},
}
DEMO_LICENCE = "BSD-3-Clause (Pose2Sim, David Pagnon)"


def _cache_dir(cfg: dict) -> Path:
    import os
    if cfg.get("cache_dir"):
        return Path(cfg["cache_dir"])
    return Path(os.environ.get("EPIPOSE_CACHE", "artifacts/cache"))


def fetch_demo(cache_dir: Path, progress: bool = True) -> Path:
    """Assemble the Pose2Sim demo project under cache_dir/pose2sim_demo from PyPI wheels."""
    root = Path(cache_dir) / "pose2sim_demo"
    if (root / ".complete").is_file():
        return root
    tmp = Path(cache_dir) / "pose2sim_demo.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for version, members in DEMO.items():
        wheel_dir = Path(cache_dir) / "wheels"
        wheels = list(wheel_dir.glob(f"pose2sim-{version}-*.whl"))
        if not wheels:
            if progress:
                print(f"fetching pose2sim=={version} from PyPI (the demo's files)", file=sys.stderr)
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                f"pose2sim=={version}", "-d", str(wheel_dir)], capture_output=True, text=True)
            wheels = list(wheel_dir.glob(f"pose2sim-{version}-*.whl"))
            if r.returncode != 0 or not wheels:
                raise ValueError(f"pose2sim demo: pip download pose2sim=={version} failed: {r.stderr[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                for prefix, dest in members.items():
                    if name.startswith(prefix) and not name.endswith("/"):
                        target = tmp / dest / name[len(prefix):]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(z.read(name))
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def read_toml_calibration(path: Path) -> tuple[list[str], Cameras]:
    """Pose2Sim TOML -> (camera names, Cameras in mm). Distortions are used as written (the
    .qca converter already divided them by 64; Pose2Sim's triangulation reads them as they are)."""
    try:
        calib = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"pose2sim: cannot read calibration {path}: {e}") from e
    sections = [k for k, v in calib.items() if isinstance(v, dict) and "matrix" in v]
    if not sections:
        raise ValueError(f"pose2sim: no camera sections (with 'matrix') in {path}")
    names, K, R, t, dist, size = [], [], [], [], [], []
    for s in sections:
        c = calib[s]
        try:
            K.append(np.asarray(c["matrix"], dtype=np.float64).reshape(3, 3))
            d = np.zeros(5)
            dd = np.asarray(c.get("distortions", []), dtype=np.float64).ravel()[:5]
            d[:len(dd)] = dd
            dist.append(d)
            R.append(rodrigues_to_matrix(np.asarray(c["rotation"], dtype=np.float64).reshape(3)))
            t.append(np.asarray(c["translation"], dtype=np.float64).reshape(3) * 1000.0)
            size.append(np.asarray(c["size"], dtype=np.float64).reshape(2))
        except KeyError as e:
            raise ValueError(f"pose2sim: camera section [{s}] of {path} lacks {e}") from e
        if c.get("fisheye", False):
            raise ValueError(f"pose2sim: camera [{s}] is a fisheye camera, which the OpenCV pinhole model here does not cover")
        names.append(str(c.get("name", s)))
    return names, Cameras(np.stack(K), np.stack(R), np.stack(t), np.stack(dist), np.stack(size))


def read_qca_calibration(path: Path, binning_factor: float = 1.0) -> tuple[list[str], Cameras]:
    """Qualisys .qca.txt -> (camera names, Cameras in mm), following Pose2Sim's conversion."""
    try:
        root = ET.parse(str(path)).getroot()
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"pose2sim: cannot read Qualisys calibration {path}: {e}") from e
    cams = root.findall("cameras/camera")
    if not cams:
        raise ValueError(f"pose2sim: no cameras in {path}")
    names, K, R, t, dist, size = [], [], [], [], [], []
    for cam in cams:
        rot = int(float(cam.get("viewrotation", "0")))
        if rot:
            raise ValueError(f"pose2sim: camera {cam.get('serial')} has viewrotation={rot}; only 0 is supported "
                             "(convert it with Pose2Sim's calibration step to TOML)")
        fov = cam.find("fov_video")
        tr = cam.find("transform")
        intr = cam.find("intrinsic")
        if fov is None or tr is None or intr is None:
            raise ValueError(f"pose2sim: camera {cam.get('serial')} in {path} lacks fov_video/transform/intrinsic")
        g = lambda e, k: float(e.get(k))  # noqa: E731
        left, top = g(fov, "left"), g(fov, "top")
        size.append([(g(fov, "right") - left) / binning_factor, (g(fov, "bottom") - top) / binning_factor])
        s = 64.0 * binning_factor
        fu, fv = g(intr, "focalLengthU") / s, g(intr, "focalLengthV") / s
        cu, cv_ = g(intr, "centerPointU") / s - left, g(intr, "centerPointV") / s - top
        K.append([[fu, 0, cu], [0, fv, cv_], [0, 0, 1]])
        dist.append([g(intr, "radialDistortion1") / s, g(intr, "radialDistortion2") / s,
                     g(intr, "tangentalDistortion1") / s, g(intr, "tangentalDistortion2") / s, 0.0])
        M = np.array([[g(tr, f"r{i}{j}") for j in (1, 2, 3)] for i in (1, 2, 3)])
        C = np.array([g(tr, "x"), g(tr, "y"), g(tr, "z")])
        Rw = np.diag([1.0, -1.0, -1.0]) @ M
        R.append(Rw)
        t.append(-Rw @ C)
        names.append(cam.get("serial", f"cam{len(names) + 1:02d}"))
    return names, Cameras(np.asarray(K), np.asarray(R), np.asarray(t), np.asarray(dist), np.asarray(size, float))


def _number(name: str) -> int | None:
    nums = re.findall(r"\d+", name)
    return int(nums[0]) if nums else None


def match_to_cameras(cam_names: list[str], items: list[Path]) -> list[Path | None]:
    """Match folders/files to cameras by the number in their names, else by sorted order."""
    if not items:
        return [None] * len(cam_names)
    by_num = {_number(p.name): p for p in items}
    nums = [_number(n) for n in cam_names]
    if None not in nums and len(by_num) == len(items) and all(n in by_num for n in nums):
        return [by_num[n] for n in nums]
    items = sorted(items)
    if len(items) != len(cam_names):
        raise ValueError(f"pose2sim: cannot match {[p.name for p in items]} to cameras {cam_names}")
    return list(items)


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def find_calibration(root: Path, explicit=None) -> Path:
    if explicit:
        p = Path(explicit)
        return p if p.is_absolute() else root / p
    d = _first_dir(root, ("calibration", "calib-2d", "calib"))
    if d is None:
        raise ValueError(f"pose2sim: no calibration folder (calibration/ or calib-2d/) in {root}")
    tomls = sorted(d.glob("*.toml"))
    if tomls:
        return tomls[0]
    qcas = sorted(d.glob("*.qca.txt"))
    if qcas:
        return qcas[0]
    raise ValueError(f"pose2sim: no .toml or .qca.txt calibration in {d}")


def trc_to_joints17(names: list[str], X: np.ndarray) -> np.ndarray:
    """Pose2Sim BODY_25B TRC markers [F,M,3] -> our 17 joints [F,17,3] (same rules as openpose.py)."""
    from ..detectors.openpose import map_points
    alias = {"RHip": "r_hip", "RKnee": "r_knee", "RAnkle": "r_ankle", "LHip": "l_hip", "LKnee": "l_knee",
             "LAnkle": "l_ankle", "RShoulder": "r_shoulder", "RElbow": "r_elbow", "RWrist": "r_wrist",
             "LShoulder": "l_shoulder", "LElbow": "l_elbow", "LWrist": "l_wrist", "Nose": "nose",
             "Head": "head_top", "Neck": "upper_neck"}
    return map_points(X, tuple(alias.get(n, n) for n in names))


def mean_bone_length(poses: np.ndarray) -> float:
    """Median over frames of the mean length of the 16 bones. poses [F,17,3] mm."""
    return float(np.nanmedian(bone_lengths(poses).mean(-1)))


def build(cfg: dict, out: zarr.Group, progress: bool = True) -> None:
    """Write the dataset contract for a Pose2Sim project (docs/stores.md)."""
    from ..detectors.openpose import load_keypoints
    c = with_defaults(cfg, DEFAULTS, "pose2sim")
    if c["root"] is None:
        root = fetch_demo(_cache_dir(c), progress)
        licence, source = DEMO_LICENCE, "PyPI pose2sim==0.2.6 (calibration, JSON, TRC) + pose2sim==0.10.49 (videos)"
    else:
        root = Path(c["root"])
        if not root.is_dir():
            raise ValueError(f"pose2sim: project folder {root} does not exist")
        licence, source = "see the project", str(root.resolve())
    cal_path = find_calibration(root, c["calibration"])
    if cal_path.name.endswith(".qca.txt"):
        cam_names, cams = read_qca_calibration(cal_path)
    else:
        cam_names, cams = read_toml_calibration(cal_path)
    V = cams.V
    pose_dir = _first_dir(root, ("pose", "pose-2d"))
    json_dirs = match_to_cameras(cam_names, sorted(p for p in pose_dir.iterdir() if p.is_dir() and p.name.endswith("_json"))) \
        if pose_dir is not None else [None] * V
    video_dir = _first_dir(root, ("videos", "raw-2d", "videos_raw"))
    video_paths = match_to_cameras(cam_names, sorted(p for p in video_dir.iterdir() if p.suffix.lower() in vid.VIDEO_EXT)) \
        if video_dir is not None else [None] * V
    has_json = all(d is not None for d in json_dirs)
    has_video = all(p is not None for p in video_paths)
    if not has_json and not has_video:
        raise ValueError(f"pose2sim: {root} has neither pose/<cam>_json folders nor videos for all {V} cameras")
    # image sizes: the videos' own when present (they may differ per view and from the calibration's)
    size = cams.size.copy()
    infos = [vid.video_info(p) for p in video_paths] if has_video else None
    if infos:
        vsize = np.array([[i["w"], i["h"]] for i in infos], dtype=np.float64)
        if np.any(np.abs(vsize - size) > 16):
            raise ValueError(f"pose2sim: video sizes {vsize.tolist()} do not match the calibration's {size.tolist()} "
                             "(rotated videos? turn them or recalibrate)")
        size = vsize
    cams = Cameras(cams.K, cams.R, cams.t, cams.dist, size)
    # frames: numbers present in the JSON (union over views), else the videos' frames
    kps = None
    if has_json:
        loaded = [load_keypoints(d, c["format"], c["person"]) for d in json_dirs]
        numbers = np.unique(np.concatenate([n for n, _, _ in loaded]))
        layout = loaded[0][2]
    else:
        numbers = np.arange(min(i["frames"] for i in infos))
        layout = None
    if c["frames"] is not None:
        a, b = int(c["frames"][0]), int(c["frames"][1])
        numbers = numbers[(numbers >= a) & (numbers < b)]
    if numbers.size == 0:
        raise ValueError("pose2sim: no frames in the requested range")
    F = len(numbers)
    if has_json:
        kps = np.full((F, V, J, 3), np.nan)
        for v, (n, kp, _) in enumerate(loaded):
            pos = np.clip(np.searchsorted(n, numbers), 0, len(n) - 1)
            ok = n[pos] == numbers
            kps[ok, v] = kp[pos[ok]]
    fps = infos[0]["fps"] if infos else 60.0
    attrs = {
        "dataset": "pose2sim", "subjects": [c["subject"]], "clips": [root.name], "actions": {}, "fps": float(fps),
        "crop_size": int(c["crop_size"]), "licence": licence, "source": source, "views": cam_names,
        "calibration": str(cal_path.resolve()), "world_up": [0.0, 0.0, 1.0],
        "openpose_json": [str(d.resolve()) for d in json_dirs] if has_json else None,
        "openpose_format": layout, "videos": [str(p.resolve()) for p in video_paths] if has_video else None,
        "rotate": [0] * V,
    }
    trcs = sorted((root / "pose-3d").glob("*.trc")) if (root / "pose-3d").is_dir() else sorted(root.glob("*.trc"))
    trcs = [p for p in trcs if "filt" not in p.name] or trcs
    if trcs:
        names, X, _, _ = read_trc(trcs[0])
        try:
            attrs["mean_bone_mm"] = mean_bone_length(trc_to_joints17(names, X))
            attrs["mean_bone_source"] = f"Pose2Sim's triangulation {trcs[0].name} (no ground truth exists)"
        except ValueError:
            pass
    vid.write_contract(out, cams, F, numbers, attrs, float(c["test_fraction"]))
    # crops around the OpenPose box: a crop needs a person box, so only with JSON and videos
    store_images = bool(c["images"]) and has_json and has_video
    boxes = np.full((F, V, 4), np.nan)
    if has_json:
        boxes = vid.fill_boxes(vid.square_box(kps, float(c["crop_margin"])), size)
    out.create_array("crop_boxes", data=boxes.astype(np.float32), dimension_names=("frame", "view", "box"))
    out.attrs["images_stored"] = store_images
    if not store_images:
        if c["images"]:
            warnings.warn("pose2sim: no images stored (crops need both OpenPose JSON for the box and videos)",
                          stacklevel=2)
        return
    S = int(c["crop_size"])
    img = out.create_array("images", shape=(F, V, S, S, 3), dtype=np.uint8, chunks=(min(64, F), 1, S, S, 3),
                           dimension_names=("frame", "view", "y", "x", "rgb"))
    bar = tqdm(total=F * V, desc="pose2sim crops", disable=not progress)
    for v, path in enumerate(video_paths):
        for a in range(0, F, 64):
            ids = numbers[a:a + 64]
            block = np.zeros((len(ids), 1, S, S, 3), np.uint8)
            for k, (_, frame) in enumerate(vid.iter_frames(path, ids)):
                if frame is not None:
                    block[k, 0] = vid.crop(frame, boxes[a + k, v], S)
                bar.update(1)
            img[a:a + len(ids), v:v + 1] = block
    bar.close()
