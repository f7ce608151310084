"""Configuration: presets composed from the stage modules, validated overrides, and which
fingerprints a change touches (the plan decides what re-runs)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import orchestration as stages
from pipeline.orchestration import config
from pipeline.orchestration.store import ArtifactStore


def test_presets_compose_module_defaults():
    import pipeline.geometry.labels as labels
    import pipeline.training.pose3d as train3d
    cpu = config.resolve("cpu")
    assert cpu["preset"] == "cpu" and cpu["dataset"]["name"] == "studio"
    assert cpu["train3d"]["resnet"] == train3d.PRESETS["cpu"]["resnet"]
    # the preset's own change to the labeller: keep every joint the network detector places
    assert cpu["detect2d"]["detector"] == "network" and cpu["label"]["min_confidence"] == 0.0
    assert {k: cpu["label"][k] for k in labels.DEFAULTS if k != "min_confidence"} == \
        {k: v for k, v in labels.DEFAULTS.items() if k != "min_confidence"}
    # the paper preset takes the modules' paper presets (its dataset adapter may not be installed)
    try:
        paper = config.resolve("paper")
    except ValueError as e:
        assert "h36m" in str(e)
        paper = config.resolve("paper", {"dataset.name": "studio"})
    assert paper["train3d"]["resnet"] == train3d.PRESETS["paper"]["resnet"] == 50


def test_overrides_are_validated_and_typed():
    c = config.resolve("cpu", ["label.chunk=64", "label.mode=known", "detect2d.detector=gt", "detect2d.sigma_px=2",
                                 "dask.address=null"])
    assert c["label"]["chunk"] == 64 and c["label"]["mode"] == "known" and c["detect2d"]["sigma_px"] == 2
    with pytest.raises(ValueError, match=r"unknown config key 'label.chunkz'"):
        config.resolve("cpu", ["label.chunkz=1"])
    with pytest.raises(ValueError, match=r"'nosuch'"):
        config.resolve("cpu", {"nosuch.key": 1})
    with pytest.raises(ValueError, match=r"label.chunk.*expected a value like"):
        config.resolve("cpu", {"label.chunk": "big"})
    with pytest.raises(ValueError, match="expected 'section.key=value'"):
        config.resolve("cpu", ["label.chunk"])
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        config.resolve("cpu", {"detect2d.detector": "nope"})
    # a detector's own keys follow the detector: gt's noise keys do not exist for `network`
    with pytest.raises(ValueError, match="detect2d.sigma_px"):
        config.resolve("cpu", {"detect2d.detector": "network", "detect2d.sigma_px": 1.0})


def _fps(cfg):
    return {k: (a.fingerprint if a else None) for k, a in stages.plan(cfg, ArtifactStore("unused-root")).items()}


def test_what_a_change_reruns():
    base = _fps(config.resolve("cpu", {"detect2d.detector": "gt"}))
    det = _fps(config.resolve("cpu"))  # the preset's detector: network
    same = {k for k in base if base[k] == det[k]}
    # a new detector: detect2d and everything downstream of the labels; nothing upstream, not
    # the PSS reference (ground truth). The FS baseline (ground truth) starts from the 2D
    # network where the plan trains one (train3d.init), so it follows that network alone
    assert same == {"dataset", "pss_reference"}
    assert base["pretrain2d"] is None and det["pretrain2d"] is not None
    no_init = {"train3d.init": None}
    a = _fps(config.resolve("cpu", {"detect2d.detector": "gt", **no_init}))
    b = _fps(config.resolve("cpu", no_init))
    assert {k for k in a if a[k] == b[k]} == {"dataset", "train3d_fs", "pss_reference"}
    # a 2D network trained otherwise: both 3D trainings start elsewhere
    p2 = _fps(config.resolve("cpu", {"pretrain2d.epochs": 19}))
    assert {"train3d_ss", "train3d_fs"} <= {k for k in det if det[k] != p2[k]}
    p2_no_init = _fps(config.resolve("cpu", {"pretrain2d.epochs": 19, **no_init}))
    assert p2_no_init["train3d_fs"] == b["train3d_fs"]
    lab = _fps(config.resolve("cpu", {"detect2d.detector": "gt", "label.mode": "known"}))
    assert {k for k in base if base[k] != lab[k]} == {"label", "train3d_ss", "refine", "refine_labels", "evaluate", "report"}
    # run settings never touch a fingerprint
    run = _fps(config.resolve("cpu", {"detect2d.detector": "gt", "dask.n_workers": 7, "store.verify": False}))
    assert run == base


def test_a_stage_code_version_reruns_it_and_what_follows(monkeypatch):
    """A new code version of the label stage (same configuration) rebuilds the labels and
    everything fed by them, nothing else."""
    import dataclasses

    from pipeline.orchestration import runner
    from pipeline.orchestration.stages import BY_NAME, STAGES
    cfg = config.resolve("cpu", {"detect2d.detector": "gt"})
    base = _fps(cfg)
    newer = dataclasses.replace(BY_NAME["label"], version=BY_NAME["label"].version + 1)
    monkeypatch.setattr(runner, "STAGES", tuple(newer if s.name == "label" else s for s in STAGES))
    new = _fps(cfg)
    assert {k for k in base if base[k] != new[k]} == {"label", "train3d_ss", "refine", "refine_labels", "evaluate", "report"}


def test_override_of_the_presets_plugin_wins():
    """cpu names the network detector; an override naming another must stick (it was reset
    to the preset's by the preset's own soft overrides), with that plug-in's keys."""
    from pipeline.orchestration.config import resolve
    assert resolve("cpu")["detect2d"]["detector"] == "network"
    cfg = resolve("cpu", ["detect2d.detector=gt"])
    assert cfg["detect2d"]["detector"] == "gt" and cfg["detect2d"]["invisible_conf"] == 0.5


def test_the_3d_schedule_follows_where_the_networks_start():
    """cpu: 6 epochs for 3D networks started from the 2D network (detect2d network, init
    pretrain2d or a file), the preset's from-scratch schedule (pose3d.FROM_SCRATCH) where the
    plan has no 2D network or init is null; a schedule the user set is kept as set."""
    from pipeline.training import pose3d
    sched = lambda c: (c["train3d"]["epochs"], list(c["train3d"]["lr_steps"]))  # noqa: E731
    scratch = (pose3d.FROM_SCRATCH["cpu"]["epochs"], list(pose3d.FROM_SCRATCH["cpu"]["lr_steps"]))
    assert sched(config.resolve("cpu")) == (6, [5])
    assert sched(config.resolve("cpu", {"train3d.init": "/models/own.pt", "detect2d.detector": "gt"})) == (6, [5])
    for ov in ({"detect2d.detector": "gt"}, {"detect2d.detector": "mediapipe"}, {"train3d.init": None}):
        assert sched(config.resolve("cpu", ov)) == scratch, ov
    assert sched(config.resolve("cpu", {"detect2d.detector": "gt", "train3d.epochs": 3})) == (3, [5])
    assert sched(config.resolve("paper", {"detect2d.detector": "gt"})) == (140, [90, 120])


def test_the_weight_files_a_training_starts_from_are_in_its_fingerprint(tmp_path):
    """init and pretrained name files: another file at the same path is another start, so the
    training and what follows rebuild (the files are sources, identified by content); a
    missing one is named before anything runs."""
    import os
    import pytest
    w = tmp_path / "start.pt"
    w.write_bytes(b"one")
    ov = {"train3d.init": str(w), "pretrain2d.pretrained": str(w)}
    a = _fps(config.resolve("cpu", ov))
    w.write_bytes(b"two")
    os.utime(w, ns=(1, 1))  # another content, whatever the clock says
    b = _fps(config.resolve("cpu", ov))
    assert {k for k in a if a[k] != b[k]} == {"pretrain2d", "detect2d", "label", "train3d_ss", "train3d_fs",
                                              "refine", "refine_labels", "evaluate", "report"}
    w.unlink()
    with pytest.raises(ValueError, match=r"pretrain2d.pretrained: .*start.pt does not exist: give an existing file"):
        _fps(config.resolve("cpu", ov))


def test_a_missing_start_file_is_one_line_at_the_cli_naming_its_key(tmp_path):
    """`epipose run` with train3d.init naming no file: one line naming the key and the file,
    exit status 2, before Prefect starts and before anything is written (orch.check_sources).
    Run as a user runs it: its own process (the CLI sets up Prefect's logging)."""
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--no-progress", "--set", "train3d.init=missing.pt",
                        "--root", str(tmp_path / "a")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"epipose run: train3d.init: {tmp_path / 'missing.pt'} does not exist: give an existing file, or null"]
    assert list(tmp_path.iterdir()) == []


def test_a_later_stages_missing_file_does_not_stop_an_earlier_stage(tmp_path):
    """`epipose run --only dataset` with train3d.init naming no file: the dataset does not
    depend on train3d, so its plan (runner.plan upto) neither reads nor refuses that key; the
    same plan up to train3d refuses it, naming the key."""
    from pipeline.orchestration import runner
    cfg = config.resolve("cpu", {"train3d.init": str(tmp_path / "missing.pt"), "store.root": str(tmp_path)})
    store = ArtifactStore(str(tmp_path))
    assert runner.status("dataset", cfg, store)["status"] == "pending"
    assert set(runner.plan(cfg, store, upto="label")) == {"dataset", "pretrain2d", "detect2d", "label"}
    with pytest.raises(ValueError, match=r"^train3d.init: .*missing.pt does not exist"):
        runner.status("train3d", cfg, store)
    with pytest.raises(ValueError, match="unknown stage 'labels'"):
        runner.plan(cfg, store, upto="labels")
