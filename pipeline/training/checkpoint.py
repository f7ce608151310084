"""Checkpoint files that hold only tensors and plain data, written atomically and loaded
without running code.

Format: one `torch.save` zip archive of a dict whose values, recursively, are torch tensors,
dict / OrderedDict / collections.Counter (str or int keys), list, tuple, str, int, float,
bool or None; `save_checkpoint` refuses anything else (a numpy array, a dataclass) before
writing. `load_checkpoint` reads with `torch.load(weights_only=True)`, whose unpickler builds
only those types, so a crafted file cannot run code; it opens only zip archives (a plain or
legacy-format pickle is refused without being unpickled), and it never falls back to an
unrestricted load. Every failure is a one-line error that names the file and what to do:

- `UnsafeCheckpointError`: the file holds other Python objects (an older format of this
  pipeline, or a crafted file): refused; delete it and retrain.
- `CorruptCheckpointError`: missing, truncated, not a checkpoint, or not of the expected kind.
- `CheckpointWriteError` (an OSError): the write failed (full device, ...); the file it
  would have replaced is left as it was (written to `<name>.tmp`, then renamed).

Both load errors are ValueErrors, so the command line reports them in one line.
"""
from __future__ import annotations

import errno as _errno
import os
import pickle
import re
import shutil
import warnings
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path

import torch

__all__ = ["CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError", "CheckpointWriteError",
           "check_plain", "save_checkpoint", "load_checkpoint"]

_SCALARS = (str, int, float, bool, type(None))
_MAPPINGS = (dict, OrderedDict, Counter)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds Python objects other than tensors and plain data: refused unloaded."""


class CorruptCheckpointError(CheckpointError):
    """Missing, truncated or not a checkpoint (of the expected kind)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the previous file at that path is intact."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return str(self.args[0])


def check_plain(obj, where: str = "checkpoint") -> None:
    """TypeError naming the first value of `obj` (by its key path) that is not a tensor or plain data."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _SCALARS):
        return
    if isinstance(obj, _MAPPINGS):
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoints take str or int keys")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; a checkpoint holds only "
                    "tensors, dict, list, tuple, str, int, float, bool and None")


def _nbytes(obj) -> int:
    """Bytes of the tensors in obj (an estimate of the file's size)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """Write obj (plain data and tensors only, see check_plain) to path, atomically: to
    `<path>.tmp`, flushed to the device, then renamed over path. A failed write raises
    CheckpointWriteError naming the file, its folder and the reason, removes the temporary
    file and leaves whatever was at path untouched."""
    path = Path(path)
    check_plain(obj, f"checkpoint {path}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        # through a Python file: a full device then raises OSError(ENOSPC), where torch's own
        # file writer says only "enforce fail at inline_container.cc"
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not re.search(r"PytorchStreamWriter|inline_container|write", str(e)):
            raise
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        code = getattr(e, "errno", None)
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if code in (_errno.ENOSPC, _errno.EDQUOT):
            reason = "no space left on the device"
        elif isinstance(e, OSError):
            reason = e.strerror or str(e)
        elif free is not None and free < _nbytes(obj) + 2 ** 20:  # torch's writer does not say why
            reason = f"no space left on the device ({free / 2 ** 20:.1f} MiB free)"
        else:
            reason = f"the write failed ({str(e).splitlines()[0][:200]})"
        raise CheckpointWriteError(
            f"could not write checkpoint {path.name} in {path.parent}: {reason}; nothing there was overwritten "
            f"(the previous checkpoint is intact): free space (or fix the folder) and run again", code) from e
    return path


def _refusal(path: Path, e: Exception) -> CheckpointError:
    msg = str(e)
    m = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL|Unsupported class)\s+([\w.]+)", msg, re.I)
    if m or re.search(r"allowed global|Unsupported operand|is blocked|WeightsUnpickler", msg):
        what = f"a Python object ({m.group(1)})" if m else "Python objects"
        return UnsafeCheckpointError(
            f"{path}: refused: the checkpoint holds {what} besides tensors and plain data, and loading it "
            f"could run code (a checkpoint of an older version of the pipeline, or a crafted file); "
            f"it was not loaded: delete it and retrain")
    return CorruptCheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: "
                                  f"{msg.splitlines()[0][:160] if msg else 'no detail'}): delete it and retrain")


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None, required: tuple[str, ...] = (),
                    mmap: bool = False, what: str | None = None) -> dict:
    """The dict stored at path, loaded with weights_only=True onto the CPU.

    kind: the value (or values) its "kind" entry must have (`what` names it in the error);
    required: keys it must hold.
    mmap: map the tensors instead of reading them (cheap when only metadata is wanted).
    Raises UnsafeCheckpointError / CorruptCheckpointError (ValueErrors naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpointError(f"checkpoint {path} does not exist" +
                                     (" (it is a folder)" if path.is_dir() else ""))
    # torch.save writes zip archives; anything else (a plain pickle, a legacy file, a truncated
    # archive whose directory is lost) is refused before any byte of it is unpickled
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(
            f"{path}: not a checkpoint this pipeline writes (not a complete torch zip archive: truncated, "
            f"corrupt, or a plain pickle); it was not loaded: delete it and retrain")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except OSError as e:
        raise CorruptCheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, AttributeError,
            IndexError, TypeError) as e:
        raise _refusal(path, e) from None
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(f"{path}: not a checkpoint of this pipeline (holds a {type(obj).__name__}, "
                                     f"not a dict)")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and obj.get("kind") not in kinds:
        names = what or "a " + " or ".join(repr(k) for k in kinds)
        raise CorruptCheckpointError(f"{path} is not {names} checkpoint (its kind is {obj.get('kind')!r})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CorruptCheckpointError(f"{path}: checkpoint lacks {missing}: incomplete or from another tool; "
                                     f"delete it and retrain")
    return obj


def training_record(checkpoint: Path) -> dict:
    """What a training checkpoint (train3d, pretrain2d, refine) says of its training: losses per
    epoch, images/s, epoch, samples, units, architecture, the held-out validation per epoch
    (a list of {"loss", "mpjpe", "nmpjpe", "units"}), what it started from: init (the network
    checkpoint whose layers seeded it) and pretrained (a backbone weights file); None where it
    does not say.

    Loaded with weights_only=True; a missing, corrupt or refused file is a
    CheckpointError (ValueError) naming it."""
    ck = load_checkpoint(checkpoint, ("integral", "refiner"), mmap=True, what="a training (integral or refiner)")
    cfg = ck.get("cfg") if isinstance(ck.get("cfg"), dict) else {}
    return {**{k: ck.get(k) for k in ("losses", "images_per_s", "epoch", "n_samples", "n_train", "units", "arch",
                                      "validation")},
            "init": cfg.get("init"), "pretrained": cfg.get("pretrained")}
