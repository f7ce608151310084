"""Inference on new footage: an image or a video -> a 3D pose per frame, and PNG figures.

2D keypoints come from a detector plug-in (pipeline/detectors): `network`, the project's own
2D network (the pretrain2d stage's checkpoint, `--net2d`), or any other registered one run on
the input as a one-view dataset (`--detector mediapipe`: BlazePose on real video, `pip
install -e '.[mediapipe]'`). With `network` the person box comes from the network itself: it
first sees the whole frame (padded to a square), the box is set around the joints it finds
confidently, and it looks again inside that box (`iterations` times); with a plug-in the box
is set around its keypoints. The 3D network then runs on the final crop; in a video each frame
starts from the previous frame's box. The crop follows docs/stores.md (crop pixel (u, v) <->
original (x0 + u·w/S, y0 + v·h/S)); `margin` should match the one the training crops used.

Poses are root-relative in the camera frame (axes: x right, y down, z away from the camera,
as OpenCV), in the 3D network's units: mm for FS; mean bone lengths for SS, turned into mm with
`--mean-bone-mm` (the dataset's `mean_bone_mm`, `epipose inspect dataset --set ...` prints it).
poses.npz says which (`units`, `axes`).

Trust: every frame gets the median 2D confidence of its joints, `confidence`, and `found`
(a box was set and confidence >= `min_frame_conf`); the result lists warnings: frames without
a person, frames of low confidence, and, for the `network` detector, that its domain is its
training dataset (named): on other footage it still places a skeleton, with high heatmap
confidence (even on noise), so neither `found` nor `confidence` rule that out there; use a
general detector (`--detector mediapipe`) on footage unlike the training set.

The checkpoints are the training stages' outputs, `<store>/train/final.pt` inside each stage's
output folder (or that folder itself), e.g. with the default artifact root:

    python -m pipeline.infer VIDEO_OR_IMAGE \
        --net3d artifacts/studio/train3d/ss-<fingerprint>/train/final.pt \
        --net2d artifacts/studio/pretrain2d/network-<fingerprint>/train/final.pt --out out/
    python -m pipeline.infer VIDEO --net3d artifacts/pose2sim/train3d/ss-<fingerprint> \
        --detector mediapipe --mean-bone-mm 250 --out out/

(`epipose inspect train3d --set ...` prints a configuration's train3d location.) They are
loaded with weights_only=True (pipeline.training.checkpoint): a file that holds anything but
tensors and plain data is refused unloaded. A missing, wrong or refused checkpoint, an
unknown or uninstalled detector, or an unreadable input, is one line on stderr and exit status 2.
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
from .evaluation.plots import axes_mm, draw_skeleton_2d, plot_skeleton_3d
from .training.detector2d import original_coords
from .training.loop import load_model

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
AXES = "camera frame, root-relative: x right, y down, z away from the camera (OpenCV)"


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
    """The 3D network, and the frozen 2D network when no other detector gives the keypoints."""

    def __init__(self, net3d: Path, net2d: Path | None = None, margin: float = 1.4, min_conf: float = 0.2,
                 iterations: int = 2, mean_bone_mm: float | None = None):
        self.m3, self.meta3 = load_model(checkpoint_path(net3d), "3d")
        self.m2 = self.meta2 = None
        if net2d is not None:
            self.m2, self.meta2 = load_model(checkpoint_path(net2d), "2d")
            self.S2 = int(self.meta2["arch"]["input_size"])
        self.S3 = int(self.meta3["arch"]["input_size"])
        self.margin, self.min_conf, self.iterations = margin, min_conf, iterations
        self.units = self.meta3["units"]
        self.to_units = 1.0
        if mean_bone_mm is not None and self.units != "mm":
            if not mean_bone_mm > 0:
                raise ValueError(f"--mean-bone-mm must be positive, got {mean_bone_mm}")
            self.units, self.to_units = "mm", float(mean_bone_mm)

    def _detect(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        from models.integral import heatmap_confidence
        x = aug.normalise(aug.to_float(torch.from_numpy(crop(image, box, self.S2)[None])))
        with torch.inference_mode():
            c, p = self.m2(x, return_prob=True)
            conf = heatmap_confidence(p, c)[0].numpy()
        xy = original_coords(c[0].numpy().astype(np.float64)[None], box[None], self.S2)[0]
        return np.concatenate([xy, conf[:, None]], -1)

    def __call__(self, image: np.ndarray, box: np.ndarray | None = None, keypoints: np.ndarray | None = None) -> dict:
        """One RGB frame -> {"pose3d" [J,3], "keypoints2d" [J,3], "box" [4], "found" bool,
        "confidence" float}. keypoints [J,3]: a detector plug-in's for this frame (else the 2D
        network finds them)."""
        image = check_image(image)
        H, W = image.shape[:2]
        found = True
        if keypoints is not None:
            kp = np.asarray(keypoints, dtype=np.float64)
            box = box_from_keypoints(np.nan_to_num(kp, nan=-1.0), self.min_conf, self.margin)
            if box is None:
                found = False
        else:
            if self.m2 is None:
                raise ValueError("infer: no 2D keypoints for this frame and no --net2d to find them")
            if box is None:
                side = float(max(H, W))
                box = np.array([(W - side) / 2, (H - side) / 2, side, side])
            box = np.asarray(box, dtype=np.float64)
            kp = self._detect(image, box)
            for _ in range(self.iterations):
                nb = box_from_keypoints(kp, self.min_conf, self.margin)
                if nb is None:
                    found = False
                    break
                box = nb
                kp = self._detect(image, box)
        if box is None:  # nobody: the 3D network sees the whole frame, and the frame is flagged
            side = float(max(H, W))
            box = np.array([(W - side) / 2, (H - side) / 2, side, side])
        x = aug.normalise(aug.to_float(torch.from_numpy(crop(image, box, self.S3)[None])))
        with torch.inference_mode():
            c = self.m3(x)[0].numpy()
        pose = (c - c[ROOT:ROOT + 1]) * self.meta3["scale"] * self.to_units
        conf = kp[:, 2][np.isfinite(kp[:, 2])]
        return {"pose3d": pose.astype(np.float32), "keypoints2d": kp.astype(np.float32), "box": box, "found": found,
                "confidence": float(np.median(conf)) if conf.size else 0.0}


def plugin_keypoints(source: Path, detector: str, frames: list[int], progress: bool = False) -> np.ndarray:
    """Run a detector plug-in (pipeline/detectors) on a video, or an image, as a one-view
    dataset (docs/stores.md's contract, cameras unknown). -> keypoints [N,J,3] at `frames`."""
    import tempfile

    import zarr

    from .detectors import detector_defaults, get_detector
    from .joints import J
    try:
        detect, defaults = get_detector(detector), detector_defaults(detector)
    except (KeyError, ValueError) as e:
        raise ValueError(f"unknown detector {detector!r} ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(source)
        if path.suffix.lower() in IMAGE_EXT:  # one still: a one-frame video, as the plug-ins read videos
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            path = Path(tmp) / "image.avi"
            vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 1, (img.shape[1], img.shape[0]))
            vw.write(img)
            vw.release()
        n = len(frames)
        g = zarr.group(store=zarr.storage.MemoryStore())
        nan = np.full((1, 1, 3, 3), np.nan)
        arrays = {"frame_index": np.asarray(frames, np.int32), "clip": np.zeros(n, np.int16),
                  "rig": np.zeros(n, np.int16), "subject": np.zeros(n, np.int16), "split": np.ones(n, np.int16),
                  "keypoints2d_gt": np.full((n, 1, J, 3), np.nan, np.float32),
                  "crop_boxes": np.full((n, 1, 4), np.nan, np.float32), "K": np.eye(3)[None, None], "R": nan,
                  "t": np.full((1, 1, 3), np.nan), "dist": np.zeros((1, 1, 5)), "size": np.ones((1, 1, 2))}
        for k, v in arrays.items():
            g.create_array(k, data=v)
        g.attrs.update({"videos": [str(path)], "rotate": [0], "clips": ["input"], "fps": 1.0})
        try:
            kp = detect(defaults, g, slice(None), {"progress": progress})
        except ImportError as e:  # an optional detector whose package is not installed
            raise ValueError(f"detector {detector!r}: {e}") from None
    return np.asarray(kp, dtype=np.float64)[:, 0]


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
    axes_mm(ax3) if result.get("units") == "mm" else None
    ax3.set_title(f"3D pose (camera frame, root-relative, {result.get('units', '')})"
                  + ("" if result.get("found", True) else "\nno person found: not to be trusted"), fontsize=9)
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


def run(source: Path, net3d: Path, net2d: Path | None, out_dir: Path, every: int = 1, max_frames: int | None = None,
        figures: int = 4, margin: float = 1.4, progress: bool = True, detector: str = "network",
        mean_bone_mm: float | None = None, min_frame_conf: float = 0.3) -> dict:
    """3D pose for every frame of an image/video. Writes out_dir/poses.npz (frame, pose3d [N,J,3],
    keypoints2d [N,J,3], boxes [N,4], found [N], confidence [N], units, axes) and up to
    `figures` PNGs; returns their paths, the units, and `warnings` (module docstring)."""
    from tqdm.auto import tqdm
    if detector == "network" and net2d is None:
        raise ValueError("the network detector needs --net2d (the pretrain2d checkpoint); or name another "
                         "detector with --detector (e.g. mediapipe)")
    est = Estimator(net3d, net2d if detector == "network" else None, margin=margin, mean_bone_mm=mean_bone_mm)
    plugin = None
    if detector != "network":
        ids = [i for i, _ in read_frames(source, every, max_frames)]
        plugin = dict(zip(ids, plugin_keypoints(source, detector, ids, progress)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, box, pngs = [], None, []
    for i, img in tqdm(read_frames(source, every, max_frames), desc="infer", disable=not progress):
        r = est(img, box, None if plugin is None else plugin[i])
        r["found"] = bool(r["found"] and r["confidence"] >= min_frame_conf)
        box = r["box"] if r["found"] and plugin is None else None  # track the person; whole frame when lost
        r["units"] = est.units
        rows.append((i, r))
        if len(pngs) < figures:
            pngs.append(figure(img, r, out_dir / f"frame-{i:06d}.png", f"frame {i}"))
    found = np.array([r["found"] for _, r in rows])
    conf = np.array([r["confidence"] for _, r in rows])
    warn = []
    if (~found).any():
        warn.append(f"{int((~found).sum())} of {len(rows)} frames without a person found, or below "
                    f"--min-frame-conf {min_frame_conf:g} (median joint confidence): their poses are not to be trusted")
    if detector == "network":
        trained_on = est.meta2.get("trained_on") or "?"
        subjects = est.meta2.get("train_subjects")
        warn.append(f"the 2D network knows only its training dataset ({trained_on}"
                    f"{', subjects ' + ', '.join(map(str, subjects)) if subjects else ''}): on other footage it still draws a skeleton, with "
                    "high confidence, so 'found' does not rule out a wrong one; look at the figures, or use a "
                    "general detector (--detector mediapipe)")
    npz = out_dir / "poses.npz"
    np.savez(npz, frame=np.array([i for i, _ in rows]), pose3d=np.stack([r["pose3d"] for _, r in rows]),
             keypoints2d=np.stack([r["keypoints2d"] for _, r in rows]), boxes=np.stack([r["box"] for _, r in rows]),
             found=found, confidence=conf, units=est.units, axes=AXES)
    return {"poses": npz, "figures": pngs, "frames": len(rows), "found": int(found.sum()), "units": est.units,
            "axes": AXES, "median_confidence": float(np.median(conf)) if len(conf) else None, "warnings": warn}


def main(argv=None) -> int:
    """The command line; returns 0, or 2 after one line on stderr for a user's mistake."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.infer", description="3D human pose from an image or a video")
    ap.add_argument("source", type=Path)
    ap.add_argument("--net3d", type=Path, required=True,
                    help="the train3d checkpoint: <train3d output>/train/final.pt (or the output folder)")
    ap.add_argument("--net2d", type=Path, default=None,
                    help="the pretrain2d checkpoint: <pretrain2d output>/train/final.pt (or the output folder); "
                         "needed by the network detector")
    ap.add_argument("--detector", default="network",
                    help="2D keypoints: network (the project's, --net2d) or a detector plug-in, e.g. mediapipe")
    ap.add_argument("--mean-bone-mm", type=float, default=None,
                    help="a self-supervised network's unit (mean bone length) in mm: poses in mm")
    ap.add_argument("--min-frame-conf", type=float, default=0.3,
                    help="frames whose median joint confidence is below this are flagged (found False)")
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
        res = run(a.source, a.net3d, a.net2d, a.out, a.every, a.max_frames, a.figures, a.margin,
                  detector=a.detector, mean_bone_mm=a.mean_bone_mm, min_frame_conf=a.min_frame_conf)
    except (ValueError, OSError) as e:  # a missing or refused checkpoint, an unreadable input: one line
        print("pipeline.infer: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    for w in res["warnings"]:
        print(f"pipeline.infer: warning: {w}", file=sys.stderr)
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in res.items() if k != "figures"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
