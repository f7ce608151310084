"""Checkpoints hold only tensors and plain data and never run code when loaded; a broken one is
found, named, and rebuilt from what is intact (pipeline/checkpoint.py, loop.fit, refine).

The crafted files are real pickles whose __reduce__ runs `touch MARKER` (tests/faults_checkpoints.py);
a control shows that an unrestricted load of the same file does run it."""
from __future__ import annotations

import errno
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli import main as cli
from models.integral import IntegralPoseNet
from models.resnet import load_backbone_weights
from pipeline.training import checkpoint, detector2d, loop, pose3d, refiner
from pipeline import infer
from pipeline.orchestration import inspection
from pipeline.training.checkpoint import CheckpointError, CheckpointWriteError, UnsafeCheckpointError
from pipeline.joints import J
from tests import faults_checkpoints as fc
from tests.test_train3d import TINY, make_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "ds.zarr", F=24)


def _crafted(tmp_path, name="crafted.pt", **kw) -> tuple[Path, Path]:
    marker = tmp_path / fc.MARKER
    return fc.write_crafted(tmp_path / name, marker, **kw), marker


def test_control_an_unrestricted_load_of_the_crafted_file_runs_code(tmp_path):
    """Without weights_only the crafted file runs its command: the marker proves the tests' point."""
    ck, marker = _crafted(tmp_path)
    torch.load(ck, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "pickle"])
def test_every_loader_refuses_a_crafted_pickle_without_running_it(tmp_path, fmt):
    ck, marker = _crafted(tmp_path, fmt=fmt)
    rck, _ = _crafted(tmp_path, "ru.pt", kind="refiner", fmt=fmt)
    name = "refused" if fmt == "zip" else "not a checkpoint this pipeline writes"
    loaders = {
        "checkpoint.load_checkpoint": lambda: checkpoint.load_checkpoint(ck),
        "train3d.load_checkpoint": lambda: loop.load_checkpoint(ck),
        "train3d.load_model": lambda: loop.load_model(ck, "3d"),
        "pretrain2d.predict": lambda: detector2d.predict(ck, None, [0]),
        "refine.apply_refiner": lambda: refiner.apply_refiner(rck, np.zeros((1, J, 3), np.float32)),
        "checkpoint.training_record": lambda: checkpoint.training_record(ck),
        "infer.Estimator": lambda: infer.Estimator(ck, ck),
    }
    for what, load in loaders.items():
        with pytest.raises(CheckpointError, match=name) as e:
            load()
        assert str(ck if "refine" not in what else rck) in str(e.value), what
        assert "\n" not in str(e.value), what
        assert not marker.exists(), what
    # pretrained backbone weights (models/ imports only torch: its own ValueError)
    with pytest.raises(ValueError, match="refused") as e:
        load_backbone_weights(IntegralPoseNet(J, "3d", 18, 0.125, 8, 16, 3).backbone, ck)
    assert str(ck) in str(e.value) and not marker.exists()


def test_the_network_detector_refuses_a_crafted_checkpoint(tmp_path, store):
    from pipeline.detectors import get_detector
    ck, marker = _crafted(tmp_path, "p2d/final.pt")
    with pytest.raises(UnsafeCheckpointError, match="delete it and retrain"):
        get_detector("network")({}, store, slice(0, 2), {"pretrain2d": str(tmp_path / "p2d")})
    assert not marker.exists()


def test_inspect_cli_on_a_training_store_holding_a_crafted_final(tmp_path, capsys):
    loc = fc.training_store(tmp_path / "store")
    assert cli(["inspect", str(loc)]) == 0  # the real checkpoint first: it reads
    assert "training:    1 epochs" in capsys.readouterr().out
    ck, marker = _crafted(tmp_path, "store/train/final.pt")
    assert cli(["inspect", str(loc)]) == 2
    err = capsys.readouterr().err
    assert f"{ck}: refused" in err and "retrain" in err and err.count("\n") == 1
    assert not marker.exists()


def test_infer_cli_refuses_crafted_and_missing_checkpoints(tmp_path):
    """`python -m pipeline.infer ... --net3d crafted.pt`: one line on stderr, exit status 2, nothing ran."""
    for name, case in (("crafted", fc._c_infer_crafted_zip), ("missing", fc._c_infer_missing)):
        folder = tmp_path / name
        folder.mkdir()
        cmd, expected = case(folder)
        r = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        assert expected in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert not fc.ran_code(folder)


def test_old_checkpoint_with_python_objects_is_refused_and_says_retrain(tmp_path):
    ck = tmp_path / "old.pt"
    torch.save({"kind": "integral", "model": {}, "rng": np.zeros(3)}, ck)
    with pytest.raises(UnsafeCheckpointError, match=r"numpy.*delete it and retrain"):
        loop.load_checkpoint(ck)


def test_saved_checkpoints_hold_only_plain_data(tmp_path, store):
    """Every checkpoint written loads with weights_only=True, and saving anything else is refused
    before a byte is written."""
    ck = pose3d.train({**TINY, "epochs": 1}, store, None, None, tmp_path / "a", progress=False)
    p2 = detector2d.train({**TINY, "epochs": 1}, store, tmp_path / "b", progress=False)
    x = np.random.default_rng(0).normal(size=(32, J, 3)).astype(np.float32)
    ru = refiner.train_refiner({"epochs": 1, "hidden": 16, "batch_size": 8}, x, x, tmp_path / "ru", progress=False)
    for p in (ck, p2, ru, tmp_path / "a" / "checkpoints" / "epoch-0001.pt"):
        obj = torch.load(p, weights_only=True)
        checkpoint.check_plain(obj)
    with pytest.raises(TypeError, match=r"\['rng'\] is a numpy"):
        checkpoint.save_checkpoint({"rng": np.zeros(2)}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.pt.tmp").exists()


def test_truncated_newest_epoch_checkpoint_resumes_from_the_previous_one(tmp_path, store, caplog):
    """A truncated epoch-0002.pt (killed while written without the atomic rename, or a full disk)
    is removed with a warning naming it; training resumes from epoch 1 and ends bit-identical to
    an uninterrupted run."""
    cfg = {**TINY, "epochs": 3}
    a = pose3d.train(cfg, store, None, None, tmp_path / "a", progress=False)
    pose3d.train({**cfg, "epochs": 2}, store, None, None, tmp_path / "b", progress=False)
    (tmp_path / "b" / "final.pt").unlink()
    bad = fc.truncate(tmp_path / "b" / "checkpoints" / "epoch-0002.pt")
    with pytest.raises(CheckpointError, match="not a complete torch zip archive"):
        loop.load_checkpoint(bad)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        b = pose3d.train(cfg, store, None, None, tmp_path / "b", progress=False)
    assert any(str(bad) in r.getMessage() for r in caplog.records)
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in bad.parent.iterdir()) == ["epoch-0002.pt", "epoch-0003.pt"]
    loop.load_checkpoint(bad)  # rewritten, intact


def test_truncated_final_is_rebuilt_not_returned(tmp_path, store, caplog):
    ck = pose3d.train(TINY, store, None, None, tmp_path / "a", progress=False)
    good = torch.load(ck, weights_only=True)["model"]
    fc.truncate(ck, 0.3)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert pose3d.train(TINY, store, None, None, tmp_path / "a", progress=False) == ck
    assert any("final.pt" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    again = loop.load_checkpoint(ck)["model"]
    assert all(torch.equal(good[k], again[k]) for k in good)
    # the refiner's final.pt: retrained
    x = np.random.default_rng(0).normal(size=(32, J, 3)).astype(np.float32)
    cfg = {"epochs": 1, "hidden": 16, "batch_size": 8}
    ru = refiner.train_refiner(cfg, x, x, tmp_path / "ru", progress=False)
    w = refiner.load_refiner(ru)[0].state_dict()
    fc.truncate(ru)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        refiner.train_refiner(cfg, x, x, tmp_path / "ru", progress=False)
    w2 = refiner.load_refiner(ru)[0].state_dict()
    assert all(torch.equal(w[k], w2[k]) for k in w)
    # a truncated final.pt is named by every reader
    fc.truncate(ru)
    with pytest.raises(CheckpointError, match=str(ru)):
        refiner.apply_refiner(ru, x)


def test_disk_full_while_writing_a_checkpoint(tmp_path, store, monkeypatch):
    """torch.save raising ENOSPC (the edge that cannot exist here) gives an error naming the
    file, the folder and the cause; the previous epoch's checkpoint is intact and a later run
    resumes from it."""
    cfg = {**TINY, "epochs": 2}
    pose3d.train({**cfg, "epochs": 1}, store, None, None, tmp_path / "a", progress=False)
    (tmp_path / "a" / "final.pt").unlink()
    real = torch.save

    def full(obj, f, *a, **k):
        if str(getattr(f, "name", f)).endswith("epoch-0002.pt.tmp"):
            f.write(b"PK\x03\x04 partial")  # what a full device leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full)
    ckdir = tmp_path / "a" / "checkpoints"
    with pytest.raises(CheckpointWriteError) as e:
        pose3d.train(cfg, store, None, None, tmp_path / "a", progress=False)
    msg = str(e.value)
    assert "epoch-0002.pt" in msg and str(ckdir) in msg and "no space left on the device" in msg
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert sorted(p.name for p in ckdir.iterdir()) == ["epoch-0001.pt"]  # no partial file left
    assert loop.load_checkpoint(ckdir / "epoch-0001.pt")["epoch"] == 1
    monkeypatch.setattr(torch, "save", real)
    pose3d.train(cfg, store, None, None, tmp_path / "a", progress=False)
    assert loop.load_checkpoint(tmp_path / "a" / "final.pt")["epoch"] == 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_really_full_device(tmp_path, store):
    """A real full device, no mock: the temporary file is a link to /dev/full, where every write
    fails with ENOSPC (torch's own file writer reported it as `enforce fail at inline_container.cc`)."""
    cfg = {**TINY, "epochs": 2}
    pose3d.train({**cfg, "epochs": 1}, store, None, None, tmp_path / "a", progress=False)
    (tmp_path / "a" / "final.pt").unlink()
    ckdir = tmp_path / "a" / "checkpoints"
    (ckdir / "epoch-0002.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(CheckpointWriteError, match=r"epoch-0002.pt in .*checkpoints: no space left on the device"):
        pose3d.train(cfg, store, None, None, tmp_path / "a", progress=False)
    assert sorted(p.name for p in ckdir.iterdir()) == ["epoch-0001.pt"]
    assert loop.load_checkpoint(ckdir / "epoch-0001.pt")["epoch"] == 1


def test_torch_stream_writer_failure_is_reported_too(tmp_path, monkeypatch):
    """torch's own `PytorchStreamWriter failed` RuntimeError (how a real full device shows) is
    turned into the same error, with the reason from the free space when it cannot hold the file."""
    def fail(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    monkeypatch.setattr(torch, "save", fail)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(CheckpointWriteError, match=r"final.pt in .*no space left on the device"):
        checkpoint.save_checkpoint({"w": torch.zeros(1000)}, tmp_path / "final.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(fc.CASES))
def test_fault_catalogue(tmp_path, name):
    """Every case of tests/faults_checkpoints.py gives its expected outcome and runs no code."""
    cmd, expected = fc.CASES[name](tmp_path)
    r = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert expected in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not fc.ran_code(tmp_path)
