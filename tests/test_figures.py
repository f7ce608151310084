"""The report's and inspect's figures say what they show: one action is one bar per model,
epochs are whole numbers, skeleton colours have a legend, 3D panels carry mm values, the worst
frames are spread over the recording, and a histogram says when it piled its tail into the
last bin. Figures are caught before they are closed and read from matplotlib's objects."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import report
from pipeline.joints import J


@pytest.fixture
def figures(monkeypatch):
    import matplotlib.pyplot as plt
    kept = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for f in kept:
        close(f)


def test_one_action_is_one_bar_per_model_without_a_legend(tmp_path, figures):
    models = {n: {"summary": {"per_action": {"walk": {"mpjpe": v}}, "action_mean": {"mpjpe": v}}}
              for n, v in (("SS", 80.0), ("SS + RU", 75.0), ("FS", 60.0))}
    report._per_action_section(models, tmp_path)
    ax = figures[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["SS", "SS + RU", "FS"]
    assert ax.get_legend() is None and len(ax.patches) == 3
    assert [p.get_height() for p in ax.patches] == [80.0, 75.0, 60.0]


def test_training_curve_epochs_are_whole_numbers(tmp_path, figures):
    report._training_section({"SS": {"loss": list(np.geomspace(1, 0.1, 10))}}, tmp_path)
    ax = figures[-1].axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_pose_panels_have_a_colour_legend_and_mm_axes(tmp_path, figures):
    from tests import synth
    X = synth.random_poses(2, seed=0)
    X = X - X[:, :1]
    rows = [{"image": None, "title": "frame 0", "poses": {"GT": (X[0], None), "SS": (X[1], X[0])}}]
    report._pose_rows_figure(tmp_path / "q.png", rows, ["GT", "SS"])
    fig = figures[-1]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["left", "right", "centre"]
    ax3 = [a for a in fig.axes if a.name == "3d"][0]
    assert "mm" in ax3.get_xlabel() and "mm" in ax3.get_zlabel()
    assert any(t.get_text() for t in ax3.get_xticklabels())          # values, not blanks


def test_worst_frames_are_spread_out():
    # a run of bad consecutive frames 100-120 and a few isolated bad ones elsewhere
    frames = np.arange(400)
    err = np.full(400, 50.0)
    err[100:120] = 300 - np.abs(np.arange(100, 120) - 110)
    err[[20, 250, 390]] = [200.0, 210.0, 190.0]
    d = pd.DataFrame({"frame": np.repeat(frames, 2), "view": np.tile([0, 1], 400), "subject": "S9",
                      "action": "walk", "mpjpe": np.repeat(err, 2) + np.tile([0.0, 1.0], 400)})
    worst, gap = report._spread_worst(d, 6)
    assert gap == 400 // 24
    f = worst["frame"].to_numpy()
    assert len(f) == 6 and len(set(f)) == 6
    assert np.min(np.diff(np.sort(f))) >= gap
    assert {110, 20, 250, 390} <= set(f)


def test_inspect_histogram_says_it_clipped_the_tail(tmp_path, figures):
    from pipeline import orchestration as orch
    from pipeline.orchestration.inspection import plot_store
    from tests.test_stages_standins import toy_config
    cfg = toy_config(tmp_path, **{"detect2d.sigma_px": 2.0})
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label"):
        orch.run_stage(s, cfg, st, progress=False)
    loc = orch.plan(cfg, st)["label"].location
    plot_store(orch.open_group(loc), orch.read_provenance(loc), tmp_path / "png")
    hist = figures[-1]
    notes = [t.get_text() for ax in hist.axes for t in ax.texts]
    assert notes and all("clipped into it" in n for n in notes)
    assert all("values)" in ax.get_title() for ax in hist.axes)
    assert J == 17


def test_report_files_beside_the_zarr_arrays_raise_no_warning(tmp_path):
    """The report stage keeps report.md and PNGs in its output group: writing the coordinates
    there lists the group without zarr's 'not recognized as a component' warnings."""
    import warnings

    import zarr

    from pipeline.orchestration.arrays import write_arrays, write_coordinates
    g = zarr.open_group(str(tmp_path / "r"), mode="w")
    write_arrays(g, {"x": np.zeros((3, J), np.float32)})
    (tmp_path / "r" / "report.md").write_text("# report\n")
    (tmp_path / "r" / "fig.png").write_bytes(b"\x89PNG")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        write_coordinates(g)
    assert not [w for w in seen if "not recognized" in str(w.message)]
