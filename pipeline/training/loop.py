"""The training loop shared by the 3D network and the 2D detector, and their checkpoints.

`fit` trains an IntegralPoseNet on (frame, view) samples of an image source. Determinism and
exact resume: one numpy Generator drives the sample order and the augmentation; its state,
torch's RNG, the optimizer and the scheduler are saved in every epoch's checkpoint, so a run
resumed from epoch k ends bit-identical (on CPU) to an uninterrupted one. CUDA with bf16
autocast when present; DistributedDataParallel when launched by torchrun (WORLD_SIZE > 1).

Checkpoints (pipeline.training.checkpoint: tensors and plain data only, atomic writes, loaded
with weights_only=True): `out_dir/checkpoints/epoch-XXXX.pt` after every epoch and
`out_dir/final.pt` (the last epoch's, plus `images_per_s`); keys in `fit`'s docstring. A
checkpoint that does not load (truncated, corrupt, refused) is removed with a warning and
training resumes from the newest one that loads; a final.pt that does not load is rebuilt.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from models.integral import IntegralPoseNet, heatmap_nll
from models.resnet import load_backbone_weights

from ..joints import J, ROOT
from ..registry import check_choice, check_number
from . import augment as aug
from .checkpoint import CheckpointError, load_checkpoint as _load_checked, save_checkpoint
from .images import COLOUR_ORDERS, ColourPermuted, ImageSource, colour_permuted_samples
from .threads import cpu_threads

log = logging.getLogger("pipeline")

ARCH_KEYS = ("resnet", "width", "depth", "deconv_channels", "deconv_layers", "input_size")


def resolve_cfg(cfg: dict | None, presets: dict[str, dict], what: str) -> dict:
    """The preset named by cfg['preset'] (default 'cpu') overridden by cfg's other keys, checked.

    Unknown keys are a ValueError (a typo would otherwise silently train the default), and so
    is a value of the wrong type or out of range (`check_cfg`), in one line naming the key.
    Writes nothing: the orchestration calls it when it resolves a configuration."""
    cfg = dict(cfg or {})
    name = cfg.pop("preset", "cpu")
    if not isinstance(name, str) or name not in presets:
        raise ValueError(f"{what}: unknown preset {name!r}; choose one of {sorted(presets)}")
    base = presets[name]
    unknown = set(cfg) - set(base)
    if unknown:
        raise ValueError(f"{what}: unknown configuration keys {sorted(unknown)}; known: {sorted(base)}")
    out = {**base, **cfg, "preset": name}
    check_cfg(out, what)
    out["augment"] = aug.resolve(out["augment"])
    return out


def _check_bool(cfg: dict, key: str, what: str) -> None:
    if not isinstance(cfg.get(key), bool):
        raise ValueError(f"{what}: {key} must be true or false, got {cfg.get(key)!r}")


def check_cfg(c: dict, what: str = "train3d") -> None:
    """ValueError (one line, naming `what`.key) unless every key of a training configuration
    (PRESETS' keys; pretrain2d's add heatmap_nll_weight) has a usable type and range."""
    check_choice(c, "resnet", (18, 34, 50), what)
    num = {  # key: (lo, hi, integer, allow_none)
        "width": (1e-3, 16, False, False), "deconv_channels": (1, 4096, True, False),
        "deconv_layers": (0, 6, True, False), "depth": (1, 1024, True, False),
        "input_size": (32, 4096, True, False),
        # BatchNorm needs more than one sample per batch
        "batch_size": (2, None, True, False), "epochs": (1, None, True, False),
        "iters_per_epoch": (1, None, True, True), "lr": (0, None, False, False),
        "lr_gamma": (0, None, False, False), "weight_decay": (0, None, False, False),
        "smooth_l1_beta": (0, None, False, False), "target_extent": (0, 1, False, False),
        "min_valid_joints": (1, J, True, False), "seed": (0, 2 ** 63 - 1, True, False),
        "num_threads": (1, 1024, True, True), "max_memory_mb": (0, None, False, False),
        "eval_batch_size": (1, None, True, False), "variance_weight": (0, None, False, False),
        "keep_checkpoints": (0, None, True, False), "heatmap_nll_weight": (0, None, False, False),
        "val_clips": (0, None, True, False),
    }
    for k, (lo, hi, integer, none) in num.items():
        if k in c:
            check_number(c, k, what, lo=lo, hi=hi, integer=integer, allow_none=none)
    for k in ("lr", "lr_gamma", "target_extent"):
        if not c[k] > 0:
            raise ValueError(f"{what}: {k} must be > 0, got {c[k]!r}")
    for k in ("amp", "virtual_camera", "colour_permute", "deterministic"):
        _check_bool(c, k, what)
    steps = c["lr_steps"]
    if not isinstance(steps, (list, tuple)) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in steps):
        raise ValueError(f"{what}: lr_steps must be a list of epochs (integers >= 1), got {steps!r}")
    if c["pretrained"] is not None and not isinstance(c["pretrained"], str):
        raise ValueError(f"{what}: pretrained must be the path of a ResNet state dict or null, got {c['pretrained']!r}")
    if c.get("init") is not None and not isinstance(c["init"], str):
        raise ValueError(f"{what}: init must be the path of an integral network checkpoint or null, got {c['init']!r}")
    aug.resolve(c["augment"])


def build_model(arch: dict, mode: str) -> IntegralPoseNet:
    return IntegralPoseNet(J, mode, int(arch["resnet"]), float(arch["width"]), int(arch["depth"]),
                           int(arch["deconv_channels"]), int(arch["deconv_layers"]))


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun, else (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start_files(cfg: dict) -> list[str]:
    """The files a training starts from (`pretrained`, `init`, where set): its stage lists
    them as sources, so that another file at the same path retrains it."""
    return [str(cfg[k]) for k in ("pretrained", "init") if cfg.get(k)]


# the output layer: 2D heatmaps (J channels) or a 3D volume (J x depth), never carried over
OUTPUT_LAYER = "head.final."


def seed_weights(model: IntegralPoseNet, path: Path) -> list[str]:
    """Start `model` from another integral network's checkpoint (EpipolarPose's recipe: the 3D
    network starts from the 2D pose network, every layer but the output one, which keeps its
    fresh initialisation). Loaded like any checkpoint (load_checkpoint: weights only).
    Returns the names left as initialised. ValueError naming the file when a layer other than
    the output one differs in shape (another ResNet depth, width or head)."""
    src = load_checkpoint(path)["model"]
    own = model.state_dict()
    clash = [f"{k}: {tuple(src[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in src and src[k].shape != v.shape and not k.startswith(OUTPUT_LAYER)]
    if clash:
        raise ValueError(f"init {path}: its network differs from this one beyond the output layer ("
                         + "; ".join(clash[:3]) + "): give both the same resnet, width, deconv_channels "
                         "and deconv_layers, or set init to null")
    take = {k: v for k, v in src.items() if k in own and v.shape == own[k].shape and not k.startswith(OUTPUT_LAYER)}
    if not take:
        raise ValueError(f"init {path}: no layer of its network matches this one")
    model.load_state_dict({**own, **take})
    return [k for k in own if k not in take]


# what every integral network checkpoint holds (fit's docstring lists them with their types)
CHECKPOINT_KEYS = ("kind", "mode", "arch", "scale", "units", "cfg", "epoch", "epochs", "n_samples", "model",
                   "losses")


def load_checkpoint(path: Path) -> dict:
    """An integral network checkpoint (pipeline.training.checkpoint.load_checkpoint: weights_only=True);
    a ValueError (CheckpointError) naming the file when it is missing, corrupt, refused or of
    another kind."""
    return _load_checked(path, "integral", CHECKPOINT_KEYS, what="an integral pose network")


def load_model(path: Path, mode: str | None = None) -> tuple[IntegralPoseNet, dict]:
    """The network stored in a checkpoint (eval mode, CPU) and the checkpoint's metadata.

    mode '2d'/'3d' checks the checkpoint holds that kind of network (a ValueError otherwise)."""
    ck = load_checkpoint(path)
    if mode is not None and ck["mode"] != mode:
        raise ValueError(f"{path} holds a {ck['mode']} network, a {mode} one is needed")
    model = build_model(ck["arch"], ck["mode"])
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the architecture it names: {str(e)[:300]}") from e
    model.eval()
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "scheduler", "rng", "torch_rng")}
    return model, meta


def _deterministic_algorithms(on: bool, warn_only: bool = True) -> None:
    """torch.use_deterministic_algorithms without its import of torch._inductor (about 2 s in
    every process that trains or predicts) where that is not loaded: the flag it sets there is
    read by torch.compile only, which this project does not use."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
    else:
        setter(on, warn_only=warn_only)


@contextlib.contextmanager
def deterministic(threads: int | None, on: bool = True):
    """Deterministic algorithms (on) or cuDNN's autotuned ones (off: 20-40 % faster training on
    an H100/H200, not reproducible bit for bit); threads.cpu_threads(`threads`) CPU threads
    (None: chosen from the cores given). Restored on exit.

    With `on`, torch would also fill every new uninitialised tensor with NaN (a guard against
    kernels that read memory they did not write): no kernel of these networks does, so the
    bits are the same without it, and on the CPU the fill costs a few per cent of a 3D training
    step (bench/chain.py measures it); it is switched off here."""
    import torch.utils.deterministic as tud
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    prev_threads = torch.get_num_threads()
    prev_fill = tud.fill_uninitialized_memory
    _deterministic_algorithms(bool(on))
    tud.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = not on
    torch.set_num_threads(cpu_threads(threads))
    try:
        yield
    finally:
        _deterministic_algorithms(prev, warn_only=False)
        tud.fill_uninitialized_memory = prev_fill
        torch.backends.cudnn.benchmark = prev_bench
        torch.set_num_threads(prev_threads)


def _checkpoints(ckdir: Path) -> list[Path]:
    """The epoch checkpoints in ckdir, oldest first."""
    return sorted(p for p in ckdir.glob("epoch-*.pt") if re.fullmatch(r"epoch-\d{4}\.pt", p.name))


def _latest_checkpoint(ckdir: Path) -> Path | None:
    found = _checkpoints(ckdir)
    return found[-1] if found else None


def _newest_intact(ckdir: Path, remove: bool = True) -> tuple[Path, dict] | tuple[None, None]:
    """The newest epoch checkpoint in ckdir that loads, and its content; (None, None) if none.

    Newer ones that do not load (truncated by a crash or a full disk, corrupt, refused) are
    removed (remove=True), with a warning naming each, so that a later retry starts clean."""
    for p in reversed(_checkpoints(ckdir)):
        try:
            return p, load_checkpoint(p)
        except CheckpointError as e:
            log.warning("training: %s; %s and resuming from the previous epoch's checkpoint", e,
                        "removed it" if remove else "skipping it")
            if remove:
                p.unlink(missing_ok=True)
    return None, None


def fit(cfg: dict, mode: str, images: ImageSource, samples: np.ndarray, targets: np.ndarray,
        mask: np.ndarray, scale: float, units: str, out_dir: Path, extra_meta: dict | None = None,
        progress: bool = True, validate=None) -> Path:
    """Train an IntegralPoseNet and return out_dir/final.pt.

    samples [N,2] (frame, view) pairs; targets [N,J,3|2] normalised network coordinates
    (3D: root-relative camera frame / scale; 2D: crop coordinates in [-1,1]); mask [N,J].
    Resumes from the newest out_dir/checkpoints/epoch-XXXX.pt that loads (newer ones that do
    not are removed with a warning); returns final.pt as it is when the run is complete and
    it loads (one that does not is removed with a warning and rebuilt from the checkpoints,
    or retrained). A failed checkpoint write raises checkpoint.CheckpointWriteError (an
    OSError naming the file, the folder and the reason) and leaves the previous epoch's intact.

    Checkpoint keys (epoch-XXXX.pt and final.pt): kind "integral", mode "2d"|"3d", arch {str:
    int|float} (ARCH_KEYS), scale float, units str ("mm" | "label" | "crop"), cfg (the resolved
    configuration as JSON-plain data), epoch int, epochs int, n_samples int, model (state dict
    of tensors), optimizer and scheduler (their state dicts), rng (numpy bit generator state:
    dict of str, int), torch_rng (uint8 tensor), losses [float], train_seconds float,
    images_seen int, cpu_threads int (the intra-op threads it trained with; a resumed run with
    num_threads unset takes them), extra_meta's keys (plain data); final.pt adds images_per_s float.
    validate: None, or model -> dict of plain data (validation.scorer), called after every
    epoch; its results are the checkpoints' `validation` list (one dict per epoch).
    """
    out_dir = Path(out_dir)
    ckdir = out_dir / "checkpoints"
    final = out_dir / "final.pt"
    arch = {k: cfg[k] for k in ARCH_KEYS}
    rank0 = _dist_info()[0] == 0
    if final.is_file():
        try:
            ck = load_checkpoint(final)
        except CheckpointError as e:
            log.warning("training: %s; rebuilding it from the epoch checkpoints", e)
            if rank0:
                final.unlink(missing_ok=True)
        else:
            if ck["arch"] != arch or ck["mode"] != mode:
                raise ValueError(f"{final} holds another architecture ({ck['mode']}, {ck['arch']}); "
                                 f"use another out_dir")
            return final
    if len(samples) == 0:
        raise ValueError("empty training set: no training-split sample has a usable target")
    rank, world, local_rank = _dist_info()
    B = int(cfg["batch_size"])
    if len(samples) < B * world:
        raise ValueError(f"only {len(samples)} training samples for a batch of {B} x {world} processes")
    iters = int(cfg["iters_per_epoch"] or len(samples) // (B * world))  # an epoch: one pass over the real samples
    if cfg.get("colour_permute"):
        views = int(samples[:, 1].max()) + 1
        images, samples = ColourPermuted(images, views), colour_permuted_samples(samples, views)
        targets, mask = np.concatenate([targets] * len(COLOUR_ORDERS)), np.concatenate([mask] * len(COLOUR_ORDERS))
    N = len(samples)
    epochs = int(cfg["epochs"])

    with deterministic(cfg["num_threads"], cfg["deterministic"]):
        ddp = world > 1
        if ddp:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        device = _device(local_rank)
        torch.manual_seed(int(cfg["seed"]))
        model = build_model(arch, mode)
        if cfg["pretrained"]:
            load_backbone_weights(model.backbone, cfg["pretrained"])
        if cfg.get("init"):
            seed_weights(model, Path(cfg["init"]))
        # channels_last: the faster convolution layout on the GPU and on the CPU alike (oneDNN)
        model = model.to(device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg["lr_steps"]), float(cfg["lr_gamma"]))
        rng = np.random.default_rng(int(cfg["seed"]))
        losses: list[float] = []
        val_hist: list[dict] = []
        start = 0
        seconds = 0.0
        n_seen = 0
        last, ck = _newest_intact(ckdir, remove=rank == 0)
        if last is not None:
            if ck["arch"] != arch or ck["mode"] != mode:
                raise ValueError(f"{last} is a checkpoint of another architecture ({ck['mode']}, {ck['arch']}); "
                                 f"use another out_dir")
            if ck.get("n_samples") != N:
                raise ValueError(f"{last} was trained on {ck.get('n_samples')} samples, this run has {N}")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            rng.bit_generator.state = ck["rng"]
            torch.set_rng_state(ck["torch_rng"])
            losses, start = list(ck["losses"]), int(ck["epoch"])
            val_hist = list(ck.get("validation", []))
            seconds, n_seen = float(ck.get("train_seconds", 0.0)), int(ck.get("images_seen", 0))
            if not cfg["num_threads"] and ck.get("cpu_threads"):
                torch.set_num_threads(int(ck["cpu_threads"]))  # same threads, same bits (threads.py)
        net = model
        if ddp:
            from torch.nn.parallel import DistributedDataParallel
            net = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        amp = bool(cfg["amp"]) and device.type == "cuda"
        beta = float(cfg["smooth_l1_beta"])
        vw = float(cfg["variance_weight"])
        hw = float(cfg.get("heatmap_nll_weight", 0.0))  # 2D only (pretrain2d.PRESETS)
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * iters, initial=start * iters, desc=f"train {mode}",
                   disable=not progress or rank != 0)
        for epoch in range(start, epochs):
            net.train()
            need = iters * B * world
            order = np.concatenate([rng.permutation(N) for _ in range(math.ceil(need / N))])[:need]
            total, t0 = 0.0, time.perf_counter()
            for it in range(iters):
                idx = order[it * B * world:(it + 1) * B * world]
                params = aug.sample_params(rng, len(idx), cfg["augment"])
                mine = slice(rank * B, (rank + 1) * B)
                idx = idx[mine]
                params = {k: v[mine] for k, v in params.items()}
                # uint8 crosses to the device (a quarter of float32's bytes), then becomes float there
                x = aug.to_float(torch.from_numpy(images.get(samples[idx, 0], samples[idx, 1])).to(device))
                x = aug.normalise(aug.augment_images(x, params))
                tgt, m = targets[idx], mask[idx]
                if mode == "3d":
                    tgt = aug.transform_pose_3d(tgt, params)
                else:
                    tgt = aug.transform_points_2d(tgt, params)
                m = aug.transform_mask(m, params)
                tgt = torch.as_tensor(tgt, dtype=torch.float32, device=device)
                m = torch.as_tensor(m, dtype=torch.float32, device=device)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    pred, prob = net(x, return_prob=True)
                pred = pred.float()
                if mode == "3d":
                    pred = pred - pred[:, ROOT:ROOT + 1]
                err = nnf.smooth_l1_loss(pred, tgt, beta=beta, reduction="none").sum(-1)
                loss = (err * m).sum() / m.sum().clamp_min(1.0) / pred.shape[-1]
                if vw > 0 and mode == "2d":
                    loss = loss + vw * spread_loss(prob, tgt, m)
                if hw > 0 and mode == "2d":
                    loss = loss + hw * (heatmap_nll(prob, tgt) * m).sum() / m.sum().clamp_min(1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                lv = float(loss.detach())
                total += lv
                bar.update(1)
                bar.set_postfix(loss=f"{lv:.4f}", epoch=epoch + 1)
            seconds += time.perf_counter() - t0
            n_seen += iters * B * world
            sched.step()
            losses.append(total / iters)
            if validate is not None and rank == 0:  # held-out samples (pipeline/training/validation.py)
                val_hist.append(_plain(validate(model)))
            if rank == 0:  # a line per epoch: the progress Prefect's log, a file and a side-by-side child show
                val = val_hist[-1] if validate is not None and val_hist else {}
                log.info("train %s: epoch %d/%d, loss %.4f%s", mode, epoch + 1, epochs, losses[-1],
                         "".join(f", validation {k} {v:.4g}" for k, v in val.items() if isinstance(v, float)))
            if rank == 0:
                ckdir.mkdir(parents=True, exist_ok=True)
                save_checkpoint({
                    "kind": "integral", "mode": mode, "arch": arch, "scale": float(scale), "units": units,
                    "cfg": _plain(cfg), "epoch": epoch + 1, "epochs": epochs, "n_samples": N,
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "losses": losses,
                    "train_seconds": seconds, "images_seen": n_seen, "cpu_threads": torch.get_num_threads(),
                    "validation": val_hist, **(extra_meta or {}),
                }, ckdir / f"epoch-{epoch + 1:04d}.pt")
                # resuming needs only the newest; the paper preset's are ~300 MB each (0: keep all)
                for old in _checkpoints(ckdir)[:-int(cfg["keep_checkpoints"])]:
                    old.unlink()
        bar.close()
        if ddp:
            import torch.distributed as dist
            dist.barrier()
    if rank == 0:
        ips = n_seen / seconds if seconds > 0 else float("nan")
        ck = load_checkpoint(_latest_checkpoint(ckdir))
        ck["images_per_s"] = ips
        _write_curve(out_dir, losses, {"mode": mode, "preset": cfg["preset"], "architecture": arch, "units": units,
                                       "scale": float(scale), "images_per_s": ips, "epochs": epochs,
                                       "iters_per_epoch": iters, "n_samples": N, **(extra_meta or {})},
                     ck.get("validation") or [])
        save_checkpoint(ck, final)
    return final


def spread_loss(prob: torch.Tensor, tgt: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """E_p ||g - t||^2 over the 2D heatmap, masked mean. prob [B,J,H,W], tgt [B,J,2], m [B,J].

    The soft-argmax alone leaves heatmaps diffuse (only their mean is trained); this term
    (DSNT-style distribution regularisation) concentrates them on the target, so the mass
    near the peak is a usable confidence."""
    B, J_, H, W = prob.shape
    xs = (2 * torch.arange(W, device=prob.device, dtype=prob.dtype) + 1) / W - 1
    ys = (2 * torch.arange(H, device=prob.device, dtype=prob.dtype) + 1) / H - 1
    d2 = (xs[None, None, None, :] - tgt[..., 0, None, None]) ** 2 + (ys[None, None, :, None] - tgt[..., 1, None, None]) ** 2
    e = (prob * d2).sum((2, 3))
    return (e * m).sum() / m.sum().clamp_min(1.0)


def _plain(obj):
    """JSON-friendly copy of a configuration (tuples -> lists)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _write_curve(out_dir: Path, losses: list[float], attrs: dict, validation: list[dict] = ()) -> None:
    import zarr
    g = zarr.open_group(str(out_dir), mode="a")
    curves = {"loss": losses}
    if validation:  # val_loss, val_mpjpe, val_nmpjpe per epoch
        curves.update({f"val_{k}": [v.get(k, np.nan) for v in validation] for k in ("loss", "mpjpe", "nmpjpe")})
    for name, values in curves.items():
        arr = g.create_array(name, shape=(len(values),), dtype="float64", dimension_names=["epoch"], overwrite=True)
        arr[:] = np.asarray(values, dtype=np.float64)
    g.attrs.update({"training": _plain(attrs)})


def run_network(model: IntegralPoseNet, images, frames: np.ndarray, batch_size: int, progress: bool = True,
                return_prob: bool = False):
    """Network outputs for images[frames] (all views): coords [f,V,J,2|3] (and probabilities
    reduced to a confidence for 2D) as numpy; runs on CUDA with bf16 when present."""
    from models.integral import heatmap_confidence
    from tqdm.auto import tqdm
    device = _device(0)
    model = model.to(device, memory_format=torch.channels_last).eval()
    V = images.shape[1]
    pairs = np.stack(np.meshgrid(frames, np.arange(V), indexing="ij"), -1).reshape(-1, 2)
    src = ImageSource(images, frames, max_memory_mb=0)  # streamed
    outs, confs = [], []
    with torch.inference_mode():
        for s in tqdm(range(0, len(pairs), batch_size), desc="predict", disable=not progress, leave=False):
            p = pairs[s:s + batch_size]
            x = aug.normalise(aug.to_float(torch.from_numpy(src.get(p[:, 0], p[:, 1])).to(device)))
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                c, prob = model(x, return_prob=True)
            c = c.float()
            outs.append(c.cpu().numpy())
            if return_prob and model.mode == "2d":
                confs.append(heatmap_confidence(prob.float(), c).cpu().numpy())
    D = 3 if model.mode == "3d" else 2
    coords = (np.concatenate(outs) if outs else np.zeros((0, J, D), np.float32)).reshape(len(frames), V, J, D)
    if return_prob:
        conf = (np.concatenate(confs) if confs else np.zeros((0, J), np.float32)).reshape(len(frames), V, J)
        return coords, conf
    return coords
