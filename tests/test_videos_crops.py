"""A folder of videos without keypoints gets crops from a detector that finds the person.

Synthetic videos with one bright rectangle ("the person") and a stand-in detector plug-in at
the detector's edge (`detect`, below: the rectangle's corners and centre as 17 keypoints). The
adapter, the dataset stage, the configuration and the zarr store are the real ones. Checked:
the crop box is the closed form of `square_box` (margin times the keypoints' extent, centred),
the crop shows the rectangle in its centre, frames without a person take the nearest frame's
box, a view without anybody is refused naming it, the crops' detector follows detect2d's,
and a chain whose networks would need crops that nobody places is refused before it runs.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import zarr

from pipeline.data import get_adapter
from pipeline.data.videos import iter_frames, square_box
from pipeline.joints import J

DEFAULTS = {"threshold": 128}
FINDS_PEOPLE = True
W, H, N = 160, 120, 12


def _box(i: int, v: int) -> tuple[int, int, int, int]:
    """The person's rectangle (x0, y0, x1, y1) in frame i of view v: it walks to the right."""
    x0 = 20 + 4 * i + 10 * v
    return x0, 30, x0 + 24, 30 + 60


def _write(path, v: int, blank=()):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (W, H))
    assert vw.isOpened()
    for i in range(N):
        img = np.full((H, W, 3), 20, np.uint8)
        if i not in blank:
            x0, y0, x1, y1 = _box(i, v)
            img[y0:y1, x0:x1] = 235
        vw.write(img)
    vw.release()


def _blob_keypoints(frame: np.ndarray, threshold: int) -> np.ndarray:
    """17 keypoints on the bright rectangle's box (corners, edge midpoints, centre), or NaN."""
    ys, xs = np.nonzero(frame.mean(-1) > threshold)
    kp = np.full((J, 3), np.nan)
    if len(xs) == 0:
        return kp
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    pts = [(x, y) for x in (x0, (x0 + x1) / 2, x1) for y in (y0, (y0 + y1) / 2, y1)]
    pts = (pts * 2)[:J]
    kp[:, :2], kp[:, 2] = pts, 1.0
    return kp


def detect(cfg: dict, dataset, frames: slice, context: dict) -> np.ndarray:
    """Stand-in detector plug-in: the bright rectangle of each frame of the dataset's videos."""
    c = {**DEFAULTS, **cfg}
    ids = np.arange(*frames.indices(dataset["frame_index"].shape[0]))
    numbers = np.asarray(dataset["frame_index"][:])[ids]
    out = np.full((len(ids), len(dataset.attrs["videos"]), J, 3), np.nan)
    for v, path in enumerate(dataset.attrs["videos"]):
        for k, (_, f) in enumerate(iter_frames(path, numbers)):
            out[k, v] = _blob_keypoints(f, int(c["threshold"]))
    return out


def _find_people(name, cfg, group, progress):
    assert name == "blob"
    return detect(cfg, group, slice(None), {})


@pytest.fixture
def folder(tmp_path):
    _write(tmp_path / "cam1.mp4", 0)
    _write(tmp_path / "cam2.mp4", 1, blank=(5,))
    return tmp_path


def _store():
    return zarr.group(store=zarr.storage.MemoryStore())


def test_crops_are_placed_on_the_detected_person(folder):
    g = _store()
    with pytest.warns(UserWarning, match=r"found nobody in cam2 on 1 of 12 frames"):
        get_adapter("videos")({"root": str(folder), "crops_from": "blob", "crop_size": 32}, g, progress=False,
                              find_people=_find_people)
    assert g["images"].shape == (N, 2, 32, 32, 3) and bool(np.all(g["image_ok"][:]))
    assert g.attrs["images_stored"] is True and g.attrs["crops_from"] == "blob"
    kp = detect({}, g, slice(None), {})
    boxes = np.asarray(g["crop_boxes"][:], np.float64)
    # closed form: a square of side 1.3 x the keypoints' larger extent, centred on their box
    x0, y0, x1, y1 = _box(0, 0)
    side = 1.3 * max(x1 - x0, y1 - y0)
    np.testing.assert_allclose(boxes[0, 0], [(x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2, side, side], atol=1.0)
    np.testing.assert_allclose(boxes[:, 0], square_box(kp[:, 0], 1.3), atol=1e-4)
    # the blank frame of view 2 takes a neighbouring frame's box
    assert np.allclose(boxes[5, 1], boxes[4, 1]) or np.allclose(boxes[5, 1], boxes[6, 1])
    im = np.asarray(g["images"][:], np.float64).mean(-1)
    assert im[:, 0, 12:20, 12:20].min() > 150           # the person fills the crop's centre
    assert im[:, 0, :3, :3].max() < 60                   # the margin around it is background
    assert im[5, 1, 12:20, 12:20].max() < 60             # no person in the blank frame's crop


def test_a_view_where_nobody_is_found_is_refused_naming_it(folder):
    _write(folder / "cam2.mp4", 1, blank=range(N))
    with pytest.raises(ValueError, match=r"found nobody in cam2"):
        get_adapter("videos")({"root": str(folder), "crops_from": "blob"}, _store(), progress=False,
                              find_people=_find_people)


def test_bad_crop_settings_are_refused(folder):
    with pytest.raises(ValueError, match="needs the dataset stage"):
        get_adapter("videos")({"root": str(folder), "crops_from": "blob"}, _store(), progress=False)
    with pytest.raises(ValueError, match="crop_margin"):
        get_adapter("videos")({"root": str(folder), "crops_from": "blob", "crop_margin": 0.5}, _store(),
                              progress=False, find_people=_find_people)
    g = _store()
    get_adapter("videos")({"root": str(folder), "crops_from": None}, g, progress=False)
    assert "images" not in g and g.attrs["images_stored"] is False


def _cfg(folder, tmp_path, **over):
    from pipeline.orchestration import config
    ov = {"dataset.name": "videos", "dataset.root": str(folder), "store.root": str(tmp_path / "art"),
          "dask.n_workers": 0}
    ov.update(over)
    return config.resolve("cpu", ov)


@pytest.fixture
def blob(monkeypatch):
    import pipeline.detectors as detectors
    monkeypatch.setitem(detectors.DETECTORS, "blob", "tests.test_videos_crops:detect")


def test_the_crops_follow_the_chains_detector_through_the_dataset_stage(folder, tmp_path, blob):
    from pipeline import orchestration as orch
    cfg = _cfg(folder, tmp_path, **{"detect2d.detector": "blob", "detect2d.threshold": 100})
    assert cfg["dataset"]["crops_from"] == "blob" and cfg["dataset"]["crops_detector"] == {"threshold": 100}
    assert cfg["dataset"]["crop_size"] == cfg["train3d"]["input_size"]
    orch.check_crops(cfg, orch.stage_names())          # crops will exist: the chain may train
    store = orch.ArtifactStore(cfg["store"]["root"])
    with pytest.warns(UserWarning, match="found nobody in cam2"):
        r = orch.run_stage("dataset", cfg, store, progress=False)
    g = zarr.open_group(r["location"], mode="r")
    S = cfg["train3d"]["input_size"]
    assert g["images"].shape == (N, 2, S, S, 3) and g.attrs["crops_from"] == "blob"
    # another detector places other crops: another dataset output (nothing stale is reused)
    other = _cfg(folder, tmp_path, **{"detect2d.detector": "blob", "detect2d.threshold": 90})
    assert orch.status("dataset", other, store)["status"] == "pending"
    assert orch.status("dataset", cfg, store)["status"] != "pending"


@pytest.fixture
def harness():
    import os

    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                                                                        "180"))):
        yield


def test_a_chain_that_would_train_without_crops_is_refused_before_it_runs(folder, tmp_path, blob, harness):
    from pipeline import orchestration as orch
    names = list(orch.stage_names())
    cfg = _cfg(folder, tmp_path, **{"detect2d.detector": "gt"})   # gt finds nobody in a video
    assert cfg["dataset"]["crops_from"] is None
    with pytest.raises(ValueError, match=r"stores no crops for train3d.*'gt' does not find people.*mediapipe"):
        orch.check_crops(cfg, names)
    orch.check_crops(cfg, names[: names.index("label") + 1])      # labels only: nothing trains
    off = _cfg(folder, tmp_path, **{"detect2d.detector": "blob", "dataset.crops_from": None})
    with pytest.raises(ValueError, match=r"dataset.crops_from is null"):
        orch.check_crops(off, names)
    from flows.epipolarpose import epipolarpose
    state = epipolarpose(overrides={"dataset.name": "videos", "dataset.root": str(folder), "dask.n_workers": 0,
                                    "detect2d.detector": "gt"}, root=str(tmp_path / "flow"), progress=False,
                         return_state=True)
    assert state.is_failed() and "stores no crops" in state.message
    assert not (tmp_path / "flow").exists() or not any((tmp_path / "flow").rglob("*.json"))
    # at the CLI: one line, exit status 2, refused before Prefect starts (no server, nothing written)
    import os
    import subprocess
    import sys
    cli = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--set", "dataset.name=videos", "--set",
                          f"dataset.root={folder}", "--detector", "gt", "--root", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PREFECT_API_URL": ""})
    assert cli.returncode == 2, cli.stderr
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epipose run: dataset 'videos' stores no crops"), cli.stderr
    assert "--only label" in lines[0] and "prefect" not in (cli.stdout + cli.stderr).lower()
    assert not (tmp_path / "cli").exists()
