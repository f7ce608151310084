"""Crafted and broken checkpoints, reproducible for a benchmark (bench/faults.py) and the tests.

CASES maps a name to a function `case(folder: Path) -> (command, expected)`: it writes a
crafted or broken checkpoint (and whatever else the case needs: a tiny dataset store, a
training folder, a script) under `folder`, and returns a shell command line to run from the
repository root and a substring its combined stdout + stderr must contain. Every crafted
pickle would create `folder / MARKER` if any of it ran: after the command, that file must not
exist (`ran_code(folder)`).

Cases that train use the tiny in-test dataset of tests/test_train3d.py (seconds on a CPU).
"""
from __future__ import annotations

import os
import pickle
import shlex
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARKER = "CODE_RAN.marker"
PY = shlex.quote(sys.executable)

# the training configuration of the cases (tests/test_train3d.py TINY), 2 epochs
TINY = {"resnet": 18, "width": 0.125, "deconv_channels": 16, "depth": 8, "input_size": 32, "batch_size": 8,
        "epochs": 2, "iters_per_epoch": 3, "eval_batch_size": 16, "num_threads": 1}


class RunsCode:
    """Unpickling this object runs a shell command that creates `marker` (as a crafted file would)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def ran_code(folder: Path) -> bool:
    """True when a crafted pickle under folder ran (its marker file exists)."""
    return (Path(folder) / MARKER).exists()


def write_crafted(path: Path, marker: Path, kind: str = "integral", fmt: str = "zip") -> Path:
    """A checkpoint-shaped file whose unpickling would run a command creating `marker`.

    fmt "zip": written by torch.save (the format of a real checkpoint); "pickle": a plain pickle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"kind": kind, "mode": "3d", "arch": {}, "scale": 1.0, "units": "mm", "cfg": {}, "epoch": 1,
           "epochs": 1, "n_samples": 1, "losses": [1.0], "model": RunsCode(marker)}
    if fmt == "zip":
        import torch
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to `keep` of its length (a crash or a full disk mid-write)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * keep)])
    return Path(path)


def tiny_training(folder: Path, epochs: int = 2) -> tuple[Path, Path]:
    """A tiny dataset store and a finished training folder (checkpoints + final.pt) under folder."""
    sys.path.insert(0, str(ROOT))
    from pipeline.training import pose3d
    from tests.test_train3d import make_store
    ds = Path(folder) / "ds.zarr"
    store = make_store(ds, F=24)
    out = Path(folder) / "train"
    pose3d.train({**TINY, "epochs": epochs}, store, None, None, out, progress=False)
    return ds, out


def training_store(folder: Path) -> Path:
    """A train3d-like stage output: zarr group with the provenance the stages write, its
    checkpoint at train/final.pt (a real one, to be replaced by the case)."""
    import zarr
    ds, out = tiny_training(folder, epochs=1)
    g = zarr.open_group(str(Path(folder)), mode="a")
    g.attrs["provenance"] = {"stage": "train3d", "name": "ss", "fingerprint": "0" * 16, "complete": True,
                             "result": "train/final.pt", "config": {}, "inputs": {}}
    return Path(folder)


def _script(folder: Path, name: str, body: str) -> str:
    """Write a Python script under folder that imports the project; the command that runs it."""
    p = Path(folder) / name
    p.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + body)
    return f"{PY} {shlex.quote(str(p))}"


def _image(folder: Path) -> Path:
    import cv2
    p = Path(folder) / "frame.png"
    cv2.imwrite(str(p), np.full((64, 64, 3), 90, np.uint8))
    return p


_RESUME = """
import logging, torch
from pipeline.training import loop, pose3d
from tests.test_train3d import make_store
import zarr
seen = []
class H(logging.Handler):
    def emit(self, r): seen.append(r.getMessage())
logging.getLogger("pipeline").addHandler(H())
store = zarr.open_group({ds!r}, mode="r")
ck = pose3d.train({cfg!r}, store, None, None, {out!r}, progress=False)
fin = loop.load_checkpoint(ck)
bad = {bad!r}
warned = any(bad in m for m in seen)
print(f"trained to epoch {{fin['epoch']}}; " + (f"warned about {{bad}}" if warned else "NO WARNING"))
"""


def _c_infer_crafted_zip(folder: Path) -> tuple[str, str]:
    ck = write_crafted(Path(folder) / "crafted.pt", Path(folder) / MARKER)
    img = _image(folder)
    return (f"{PY} -m pipeline.infer {shlex.quote(str(img))} --net3d {shlex.quote(str(ck))} "
            f"--net2d {shlex.quote(str(ck))} --out {shlex.quote(str(Path(folder) / 'out'))}",
            f"{ck}: refused")


def _c_infer_crafted_pickle(folder: Path) -> tuple[str, str]:
    ck = write_crafted(Path(folder) / "crafted.pkl", Path(folder) / MARKER, fmt="pickle")
    img = _image(folder)
    return (f"{PY} -m pipeline.infer {shlex.quote(str(img))} --net3d {shlex.quote(str(ck))} "
            f"--net2d {shlex.quote(str(ck))}", f"{ck}: not a checkpoint this pipeline writes")


def _c_infer_missing(folder: Path) -> tuple[str, str]:
    img = _image(folder)
    ck = Path(folder) / "nowhere" / "final.pt"
    return (f"{PY} -m pipeline.infer {shlex.quote(str(img))} --net3d {shlex.quote(str(ck))} "
            f"--net2d {shlex.quote(str(ck))}", f"checkpoint {ck} does not exist")


def _c_inspect_crafted_final(folder: Path) -> tuple[str, str]:
    loc = training_store(folder)
    ck = write_crafted(loc / "train" / "final.pt", Path(folder) / MARKER)
    return f"{PY} -m flows.cli inspect {shlex.quote(str(loc))}", f"epipose inspect: {ck}: refused"


def _c_inspect_truncated_final(folder: Path) -> tuple[str, str]:
    loc = training_store(folder)
    ck = truncate(loc / "train" / "final.pt")
    return f"{PY} -m flows.cli inspect {shlex.quote(str(loc))}", f"epipose inspect: {ck}: not a checkpoint"


_INIT = """
import zarr
from pipeline.training import pose3d
store = zarr.open_group({ds!r}, mode="r")
try:
    pose3d.train({cfg!r}, store, None, None, {out!r}, progress=False)
    print("TRAINED")
except ValueError as e:
    print(e)
"""


def _c_init_other_architecture(folder: Path) -> tuple[str, str]:
    """A 3D training told to start (init) from a network of another width: refused, naming the file."""
    ds, out = tiny_training(folder, epochs=1)
    cfg = {**TINY, "width": 0.25, "init": str(out / "final.pt")}
    cmd = _script(folder, "init.py", _INIT.format(ds=str(ds), cfg=cfg, out=str(Path(folder) / "wide")))
    return cmd, f"init {out / 'final.pt'}: its network differs from this one beyond the output layer"


def _c_init_crafted(folder: Path) -> tuple[str, str]:
    """A 3D training told to start (init) from a crafted checkpoint: refused unread."""
    ds, _ = tiny_training(folder, epochs=1)
    ck = write_crafted(Path(folder) / "start.pt", Path(folder) / MARKER)
    cmd = _script(folder, "init.py", _INIT.format(ds=str(ds), cfg={**TINY, "init": str(ck)},
                                                  out=str(Path(folder) / "from-crafted")))
    return cmd, f"{ck}: refused"


def _c_refiner_crafted(folder: Path) -> tuple[str, str]:
    ck = write_crafted(Path(folder) / "ru.pt", Path(folder) / MARKER, kind="refiner")
    cmd = _script(folder, "apply.py", f"""
import numpy as np
from pipeline.training import refiner
try:
    refiner.apply_refiner({str(ck)!r}, np.zeros((2, 17, 3), np.float32))
except ValueError as e:
    print(e)
""")
    return cmd, f"{ck}: refused"


def _c_pretrained_crafted(folder: Path) -> tuple[str, str]:
    ck = write_crafted(Path(folder) / "resnet.pth", Path(folder) / MARKER, fmt="pickle")
    cmd = _script(folder, "pretrained.py", f"""
from models.integral import IntegralPoseNet
from models.resnet import load_backbone_weights
try:
    load_backbone_weights(IntegralPoseNet(17, "3d", 18, 0.125, 8, 16, 3).backbone, {str(ck)!r})
except ValueError as e:
    print(e)
""")
    return cmd, f"{ck}: refused"


def _c_truncated_newest_epoch(folder: Path) -> tuple[str, str]:
    ds, out = tiny_training(folder, epochs=2)
    (out / "final.pt").unlink()  # as if killed while writing epoch 2's checkpoint
    bad = truncate(out / "checkpoints" / "epoch-0002.pt")
    cmd = _script(folder, "resume.py", _RESUME.format(ds=str(ds), cfg=TINY, out=str(out), bad=bad.name))
    return cmd, "trained to epoch 2; warned about epoch-0002.pt"


def _c_crafted_newest_epoch(folder: Path) -> tuple[str, str]:
    ds, out = tiny_training(folder, epochs=2)
    (out / "final.pt").unlink()
    bad = write_crafted(out / "checkpoints" / "epoch-0002.pt", Path(folder) / MARKER)
    cmd = _script(folder, "resume.py", _RESUME.format(ds=str(ds), cfg=TINY, out=str(out), bad=bad.name))
    return cmd, "trained to epoch 2; warned about epoch-0002.pt"


def _c_truncated_final(folder: Path) -> tuple[str, str]:
    ds, out = tiny_training(folder, epochs=2)
    bad = truncate(out / "final.pt")
    cmd = _script(folder, "rebuild.py", _RESUME.format(ds=str(ds), cfg=TINY, out=str(out), bad=bad.name))
    return cmd, "trained to epoch 2; warned about final.pt"


def _c_disk_full(folder: Path) -> tuple[str, str]:
    ds, out = tiny_training(folder, epochs=1)
    (out / "final.pt").unlink()
    # the edge that cannot exist here: the device fills while epoch 2's checkpoint is written
    cmd = _script(folder, "full.py", f"""
import errno, torch, zarr
from pipeline.training import loop, pose3d
from pipeline.training.checkpoint import CheckpointWriteError
real = torch.save
def save(obj, f, *a, **k):
    if str(getattr(f, "name", f)).endswith("epoch-0002.pt.tmp"):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(obj, f, *a, **k)
torch.save = save
try:
    pose3d.train({TINY!r}, zarr.open_group({str(ds)!r}, mode="r"), None, None, {str(out)!r}, progress=False)
except CheckpointWriteError as e:
    intact = loop.load_checkpoint({str(out / "checkpoints" / "epoch-0001.pt")!r})["epoch"] == 1
    print(e, "| epoch 1 intact:", intact)
""")
    return cmd, "no space left on the device; nothing there was overwritten (the previous checkpoint is intact): " \
                "free space (or fix the folder) and run again | epoch 1 intact: True"


def _c_device_full(folder: Path) -> tuple[str, str]:
    """A real full device (Linux): epoch 2's temporary file is a link to /dev/full (ENOSPC on write)."""
    ds, out = tiny_training(folder, epochs=1)
    (out / "final.pt").unlink()
    (out / "checkpoints" / "epoch-0002.pt.tmp").symlink_to("/dev/full")
    cmd = _script(folder, "devfull.py", f"""
import zarr
from pipeline.training import loop, pose3d
from pipeline.training.checkpoint import CheckpointWriteError
try:
    pose3d.train({TINY!r}, zarr.open_group({str(ds)!r}, mode="r"), None, None, {str(out)!r}, progress=False)
except CheckpointWriteError as e:
    intact = loop.load_checkpoint({str(out / "checkpoints" / "epoch-0001.pt")!r})["epoch"] == 1
    print(e, "| epoch 1 intact:", intact)
""")
    return cmd, "no space left on the device; nothing there was overwritten (the previous checkpoint is intact): " \
                "free space (or fix the folder) and run again | epoch 1 intact: True"


def _c_wrong_kind(folder: Path) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT))
    from pipeline.training import refiner
    from pipeline.joints import J
    x = np.random.default_rng(0).normal(size=(32, J, 3)).astype(np.float32)
    ck = refiner.train_refiner({"epochs": 1, "hidden": 16, "batch_size": 8}, x, x, Path(folder) / "ru", progress=False)
    img = _image(folder)
    return (f"{PY} -m pipeline.infer {shlex.quote(str(img))} --net3d {shlex.quote(str(ck))} "
            f"--net2d {shlex.quote(str(ck))}", f"{ck} is not an integral pose network checkpoint")


def _c_old_numpy_checkpoint(folder: Path) -> tuple[str, str]:
    """An older-format checkpoint (numpy objects inside) loads only with weights_only=False: refused."""
    import torch
    ck = Path(folder) / "old.pt"
    torch.save({"kind": "integral", "rng": np.random.default_rng(0).bit_generator.state,
                "model": {"w": np.zeros(3)}}, ck)
    img = _image(folder)
    return (f"{PY} -m pipeline.infer {shlex.quote(str(img))} --net3d {shlex.quote(str(ck))} "
            f"--net2d {shlex.quote(str(ck))}", "delete it and retrain")


CASES: dict[str, Callable[[Path], tuple[str, str]]] = {
    "crafted final.pt, python -m pipeline.infer --net3d": _c_infer_crafted_zip,
    "crafted plain pickle, python -m pipeline.infer --net3d": _c_infer_crafted_pickle,
    "missing checkpoint, python -m pipeline.infer --net3d": _c_infer_missing,
    "refiner checkpoint given as --net3d": _c_wrong_kind,
    "old-format checkpoint (numpy objects), pipeline.infer": _c_old_numpy_checkpoint,
    "crafted final.pt in a training store, epipose inspect": _c_inspect_crafted_final,
    "truncated final.pt in a training store, epipose inspect": _c_inspect_truncated_final,
    "crafted refiner checkpoint, refiner.apply_refiner": _c_refiner_crafted,
    "crafted pretrained backbone weights, models.resnet": _c_pretrained_crafted,
    "init: a network of another width, 3D training": _c_init_other_architecture,
    "init: a crafted checkpoint, 3D training": _c_init_crafted,
    "truncated newest epoch checkpoint, training resumes": _c_truncated_newest_epoch,
    "crafted newest epoch checkpoint, training resumes": _c_crafted_newest_epoch,
    "truncated final.pt in a working folder, rebuilt": _c_truncated_final,
    "disk full while writing a checkpoint (torch.save raises ENOSPC)": _c_disk_full,
}
if Path("/dev/full").exists():
    CASES["disk full while writing a checkpoint (a real write to /dev/full)"] = _c_device_full
