"""Bad input files for the dataset adapters and the keypoint importer, each reproducible.

`CASES[name](folder) -> spec` writes one broken project under `folder` and returns

    {"overrides": {dotted config keys that run the chain on it},
     "stage": the stage where the outcome shows ("dataset" or "detect2d"),
     "expect": "error" (a ValueError) or "flag" (a warning; the output is flagged),
     "match": a substring of the error message or of one warning}

`run_case(name, folder)` runs the stages up to spec["stage"] with pipeline.orchestration.run_stage
(preset cpu, a store under folder) and reports what a user sees. A benchmark
(bench/faults.py) imports both.

Projects are small copies of a clean base: `base_project` cuts the first 20 frames of the real
Pose2Sim demo (../shared/data/multiview/pose2sim_demo) when it is present, with its videos
and calibration scaled by 1/4 (and the JSON coordinates with them) so that a build takes a
fraction of a second, and the background person OpenPose sees in cam01/cam02 removed (kept:
the subject, the largest) so the base raises no warning at all; else a tiny synthetic project
of the same layout (4 cameras, BODY_25B JSON, TOML, mp4 videos drawn with OpenCV).
`videos_base` is a folder of synchronised videos with a calibration.json for the `videos` adapter.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import tomllib
import warnings
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

SHARED_DEMO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multiview" / "pose2sim_demo"
FRAMES = 20
SCALE = 0.25
CAMS = ("cam01", "cam02", "cam03", "cam04")


# ------------------------------------------------------------------------------ writers
def write_toml(path: Path, calib: dict) -> None:
    """Write a Pose2Sim calibration dict ({section: {name, size, matrix, ...}}) as TOML."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple, np.ndarray)):
            return "[ " + ", ".join(val(x) for x in v) + "]"
        x = float(v)
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)
    lines = []
    for sec, body in calib.items():
        lines.append(f"[{sec}]")
        lines += [f"{k} = {val(v)}" for k, v in body.items()]
        lines.append("")
    Path(path).write_text("\n".join(lines))


def read_toml(path: Path) -> dict:
    return tomllib.loads(Path(path).read_text())


def write_openpose(path: Path, people: list[np.ndarray]) -> None:
    data = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": np.asarray(p, float).ravel().tolist()}
                                       for p in people]}
    Path(path).write_text(json.dumps(data))


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0, fourcc: str = "mp4v") -> None:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not vw.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    for f in frames:
        vw.write(f)
    vw.release()


def read_video(path: Path, n: int | None = None) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out = []
    while n is None or len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out, fps


def qca_xml(names: list[str], K, R, t, size) -> str:
    """A Qualisys .qca.txt holding these cameras (the inverse of pose2sim.read_qca_calibration:
    values x64, M = diag(1,-1,-1) R, centre C = -R^T t)."""
    cams = []
    for n, k, r, tt, s in zip(names, K, R, t, size):
        M = (np.diag([1.0, -1.0, -1.0]) @ r).tolist()
        C = (-r.T @ tt).tolist()
        k, s = np.asarray(k, float).tolist(), np.asarray(s, float).tolist()
        tr = " ".join(f'r{i + 1}{j + 1}="{M[i][j]!r}"' for i in range(3) for j in range(3))
        cams.append(f'<camera serial="{n}" viewrotation="0">'
                    f'<fov_video left="0" top="0" right="{s[0]!r}" bottom="{s[1]!r}"/>'
                    f'<transform x="{C[0]!r}" y="{C[1]!r}" z="{C[2]!r}" {tr}/>'
                    f'<intrinsic focalLengthU="{64 * k[0][0]!r}" focalLengthV="{64 * k[1][1]!r}" '
                    f'centerPointU="{64 * k[0][2]!r}" centerPointV="{64 * k[1][2]!r}" radialDistortion1="0" '
                    f'radialDistortion2="0" tangentalDistortion1="0" tangentalDistortion2="0"/></camera>')
    return f'<?xml version="1.0"?>\n<calibration><cameras>{"".join(cams)}</cameras></calibration>\n'


# ------------------------------------------------------------------------------ the bases
def _largest(people: list[list[float]]) -> list[list[float]]:
    """The person with the largest box of confident points x mean confidence (the openpose
    importer's 'largest' rule), as a one-element list."""
    best, score = [], -1.0
    for p in people:
        a = np.asarray(p, float).reshape(-1, 3)
        ok = a[:, 2] > 0.05
        if ok.sum() < 2:
            continue
        wh = a[ok, :2].max(0) - a[ok, :2].min(0)
        s = float(wh[0] * wh[1] * a[ok, 2].mean())
        if s > score:
            best, score = [p], s
    return best


def _cut_demo(dest: Path, frames: int = FRAMES, scale: float = SCALE) -> Path:
    """The first `frames` frames of the real demo, videos and calibration scaled by `scale`."""
    proj = dest / "pose2sim_demo_cut"
    (proj / "calibration").mkdir(parents=True)
    calib = read_toml(SHARED_DEMO / "calibration" / "Calib_qca.toml")
    for sec, c in calib.items():
        if isinstance(c, dict) and "matrix" in c:
            K = np.asarray(c["matrix"], float)
            K[:2] *= scale
            c["matrix"] = K.tolist()
            c["size"] = [float(x) * scale for x in c["size"]]
    write_toml(proj / "calibration" / "Calib_qca.toml", calib)
    for cam in CAMS:
        d = proj / "pose" / f"{cam}_json"
        d.mkdir(parents=True)
        for f in range(frames):
            data = json.loads((SHARED_DEMO / "pose" / f"{cam}_json" / f"{cam}.{f:04d}.json").read_text())
            people = []
            for p in _largest([q["pose_keypoints_2d"] for q in data["people"]]):
                a = np.asarray(p, float).reshape(-1, 3)
                a[:, :2] *= scale
                people.append(a)
            write_openpose(d / f"{cam}.{f:04d}.json", people)
        imgs, fps = read_video(SHARED_DEMO / "videos" / f"{cam}.mp4", frames)
        imgs = [cv2.resize(i, (round(i.shape[1] * scale), round(i.shape[0] * scale)), interpolation=cv2.INTER_AREA)
                for i in imgs]
        (proj / "videos").mkdir(exist_ok=True)
        write_video(proj / "videos" / f"{cam}.mp4", imgs, fps)
    return proj


# A standing person in BODY_25B order (x right, y forward, z up; mm)
_BODY = {"nose": (0, 90, 1600), "l_eye": (30, 80, 1630), "r_eye": (-30, 80, 1630), "l_ear": (70, 0, 1610),
         "r_ear": (-70, 0, 1610), "l_shoulder": (180, 0, 1420), "r_shoulder": (-180, 0, 1420),
         "l_elbow": (230, 20, 1130), "r_elbow": (-230, 20, 1130), "l_wrist": (240, 60, 880),
         "r_wrist": (-240, 60, 880), "l_hip": (100, 0, 950), "r_hip": (-100, 0, 950), "l_knee": (105, 30, 520),
         "r_knee": (-105, 30, 520), "l_ankle": (110, 0, 90), "r_ankle": (-110, 0, 90),
         "upper_neck": (0, 0, 1500), "head_top": (0, 10, 1760), "l_big_toe": (120, 160, 20),
         "l_small_toe": (170, 130, 20), "l_heel": (110, -50, 20), "r_big_toe": (-120, 160, 20),
         "r_small_toe": (-170, 130, 20), "r_heel": (-110, -50, 20)}
_BONES = [("l_ankle", "l_knee"), ("l_knee", "l_hip"), ("r_ankle", "r_knee"), ("r_knee", "r_hip"),
          ("l_hip", "r_hip"), ("l_shoulder", "r_shoulder"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
          ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"), ("l_hip", "l_shoulder"), ("r_hip", "r_shoulder"),
          ("upper_neck", "head_top")]


def _synthetic(dest: Path, frames: int = FRAMES) -> Path:
    """A 4-camera project: a person walking 0.6 m, projected with OpenCV, drawn into videos."""
    from pipeline.camera import look_at, matrix_to_rodrigues, project
    from pipeline.data.openpose import LAYOUTS
    proj = dest / "synthetic_project"
    (proj / "calibration").mkdir(parents=True)
    names = LAYOUTS["body25b"]
    X0 = np.array([_BODY[n] for n in names], float)
    w, h = 240, 320
    calib = {}
    for v, cam in enumerate(CAMS):
        az = np.deg2rad(30 + 90 * v)
        C = np.array([4000 * np.cos(az), 4000 * np.sin(az), 1500.0])
        R, t = look_at(C, np.array([0.0, 0.0, 900.0]))
        K = np.array([[260.0, 0, (w - 1) / 2], [0, 260.0, (h - 1) / 2], [0, 0, 1]])
        calib[f"cam_{v + 1}"] = {"name": cam, "size": [float(w), float(h)], "matrix": K.tolist(),
                                 "distortions": [0.0, 0.0, 0.0, 0.0], "rotation": matrix_to_rodrigues(R).tolist(),
                                 "translation": (t / 1000).tolist(), "fisheye": False}
    write_toml(proj / "calibration" / "Calib.toml", calib)
    for v, cam in enumerate(CAMS):
        c = calib[f"cam_{v + 1}"]
        K = np.asarray(c["matrix"])
        from pipeline.camera import rodrigues_to_matrix
        R, t = rodrigues_to_matrix(np.asarray(c["rotation"])), np.asarray(c["translation"]) * 1000
        d = proj / "pose" / f"{cam}_json"
        d.mkdir(parents=True)
        imgs = []
        for f in range(frames):
            X = X0 + np.array([-300 + 600 * f / max(frames - 1, 1), 0, 0])
            uv = project(X, K, R, t)
            write_openpose(d / f"{cam}.{f:04d}.json", [np.column_stack([uv, np.full(len(uv), 0.8)])])
            img = np.full((h, w, 3), 70, np.uint8)
            img[h // 2:] = 110
            pt = {n: tuple(int(round(x)) for x in uv[i]) for i, n in enumerate(names)}
            for a, b in _BONES:
                cv2.line(img, pt[a], pt[b], (230, 230, 230), 3)
            imgs.append(img)
        (proj / "videos").mkdir(exist_ok=True)
        write_video(proj / "videos" / f"{cam}.mp4", imgs, 25.0)
    return proj


_MASTERS: dict[str, Path] = {}
KIND: str | None = None     # force "demo" or "synthetic" for every case; None: the demo when present


def base_kind() -> str:
    if KIND is not None:
        return KIND
    return "demo" if (SHARED_DEMO / "pose" / "cam01_json").is_dir() else "synthetic"


def base_project(folder: Path, kind: str | None = None) -> Path:
    """A clean project (see the module docstring) copied to folder/<name>; returns its root."""
    kind = kind or base_kind()
    if kind not in _MASTERS:
        tmp = Path(tempfile.mkdtemp(prefix=f"epipose-faults-{kind}-"))
        _MASTERS[kind] = _cut_demo(tmp) if kind == "demo" else _synthetic(tmp)
    dest = Path(folder) / _MASTERS[kind].name
    shutil.copytree(_MASTERS[kind], dest)
    return dest


def chain(proj: Path, **extra) -> dict:
    """Overrides that run the chain on a Pose2Sim project with the OpenPose JSON."""
    return {"dataset.name": "pose2sim", "dataset.root": str(proj), "dataset.crop_size": 32, "train3d.input_size": 32,
            "detect2d.detector": "openpose", **{f"dataset.{k}": v for k, v in extra.items()}}


def videos_base(folder: Path, n_videos: int = 3, frames: int = FRAMES) -> Path:
    """n_videos synchronised 96x64 videos (a moving bar) and a calibration.json (K, R, t mm)."""
    from pipeline.camera import look_at
    root = Path(folder) / "videos_project"
    root.mkdir(parents=True)
    w, h = 96, 64
    K, R, t = [], [], []
    for v in range(n_videos):
        frames_v = []
        for f in range(frames):
            img = np.full((h, w, 3), 40 + 10 * v, np.uint8)
            cv2.rectangle(img, (5 + 3 * f, 10), (15 + 3 * f, 50), (200, 200, 200), -1)
            frames_v.append(img)
        write_video(root / f"view{v}.mp4", frames_v, 25.0)
        az = np.deg2rad(360 * v / n_videos)
        Rv, tv = look_at(np.array([3000 * np.cos(az), 3000 * np.sin(az), 1500.0]), np.array([0.0, 0.0, 900.0]))
        K.append([[100.0, 0, (w - 1) / 2], [0, 100.0, (h - 1) / 2], [0, 0, 1]])
        R.append(Rv.tolist())
        t.append(tv.tolist())
    (root / "calibration.json").write_text(json.dumps({"K": K, "R": R, "t": t, "dist": [[0.0] * 5] * n_videos,
                                                       "size": [[w, h]] * n_videos}))
    return root


def _videos_chain(root: Path) -> dict:
    return {"dataset.name": "videos", "dataset.root": str(root), "detect2d.detector": "gt"}


# ------------------------------------------------------------------------------ edits
def _json(proj: Path, cam: str, f: int) -> Path:
    return proj / "pose" / f"{cam}_json" / f"{cam}.{f:04d}.json"


def _people(path: Path) -> list[np.ndarray]:
    return [np.asarray(p["pose_keypoints_2d"], float).reshape(-1, 3) for p in json.loads(path.read_text())["people"]]


def _calib(proj: Path) -> tuple[Path, dict]:
    path = next((proj / "calibration").glob("*.toml"))
    return path, read_toml(path)


def _spec(overrides, stage, expect, match) -> dict:
    return {"overrides": overrides, "stage": stage, "expect": expect, "match": match}


def _error(overrides, match, stage="dataset"):
    return _spec(overrides, stage, "error", match)


def _flag(overrides, match, stage="dataset"):
    return _spec(overrides, stage, "flag", match)


# --- JSON keypoint files
def json_not_utf8(folder):
    p = base_project(folder)
    f = _json(p, "cam02", 5)
    f.write_bytes(f.read_text().replace('"version"', '"versi\u00f3n"').encode("latin-1"))
    return _flag(chain(p), "cam02.0005.json is not UTF-8")


def json_is_a_list(folder):
    p = base_project(folder)
    _json(p, "cam01", 3).write_text(json.dumps([{"pose_keypoints_2d": [1, 2, 0.5]}]))
    return _flag(chain(p), "cam01.0003.json holds a JSON list")


def json_people_null(folder):
    p = base_project(folder)
    _json(p, "cam03", 7).write_text('{"version": 1.3, "people": null}')
    return _flag(chain(p), "cam03.0007.json has 'people': null")


def json_person_not_multiple_of_3(folder):
    p = base_project(folder)
    f = _json(p, "cam04", 2)
    d = json.loads(f.read_text())
    d["people"][0]["pose_keypoints_2d"] = d["people"][0]["pose_keypoints_2d"][:-1]
    f.write_text(json.dumps(d))
    return _flag(chain(p), "cam04.0002.json person 0: pose_keypoints_2d has 74 values, not a multiple of 3")


def json_damaged_read_by_detector(folder):
    """The same damage seen by the openpose detector (the frame is NaN there, warned)."""
    p = base_project(folder)
    _json(p, "cam02", 4).write_text('{"version": 1.3, "people": [{"pose_keypoints_2d": [1, 2')
    return _flag(chain(p), "damaged keypoint file(s) read as missing frames", stage="detect2d")


def json_folder_all_damaged(folder):
    p = base_project(folder)
    for f in (p / "pose" / "cam03_json").glob("*.json"):
        f.write_bytes(b"\xff\xfe" + f.read_bytes())
    return _error(chain(p), "cam03_json: 20 of 20 keypoint files are damaged")


def json_coco17_view_among_body25b(folder):
    p = base_project(folder)
    for f in (p / "pose" / "cam03_json").glob("*.json"):
        write_openpose(f, [q[:17] for q in _people(f)])
    return _error(chain(p), "layouts differ: cam01_json (body25b), cam02_json (body25b), cam03_json (coco17)")


def json_person_with_other_point_count(folder):
    p = base_project(folder)
    f = _json(p, "cam01", 9)
    write_openpose(f, [q[:18] for q in _people(f)])
    return _flag(chain(p), "cam01.0009.json person 0 has 18 points; the folder's layout body25b has 25")


def json_stray_file_without_number(folder):
    p = base_project(folder)
    (p / "pose" / "cam02_json" / "notes.json").write_text("{}")
    return _error(chain(p), "file name(s) without a frame number, e.g. ['notes.json']")


def json_duplicated_frame_number(folder):
    p = base_project(folder)
    shutil.copy(_json(p, "cam01", 3), p / "pose" / "cam01_json" / "cam01_copy.0003.json")
    return _error(chain(p), "have the same frame number 3")


def json_point_far_outside(folder):
    p = base_project(folder)
    f = _json(p, "cam02", 6)
    people = _people(f)
    people[0][10] = [1e12, 5.0, 0.9]
    write_openpose(f, people)
    return _flag(chain(p), "keypoints far outside the image set to NaN", stage="detect2d")


def json_view_offset_in_time(folder):
    p = base_project(folder)
    d = p / "pose" / "cam04_json"
    for f in sorted(d.glob("*.json"), reverse=True):
        n = int(f.stem.split(".")[-1])
        f.rename(d / f"cam04.{n + 5:04d}.json")
    return _flag(chain(p), "the JSON folders cover different frames")


def json_camera_folder_empty(folder):
    p = base_project(folder)
    for f in (p / "pose" / "cam02_json").glob("*.json"):
        f.unlink()
    return _error(chain(p), "no .json files in")


def json_folders_not_named_json(folder):
    p = base_project(folder)
    for cam in CAMS:
        (p / "pose" / f"{cam}_json").rename(p / "pose" / cam)
    return _error(chain(p), "holds no <camera>_json folders")


# --- calibration
def calib_3_cameras_for_4_folders(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c.pop("cam_4")
    write_toml(path, c)
    return _error(chain(p), "has 3 cameras (cam01, cam02, cam03) but")


def calib_nan_translation(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_2"]["translation"][1] = float("nan")
    write_toml(path, c)
    return _error(chain(p), "cam02 have non-finite rotation or translation values")


def calib_duplicated_camera(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_2"] = {**c["cam_1"], "name": "cam02"}
    write_toml(path, c)
    return _error(chain(p), "cam01 and cam02 are at the same place")


def calib_matrix_wrong_size(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_3"]["matrix"] = [[1.0, 0.0], [0.0, 1.0]]
    write_toml(path, c)
    return _error(chain(p), "camera [cam_3], 'matrix' has 4 values, expected 9")


def calib_missing_rotation(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_1"].pop("rotation")
    write_toml(path, c)
    return _error(chain(p), "camera section [cam_1] of")


def calib_text_in_translation(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_4"]["translation"] = ["0.1", "x", "0.3"]
    write_toml(path, c)
    return _error(chain(p), "camera [cam_4], 'translation' is not a list of numbers")


def calib_not_an_intrinsic_matrix(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_2"]["matrix"][2] = [0.0, 0.0, 0.0]
    write_toml(path, c)
    return _error(chain(p), "camera [cam_2], 'matrix' is not an intrinsic matrix")


def calib_unreadable_toml(folder):
    p = base_project(folder)
    path, _ = _calib(p)
    path.write_text("[cam_1\nname = ")
    return _error(chain(p), "cannot read calibration")


def calib_size_disagrees_with_videos(folder):
    p = base_project(folder)
    path, c = _calib(p)
    c["cam_2"]["size"] = [c["cam_2"]["size"][1], c["cam_2"]["size"][0]]   # as if the video were turned
    write_toml(path, c)
    return _error(chain(p), "video sizes disagree with the calibration")


def _qca_project(folder) -> tuple[Path, Path]:
    from pipeline.data.calibration import read_toml_calibration
    p = base_project(folder)
    path, _ = _calib(p)
    names, cams = read_toml_calibration(path)
    qca = p / "calibration" / "Calib.qca.txt"
    qca.write_text(qca_xml(names, cams.K, cams.R, cams.t, cams.size))
    return p, qca


def qca_missing_attribute(folder):
    p, qca = _qca_project(folder)
    qca.write_text(qca.read_text().replace('focalLengthU="', 'focalLength="', 2).replace(
        'focalLength="', 'focalLengthU="', 1))
    return _error(chain(p, calibration="calibration/Calib.qca.txt"),
                  "camera cam02, <intrinsic> lacks the attribute 'focalLengthU'")


def qca_not_a_number(folder):
    p, qca = _qca_project(folder)
    text = qca.read_text()
    i = text.index('x="', text.index('serial="cam03"'))
    qca.write_text(text[:i] + 'x="1,5e3"' + text[text.index(" ", i):])
    return _error(chain(p, calibration="calibration/Calib.qca.txt"), "camera cam03, <transform> x='1,5e3' is not a number")


def one_camera_only(folder):
    p = base_project(folder)
    path, c = _calib(p)
    write_toml(path, {"cam_1": c["cam_1"]})
    for cam in CAMS[1:]:
        shutil.rmtree(p / "pose" / f"{cam}_json")
        (p / "videos" / f"{cam}.mp4").unlink()
    return _error(chain(p), "triangulation needs at least 2 calibrated cameras")


# --- videos of a Pose2Sim project
def video_truncated_avi(folder):
    """The users' case: a truncated AVI (MJPG): 9 of 20 frames decode."""
    p = base_project(folder)
    imgs, fps = read_video(p / "videos" / "cam02.mp4")
    (p / "videos" / "cam02.mp4").unlink()
    avi = p / "videos" / "cam02.avi"
    write_video(avi, imgs, fps, "MJPG")
    data = avi.read_bytes()
    avi.write_bytes(data[:len(data) // 2])
    return _flag(chain(p), "cam02.avi (cam02): ")    # "... N of 20 frames could not be decoded (frame numbers ...)"


def video_unreadable(folder):
    p = base_project(folder)
    (p / "videos" / "cam03.mp4").write_bytes(b"not a video" * 100)
    return _error(chain(p), "cannot open video")


def video_extra_file(folder):
    p = base_project(folder)
    shutil.copy(p / "videos" / "cam01.mp4", p / "videos" / "cam05.mp4")
    return _error(chain(p), "(videos) holds 5 (cam01.mp4, cam02.mp4, cam03.mp4, cam04.mp4, cam05.mp4)")


def video_shorter_than_json(folder):
    p = base_project(folder)
    imgs, fps = read_video(p / "videos" / "cam04.mp4")
    write_video(p / "videos" / "cam04.mp4", imgs[:12], fps)
    return _flag(chain(p), "cam04.mp4 (cam04): 8 of 20 frames could not be decoded")


def video_json_numbered_beyond_videos(folder):
    p = base_project(folder)
    for cam in CAMS:
        d = p / "pose" / f"{cam}_json"
        for f in sorted(d.glob("*.json"), reverse=True):
            f.rename(d / f"{cam}.{int(f.stem.split('.')[-1]) + 1000:04d}.json")
    return _error(chain(p), "no crop of this view can be read")


def video_frame_rates_differ(folder):
    p = base_project(folder)
    imgs, fps = read_video(p / "videos" / "cam03.mp4")
    write_video(p / "videos" / "cam03.mp4", imgs, fps / 2)
    return _flag(chain(p), "frame rates differ")


# --- people
def bystander_larger_than_subject(folder):
    """A second, larger person in cam03 on every frame: the importer warns and counts."""
    p = base_project(folder)
    for f in (p / "pose" / "cam03_json").glob("*.json"):
        people = _people(f)
        big = people[0].copy()
        c = np.nanmean(big[big[:, 2] > 0, :2], axis=0)
        big[:, :2] = (big[:, :2] - c) * 1.4 + c + [5.0, 0.0]
        write_openpose(f, people + [big])
    return _flag(chain(p), "cam03 on 100% of frames")


def bystander_seen_by_detector(folder):
    spec = bystander_larger_than_subject(folder)
    return {**spec, "stage": "detect2d", "match": "cam03_json 100%"}


# --- configuration that names frames
def frames_range_empty(folder):
    return _error(chain(base_project(folder), frames=[10, 5]), "frames [10, 5) is empty")


def frames_range_outside(folder):
    return _error(chain(base_project(folder), frames=[500, 600]), "no frames in [500, 600): the project holds frames 0-19")


def frames_not_a_range(folder):
    return _error(chain(base_project(folder), frames=[3]), "frames must be [start, stop) as two integers")


# --- the videos adapter
def videos_one_video(folder):
    root = videos_base(folder)
    for v in (1, 2):
        (root / f"view{v}.mp4").unlink()
    (root / "calibration.json").unlink()
    return _error(_videos_chain(root), "triangulation needs at least 2 synchronised views")


def videos_truncated_avi(folder):
    root = videos_base(folder)
    imgs, fps = read_video(root / "view1.mp4")
    (root / "view1.mp4").unlink()
    write_video(root / "view1.avi", imgs, fps, "MJPG")
    data = (root / "view1.avi").read_bytes()
    (root / "view1.avi").write_bytes(data[:len(data) // 2])
    return _flag(_videos_chain(root), "view1.avi: its header says 20 frames but only")


def videos_calibration_size_disagrees(folder):
    root = videos_base(folder)
    c = json.loads((root / "calibration.json").read_text())
    c["size"][2] = [192, 128]
    (root / "calibration.json").write_text(json.dumps(c))
    return _error(_videos_chain(root), "view2: view2.mp4 is 96x64, calibrated 192x128")


def videos_calibration_bad_shape(folder):
    root = videos_base(folder)
    c = json.loads((root / "calibration.json").read_text())
    c["t"] = c["t"][:2]
    (root / "calibration.json").write_text(json.dumps(c))
    return _error(_videos_chain(root), "calibration.json: 't' has shape (2, 3), expected (3, 3)")


def videos_duplicated_camera(folder):
    root = videos_base(folder)
    c = json.loads((root / "calibration.json").read_text())
    c["R"][1], c["t"][1] = c["R"][0], c["t"][0]
    (root / "calibration.json").write_text(json.dumps(c))
    return _error(_videos_chain(root), "view0 and view1 are at the same place")


def videos_partial_extrinsics(folder):
    root = videos_base(folder)
    c = json.loads((root / "calibration.json").read_text())
    c["t"][2] = [None, 0.0, 1.0]
    (root / "calibration.json").write_text(json.dumps(c).replace("null", "NaN"))
    return _error(_videos_chain(root), "view2 have non-finite rotation or translation values")


def videos_calibration_not_json(folder):
    root = videos_base(folder)
    (root / "calibration.json").write_bytes(b"\x89PNG not json")
    return _error(_videos_chain(root), "calibration.json: cannot read the calibration JSON")


CASES: dict[str, Callable[[Path], dict]] = {f.__name__: f for f in (
    json_not_utf8, json_is_a_list, json_people_null, json_person_not_multiple_of_3, json_damaged_read_by_detector,
    json_folder_all_damaged, json_coco17_view_among_body25b, json_person_with_other_point_count,
    json_stray_file_without_number, json_duplicated_frame_number, json_point_far_outside, json_view_offset_in_time,
    json_camera_folder_empty, json_folders_not_named_json,
    calib_3_cameras_for_4_folders, calib_nan_translation, calib_duplicated_camera, calib_matrix_wrong_size,
    calib_missing_rotation, calib_text_in_translation, calib_not_an_intrinsic_matrix, calib_unreadable_toml,
    calib_size_disagrees_with_videos, qca_missing_attribute, qca_not_a_number, one_camera_only,
    video_truncated_avi, video_unreadable, video_extra_file, video_shorter_than_json,
    video_json_numbered_beyond_videos, video_frame_rates_differ,
    bystander_larger_than_subject, bystander_seen_by_detector,
    frames_range_empty, frames_range_outside, frames_not_a_range,
    videos_one_video, videos_truncated_avi, videos_calibration_size_disagrees, videos_calibration_bad_shape,
    videos_duplicated_camera, videos_partial_extrinsics, videos_calibration_not_json,
)}


# ------------------------------------------------------------------------------ running a case
def run_stages(overrides: dict, folder: Path, last: str = "detect2d") -> dict:
    """Run dataset (then detect2d when last == "detect2d") on a store under folder/artifacts.

    Returns {"outcome": "error" | "crash" | "flag" | "silent", "message": the error or the
    warnings joined, "warnings": [...], "locations": {stage: location}}: "error" is a
    ValueError (what a user should get), "crash" any other exception."""
    from pipeline.orchestration.config import resolve
    from pipeline.orchestration import run_stage
    from pipeline.orchestration.store import ArtifactStore
    cfg = resolve("cpu", {**overrides, "store.root": str(Path(folder) / "artifacts")})
    store = ArtifactStore(cfg["store"]["root"])
    stages = ["dataset"] + (["detect2d"] if last == "detect2d" else [])
    locations = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for s in stages:
                locations[s] = run_stage(s, cfg, store, progress=False)["location"]
        except ValueError as e:
            return {"outcome": "error", "message": str(e), "warnings": [str(w.message) for w in caught],
                    "locations": locations}
        except Exception as e:  # noqa: BLE001 - what a user would see as a crash
            return {"outcome": "crash", "message": f"{type(e).__name__}: {e}", "warnings": [str(w.message) for w in caught],
                    "locations": locations}
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return {"outcome": "flag" if msgs else "silent", "message": "\n".join(msgs), "warnings": msgs,
            "locations": locations}


def run_case(name: str, folder: Path) -> dict:
    """Build case `name` under folder and run it: run_stages' result plus the spec and
    "as_expected" (the outcome and the substring both match)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = CASES[name](folder)
    res = run_stages(spec["overrides"], folder, spec["stage"])
    res["spec"] = spec
    res["as_expected"] = res["outcome"] == spec["expect"] and spec["match"] in res["message"]
    return res
