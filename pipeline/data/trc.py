"""Export 3D results: TRC (OpenSim's marker format) and CSV; read TRC back.

TRC: tab-separated, a 5-line header (file name, data rate, frame count, marker count, units)
then `Frame#  Time  X1 Y1 Z1 ...`, laid out as Pose2Sim writes its own (its demo's
`Demo_0-100.trc`; tests/test_export_trc.py compares the two). OpenSim's world is Y-up; a Z-up
world (Pose2Sim's, the synthetic studio's, the upright world of pipeline/geometry/world.py) is
turned with the cyclic permutation (X, Y, Z) -> (Y, Z, X), as Pose2Sim does, so the figure
stands up in OpenSim. `up` names the world's up axis ("z", "y", "x"), "camera" (an OpenCV
camera frame: y down, z forward), or is an up vector [3] or a 3x3 matrix. Missing points are
written as NaN. Markers are the 17 joints of pipeline/joints.py by default.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..joints import JOINTS

# the up vector of each named world, in that world's coordinates
UP = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0), "camera": (0.0, -1.0, 0.0)}
UNITS = {"mm": 1.0, "m": 1e-3, "cm": 0.1}


def _check(poses: np.ndarray, names) -> tuple[np.ndarray, list[str]]:
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[-1] != 3:
        raise ValueError(f"export: poses must be [F,M,3], got {poses.shape}")
    names = list(JOINTS if names is None else names)
    if len(names) != poses.shape[1]:
        raise ValueError(f"export: {len(names)} marker names for {poses.shape[1]} points")
    if len(set(names)) != len(names) or any(not n or any(ch.isspace() for ch in n) for n in names):
        raise ValueError("export: marker names must be unique, non-empty and without spaces")
    return poses, names


def opensim_axes(up) -> np.ndarray:
    """The rotation taking world coordinates to OpenSim's (rows: OpenSim X, Y, Z in world
    coordinates). up: a name of UP, an up vector [3] (any length), or a 3x3 matrix (returned
    as it is). OpenSim Y is up; X is the world axis two steps after the one nearest up (in the
    cycle x, y, z), less its component along up; Z = X x Y. For up "z" that is Pose2Sim's
    (X, Y, Z) -> (Y, Z, X); for "y" the identity."""
    if isinstance(up, str):
        if up not in UP:
            raise ValueError(f"export: up must be one of {sorted(UP)}, an up vector or a 3x3 matrix, got {up!r}")
        up = UP[up]
    M = np.asarray(up, dtype=np.float64)
    if M.shape == (3, 3):
        return M
    if M.shape != (3,) or not np.all(np.isfinite(M)) or np.linalg.norm(M) == 0:
        raise ValueError(f"export: up must be one of {sorted(UP)}, an up vector or a 3x3 matrix, got {up!r}")
    y = M / np.linalg.norm(M)
    e = np.eye(3)[(int(np.argmax(np.abs(y))) + 2) % 3]
    x = e - (e @ y) * y
    x /= np.linalg.norm(x)
    return np.stack([x, y, np.cross(x, y)])


def to_opensim_axes(poses: np.ndarray, up="z") -> np.ndarray:
    """World poses [...,3] -> OpenSim's Y-up axes (opensim_axes(up))."""
    return np.einsum("ij,...j->...i", opensim_axes(up), poses)


def write_trc(path, poses: np.ndarray, fps: float, names=None, units: str = "m", up="z",
              start_frame: int = 1) -> Path:
    """Write poses [F,M,3] (world, mm) to a TRC file for OpenSim. units: "m" (OpenSim's usual),
    "mm" or "cm". Returns the path."""
    poses, names = _check(poses, names)
    if units not in UNITS:
        raise ValueError(f"export: units must be one of {sorted(UNITS)}, got {units!r}")
    if not fps > 0:
        raise ValueError(f"export: fps must be positive, got {fps}")
    P = to_opensim_axes(poses, up) * UNITS[units]
    F, M = P.shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [
        f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{fps:g}\t{fps:g}\t{F}\t{M}\t{units}\t{fps:g}\t{start_frame}\t{F}",
        "Frame#\tTime\t" + "\t".join(f"{n}\t\t" for n in names),  # each name spans its X, Y, Z columns
        "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, M + 1)),
    ]
    frames = np.arange(start_frame, start_frame + F)
    times = (frames - start_frame) / fps
    body = np.column_stack([frames, times, P.reshape(F, 3 * M)])
    lines = ["\t".join([str(int(r[0])), f"{r[1]:.6f}"] + [f"{v:.6f}" if np.isfinite(v) else "NaN" for v in r[2:]])
             for r in body]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(head + lines) + "\n")
    tmp.replace(path)
    return path


def read_trc(path) -> tuple[list[str], np.ndarray, float, str]:
    """A TRC file -> (marker names, positions [F,M,3] in the file's axes, in mm, data rate, units)."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 6 or not lines[0].startswith("PathFileType"):
        raise ValueError(f"{path}: not a TRC file")
    meta = dict(zip(lines[1].split("\t"), lines[2].split("\t")))
    units = meta.get("Units", "m").strip()
    if units not in UNITS:
        raise ValueError(f"{path}: unknown units {units!r}")
    names = [n for n in lines[3].split("\t")[2:] if n.strip()]
    rows = []
    for r in lines[5:]:
        if not r.strip():
            continue
        vals = r.split("\t")[2:2 + 3 * len(names)]
        vals += [""] * (3 * len(names) - len(vals))
        rows.append([float(v) if v.strip() else np.nan for v in vals])
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names), 3) / UNITS[units]
    return names, X, float(meta.get("DataRate", "nan")), units


def write_csv(path, poses: np.ndarray, fps: float | None = None, names=None, frame_index=None) -> Path:
    """Write poses [F,M,3] (mm) as CSV: frame, time (when fps is given), <name>_x, _y, _z."""
    import pandas as pd
    poses, names = _check(poses, names)
    F, M = poses.shape[:2]
    frame_index = np.arange(F) if frame_index is None else np.asarray(frame_index)
    if frame_index.shape != (F,):
        raise ValueError(f"export: frame_index must be [{F}], got {frame_index.shape}")
    cols = {"frame": frame_index}
    if fps is not None:
        cols["time_s"] = (frame_index - frame_index[0]) / float(fps)
    for m, n in enumerate(names):
        for k, ax in enumerate("xyz"):
            cols[f"{n}_{ax}_mm"] = poses[:, m, k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(cols).to_csv(tmp, index=False, float_format="%.3f")
    tmp.replace(path)
    return path


def read_csv(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A CSV from write_csv -> (names, poses [F,M,3] mm, frame index [F])."""
    import pandas as pd
    df = pd.read_csv(path)
    cols = [c for c in df.columns if c.endswith("_x_mm")]
    names = [c[:-len("_x_mm")] for c in cols]
    P = np.stack([df[[f"{n}_{a}_mm" for a in "xyz"]].to_numpy(float) for n in names], axis=1)
    return names, P, df["frame"].to_numpy()
