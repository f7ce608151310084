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
names (cam1_json <-> cam01), else by sorted order (with a warning when both sides carry
numbers that disagree); their counts must equal the calibration's. A JSON file's frame number
(the last integer in its name) is taken as the index of the video frame it was detected on.
There is no 2D or 3D ground truth: `keypoints2d_gt` is NaN and `poses3d_world` is absent;
Pose2Sim's own triangulation (TRC), when present, only gives the prior `mean_bone_mm` (attrs)
used to express self-supervised predictions in millimetres.

Several people per view (person "auto" with more than one person in a file, or "associate"):
the dataset stage passes `associate(everyone [F,V,M,J,3], cams, names) -> person_index
[F,V,P]` (pipeline/geometry/people.py through pipeline/orchestration/calibrate.py: this
package does not import the geometry); the store gets `person_index` [F, V, P] int16 (the
detection of associated person p in each view's JSON file, -1 none; person 0 the subject) and
the crops follow the subject. `frame_offsets` [V] shift a desynchronised view's JSON and video
(its file n + offset is frame n; attrs["frame_offsets"]); "auto" estimates them from every
person's keypoints (the dataset stage passes `synchronise`: pipeline/geometry/sync.py through
pipeline/orchestration/calibrate.frame_offsets) and applies them, with a warning naming the
views shifted (attrs["frame_offsets_source"] "estimated").

Besides the contract the store holds `people_count` [F, V] int16 (people in each JSON file,
-1 where the file is missing or damaged) and, with images, `image_ok` [F, V] bool (False where
the video frame could not be decoded: its crop is black and must not be trained on).

Refused with a ValueError naming the file, camera or key: fewer than 2 cameras; camera counts
that differ between the calibration, the JSON folders and the videos; calibration values of the
wrong size or type; duplicated cameras and non-finite or non-rotation extrinsics
(camera.check_rig); JSON views of different keypoint layouts; video sizes that disagree with
the calibration; a view none of whose frames decode. Flagged with a warning: damaged JSON
files (NaN frames), JSON folders covering different frames, several people in view, frames
that do not decode (image_ok), truncated videos, differing frame rates.

Resumable: the small arrays are rewritten on every run (overwrite); crops are written per
(view, block of 64 frames) and recorded in attrs["crops"], so a run killed at any point and
started again on the same group continues and ends identical to an uninterrupted build.

With `cfg["root"] = None` the Pose2Sim demo (4 cameras, 100 frames, BSD-3) is fetched from PyPI
into the cache: calibration, JSON and TRC from the `pose2sim==0.2.6` wheel, videos from
`pose2sim==0.10.49` (`pip download`; nothing else is contacted). The wheels are checked against
their pinned sha256, members are extracted only inside the cache folder, and the assembled
folder carries a checksum manifest verified before every use (a modified, truncated or added
file makes it be assembled again, with a warning naming the file).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ..camera import Cameras, check_rig
from ..joints import J, bone_lengths
from ..registry import with_defaults
from . import fetch
from . import videos as vid
from .calibration import read_qca_calibration, read_toml_calibration
from .openpose import check_layouts, map_points, outside_image, read_view
from .trc import read_trc

DEFAULTS: dict = {
    "root": None,             # Pose2Sim project folder; None: fetch the demo from PyPI
    "cache_dir": None,        # where the demo is unpacked; None: $EPIPOSE_CACHE or artifacts/cache
    "calibration": None,      # None: the first calibration/*.toml, else *.qca.txt
    "images": True,           # store crops around the OpenPose person box when videos exist
    "crop_size": 256,
    "crop_margin": 1.3,       # the square crop is this many times the keypoints' extent
    "person": "auto",         # associate: the subject followed across views and frames and every person kept
                              # (pipeline/geometry/people.py; needs the pipeline's dataset stage, which passes
                              # `associate`); auto: that when a JSON file holds more than one person and the
                              # stage can, else "largest"; or the openpose importer's per-view selection
                              # ("largest", "track", "first", an index)
    "associate_with": "keypoints",  # keypoints: a rig estimated from the people themselves | calibration: the
                              # TOML's extrinsics (docs/calibration.md compares them)
    "frame_offsets": None,    # per camera, frames to shift its JSON and video (pipeline.geometry.sync's
                              # convention: its frame n + offset shows instant n); None: in sync; "auto":
                              # estimated from the keypoints (every person) and applied (needs the pipeline's
                              # dataset stage, which passes `synchronise`)
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
# sha256 of the wheels PyPI serves for these pinned versions
DEMO_WHEEL_SHA256 = {
    "0.2.6": "c07638f0b1fcfe8206ca92b72d457d06928d7f29df95ea7822d4dee73f3598e8",
    "0.10.49": "403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1",
}
DEMO_LICENCE = "BSD-3-Clause (Pose2Sim, David Pagnon)"


def _cache_dir(cfg: dict) -> Path:
    import os
    if cfg.get("cache_dir"):
        return Path(cfg["cache_dir"])
    return Path(os.environ.get("EPIPOSE_CACHE", "artifacts/cache"))


def _wheel(cache_dir: Path, version: str, progress: bool) -> Path:
    """The pose2sim==version wheel, from the cache when its sha256 matches the pin (a cached
    wheel that does not is removed with a warning naming it), else downloaded with pip."""
    wheel_dir = Path(cache_dir) / "wheels"
    pin = DEMO_WHEEL_SHA256.get(version)
    for w in sorted(wheel_dir.glob(f"pose2sim-{version}-*.whl")):
        if pin and fetch.sha256(w) != pin:
            warnings.warn(f"pose2sim demo: cached wheel {w} does not match the sha256 pinned for pose2sim=={version} "
                          "(modified, truncated or not from PyPI); removing it and fetching it again", stacklevel=3)
            w.unlink()
        else:
            return w
    if progress:
        print(f"fetching pose2sim=={version} from PyPI (the demo's files)", file=sys.stderr)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        f"pose2sim=={version}", "-d", str(wheel_dir)], capture_output=True, text=True)
    wheels = sorted(wheel_dir.glob(f"pose2sim-{version}-*.whl"))
    if r.returncode != 0 or not wheels:
        raise ValueError(f"pose2sim demo: pip download pose2sim=={version} failed: {r.stderr[-500:]}")
    if pin and fetch.sha256(wheels[0]) != pin:
        raise ValueError(f"pose2sim demo: downloaded {wheels[0]} does not match the sha256 pinned for "
                         f"pose2sim=={version}; refusing it")
    return wheels[0]


def fetch_demo(cache_dir: Path, progress: bool = True) -> Path:
    """Assemble the Pose2Sim demo project under cache_dir/pose2sim_demo from PyPI wheels.

    A cached copy is used when every file matches its manifest; otherwise (a file modified,
    truncated, removed or added; no manifest) it is assembled again, with a warning naming the
    file. Archive members that would land outside the folder are refused (ValueError naming
    the wheel and the member)."""
    root = Path(cache_dir) / "pose2sim_demo"
    if root.exists():
        bad = fetch.check_manifest(root)
        if not bad:
            return root
        warnings.warn(f"pose2sim demo cache {root}: {'; '.join(bad[:3])}"
                      f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}; assembling it again from the wheels",
                      stacklevel=2)
    tmp = Path(cache_dir) / "pose2sim_demo.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    digests = {}
    for version, members in DEMO.items():
        wheel = _wheel(cache_dir, version, progress)
        digests[wheel.name] = fetch.sha256(wheel)
        fetch.extract_members(wheel, members, tmp)
    fetch.write_manifest(tmp, {"wheels": digests})
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _number(name: str) -> int | None:
    nums = re.findall(r"\d+", name)
    return int(nums[0]) if nums else None


def match_to_cameras(cam_names: list[str], items: list[Path], where: str = "the project",
                     calibration: str = "the calibration") -> list[Path | None]:
    """Match folders/files to cameras by the number in their names, else by sorted order.

    [None] * V when there are no items; ValueError naming both lists when the counts differ
    (a camera without its folder, or a folder without its camera, would be dropped silently)."""
    if not items:
        return [None] * len(cam_names)
    items = sorted(items)
    if len(items) != len(cam_names):
        raise ValueError(f"pose2sim: {calibration} has {len(cam_names)} cameras ({', '.join(cam_names)}) but "
                         f"{where} holds {len(items)} ({', '.join(p.name for p in items)}): each camera needs exactly "
                         "one; remove the extra ones or add their cameras to the calibration")
    by_num = {_number(p.name): p for p in items}
    nums = [_number(n) for n in cam_names]
    if None not in nums and len(set(nums)) == len(nums) and len(by_num) == len(items) and all(n in by_num for n in nums):
        return [by_num[n] for n in nums]
    if None not in nums and None not in by_num:
        warnings.warn(f"pose2sim: the numbers of {where} ({', '.join(p.name for p in items)}) do not match the cameras "
                      f"of {calibration} ({', '.join(cam_names)}); matched by sorted order: "
                      + ", ".join(f"{c} <- {p.name}" for c, p in zip(cam_names, items)), stacklevel=3)
    return list(items)


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def find_calibration(root: Path, explicit=None) -> Path:
    if explicit:
        p = Path(explicit)
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise ValueError(f"pose2sim: calibration file {p} does not exist")
        return p
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
    alias = {"RHip": "r_hip", "RKnee": "r_knee", "RAnkle": "r_ankle", "LHip": "l_hip", "LKnee": "l_knee",
             "LAnkle": "l_ankle", "RShoulder": "r_shoulder", "RElbow": "r_elbow", "RWrist": "r_wrist",
             "LShoulder": "l_shoulder", "LElbow": "l_elbow", "LWrist": "l_wrist", "Nose": "nose",
             "Head": "head_top", "Neck": "upper_neck"}
    return map_points(X, tuple(alias.get(n, n) for n in names))


def mean_bone_length(poses: np.ndarray) -> float:
    """Median over frames of the mean length of the 16 bones. poses [F,17,3] mm."""
    return float(np.nanmedian(bone_lengths(poses).mean(-1)))


@dataclass(frozen=True)
class Project:
    """What a Pose2Sim project folder holds, found by listing (nothing decoded)."""
    root: Path
    calibration: Path
    pose_dir: Path | None
    json_dirs: list        # every <camera>_json folder, sorted
    video_dir: Path | None
    videos: list           # every video file, sorted
    trc: Path | None


def discover(root: Path, calibration=None) -> Project:
    """List a project's calibration, JSON folders, videos and TRC (ValueError naming the
    folder when it does not exist, has no calibration, or has a pose folder without
    <camera>_json folders)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"pose2sim: project folder {root} does not exist")
    cal = find_calibration(root, calibration)
    pose_dir = _first_dir(root, ("pose", "pose-2d"))
    json_dirs: list[Path] = []
    if pose_dir is not None:
        entries = sorted(p for p in pose_dir.iterdir() if not p.name.startswith("."))
        json_dirs = [p for p in entries if p.is_dir() and p.name.endswith("_json")]
        if entries and not json_dirs:
            raise ValueError(f"pose2sim: {pose_dir} holds no <camera>_json folders (found "
                             f"{', '.join(p.name for p in entries[:5])}); put each camera's OpenPose JSON files in "
                             f"{pose_dir.name}/<camera>_json/")
    video_dir = _first_dir(root, ("videos", "raw-2d", "videos_raw"))
    videos = sorted(p for p in video_dir.iterdir() if p.is_file() and p.suffix.lower() in vid.VIDEO_EXT) \
        if video_dir is not None else []
    trcs = sorted((root / "pose-3d").glob("*.trc")) if (root / "pose-3d").is_dir() else sorted(root.glob("*.trc"))
    trcs = [p for p in trcs if "filt" not in p.name] or trcs
    return Project(root, cal, pose_dir, json_dirs, video_dir, videos, trcs[0] if trcs else None)


def sources(cfg: dict) -> list[Path]:
    """Every file a build with this configuration reads (calibration, every JSON file of the
    camera folders, the videos, the TRC): sorted absolute paths, by listing only. [] for the
    demo (root None): it is identified by its pinned wheels. ValueError as `discover`."""
    c = with_defaults(cfg, DEFAULTS, "pose2sim")
    if c["root"] is None:
        return []
    p = discover(Path(c["root"]), c["calibration"])
    files = [p.calibration, *(f for d in p.json_dirs for f in d.glob("*.json")), *p.videos]
    if p.trc is not None:
        files.append(p.trc)
    return sorted({f.resolve() for f in files})


def _read_calibration(path: Path) -> tuple[list[str], Cameras]:
    return read_qca_calibration(path) if path.name.endswith(".qca.txt") else read_toml_calibration(path)


def build(cfg: dict, out: zarr.Group, progress: bool = True, associate=None, synchronise=None) -> None:
    """Write the dataset contract for a Pose2Sim project (docs/stores.md), plus people_count
    and image_ok (module docstring). Resumable on the group a killed run left.
    associate(everyone [F,V,M,J,3], cams, names) -> person_index [F,V,P] (several people);
    synchronise(everyone [F,V,M,J,3], cams, names) -> offsets [V] (frame_offsets "auto")."""
    c = with_defaults(cfg, DEFAULTS, "pose2sim")
    rng = vid.frame_range(c["frames"], "pose2sim")
    if c["root"] is None:
        root = fetch_demo(_cache_dir(c), progress)
        licence, source = DEMO_LICENCE, "PyPI pose2sim==0.2.6 (calibration, JSON, TRC) + pose2sim==0.10.49 (videos)"
    else:
        root = Path(c["root"])
        licence, source = "see the project", str(root.resolve())
    p = discover(root, c["calibration"])
    cal_path = p.calibration
    cam_names, cams = _read_calibration(cal_path)
    V = cams.V
    json_dirs = match_to_cameras(cam_names, p.json_dirs, f"{p.pose_dir} (camera folders)", f"calibration {cal_path}")
    video_paths = match_to_cameras(cam_names, p.videos, f"{p.video_dir} (videos)", f"calibration {cal_path}")
    has_json = all(d is not None for d in json_dirs)
    has_video = all(q is not None for q in video_paths)
    if not has_json and not has_video:
        raise ValueError(f"pose2sim: {root} has neither pose/<cam>_json folders nor videos for all {V} cameras")
    if V < 2:
        raise ValueError(f"pose2sim: calibration {cal_path} has {V} camera ({', '.join(cam_names)}); triangulation "
                         "needs at least 2 calibrated cameras")
    check_rig(cams, cam_names, what=f"pose2sim: calibration {cal_path}")
    # image sizes: the videos' own when present (they may differ per view and from the calibration's)
    size = cams.size.copy()
    infos = None
    if has_video:
        infos = [vid.video_info(q) for q in video_paths]
        vid.warn_truncated(infos, video_paths, "pose2sim")
        vsize = np.array([[i["w"], i["h"]] for i in infos], dtype=np.float64)
        vid.check_sizes(cams.size, vsize, cam_names, cal_path, video_paths, "pose2sim")
        size = vsize
        if len({i["frames"] for i in infos}) > 1:
            warnings.warn("pose2sim: the videos have unequal lengths ("
                          + ", ".join(f"{q.name} {i['frames']}" for q, i in zip(video_paths, infos))
                          + "): frames beyond a video's end have no crop (image_ok False)", stacklevel=2)
        fps_all = [i["fps"] for i in infos]
        if max(fps_all) - min(fps_all) > 0.01 * max(fps_all):
            warnings.warn("pose2sim: the videos' frame rates differ ("
                          + ", ".join(f"{q.name} {f:g}" for q, f in zip(video_paths, fps_all))
                          + "): frame i of each is taken as the same instant; check the synchronisation", stacklevel=2)
    cams = Cameras(cams.K, cams.R, cams.t, cams.dist, size)
    auto = isinstance(c["frame_offsets"], str) and c["frame_offsets"] == "auto"
    if auto and (synchronise is None or not has_json):
        raise ValueError("pose2sim: frame_offsets 'auto' needs the OpenPose JSON and the estimate the pipeline's "
                         "dataset stage passes (pipeline/orchestration/stages/dataset.py); give the offsets as "
                         f"{V} integers instead")
    offsets = np.zeros(V, np.int64) if auto else _offsets(c["frame_offsets"], V, cam_names)
    if c["person"] == "associate" and associate is None:
        raise ValueError("pose2sim: person 'associate' needs the association the pipeline's dataset stage passes "
                         "(pipeline/orchestration/stages/dataset.py); use person 'auto' or 'largest' here")
    # frames: numbers present in the JSON (union over views), else the videos' frames
    views = None
    if has_json:
        views = [read_view(d, c["format"], "largest" if c["person"] in ("auto", "associate") else c["person"])
                 for d in json_dirs]
        layout = check_layouts(views)
        if auto:
            offsets = _estimate_offsets(views, cams.without_extrinsics(), cam_names, synchronise)
        numbers = np.unique(np.concatenate([v.numbers - o for v, o in zip(views, offsets)]))
        if any(not np.array_equal(v.numbers - o, views[0].numbers - offsets[0]) for v, o in zip(views, offsets)):
            desc = ", ".join(f"{Path(v.source).name} {v.numbers.min()}-{v.numbers.max()} ({len(v.numbers)} files)"
                             for v in views)
            warnings.warn(f"pose2sim: the JSON folders cover different frames ({desc}); a frame without a file in a "
                          "view is NaN there, and a view whose numbering is offset is out of sync: check the "
                          "synchronisation", stacklevel=2)
    else:
        numbers = np.arange(min(i["frames"] for i in infos))
        layout = None
    held = numbers
    if rng is not None:
        numbers = numbers[(numbers >= rng[0]) & (numbers < rng[1])]
    if numbers.size == 0:
        raise ValueError(f"pose2sim: no frames in [{rng[0]}, {rng[1]}): the project holds frames "
                         f"{vid.ranges(held) if held.size else 'none'}")
    F = len(numbers)
    kps = np.full((F, V, J, 3), np.nan)
    person_index = None
    people = np.full((F, V), -1, np.int16)
    if has_json:
        damaged, multi = [], {}
        for v, vk in enumerate(views):
            pos = np.clip(np.searchsorted(vk.numbers, numbers + offsets[v]), 0, len(vk.numbers) - 1)
            ok = vk.numbers[pos] == numbers + offsets[v]
            kps[ok, v] = vk.kp[pos[ok]]
            people[ok, v] = vk.people[pos[ok]]
            damaged += [vk.damaged[int(n)] for n in numbers if int(n) in vk.damaged]
            if np.any(people[:, v] > 1):
                multi[cam_names[v]] = float(np.mean(people[:, v] > 1))
        if associate is not None and (c["person"] == "associate" or (c["person"] == "auto" and np.any(people > 1))):
            everyone = np.full((F, V, max(vk.everyone.shape[1] for vk in views), J, 3), np.nan)
            for v, vk in enumerate(views):
                pos = np.clip(np.searchsorted(vk.numbers, numbers + offsets[v]), 0, len(vk.numbers) - 1)
                ok = vk.numbers[pos] == numbers + offsets[v]
                everyone[ok, v, :vk.everyone.shape[1]] = vk.everyone[pos[ok]]
            use = cams if c["associate_with"] == "calibration" and cams.has_extrinsics else cams.without_extrinsics()
            person_index = np.asarray(associate(everyone, use, cam_names))  # [F,V,P], person 0 the subject
            sel = np.maximum(person_index[:, :, 0], 0)
            kps = everyone[np.arange(F)[:, None], np.arange(V)[None], sel]
            kps[person_index[:, :, 0] < 0] = np.nan
            if multi:
                seen = float(np.mean((person_index[:, :, 0] >= 0).sum(1) >= 2))
                warnings.warn("pose2sim: more than one person in view ("
                              + ", ".join(f"{k} on {100 * s:.0f}% of frames" for k, s in multi.items())
                              + f"): associated across views and frames, {person_index.shape[2]} people kept "
                              f"(person_index); the subject is seen by two cameras or more in {100 * seen:.0f}% of "
                              "frames and the crops follow it", stacklevel=2)
            multi = {}
        far = outside_image(kps, size[None]) & np.isfinite(kps[..., 0])
        if far.any():
            kps[far] = np.nan
            warnings.warn(f"pose2sim: {int(far.sum())} JSON keypoints lie far outside their image (cameras "
                          f"{', '.join(cam_names[v] for v in np.flatnonzero(far.any(axis=(0, 2))))}); "
                          "ignored for the crops", stacklevel=2)
        if damaged:
            warnings.warn(f"pose2sim: {len(damaged)} damaged JSON file(s) read as missing frames: "
                          f"{'; '.join(damaged[:3])}{' ...' if len(damaged) > 3 else ''}; fix or remove them",
                          stacklevel=2)
        if multi:
            warnings.warn("pose2sim: more than one person in view ("
                          + ", ".join(f"{k} on {100 * s:.0f}% of frames" for k, s in multi.items())
                          + f"); person={c['person']!r} keeps one per frame and may take a bystander for the subject: "
                          "check these views or set person to 'track' or an index (counts in people_count)",
                          stacklevel=2)
    fps = infos[0]["fps"] if infos else 60.0
    attrs = {
        "dataset": "pose2sim", "subjects": [c["subject"]], "clips": [root.name], "actions": {}, "fps": float(fps),
        "crop_size": int(c["crop_size"]), "licence": licence, "source": source, "views": cam_names,
        "calibration": str(cal_path.resolve()), "world_up": [0.0, 0.0, 1.0],
        "openpose_json": [str(d.resolve()) for d in json_dirs] if has_json else None,
        "openpose_format": layout, "videos": [str(q.resolve()) for q in video_paths] if has_video else None,
        "rotate": [0] * V, "frame_offsets": offsets.tolist(),
        "frame_offsets_source": "estimated" if auto else "given" if c["frame_offsets"] is not None else "none",
        "person": "associated (person_index; person 0 the subject)" if person_index is not None else c["person"],
    }
    if p.trc is not None:
        try:
            names, X, _, _ = read_trc(p.trc)
            attrs["mean_bone_mm"] = mean_bone_length(trc_to_joints17(names, X))
            attrs["mean_bone_source"] = f"Pose2Sim's triangulation {p.trc.name} (no ground truth exists)"
        except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as e:
            warnings.warn(f"pose2sim: cannot use {p.trc} for the bone-length prior ({e}); mean_bone_mm is not set "
                          "(self-supervised predictions stay in bone units)", stacklevel=2)
    vid.write_contract(out, cams, F, numbers, attrs, float(c["test_fraction"]))
    # crops around the OpenPose box: a crop needs a person box, so only with JSON and videos
    store_images = bool(c["images"]) and has_json and has_video
    boxes = np.full((F, V, 4), np.nan)
    if has_json:
        boxes = vid.fill_boxes(vid.square_box(kps, float(c["crop_margin"])), size)
        out.create_array("people_count", data=people, dimension_names=("frame", "view"), overwrite=True)
        if person_index is not None:
            out.create_array("person_index", data=person_index.astype(np.int16), overwrite=True,
                             dimension_names=("frame", "view", "person"))
        elif "person_index" in out:
            del out["person_index"]
    out.create_array("crop_boxes", data=boxes.astype(np.float32), dimension_names=("frame", "view", "box"),
                     overwrite=True)
    out.attrs["images_stored"] = store_images
    if not store_images:
        if c["images"]:
            warnings.warn("pose2sim: no images stored (crops need both OpenPose JSON for the box and videos)",
                          stacklevel=2)
        return
    vid.write_crops(out, video_paths, cam_names, numbers, boxes.astype(np.float32), int(c["crop_size"]), infos,
                    progress, offsets, what="pose2sim", hint="build without images (images=false)")


def _estimate_offsets(views, cams: Cameras, names: list[str], synchronise) -> np.ndarray:
    """frame_offsets "auto": every person of every view aligned by file number, the views'
    offsets estimated by `synchronise` (0 where the evidence is not clear); warned when any."""
    numbers = np.unique(np.concatenate([v.numbers for v in views]))
    everyone = np.full((len(numbers), len(views), max(v.everyone.shape[1] for v in views), J, 3), np.nan)
    for v, vk in enumerate(views):
        everyone[np.searchsorted(numbers, vk.numbers), v, :vk.everyone.shape[1]] = vk.everyone
    off = np.asarray(synchronise(everyone, cams, names), dtype=np.int64).reshape(len(views))
    if np.any(off):
        warnings.warn("pose2sim: frame_offsets 'auto': views out of sync, shifted by "
                      + ", ".join(f"{names[v]} {int(off[v]):+d}" for v in np.flatnonzero(off))
                      + " frames (attrs frame_offsets; its frame n + offset is instant n)", stacklevel=3)
    return off


def _offsets(value, V: int, names: list[str]) -> np.ndarray:
    """frame_offsets -> [V] int (zeros for None); ValueError naming the key otherwise."""
    if value is None:
        return np.zeros(V, np.int64)
    try:
        off = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"pose2sim: frame_offsets must be {V} integers ({', '.join(names)}), got {value!r}") from None
    if len(off) != V or not np.all(np.isfinite(off)) or np.any(off != np.round(off)):
        raise ValueError(f"pose2sim: frame_offsets must be {V} integers ({', '.join(names)}), got {value!r}")
    return off.astype(np.int64)
