"""Inference on new footage: an image or a video -> a 3D pose per frame, and PNG figures.

The person box comes from the 2D detector itself: it first sees the whole frame (padded to a
square), the box is set around the joints it finds confidently, and the detector looks again
inside that box (`iterations` times); the 3D network then runs on the final crop. In a video
each frame starts from the previous frame's box. The crop follows docs/stores.md (crop pixel
(u, v) <-> original (x0 + u·w/S, y0 + v·h/S)); `margin` should match the one the training
crops used. Poses are root-relative in the camera frame, in the 3D network's units
(mm for FS, mean bones for SS; multiply by the dataset's `mean_bone_mm` for millimetres).

The checkpoints are the training stages' outputs, `<store>/train/final.pt` inside each stage's
output folder (or that folder itself), e.g. with the default artifact root:

    python -m pipeline.infer VIDEO_OR_IMAGE \
        --net3d artifacts/studio/train3d/ss-<fingerprint>/train/final.pt \
        --net2d artifacts/studio/pretrain2d/network-<fingerprint>/train/final.pt --out out/

They are loaded with weights_only=True (pipeline.training.checkpoint): a file that holds anything but
tensors and plain data is refused unloaded. A missing, wrong or refused checkpoint, or an
unreadable input, is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from .training import augment as aug
from .joints import ROOT
from .evaluation.plots import draw_skeleton_2d, plot_skeleton_3d
from .training.detector2d import original_coords
from .training.loop import load_model

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def crop(image: np.ndarray, box: np.ndarray, S: int) -> np.ndarray:
    """uint8 RGB image [H,W,3] -> the box (x0, y0, w, h) resampled to [S,S,3] (zeros outside)."""
    x0, y0, w, h = (float(v) for v in box)
    M = np.array([[S / w, 0, -x0 * S / w], [0, S / h, -y0 * S / h]])
    return cv2.warpAffine(image, M, (S, S), flags=cv2.INTER_AREA if w > 2 * S else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def box_from_keypoints(kp: np.ndarray, min_conf: float, margin: float) -> np.ndarray | None:
    """Square box (x0, y0, w, h) around the joints of kp [J,3] with confidence >= min_conf
    (side = margin x the larger extent); None when fewer than 4 joints qualify."""
    ok = np.all(np.isfinite(kp[:, :2]), -1) & (kp[:, 2] >= min_conf)
    if ok.sum() < 4:
        return None
    lo, hi = kp[ok, :2].min(0), kp[ok, :2].max(0)
    side = max(float((hi - lo).max()) * margin, 8.0)
    c = (lo + hi) / 2
    return np.array([c[0] - side / 2, c[1] - side / 2, side, side])


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(f"{name}: expected a colour image [H,W,3], got {image.shape} (grey)")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{name}: expected an RGB image [H,W,3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got {image.dtype}")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"{name}: image of {image.shape[1]}x{image.shape[0]} pixels is too small")
    return np.ascontiguousarray(image[..., :3])


def checkpoint_path(path: Path) -> Path:
    """A training checkpoint named by its file, or by a stage output folder (`<store>/train/final.pt`)
    or its `train` folder (`final.pt`); the path as given when none of those exists."""
    path = Path(path)
    if path.is_dir():
        for cand in (path / "train" / "final.pt", path / "final.pt"):
            if cand.is_file():
                return cand
    return path


class Estimator:
    """The frozen 2D detector and 3D network, ready to run on frames."""

    def __init__(self, net3d: Path, net2d: Path, margin: float = 1.4, min_conf: float = 0.2, iterations: int = 2):
        self.m3, self.meta3 = load_model(checkpoint_path(net3d), "3d")
        self.m2, self.meta2 = load_model(checkpoint_path(net2d), "2d")
        self.S3 = int(self.meta3["arch"]["input_size"])
        self.S2 = int(self.meta2["arch"]["input_size"])
        self.margin, self.min_conf, self.iterations = margin, min_conf, iterations
        self.units = self.meta3["units"]

    def _detect(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        from models.integral import heatmap_confidence
        x = aug.normalise(aug.to_float(torch.from_numpy(crop(image, box, self.S2)[None])))
        with torch.inference_mode():
            c, p = self.m2(x, return_prob=True)
            conf = heatmap_confidence(p, c)[0].numpy()
        xy = original_coords(c[0].numpy().astype(np.float64)[None], box[None], self.S2)[0]
        return np.concatenate([xy, conf[:, None]], -1)

    def __call__(self, image: np.ndarray, box: np.ndarray | None = None) -> dict:
        """One RGB frame -> {"pose3d" [J,3], "keypoints2d" [J,3], "box" [4], "found" bool}."""
        image = check_image(image)
        H, W = image.shape[:2]
        if box is None:
            side = float(max(H, W))
            box = np.array([(W - side) / 2, (H - side) / 2, side, side])
        box = np.asarray(box, dtype=np.float64)
        found = True
        kp = self._detect(image, box)
        for _ in range(self.iterations):
            nb = box_from_keypoints(kp, self.min_conf, self.margin)
            if nb is None:
                found = False
                break
            box = nb
            kp = self._detect(image, box)
        x = aug.normalise(aug.to_float(torch.from_numpy(crop(image, box, self.S3)[None])))
        with torch.inference_mode():
            c = self.m3(x)[0].numpy()
        pose = (c - c[ROOT:ROOT + 1]) * self.meta3["scale"]
        return {"pose3d": pose.astype(np.float32), "keypoints2d": kp.astype(np.float32), "box": box, "found": found}


def figure(image: np.ndarray, result: dict, path: Path, title: str = "") -> Path:
    """PNG: the frame with the 2D skeleton and box, beside the 3D skeleton."""
    import matplotlib.pyplot as plt
    kp = result["keypoints2d"].copy()
    img = draw_skeleton_2d(image, kp, thickness=max(1, image.shape[0] // 300), radius=max(2, image.shape[0] // 200))
    x0, y0, w, h = (int(round(v)) for v in result["box"])
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (255, 255, 0), max(1, image.shape[0] // 400))
    fig = plt.figure(figsize=(8, 4))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(title or "2D detector and person box", fontsize=9)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    plot_skeleton_3d(ax3, result["pose3d"])
    ax3.set_title(f"3D pose (camera frame, {result.get('units', '')})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_frames(path: Path, every: int = 1, max_frames: int | None = None):
    """Yield (index, RGB uint8 frame) from an image file or a video."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_EXT:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image")
        yield 0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: not a readable image or video")
    i, n = 0, 0
    try:
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                n += 1
            i += 1
    finally:
        cap.release()
    if n == 0:
        raise ValueError(f"{path}: no frames could be read")


def run(source: Path, net3d: Path, net2d: Path, out_dir: Path, every: int = 1, max_frames: int | None = None,
        figures: int = 4, margin: float = 1.4, progress: bool = True) -> dict:
    """3D pose for every frame of an image/video. Writes out_dir/poses.npz (frame, pose3d [N,J,3],
    keypoints2d [N,J,3], boxes [N,4], found [N]) and up to `figures` PNGs; returns their paths."""
    from tqdm.auto import tqdm
    est = Estimator(net3d, net2d, margin=margin)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, box, pngs = [], None, []
    for i, img in tqdm(read_frames(source, every, max_frames), desc="infer", disable=not progress):
        r = est(img, box)
        box = r["box"] if r["found"] else None  # track the person; look at the whole frame when lost
        r["units"] = est.units
        rows.append((i, r))
        if len(pngs) < figures:
            pngs.append(figure(img, r, out_dir / f"frame-{i:06d}.png", f"frame {i}"))
    npz = out_dir / "poses.npz"
    np.savez(npz, frame=np.array([i for i, _ in rows]), pose3d=np.stack([r["pose3d"] for _, r in rows]),
             keypoints2d=np.stack([r["keypoints2d"] for _, r in rows]), boxes=np.stack([r["box"] for _, r in rows]),
             found=np.array([r["found"] for _, r in rows]), units=est.units)
    return {"poses": npz, "figures": pngs, "frames": len(rows), "units": est.units}


def main(argv=None) -> int:
    """The command line; returns 0, or 2 after one line on stderr for a user's mistake."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.infer", description="3D human pose from an image or a video")
    ap.add_argument("source", type=Path)
    ap.add_argument("--net3d", type=Path, required=True,
                    help="the train3d checkpoint: <train3d output>/train/final.pt (or the output folder)")
    ap.add_argument("--net2d", type=Path, required=True,
                    help="the pretrain2d checkpoint: <pretrain2d output>/train/final.pt (or the output folder)")
    ap.add_argument("--out", type=Path, default=Path("infer_out"))
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--figures", type=int, default=4)
    ap.add_argument("--margin", type=float, default=1.4,
                    help="box side / joints' extent (the studio's crops: about 1.4)")
    a = ap.parse_args(argv)
    if a.every < 1 or (a.max_frames is not None and a.max_frames < 1) or a.figures < 0 or not a.margin > 0:
        print("pipeline.infer: --every and --max-frames must be >= 1, --figures >= 0, --margin > 0", file=sys.stderr)
        return 2
    try:
        res = run(a.source, a.net3d, a.net2d, a.out, a.every, a.max_frames, a.figures, a.margin)
    except (ValueError, OSError) as e:  # a missing or refused checkpoint, an unreadable input: one line
        print("pipeline.infer: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in res.items() if k != "figures"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
