"""Where training and inference read their crops: a dataset store's `images` [F,V,S,S,3]
uint8, checked; which crops decoded (`image_ok`); an in-memory or on-store source of
(frame, view) samples; and the colour-permuted copies of a source (six RGB channel orders).
"""
from __future__ import annotations

from itertools import permutations

import numpy as np


def dataset_images(dataset, input_size: int | None):
    """The dataset's `images` array, checked: [F,V,S,S,3] uint8 with S == input_size."""
    if "images" not in dataset:
        raise ValueError("dataset store has no `images` array (a keypoint-only dataset cannot train the network; "
                         "a folder of videos gets crops from a detector that finds people: dataset.crops_from)")
    im = dataset["images"]
    if im.ndim != 5 or im.shape[4] != 3:
        raise ValueError(f"dataset images must be [F,V,S,S,3] RGB, got shape {im.shape}")
    if im.shape[2] != im.shape[3]:
        raise ValueError(f"dataset images must be square crops, got {im.shape[2]}x{im.shape[3]}")
    if input_size is not None and im.shape[2] != int(input_size):
        raise ValueError(f"dataset images are {im.shape[2]}x{im.shape[3]} but the network expects "
                         f"{input_size}x{input_size}: build the dataset with crop_size={input_size} "
                         f"or set input_size={im.shape[2]}")
    if im.dtype != np.uint8:
        raise ValueError(f"dataset images must be uint8, got {im.dtype}")
    return im


def image_ok(dataset, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The dataset's `image_ok` [F,V] bool (False where the crop is black: a video frame that
    could not be decoded); all True when the store has no such array. shape: the expected (F, V)."""
    if shape is None:
        shape = tuple(dataset["images"].shape[:2]) if "images" in dataset else None
    if "image_ok" not in dataset:
        if shape is None:
            raise ValueError("image_ok: the dataset store has neither `image_ok` nor `images`")
        return np.ones(shape, bool)
    a = np.asarray(dataset["image_ok"][:])
    if a.dtype != bool:
        raise ValueError(f"dataset image_ok must be bool [F,V], got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"dataset image_ok must be [F,V] = {tuple(shape)}, got {a.shape}")
    return a


class ImageSource:
    """Reads crops of (frame, view) samples, from memory when they fit, else from the store."""

    def __init__(self, images, frames: np.ndarray, max_memory_mb: float, progress: bool = False):
        self.images = images
        self.frames = np.unique(np.asarray(frames, dtype=np.int64))
        per_frame = int(np.prod(images.shape[1:]))
        self.mem = None
        if self.frames.size * per_frame <= max_memory_mb * 2 ** 20:
            self.pos = np.full(images.shape[0], -1, dtype=np.int64)
            self.pos[self.frames] = np.arange(self.frames.size)
            self.mem = read_frames(images, self.frames, progress)

    def get(self, f: np.ndarray, v: np.ndarray) -> np.ndarray:
        """f, v [B] -> uint8 [B,S,S,3]."""
        if self.mem is not None:
            return self.mem[self.pos[f], v]
        order = np.argsort(f, kind="stable")
        uf, inv = np.unique(f[order], return_inverse=True)
        block = np.asarray(self.images.oindex[uf])
        out = np.empty((len(f),) + self.images.shape[2:], dtype=np.uint8)
        out[order] = block[inv, v[order]]
        return out


# the 6 orderings of the RGB channels; row 0 is the identity
COLOUR_ORDERS = np.array(list(permutations(range(3))), dtype=np.int64)


class ColourPermuted:
    """An ImageSource whose view index also names an RGB channel order: view k·V + v reads
    view v with its channels in order COLOUR_ORDERS[k].

    Why: with a handful of training people a network tells left from right by each person's
    absolute clothing colours and fails on a new person (left/right swapped at random).
    Permuted channels make absolute hue useless while keeping the cues that hold for everyone
    (the right side's brighter, more saturated accent tone; the dark left shoe), as fit()
    draws the copies like any other sample: deterministic, resumable."""

    def __init__(self, source, views: int):
        self.source, self.views = source, int(views)

    def get(self, f: np.ndarray, v: np.ndarray) -> np.ndarray:
        """f, v [B] (v encoded as k·V + view) -> uint8 [B,S,S,3]."""
        k, view = np.divmod(np.asarray(v, dtype=np.int64), self.views)
        img = self.source.get(f, view)
        out = np.empty_like(img)
        for kk in np.unique(k):  # channel by channel: 8x faster than take_along_axis at 256 px
            s = np.flatnonzero(k == kk)
            for c, src in enumerate(COLOUR_ORDERS[kk]):
                out[s, ..., c] = img[s, ..., src]
        return out


def colour_permuted_samples(samples: np.ndarray, views: int) -> np.ndarray:
    """(frame, view) samples [N,2] -> [6N,2], one copy per channel order (view encoded k·V + v)."""
    return np.concatenate([samples + np.array([0, k * views]) for k in range(len(COLOUR_ORDERS))])


def read_frames(images, frames: np.ndarray, progress: bool) -> np.ndarray:
    """images[frames] for sorted frame indices, read chunk by chunk (zarr reads whole chunks anyway)."""
    from tqdm.auto import tqdm
    out = np.empty((frames.size,) + tuple(images.shape[1:]), dtype=np.uint8)
    step = images.chunks[0] if images.chunks[0] > 0 else 64
    starts = np.unique(frames // step) * step
    k = 0
    for s in tqdm(starts, desc="reading images", disable=not progress, leave=False):
        sel = frames[(frames >= s) & (frames < s + step)]
        block = np.asarray(images[s:min(s + step, images.shape[0])])
        out[k:k + sel.size] = block[sel - s]
        k += sel.size
    return out


def frame_indices(frames, F: int) -> np.ndarray:
    if isinstance(frames, slice):
        return np.arange(F)[frames]
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    if frames.size and (frames.min() < -F or frames.max() >= F):
        raise ValueError(f"frame indices out of range for a store of {F} frames")
    return frames % F if frames.size else frames
