"""Camera calibration files: Pose2Sim's TOML and Qualisys' .qca.txt, read into Cameras (mm).

TOML: one section per camera with `size`, `matrix`, `distortions` (k1, k2, p1, p2),
`rotation` (Rodrigues) and `translation` (metres), the world-to-camera transform of OpenCV
(X_cam = R X + t). Pose2Sim's triangulation reads these values as they are; we convert metres
to mm. Qualisys .qca.txt: converted as Pose2Sim's own reader does: focal length, principal
point and distortion terms divided by 64 (Qualisys stores them in 1/64 sub-pixel units) and
the principal point shifted by the video window's corner; the transform gives the camera's
orientation M and centre C (mm) in the world, and R = diag(1, -1, -1) M, t = -R C (Qualisys
cameras look down their -z axis).
"""
from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..camera import Cameras, rodrigues_to_matrix


def _values(c: dict, key: str, n: tuple[int, ...], path: Path, section: str, what: str) -> np.ndarray:
    """Section value c[key] as float64 numbers, of one of the sizes `n`; ValueError naming the
    file, camera section and key otherwise."""
    if key not in c:
        raise ValueError(f"pose2sim: camera section [{section}] of {path} lacks '{key}' ({what})")
    try:
        a = np.asarray(c[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"pose2sim: {path}, camera [{section}], '{key}' is not a list of numbers "
                         f"({what}): {c[key]!r}") from None
    if a.size not in n:
        raise ValueError(f"pose2sim: {path}, camera [{section}], '{key}' has {a.size} values, expected "
                         f"{' or '.join(map(str, n))} ({what})")
    return a.ravel()


def read_toml_calibration(path: Path) -> tuple[list[str], Cameras]:
    """Pose2Sim TOML -> (camera names, Cameras in mm; a section with neither rotation nor
    translation gives NaN extrinsics: intrinsics only). Distortions are used as written (the
    .qca converter already divided them by 64; Pose2Sim's triangulation reads them as they are).
    ValueError naming the file, the camera section and the key for a missing or malformed value
    (non-finite extrinsics are left for camera.check_rig, which names the camera)."""
    try:
        calib = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"pose2sim: cannot read calibration {path}: {e}") from e
    sections = [k for k, v in calib.items() if isinstance(v, dict) and "matrix" in v]
    if not sections:
        raise ValueError(f"pose2sim: no camera sections (with 'matrix') in {path}")
    names, K, R, t, dist, size = [], [], [], [], [], []
    for s in sections:
        c = calib[s]
        if c.get("fisheye", False):
            raise ValueError(f"pose2sim: camera [{s}] is a fisheye camera, which the OpenCV pinhole model here does not cover")
        k = _values(c, "matrix", (9,), path, s, "3x3 intrinsic matrix").reshape(3, 3)
        if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
            raise ValueError(f"pose2sim: {path}, camera [{s}], 'matrix' is not an intrinsic matrix "
                             f"(finite, positive focal lengths, last row 0 0 1): {k.tolist()}")
        d = np.zeros(5)
        if "distortions" in c:
            dd = _values(c, "distortions", (0, 4, 5), path, s, "k1, k2, p1, p2[, k3]")
            if not np.all(np.isfinite(dd)):
                raise ValueError(f"pose2sim: {path}, camera [{s}], 'distortions' holds non-finite values")
            d[:len(dd)] = dd
        sz = _values(c, "size", (2,), path, s, "image width, height")
        if not np.all(np.isfinite(sz)) or np.any(sz <= 0):
            raise ValueError(f"pose2sim: {path}, camera [{s}], 'size' must be two positive numbers, got {sz.tolist()}")
        K.append(k)
        dist.append(d)
        if "rotation" not in c and "translation" not in c:  # intrinsics only: no extrinsics
            R.append(np.full((3, 3), np.nan))
            t.append(np.full(3, np.nan))
        else:
            R.append(rodrigues_to_matrix(_values(c, "rotation", (3,), path, s, "Rodrigues vector")))
            t.append(_values(c, "translation", (3,), path, s, "metres") * 1000.0)
        size.append(sz)
        names.append(str(c.get("name", s)))
    return names, Cameras(np.stack(K), np.stack(R), np.stack(t), np.stack(dist), np.stack(size))


def write_toml_calibration(path, names: list[str], cams: Cameras, error_px: float = 0.0) -> Path:
    """A calibration TOML in Pose2Sim's layout (what read_toml_calibration, Pose2Sim and anipose
    read): per camera name, size, matrix, distortions (k1, k2, p1, p2; k3 too when not 0),
    rotation (Rodrigues), translation (metres), fisheye = false; [metadata] adjusted = false,
    error (px). cams in mm with finite extrinsics. Written to a temporary name, then renamed."""
    import json
    from ..camera import matrix_to_rodrigues
    if not cams.has_extrinsics:
        raise ValueError("calibration: a calibration to write needs every camera's rotation and translation")
    if len(names) != cams.V:
        raise ValueError(f"calibration: {len(names)} names for {cams.V} cameras")
    fmt = lambda a: "[ " + ", ".join(repr(float(x)) for x in a) + "]"  # noqa: E731
    lines = []
    for v, n in enumerate(names):
        lines += [f"[cam_{v + 1}]", f"name = {json.dumps(str(n))}", f"size = {fmt(cams.size[v])}",
                  "matrix = [ " + ", ".join(fmt(r) for r in cams.K[v]) + "]",
                  f"distortions = {fmt(cams.dist[v, :4] if cams.dist[v, 4] == 0 else cams.dist[v])}",
                  f"rotation = {fmt(matrix_to_rodrigues(cams.R[v]))}",
                  f"translation = {fmt(cams.t[v] / 1000.0)}", "fisheye = false", ""]
    lines += ["[metadata]", "adjusted = false", f"error = {float(error_px) if np.isfinite(error_px) else 0.0!r}", ""]
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def read_qca_calibration(path: Path, binning_factor: float = 1.0) -> tuple[list[str], Cameras]:
    """Qualisys .qca.txt -> (camera names, Cameras in mm), following Pose2Sim's conversion.
    ValueError naming the file, the camera and the element/attribute that is missing or not a number."""
    try:
        root = ET.parse(str(path)).getroot()
    except (OSError, ET.ParseError) as e:
        raise ValueError(f"pose2sim: cannot read Qualisys calibration {path}: {e}") from e
    cams = root.findall("cameras/camera")
    if not cams:
        raise ValueError(f"pose2sim: no cameras in {path}")
    names, K, R, t, dist, size = [], [], [], [], [], []
    for i, cam in enumerate(cams):
        who = f"camera {cam.get('serial') or i + 1}"

        def g(e, k, who=who):
            v = e.get(k)
            if v is None:
                raise ValueError(f"pose2sim: {path}: {who}, <{e.tag}> lacks the attribute '{k}'")
            try:
                x = float(v)
            except ValueError:
                raise ValueError(f"pose2sim: {path}: {who}, <{e.tag}> {k}={v!r} is not a number") from None
            if not np.isfinite(x):
                raise ValueError(f"pose2sim: {path}: {who}, <{e.tag}> {k}={v!r} is not finite")
            return x
        rot = g(cam, "viewrotation") if cam.get("viewrotation") is not None else 0.0
        if rot:
            raise ValueError(f"pose2sim: {path}: {who} has viewrotation={rot:g}; only 0 is supported "
                             "(convert it with Pose2Sim's calibration step to TOML)")
        fov = cam.find("fov_video")
        tr = cam.find("transform")
        intr = cam.find("intrinsic")
        if fov is None or tr is None or intr is None:
            missing = [n for n, e in (("fov_video", fov), ("transform", tr), ("intrinsic", intr)) if e is None]
            raise ValueError(f"pose2sim: {path}: {who} lacks <{'>, <'.join(missing)}>")
        left, top = g(fov, "left"), g(fov, "top")
        size.append([(g(fov, "right") - left) / binning_factor, (g(fov, "bottom") - top) / binning_factor])
        s = 64.0 * binning_factor
        fu, fv = g(intr, "focalLengthU") / s, g(intr, "focalLengthV") / s
        if fu <= 0 or fv <= 0 or size[-1][0] <= 0 or size[-1][1] <= 0:
            raise ValueError(f"pose2sim: {path}: {who} has a non-positive focal length or image size")
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
