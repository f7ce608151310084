"""`epipose inspect`: shapes, provenance, per-joint validity, label error against GT, pairs, plots."""
from __future__ import annotations

import numpy as np

from flows.cli import main
from pipeline import orchestration as stages
from pipeline.orchestration.inspection import inspect_store, label_errors
from pipeline.orchestration import ArtifactStore, open_group
from tests.test_stages_standins import toy_config


def _label(tmp_path, **ov):
    cfg = toy_config(tmp_path, **ov)
    st = ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d"):
        stages.run_stage(s, cfg, st, progress=False)
    return stages.run_stage("label", cfg, st, progress=False)["location"]


def test_inspect_label_store(tmp_path, capsys):
    loc = _label(tmp_path, **{"dataset.views": 4})
    text = inspect_store(loc)
    for needle in ("stage:       label (rig)", "labels_cam", "48x4x17x3", "frame,view,joint,xyz",
                   "frames labelled: 48/48", "per-joint validity", "l_wrist", "per camera pair:",
                   "0-1", "input:       detect2d", "chunks:      6/6 complete"):
        assert needle in text, needle
    # Exact GT 2D of a known-geometry toy: labels match the GT up to the rig's free scale
    # (reference: the toy dataset's own poses, scale-aligned = NMPJPE).
    err = label_errors(open_group(loc), open_group(open_group(loc).attrs["provenance"]["inputs"]["dataset"]["location"]))
    assert np.nanmax(err["nmpjpe"]) < 1.0
    assert np.nanmax(err["per_joint_nmpjpe"]) < 1.0
    # The CLI prints the same and writes the figures.
    assert main(["inspect", loc, "--plot", str(tmp_path / "fig"), "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "label error against GT" in out
    assert (tmp_path / "fig" / "labels_over_images.png").stat().st_size > 1000
    assert (tmp_path / "fig" / "label_errors.png").stat().st_size > 1000


def test_inspect_other_stages_and_bad_path(tmp_path, capsys):
    loc = _label(tmp_path)
    det = open_group(loc).attrs["provenance"]["inputs"]["detect2d"]["location"]
    text = inspect_store(det)
    assert "detector: gt" in text and "median px error vs GT" in text
    ds = open_group(loc).attrs["provenance"]["inputs"]["dataset"]["location"]
    assert "frames: 48 (train 36, test 12)" in inspect_store(ds)
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "not a zarr store" in capsys.readouterr().err
