"""The 17-joint skeleton (Human3.6M order): the one table every module uses.

Names, parents (kinematic tree rooted at the pelvis), left/right pairs and the bones
drawn in plots. Nothing else in the project hard-codes joint indices.
"""
from __future__ import annotations

import numpy as np

JOINTS: tuple[str, ...] = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
    "spine", "thorax", "neck", "head",
    "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)
J = len(JOINTS)
ROOT = 0
INDEX = {name: i for i, name in enumerate(JOINTS)}

# parent of each joint; -1 for the root
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15], dtype=np.int64)

# (child, parent) bones, in joint order
BONES: tuple[tuple[int, int], ...] = tuple((j, int(p)) for j, p in enumerate(PARENTS) if p >= 0)

# left/right pairs, (left, right)
LR_PAIRS: tuple[tuple[int, int], ...] = ((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16))

# index permutation that swaps left and right (a mirror of the skeleton's labels)
FLIP = np.arange(J)
for _l, _r in LR_PAIRS:
    FLIP[_l], FLIP[_r] = _r, _l

LEFT = frozenset(l for l, _ in LR_PAIRS)
RIGHT = frozenset(r for _, r in LR_PAIRS)


_CHILD = np.array([c for c, _ in BONES])
_PARENT = np.array([p for _, p in BONES])


def bone_lengths(poses: np.ndarray) -> np.ndarray:
    """Lengths of the 16 bones of BONES. poses [...,J,3] -> [...,16] (NaN where an end is NaN)."""
    poses = np.asarray(poses, dtype=np.float64)
    return np.linalg.norm(poses[..., _CHILD, :] - poses[..., _PARENT, :], axis=-1)


def mean_bone_length(poses: np.ndarray) -> np.ndarray:
    """Mean length of the 16 bones of BONES. poses [...,J,3] -> [...]: the canonical scale of
    labels and of the SS network's poses. Bones with a missing (NaN) end are left out of the
    mean; NaN when no bone is whole."""
    lengths = bone_lengths(poses)
    ok = np.isfinite(lengths)
    n = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, lengths, 0).sum(-1) / n, np.nan)


def side(j: int) -> str:
    """'l', 'r' or 'c' (centre) for joint j: used for colours in plots."""
    return "l" if j in LEFT else "r" if j in RIGHT else "c"


def check_joints(arr: np.ndarray, name: str = "array", axis: int = -2) -> None:
    """Raise ValueError naming `name` unless `arr.shape[axis] == J`."""
    if arr.ndim < abs(axis) or arr.shape[axis] != J:
        raise ValueError(f"{name}: expected {J} joints on axis {axis}, got shape {arr.shape}")
