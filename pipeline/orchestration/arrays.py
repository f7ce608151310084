"""How stage outputs hold arrays: dimension names (xarray opens every group), coordinates
(`write_coordinates`: joint, view and component names, frame and person numbers, so xarray
selects by name), whole arrays, and frame-chunked arrays written chunk by chunk with a
checksum each (`ChunkedWriter`).

`ChunkedWriter` records per-chunk completion in the group's attributes: `attrs["chunks"]` =
{"size": c, "n": n_chunks, "frames": F, "arrays": [...], "done": {index: checksum}}. A chunk is
marked done only after all its arrays are written; a resumed run recomputes what is not done,
or done but no longer matching its checksum. zarr chunks are aligned with the work chunks, so
one chunk's write never touches another's file.
"""
from __future__ import annotations

import hashlib
import logging
import warnings
from typing import Iterable, Mapping

import numpy as np
import zarr

log = logging.getLogger("pipeline")


# Dimension names by array name (xarray needs them, docs/stores.md lists the contracts).
DIMS = {
    "images": ("frame", "view", "y", "x", "rgb"),
    "crop_boxes": ("frame", "view", "box"),
    "keypoints2d_gt": ("frame", "view", "joint", "xyv"),
    "keypoints2d": ("frame", "view", "joint", "xyc"),
    "poses3d_world": ("frame", "joint", "xyz"),
    "labels_cam": ("frame", "view", "joint", "xyz"),
    "labels_cam_mm": ("frame", "view", "joint", "xyz"),
    "image_ok": ("frame", "view"),
    "outside": ("frame", "view"),
    "outliers": ("frame", "view"),
    "people_count": ("frame", "view"),
    "person_index": ("frame", "view"),  # detect2d, label ([F, V, P] in the dataset names its own)
    "valid": ("frame", "view", "joint"),
    "frame_ok": ("frame",),
    "failure": ("frame",),
    "rig": ("frame",),
    "subject": ("frame",),
    "clip": ("frame",),
    "split": ("frame",),
    "frame_index": ("frame",),
    "R_est": ("rig", "view", "r", "c"),
    "t_est": ("rig", "view", "xyz"),
    "K_est": ("rig", "view", "r", "c"),
    "dist_est": ("rig", "view", "dist"),
    "size_est": ("rig", "view", "wh"),
    "K": ("rig", "view", "r", "c"),
    "R": ("rig", "view", "r", "c"),
    "t": ("rig", "view", "xyz"),
    "dist": ("rig", "view", "coef"),
    "size": ("rig", "view", "wh"),
}
# values of the component dimensions (a coordinate is written where the length matches)
COMPONENTS = {
    "xyz": ("x", "y", "z"), "xyc": ("x", "y", "confidence"), "xyv": ("x", "y", "visibility"),
    "wh": ("w", "h"), "box": ("x0", "y0", "w", "h"), "coef": ("k1", "k2", "p1", "p2", "k3"),
    "dist": ("k1", "k2", "p1", "p2", "k3"), "rgb": ("r", "g", "b"),
}
# dimensions numbered 0..n-1 (frame: the row of the dataset store unless a build writes its own)
NUMBERED = ("frame", "person", "cluster", "epoch")


def dims_for(name: str, ndim: int, first: str = "frame") -> tuple[str, ...]:
    """dimension_names for an array: the contract's, else `first` then names unique to it."""
    known = DIMS.get(name)
    if known is not None and len(known) == ndim:
        return known
    if name.startswith("pair_") and ndim == 2:
        return (first, "pair")
    if name.startswith("pred_") and ndim == 4:  # the evaluation's predictions
        return ("frame", "view", "joint", "xyz")
    return (first,) + tuple(f"{name}_{i}" for i in range(1, ndim)) if ndim else ()


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a chunk's arrays."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class ChunkedWriter:
    """Frame-chunked writing with per-chunk completion and checksums in the group's attributes.

    Arrays are created on the first write with shape (n_frames, ...) and zarr chunks aligned
    to the work chunks, so one chunk's write never touches another's file. `attrs["chunks"]`
    = {"size": c, "n": n_chunks, "arrays": [...], "done": {index: checksum}}.
    """

    def __init__(self, group: zarr.Group, n_frames: int, chunk: int, compressors="auto"):
        if n_frames < 1 or chunk < 1:
            raise ValueError(f"ChunkedWriter: n_frames ({n_frames}) and chunk ({chunk}) must be >= 1")
        self.group = group
        self.n_frames = int(n_frames)
        self.chunk = int(chunk)
        self.n_chunks = -(-self.n_frames // self.chunk)
        self.compressors = compressors
        meta = dict(group.attrs.get("chunks", {}))
        if meta and (meta.get("size") != self.chunk or meta.get("n") != self.n_chunks):
            raise ValueError(f"chunk layout changed: stored {meta.get('size')}x{meta.get('n')}, "
                             f"asked {self.chunk}x{self.n_chunks}")
        self.done: dict[str, str] = dict(meta.get("done", {}))
        self.arrays: list[str] = list(meta.get("arrays", []))
        self._save()

    @classmethod
    def from_group(cls, group: zarr.Group) -> "ChunkedWriter":
        meta = group.attrs.get("chunks")
        if not meta:
            raise ValueError(f"{group.store} has no chunk records")
        w = cls.__new__(cls)
        w.group, w.chunk, w.n_chunks = group, int(meta["size"]), int(meta["n"])
        w.n_frames = int(meta.get("frames", w.chunk * w.n_chunks))
        w.done, w.arrays, w.compressors = dict(meta["done"]), list(meta["arrays"]), "auto"
        return w

    def frames(self, i: int) -> slice:
        return slice(i * self.chunk, min((i + 1) * self.chunk, self.n_frames))

    def _save(self) -> None:
        self.group.attrs["chunks"] = {"size": self.chunk, "n": self.n_chunks, "frames": self.n_frames,
                                      "arrays": self.arrays, "done": self.done}

    def read_chunk(self, i: int) -> dict[str, np.ndarray]:
        s = self.frames(i)
        return {k: np.asarray(self.group[k][s]) for k in self.arrays}

    def corrupt_chunks(self, indices: Iterable[int] | None = None) -> list[int]:
        """Chunks marked done whose data are unreadable or differ from their checksum."""
        bad = []
        for key in sorted(self.done, key=int) if indices is None else [str(i) for i in indices]:
            if key not in self.done:
                continue
            try:
                ok = checksum(self.read_chunk(int(key))) == self.done[key]
            except Exception:  # a truncated or garbled chunk file fails to decode
                ok = False
            if not ok:
                bad.append(int(key))
        return bad

    def pending(self, verify: bool = True) -> list[int]:
        """Chunks still to compute: never finished, or (verify) finished but corrupt since."""
        if verify:
            for i in self.corrupt_chunks():
                log.warning("chunk %d of %s is corrupt; recomputing it", i, self.group.store)
                del self.done[str(i)]
            self._save()
        return [i for i in range(self.n_chunks) if str(i) not in self.done]

    def write(self, i: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write chunk i's arrays (each [frames of chunk i, ...]), then mark it complete."""
        s = self.frames(i)
        n = s.stop - s.start
        stored = {}
        for k, a in arrays.items():
            a = np.asarray(a)
            if a.shape[:1] != (n,):
                raise ValueError(f"chunk {i}: array {k!r} has {a.shape[:1]} frames, expected {n}")
            if k not in self.group:
                fill = np.nan if a.dtype.kind == "f" else (False if a.dtype.kind == "b" else 0)
                self.group.create_array(
                    k, shape=(self.n_frames,) + a.shape[1:], dtype=a.dtype,
                    chunks=(self.chunk,) + a.shape[1:], fill_value=fill,
                    dimension_names=dims_for(k, a.ndim), compressors=self.compressors)
            if k not in self.arrays:
                self.arrays.append(k)
            stored[k] = a.astype(self.group[k].dtype, copy=False)
            self.group[k][s] = stored[k]
        missing = set(self.arrays) - set(stored)
        if missing:
            raise ValueError(f"chunk {i}: arrays {sorted(missing)} missing (every chunk writes the same arrays)")
        # Completion is recorded only after every array of the chunk is on disk.
        self.done[str(i)] = checksum(stored)
        self._save()

    @property
    def complete(self) -> bool:
        return len(self.done) == self.n_chunks


def write_arrays(group: zarr.Group, arrays: Mapping[str, np.ndarray], first: str = "frame") -> None:
    """Write whole arrays with dimension_names (for small non-chunked outputs)."""
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "OU":
            raise ValueError(f"array {k!r}: dtype {a.dtype} cannot be stored; use attributes")
        group.create_array(k, data=a, dimension_names=dims_for(k, a.ndim, first), overwrite=True)


# marks the arrays write_coordinates made, so that a resumed build (kill -9 between an array's
# metadata and its chunks) writes them again instead of taking them for the build's own
COORDINATE = {"coordinate": True}


def _strings(group: zarr.Group, name: str, values) -> None:
    a = group.create_array(name, shape=(len(values),), dtype=str, dimension_names=(name,), overwrite=True,
                           attributes=COORDINATE)
    a[:] = np.array(list(values), dtype=object)


def _numbers(group: zarr.Group, name: str, n: int, dtype) -> None:
    group.create_array(name, data=np.arange(n, dtype=dtype), dimension_names=(name,), overwrite=True,
                       attributes=COORDINATE)


def write_coordinates(group: zarr.Group, views: list[str] | None = None) -> list[str]:
    """Coordinate arrays (1-D, named as their dimension) for the dimensions of the group's
    arrays, so that xarray selects by name: joint (pipeline/joints.py's names), view (`views`,
    the dataset's camera names, else their numbers), pair ("0-1", ... in
    geometry.rig.all_pairs order), xyz / xyc / wh / box / coef / rgb (component names), and
    frame, person, cluster, epoch numbered from 0. A dimension whose arrays disagree on its
    length, or that already has an array of its name (a build's own frame numbers, the
    dataset's `rig` index), is left without. Strings are zarr's variable-length UTF-8.
    Returns the names written."""
    from itertools import combinations

    from ..joints import JOINTS
    with warnings.catch_warnings():  # the report's PNGs and markdown sit in its group: not zarr, not news
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        names = set(group.array_keys())
    own = {k for k in names if group[k].attrs.get("coordinate") is True}
    lengths: dict[str, set] = {}
    for k in names - own:
        a = group[k]
        for d, n in zip(a.metadata.dimension_names or (), a.shape):
            if d:
                lengths.setdefault(d, set()).add(int(n))
    out = []
    for d, ns in sorted(lengths.items()):
        if (d in names and d not in own) or len(ns) != 1:
            continue
        n = next(iter(ns))
        if d == "joint" and n == len(JOINTS):
            _strings(group, d, JOINTS)
        elif d == "view":
            if views is not None and len(views) == n:
                _strings(group, d, [str(v) for v in views])
            else:
                _numbers(group, d, n, np.int32)
        elif d == "pair":
            V = next((v for v in range(2, 64) if v * (v - 1) // 2 == n), None)
            if V is None:
                continue
            _strings(group, d, [f"{a}-{b}" for a, b in combinations(range(V), 2)])
        elif d in COMPONENTS and len(COMPONENTS[d]) == n:
            _strings(group, d, COMPONENTS[d])
        elif d in NUMBERED:
            _numbers(group, d, n, np.int64)
        else:
            continue
        out.append(d)
    return out
