"""Batch augmentation for the pose networks: rotation, scale, flip, colour jitter, occluders.

Everything is drawn from a numpy Generator (so a checkpoint can store its state and a resumed
run draws the same numbers) and applied to a whole batch at once with torch's
affine_grid/grid_sample. Coordinates are normalised crop coordinates in [-1, 1]
(align_corners=False: pixel u of an S-pixel crop is (2u + 1) / S - 1), x right, y down.

The point map is n_out = M n_in with M = scale * Rot(angle) * Flip. In 3D, an in-plane
rotation of the crop is (to weak perspective) a roll of the camera about its optical axis,
and a horizontal flip is the mirror X -> -X: camera-frame (X, Y) take Rot(angle) * Flip and
no scale (zooming does not change the 3D pose). A flip also swaps left and right joints.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf

from ..joints import FLIP
from ..registry import check_number, with_defaults

DEFAULTS = {
    "rotation": 30.0,          # degrees, uniform in [-rotation, rotation]
    "rotation_prob": 0.6,      # share of samples rotated (as Integral Human Pose)
    "scale": (0.8, 1.2),       # zoom factor range
    # horizontal flip (p = 0.5, left/right labels swapped): off by default, because it makes
    # a left/right cue that is not mirror-symmetric useless (the studio's two-tone clothing:
    # with flips on, the detector put left and right joints on their midpoint)
    "flip": False,
    "color": 0.2,              # per-channel gain in [1 - color, 1 + color]
    "occluder_prob": 0.5,      # share of samples with a synthetic occluder
    "occluder_size": (0.15, 0.45),  # occluder side as a share of the crop side
}

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def resolve(cfg: dict | None) -> dict:
    """DEFAULTS overridden by cfg (None or {}: the defaults); an unknown key, a value of the
    wrong type or out of range is a one-line ValueError naming it. To switch a transform off,
    set its probability or amplitude to 0 (rotation_prob, color, occluder_prob; scale [1, 1])."""
    if cfg is not None and not isinstance(cfg, dict):
        raise ValueError(f"augment must be a mapping of {sorted(DEFAULTS)}, got {cfg!r}")
    what = "augment"
    c = with_defaults(cfg, DEFAULTS, what)
    check_number(c, "rotation", what, lo=0.0, hi=180.0)
    for k in ("rotation_prob", "color", "occluder_prob"):
        check_number(c, k, what, lo=0.0, hi=1.0)
    if not isinstance(c["flip"], bool):
        raise ValueError(f"{what}: flip must be true or false, got {c['flip']!r}")
    for k, lo, hi in (("scale", 0.05, 20.0), ("occluder_size", 0.0, 1.0)):
        v = c[k]
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            raise ValueError(f"{what}: {k} must be a pair [low, high], got {v!r}")
        pair = {"low": v[0], "high": v[1]}
        for part in pair:
            check_number(pair, part, f"{what}: {k}", lo=lo, hi=hi)
        if v[0] > v[1]:
            raise ValueError(f"{what}: {k} must be [low, high] with low <= high, got {v!r}")
    return c


def identity_params(n: int) -> dict[str, np.ndarray]:
    """Parameters that leave images and poses unchanged (evaluation)."""
    return {"angle": np.zeros(n), "scale": np.ones(n), "flip": np.zeros(n, bool), "gain": np.ones((n, 3)),
            "occ_on": np.zeros(n, bool), "occ_box": np.zeros((n, 4)), "occ_color": np.zeros((n, 3))}


def sample_params(rng: np.random.Generator, n: int, cfg: dict) -> dict[str, np.ndarray]:
    """Draw augmentation parameters for n samples. Always draws the same amount of random
    numbers for a given n, so the stream stays aligned whatever the configuration."""
    u = rng.random((n, 15))
    rot = (u[:, 0] < cfg["rotation_prob"]) * (2 * u[:, 1] - 1) * np.radians(cfg["rotation"])
    lo, hi = cfg["scale"]
    scale = lo + (hi - lo) * u[:, 2]
    flip = (u[:, 3] < 0.5) & bool(cfg["flip"])
    gain = 1 + cfg["color"] * (2 * u[:, 4:7] - 1)
    occ_on = u[:, 7] < cfg["occluder_prob"]
    smin, smax = cfg["occluder_size"]
    side = 2 * (smin + (smax - smin) * u[:, 8:10])  # in normalised units (the crop is 2 wide)
    centre = 2 * u[:, 10:12] - 1
    box = np.concatenate([centre - side / 2, centre + side / 2], axis=1)
    color = u[:, 12:15]
    return {"angle": rot, "scale": scale, "flip": flip, "gain": gain, "occ_on": occ_on, "occ_box": box,
            "occ_color": color}


def point_matrix(params: dict, with_scale: bool = True) -> np.ndarray:
    """M [n,2,2] mapping input normalised crop points to augmented ones."""
    a = params["angle"]
    c, s = np.cos(a), np.sin(a)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    flip = np.ones((len(a), 2))
    flip[:, 0] = np.where(params["flip"], -1.0, 1.0)
    M = rot * flip[:, None, :]  # Rot @ diag(flip): the flip acts first, on x
    if with_scale:
        M = M * params["scale"][:, None, None]
    return M


def _permute(arr: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Swap left/right joints (axis 1) of the flipped samples. arr [n,J,...]."""
    return np.where(flip.reshape((-1,) + (1,) * (arr.ndim - 1)), arr[:, FLIP], arr)


def transform_points_2d(pts: np.ndarray, params: dict) -> np.ndarray:
    """pts [n,J,2] normalised crop coordinates -> augmented [n,J,2] (joints relabelled on flips)."""
    out = np.einsum("nij,nkj->nki", point_matrix(params), pts)
    return _permute(out, params["flip"])


def transform_pose_3d(poses: np.ndarray, params: dict) -> np.ndarray:
    """poses [n,J,3] camera frame -> augmented [n,J,3]: (X, Y) rotated/mirrored, Z unchanged."""
    xy = np.einsum("nij,nkj->nki", point_matrix(params, with_scale=False), poses[..., :2])
    return _permute(np.concatenate([xy, poses[..., 2:]], -1), params["flip"])


def transform_mask(mask: np.ndarray, params: dict) -> np.ndarray:
    """mask [n,J] -> [n,J] with left/right swapped on flipped samples."""
    return _permute(mask, params["flip"])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,S,S,3] (RGB) -> float [B,3,S,S] in [0,1]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B,S,S,3], got {tuple(images.shape)} {images.dtype}")
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[B,3,S,S] in [0,1] -> ImageNet-normalised."""
    return (x - IMAGENET_MEAN.to(x.device, x.dtype)) / IMAGENET_STD.to(x.device, x.dtype)


def augment_images(x: torch.Tensor, params: dict) -> torch.Tensor:
    """x [B,3,S,S] float in [0,1] -> augmented [B,3,S,S] (same device), matching transform_points_2d."""
    B, _, H, W = x.shape
    dev, dt = x.device, x.dtype
    # grid_sample takes, for each output point, where to read in the input: M^-1
    Minv = np.linalg.inv(point_matrix(params))
    theta = torch.zeros(B, 2, 3, dtype=dt, device=dev)
    theta[:, :, :2] = torch.as_tensor(Minv, dtype=dt, device=dev)
    grid = nnf.affine_grid(theta, (B, 3, H, W), align_corners=False)
    x = nnf.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = x * torch.as_tensor(params["gain"], dtype=dt, device=dev)[:, :, None, None]
    if np.any(params["occ_on"]):
        ys = (2 * torch.arange(H, device=dev, dtype=dt) + 1) / H - 1
        xs = (2 * torch.arange(W, device=dev, dtype=dt) + 1) / W - 1
        box = torch.as_tensor(params["occ_box"], dtype=dt, device=dev)
        on = torch.as_tensor(params["occ_on"], device=dev)
        inside = ((xs[None, None, :] >= box[:, 0, None, None]) & (xs[None, None, :] <= box[:, 2, None, None])
                  & (ys[None, :, None] >= box[:, 1, None, None]) & (ys[None, :, None] <= box[:, 3, None, None])
                  & on[:, None, None])
        color = torch.as_tensor(params["occ_color"], dtype=dt, device=dev)[:, :, None, None]
        x = torch.where(inside[:, None], color.expand_as(x), x)
    return x.clamp_(0, 1)
