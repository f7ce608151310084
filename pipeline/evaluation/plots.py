"""Skeleton drawing shared by every figure: 2D on images (OpenCV) and 3D (matplotlib); the
colour legend of the sides and the labelled millimetre axes of a 3D panel."""
from __future__ import annotations

import cv2
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from ..joints import BONES, side  # noqa: E402

# RGB (the project's images are RGB; OpenCV frames are BGR) and matplotlib names:
# left blue, right red, centre green
COLORS_RGB = {"l": (0, 128, 255), "r": (255, 0, 0), "c": (0, 200, 0)}
COLORS_MPL = {"l": "tab:blue", "r": "tab:red", "c": "tab:green"}


def draw_skeleton_2d(img: np.ndarray, kp: np.ndarray, thickness: int = 2, radius: int = 3,
                     bgr: bool = False) -> np.ndarray:
    """Draw kp [J,2|3] (pixels of img; NaN skipped) on a copy of img [H,W,3] uint8, RGB
    (or BGR, as OpenCV reads frames, with bgr=True)."""
    out = np.ascontiguousarray(img).copy()
    colors = {k: c[::-1] if bgr else c for k, c in COLORS_RGB.items()}
    ok = np.all(np.isfinite(kp[:, :2]), axis=1)
    for j, p in BONES:
        if ok[j] and ok[p]:
            a = tuple(int(round(v)) for v in kp[j, :2])
            b = tuple(int(round(v)) for v in kp[p, :2])
            cv2.line(out, a, b, colors[side(j)], thickness, cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        cv2.circle(out, tuple(int(round(v)) for v in kp[j, :2]), radius, colors[side(j)], -1, cv2.LINE_AA)
    return out


def plot_skeleton_3d(ax, pose: np.ndarray, color: str | None = None, alpha: float = 1.0,
                     label: str | None = None, camera_frame: bool = True) -> None:
    """Draw pose [J,3] on a matplotlib 3D axis. camera_frame: OpenCV axes (y down, z forward),
    shown with z as depth and -y as up so the figure stands upright."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection
    P = np.asarray(pose, dtype=float)
    if camera_frame:
        P = np.stack([P[:, 0], P[:, 2], -P[:, 1]], axis=1)
    seg = P[np.array(BONES)]  # [bones, 2, 3]: child, parent
    keep = np.isfinite(seg).all((1, 2))
    if keep.any():  # one artist for the skeleton: a line per bone costs a report seconds
        colors = [color or COLORS_MPL[side(j)] for (j, _), k in zip(BONES, keep) if k]
        ax.add_collection3d(Line3DCollection(seg[keep], colors=colors, alpha=alpha, linewidths=2, label=label),
                            autolim=False)
    ok = np.all(np.isfinite(P), axis=1)
    if ok.any():
        c = P[ok].mean(0)
        r = max(np.abs(P[ok] - c).max(), 1e-6)
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_zlim(c[2] - r, c[2] + r)


def side_legend(target, **kw):
    """A legend of the skeleton colours (left, right, centre) on a figure or an axis."""
    from matplotlib.lines import Line2D
    names = {"l": "left", "r": "right", "c": "centre"}
    handles = [Line2D([], [], color=COLORS_MPL[k], lw=2, label=names[k]) for k in ("l", "r", "c")]
    return target.legend(handles=handles, **{"fontsize": 7, "frameon": False, **kw})


def axes_mm(ax, camera_frame: bool = True, fontsize: int = 5) -> None:
    """Label a 3D panel drawn by plot_skeleton_3d: small tick values and the axes' names in mm
    (camera_frame: x right, z depth, -y up, as plotted)."""
    names = ("x (mm)", "z depth (mm)", "−y up (mm)") if camera_frame else ("x (mm)", "y (mm)", "z (mm)")
    for axis, name in zip((ax.xaxis, ax.yaxis, ax.zaxis), names):
        axis.set_tick_params(labelsize=fontsize, pad=0)
        axis.set_label_text(name, fontsize=fontsize + 1)
        axis.labelpad = -6
    ax.locator_params(nbins=3)
