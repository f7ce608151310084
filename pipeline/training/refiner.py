"""The refinement unit (RU): training on pose pairs, application, and its training data.

Two ways to get (noisy input, clean target) pairs, both from training data only:
- `prediction_pairs`: the 3D network's predictions on training images with their
  pseudo-labels (what the paper's RU sees at test time, but on images it was trained on, so
  its errors are smaller than on new images);
- `noisy_pairs`: clean poses (pseudo-labels, or motion capture) plus errors drawn from a
  Gaussian fitted to the network's training errors (`fit_noise_model`), optionally inflated
  by `noise_scale` to stand for the larger test-time error.
Poses are root-relative, in whatever units the caller uses (mean bones for SS); the unit
works on poses divided by one scalar stored with it.

Measured with bench/train.py (full size) in ten runs over configurations of the studio (3 or
8 training people, three test people, the 3D network with and without colour permutation, the
detector with and without its heatmap loss, GT 2D), the RU's gain, the share of SS test MPJPE it
removes, was -3.0 to +1.5 % with "predictions" and -0.8 to +3.1 % with "noise"; the paper
reports 20 %. On the default studio (8 training people) "predictions" gained +0.2 % MPJPE and
+9.3 % PMPJPE, "noise" -0.0 % and +4.6 %, so "predictions" is the default. The benchmark's
study trains an RU on one test clip's pairs, i.e. on errors exactly like the test errors, and
applies it to the other clip: it lost 7 to 14 % MPJPE on the default studio, and gained at
most 13.5 % in any configuration (GT-2D labels, one clip; -12.6 % the other way round), so a
better noise model would not reach 20 % here. The SS test error is the network's
generalisation to an unseen person (about 48 mm from its labels on its training frames,
102 mm from the ground truth on the test person, 10 % of whose poses are closer to it with
left and right relabelled): a refiner that sees only the pose has little to correct it with.
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
from ..joints import J, ROOT
from ..registry import check_choice, check_number, with_defaults

log = logging.getLogger("pipeline")

DEFAULTS: dict = {
    "hidden": 512, "blocks": 2, "dropout": 0.5, "slope": 0.2,
    "epochs": 20, "batch_size": 256, "lr": 1e-3, "lr_decay": 0.96,  # per epoch, exponential
    "intermediate_weight": 1.0,   # weight of the intermediate outputs' loss
    "seed": 0, "num_threads": None,  # None: the cores given (pipeline.training.threads)
    # which pairs `make_pairs` builds (see the module docstring): "predictions" or "noise"
    "training_data": "predictions",
    "noise_scale": 1.0,   # "noise": multiplies the fitted error's standard deviation
    "copies": 2,          # "noise": noisy copies drawn per clean pose
}

# DEFAULTS are the CPU preset (seconds to a minute on 2 cores); the paper's unit is wider.
PRESETS: dict[str, dict] = {"cpu": {}, "paper": {"hidden": 1024, "epochs": 60, "copies": 4}}

TRAIN_KEYS = ("hidden", "blocks", "dropout", "slope", "epochs", "batch_size", "lr", "lr_decay",
              "intermediate_weight", "seed", "num_threads")


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
                      ("seed", 0, 2 ** 63 - 1), ("copies", 1, 1000)):
        check_number(c, k, what, lo=lo, hi=hi, integer=True)
    check_number(c, "num_threads", what, lo=1, hi=1024, integer=True, allow_none=True)
    check_number(c, "dropout", what, lo=0.0, hi=0.99)
    for k in ("slope", "intermediate_weight", "noise_scale"):
        check_number(c, k, what, lo=0.0)
    for k in ("lr", "lr_decay"):
        check_number(c, k, what, lo=0.0, hi=None if k == "lr" else 1.0)
        if not c[k] > 0:
            raise ValueError(f"{what}: {k} must be > 0, got {c[k]!r}")
    check_choice(c, "training_data", ("predictions", "noise"), what)
    return c



def _check_poses(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 3 or a.shape[1:] != (J, 3):
        raise ValueError(f"{name} must be [N,{J},3], got {a.shape}")
    return a


def fit_noise_model(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Gaussian model of the errors pred - target ([N,J,3], root-relative), joint by joint.

    Returns {"mean": [J,3], "cov": [J,3,3]} fitted over the rows where the target is valid."""
    pred, target = _check_poses(pred, "pred"), _check_poses(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
    ok = np.all(np.isfinite(target), -1) & np.all(np.isfinite(pred), -1)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    err = (pred - pred[:, ROOT:ROOT + 1]) - (target - target[:, ROOT:ROOT + 1])
    mean = np.zeros((J, 3))
    cov = np.zeros((J, 3, 3))
    for j in range(J):
        e = err[ok[:, j], j].astype(np.float64)
        if j == ROOT or len(e) < 4:
            continue
        mean[j] = e.mean(0)
        cov[j] = np.cov(e.T)
    return {"mean": mean, "cov": cov}


def noisy_pairs(poses: np.ndarray, noise: dict, seed: int = 0, copies: int = 1,
                noise_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(poses + sampled errors, poses), each [N*copies,J,3]; rows with a non-finite joint are dropped."""
    poses = _check_poses(poses, "poses")
    poses = poses[np.all(np.isfinite(poses), axis=(1, 2))]
    poses = poses - poses[:, ROOT:ROOT + 1]
    rng = np.random.default_rng(seed)
    clean = np.concatenate([poses] * int(copies))
    L = np.linalg.cholesky(noise["cov"] + 1e-9 * np.eye(3))  # [J,3,3]
    z = rng.standard_normal(clean.shape)
    e = noise["mean"] + noise_scale * np.einsum("jab,njb->nja", L, z)
    e[:, ROOT] = 0
    return (clean + e).astype(np.float32), clean.astype(np.float32)


def prediction_pairs(pred: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels) of rows whose prediction is finite; unlabelled joints become NaN (masked)."""
    pred, labels = _check_poses(pred, "pred"), _check_poses(labels, "labels").copy()
    if mask is not None:
        labels[~np.asarray(mask, bool)] = np.nan
    keep = np.all(np.isfinite(pred), axis=(1, 2)) & np.any(np.all(np.isfinite(labels), -1), -1)
    return pred[keep], labels[keep]


def make_pairs(cfg: dict | None, pred: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
               clean_poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs for the RU as cfg["training_data"] says, from the 3D network's predictions
    on training images pred [N,J,3] and their labels [N,J,3] (mask [N,J]).

    "predictions": (pred, labels). "noise": clean poses (clean_poses, e.g. motion capture, or the
    labels when None) plus Gaussian errors fitted to pred - labels."""
    c = resolve_cfg(cfg)
    if c["training_data"] == "predictions":
        return prediction_pairs(pred, labels, mask)
    if c["training_data"] == "noise":
        noise = fit_noise_model(pred, labels, mask)
        clean = labels if clean_poses is None else clean_poses
        if mask is not None and clean_poses is None:
            clean = clean[np.asarray(mask, bool).all(-1)]
        if len(clean) == 0:
            raise ValueError("refiner: training_data 'noise' needs clean poses with all joints labelled; none has")
        return noisy_pairs(clean, noise, int(c["seed"]), int(c["copies"]), float(c["noise_scale"]))
    raise ValueError(f"refiner: training_data must be 'predictions' or 'noise', got {c['training_data']!r}")


def train_refiner(cfg: dict, inputs: np.ndarray, targets: np.ndarray, out_dir: Path, progress: bool = True) -> Path:
    """Train the RU on pairs inputs [N,J,3] -> targets [N,J,3] (NaN target joints are masked);
    writes and returns out_dir/final.pt (returned as it is when already there and it loads; one
    that does not load is removed with a warning and retrained). A failed write raises
    checkpoint.CheckpointWriteError naming the file, the folder and the reason.

    Checkpoint keys: kind "refiner", cfg (the resolved configuration, plain data), scale
    float, model (state dict of tensors), losses [float], n_train int."""
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
    x = x - x[:, ROOT:ROOT + 1]
    y = np.where(m[..., None], y - np.nan_to_num(y[:, ROOT:ROOT + 1]), 0)
    scale = float(np.sqrt(np.mean(x ** 2)))
    if not scale > 0:
        raise ValueError("refiner inputs are all zero")
    prev = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(c["num_threads"]))
    try:
        torch.manual_seed(int(c["seed"]))
        net = RefineNet(J, int(c["hidden"]), int(c["blocks"]), float(c["dropout"]), float(c["slope"]))
        opt = torch.optim.Adam(net.parameters(), lr=float(c["lr"]))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, float(c["lr_decay"]))
        X, Y, M = (torch.from_numpy(x / scale), torch.from_numpy((y / scale).astype(np.float32)),
                   torch.from_numpy(m.astype(np.float32)))
        rng = np.random.default_rng(int(c["seed"]))
        B = min(int(c["batch_size"]), len(x))
        losses = []
        from tqdm.auto import tqdm
        for _ in tqdm(range(int(c["epochs"])), desc="train RU", disable=not progress, leave=False):
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
    finally:
        torch.set_num_threads(prev)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"kind": "refiner", "cfg": json.loads(json.dumps(c)), "scale": scale, "model": net.state_dict(),
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
        q = p[ok] - p[ok, ROOT:ROOT + 1]
        with torch.inference_mode():
            r = net(torch.from_numpy(q / ck["scale"]))[-1].numpy() * ck["scale"]
        out[ok] = r - r[:, ROOT:ROOT + 1]
    return out
