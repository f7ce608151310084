"""How stage outputs hold arrays: dimension names (xarray opens every group), whole arrays,
and frame-chunked arrays written chunk by chunk with a checksum each (`ChunkedWriter`).

`ChunkedWriter` records per-chunk completion in the group's attributes: `attrs["chunks"]` =
{"size": c, "n": n_chunks, "frames": F, "arrays": [...], "done": {index: checksum}}. A chunk is
marked done only after all its arrays are written; a resumed run recomputes what is not done,
or done but no longer matching its checksum. zarr chunks are aligned with the work chunks, so
one chunk's write never touches another's file.
"""
from __future__ import annotations

import hashlib
import logging
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
}


def dims_for(name: str, ndim: int, first: str = "frame") -> tuple[str, ...]:
    """dimension_names for an array: the contract's, else `first` then names unique to it."""
    known = DIMS.get(name)
    if known is not None and len(known) == ndim:
        return known
    if name.startswith("pair_") and ndim == 2:
        return (first, "pair")
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
