"""Stages on the artifact store: reuse, selective re-runs, kill -9 and resume, concurrency,
corrupt chunks. The toy dataset (tests/test_stages_standins.py) feeds the real gt detector
and the real labeller (pipeline.geometry.labels); the reference for "bit-identical" is an
uninterrupted run of the same configuration."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import orchestration as stages
from pipeline.orchestration import ArtifactStore, open_group
from tests.test_stages_standins import toy_config

REPO = Path(__file__).resolve().parents[1]
LABEL_CHAIN = ["dataset", "pretrain2d", "detect2d", "label"]


def _run(cfg, which=LABEL_CHAIN):
    st = ArtifactStore(cfg["store"]["root"])
    return {s: stages.run_stage(s, cfg, st, progress=False) for s in which}


def _arrays(location) -> dict:
    g = open_group(location)
    return {k: np.asarray(g[k][...]) for k in g.array_keys()}


def _assert_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"array {k} differs"


def _spawn(root, which, ov, slow=False, delay="0.15"):
    env = dict(os.environ, STANDIN_DELAY_S=delay, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "tests.test_stages_standins", str(root), ",".join(which), json.dumps(ov)]
    return subprocess.Popen(args + (["slow"] if slow else []), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, timeout=120.0, proc=None):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_reuse_and_detector_change_reruns_only_downstream(tmp_path):
    cfg = toy_config(tmp_path)
    first = _run(cfg)
    assert [first[s]["status"] for s in LABEL_CHAIN] == ["ran", "skipped", "ran", "ran"]
    again = _run(cfg)
    assert [again[s]["status"] for s in LABEL_CHAIN] == ["reused", "skipped", "reused", "reused"]
    noisy = _run(toy_config(tmp_path, **{"detect2d.sigma_px": 1.0}))
    assert [noisy[s]["status"] for s in LABEL_CHAIN] == ["reused", "skipped", "ran", "ran"]
    assert noisy["label"]["location"] != first["label"]["location"]
    # Labels from exact GT 2D through known cameras reproduce the GT (reference: the toy's poses).
    lab = _arrays(first["label"]["location"])
    assert lab["frame_ok"].all() and lab["labels_cam"].shape == (48, 3, 17, 3)
    # Forcing one stage rebuilds it alone.
    st = ArtifactStore(cfg["store"]["root"])
    forced = stages.run_stage("label", cfg, st, force=True, progress=False)
    assert forced["status"] == "ran" and forced["location"] == first["label"]["location"]
    _assert_identical(_arrays(forced["location"]), lab)


def test_corrupt_chunk_is_detected_and_only_it_recomputed(tmp_path, monkeypatch):
    from pipeline.orchestration.stages import label
    from tests import test_stages_slowlabels as slow
    monkeypatch.setenv("STANDIN_DELAY_S", "0")
    cfg = toy_config(tmp_path)
    monkeypatch.setattr(label, "labelling", slow)
    loc = _run(cfg)["label"]["location"]
    before = _arrays(loc)
    chunk_file = Path(loc, "labels_cam", "c", "2", "0", "0", "0")
    assert chunk_file.is_file()
    chunk_file.write_bytes(chunk_file.read_bytes()[:-7])  # truncated on disk
    slow.CALLS.clear()
    r = _run(cfg)
    assert r["label"]["status"] == "ran" and r["label"]["location"] == loc
    assert slow.CALLS == [8]  # one chunk of 8 frames relabelled, the rest kept
    _assert_identical(_arrays(loc), before)


def _label_work(root) -> list[Path]:
    return [p for p in Path(root, "toy", "label").glob(".rig-*.partial") if _chunks_done(p) > 0]


def _chunks_done(p: Path) -> int:
    try:
        return len(json.loads((p / "zarr.json").read_text())["attributes"]["chunks"]["done"])
    except Exception:
        return 0


def test_kill9_during_label_then_resume_is_bit_identical(tmp_path):
    ov = {"dataset.frames": 96, "detect2d.sigma_px": 1.0}
    ref = _run(toy_config(tmp_path / "ref", **ov))["label"]["location"]
    root = tmp_path / "run"
    rng = np.random.default_rng()
    p = _spawn(root, LABEL_CHAIN, ov, slow=True)
    # wait until labelling has written its first chunk, then kill at a random later moment
    _wait_for(lambda: _label_work(root), proc=p)
    wait = float(rng.uniform(0.0, 0.8))
    print(f"kill -9 {wait:.3f} s after the first label chunk")
    time.sleep(wait)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = list(Path(root, "toy", "label").glob(".rig-*.partial"))
    assert partial and not list(Path(root, "toy", "label").glob("rig-*")), "killed run left no partial output"
    done_at_kill = _chunks_done(partial[0])
    assert 0 < done_at_kill < 12
    out = _run(toy_config(root, **ov))
    assert [out[s]["status"] for s in LABEL_CHAIN] == ["reused", "skipped", "reused", "ran"]
    assert Path(out["label"]["location"]).name == Path(ref).name
    _assert_identical(_arrays(out["label"]["location"]), _arrays(ref))


def test_two_concurrent_runs_leave_one_valid_store(tmp_path):
    ov = {"dataset.frames": 64}
    root = tmp_path / "run"
    procs = [_spawn(root, LABEL_CHAIN, ov, slow=True, delay="0.05") for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    label_status = sorted(o[-1]["status"] for o in outs)
    assert label_status == ["ran", "reused"]  # one built it, the other waited and reused it
    for stage in ("dataset", "detect2d", "label"):
        d = Path(root, "toy", stage)
        assert len([p for p in d.iterdir() if not p.name.startswith(".")]) == 1
        assert not list(d.glob(".*.partial"))
    ref = _run(toy_config(tmp_path / "ref", **ov))["label"]["location"]
    st = ArtifactStore(root)
    (loc,) = st.list("toy", "label")
    _assert_identical(_arrays(loc), _arrays(ref))


# long enough (6 epochs x 10 iterations) that a kill soon after the first checkpoint lands
# mid-training, not after it (with 4 x 3 iterations, the race was lost on a fast machine)
TRAIN_OV = {"dataset.size": 32, "dataset.frames": 32, "train3d.input_size": 32, "train3d.epochs": 6,
            "train3d.iters_per_epoch": 10, "train3d.batch_size": 8, "train3d.lr_steps": [3],
            "train3d.num_threads": 1, "train3d.amp": False}


def _state(path: Path) -> dict:
    import torch
    ck = torch.load(path, map_location="cpu", weights_only=True)
    sd = ck.get("model", ck.get("state_dict", ck))
    return {k: v.numpy() for k, v in sd.items() if hasattr(v, "numpy")}


@pytest.mark.slow
def test_kill9_during_train3d_then_resume_is_bit_identical(tmp_path):
    chain = LABEL_CHAIN + ["train3d"]
    ref = _run(toy_config(tmp_path / "ref", **TRAIN_OV), chain)["train3d"]["location"]
    root = tmp_path / "run"
    p = _spawn(root, chain, TRAIN_OV)
    ck = lambda: list(Path(root, "toy", "train3d").glob(".ss-*.partial/train/checkpoints/epoch-*.pt"))  # noqa: E731
    _wait_for(lambda: len(ck()) >= 1, timeout=300, proc=p)
    time.sleep(float(np.random.default_rng().uniform(0.0, 0.1)))
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not list(Path(root, "toy", "train3d").glob("ss-*")), "killed before SS training finished"
    out = _run(toy_config(root, **TRAIN_OV), chain)
    assert out["train3d"]["status"] == "ran"
    for v in ("ss", "fs"):
        a = Path(out["train3d"]["location"][v])
        b = Path(ref[v])
        assert a.name == b.name
        prov_a = open_group(str(a)).attrs["provenance"]
        sa, sb = _state(a / prov_a["result"]), _state(b / prov_a["result"])
        assert len(sa) > 10 and sa.keys() == sb.keys() and all(sa[k].tobytes() == sb[k].tobytes() for k in sa)


def test_label_on_dask_matches_in_process(tmp_path):
    """Labelling mapped over a dask.distributed cluster, given by address (2 worker processes)
    or started by the stage, writes the same bytes as labelling in this process."""
    from distributed import Client, LocalCluster
    ov = {"dataset.frames": 64}
    ref = _run(toy_config(tmp_path / "ref", **ov))["label"]["location"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        cfg = toy_config(tmp_path / "dask", **ov, **{"dask.address": cluster.scheduler_address})
        out = _run(cfg)["label"]
        # both workers took chunks (reference: the scheduler's own task log)
        who = {w for w, n in client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count).items() if n}
    assert out["status"] == "ran"
    assert len(who) == 2
    _assert_identical(_arrays(out["location"]), _arrays(ref))
    # the default: a LocalCluster started by the stage (forced here for a small dataset)
    local = _run(toy_config(tmp_path / "local", **ov, **{"dask.n_workers": 2, "dask.min_frames": 0}))["label"]
    _assert_identical(_arrays(local["location"]), _arrays(ref))


def test_a_rebuilt_input_with_other_content_reruns_what_it_feeds(tmp_path, monkeypatch):
    """`--only dataset` rebuilds the dataset under the same fingerprint; when its content
    changed (here: the adapter's code behind an unchanged version, the worst case), every
    output built from the old content is stale and rebuilt, never reused."""
    from tests import test_stages_standins as toy
    cfg = toy_config(tmp_path)
    first = _run(cfg)
    st = ArtifactStore(cfg["store"]["root"])
    stages.run_stage("dataset", cfg, st, force=True, progress=False)  # same content: nothing is stale
    assert [r["status"] for r in _run(cfg).values()] == ["reused", "skipped", "reused", "reused"]
    plain = toy.build

    def shifted(c, out, progress=True):
        plain(c, out, progress)
        kp = np.asarray(out["keypoints2d_gt"][:])
        out["keypoints2d_gt"][:] = kp + np.float32(100.0)  # the user's keypoints moved 100 px

    monkeypatch.setattr(toy, "build", shifted)
    assert stages.run_stage("dataset", cfg, st, force=True, progress=False)["status"] == "ran"
    again = _run(cfg)
    assert [again[s]["status"] for s in LABEL_CHAIN] == ["reused", "skipped", "ran", "ran"]
    assert again["label"]["location"] == first["label"]["location"]
    det = _arrays(again["detect2d"]["location"])["keypoints2d"]
    ds = _arrays(again["dataset"]["location"])["keypoints2d_gt"]
    np.testing.assert_array_equal(det[..., :2], ds[..., :2])


def test_an_edited_estimated_rig_is_never_reused(tmp_path):
    """R_est is verified like every file of an output: an edited rig rebuilds the label store
    (its chunks were computed from the rig, so a repair chunk by chunk would not do)."""
    cfg = toy_config(tmp_path, **{"label.mode": "rig", "dataset.rigs": 1})
    loc = _run(cfg)["label"]["location"]
    before = _arrays(loc)
    g = open_group(loc, "r+")
    R = np.asarray(g["R_est"][:])
    g["R_est"][0, 1] = R[0, 1] @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])  # turned by 90 degrees
    r = _run(cfg)["label"]
    assert r["status"] == "ran" and r["location"] == loc
    _assert_identical(_arrays(loc), before)


def test_parallel_stage_builds_side_by_side_and_alone_to_the_same_bits(tmp_path, caplog):
    """train3d (Stage.parallel) shares the cores among its outputs: on two cores or more SS and
    FS train side by side in spawned processes, each with its share of the threads (recorded in
    the checkpoint), and their log lines (built, one per epoch) reach this process. FS rebuilt alone afterwards (SS
    reused) gets the same share, so the same bits: what was cached never changes a result."""
    import logging
    import shutil
    import torch
    from pipeline.training import threads
    ov = {k: v for k, v in TRAIN_OV.items() if k != "train3d.num_threads"}
    ov["train3d.epochs"] = 2
    cfg = toy_config(tmp_path, **ov)
    _run(cfg)
    st = ArtifactStore(cfg["store"]["root"])
    with caplog.at_level(logging.INFO, logger="pipeline"):
        first = stages.run_stage("train3d", cfg, st, progress=False)
    assert [e["status"] for e in first["outputs"]] == ["ran", "ran"]
    built = [r.getMessage() for r in caplog.records if "train3d: wrote" in r.getMessage()]
    assert len(built) == 2, built  # from the children when side by side, from here otherwise
    # progress: a line per epoch and model, however the models were built
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train 3d: epoch")]
    assert len(epochs) == 4 and sum("epoch 2/2" in m for m in epochs) == 2, epochs
    share = max(1, threads.cpu_threads() // 2)
    fs = Path(first["location"]["fs"])
    ck = torch.load(fs / "train" / "final.pt", weights_only=True)
    assert ck["cpu_threads"] == share
    before = _state(fs / "train" / "final.pt")
    shutil.rmtree(fs)
    again = stages.run_stage("train3d", cfg, st, progress=False)
    assert [e["status"] for e in again["outputs"]] == ["reused", "ran"]
    after = _state(Path(again["location"]["fs"]) / "train" / "final.pt")
    assert before.keys() == after.keys() and all(before[k].tobytes() == after[k].tobytes() for k in before)


def test_an_unguarded_script_gets_the_cause_of_a_broken_side_by_side_build(tmp_path):
    """A user's script that runs a parallel stage (train3d) at import time, without the
    `if __name__ == "__main__":` guard: the spawned children import it again and die; the error
    names the stage and the guard instead of multiprocessing's BrokenProcessPool alone."""
    from pipeline.cores import available_cores
    if available_cores() < 2:
        pytest.skip("side by side needs two cores")
    cfg = toy_config(tmp_path, **{k: v for k, v in TRAIN_OV.items() if k != "train3d.num_threads"})
    _run(cfg)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from pipeline.orchestration import ArtifactStore, run_stage\n"
        "from tests.test_stages_standins import register\n"
        "register()\n"
        f"cfg = json.loads({json.dumps(json.dumps(cfg))})\n"
        "run_stage('train3d', cfg, ArtifactStore(cfg['store']['root']), progress=False)\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode != 0
    assert "train3d: a process building its outputs side by side ended abruptly" in p.stderr
    assert 'if __name__ == "__main__":' in p.stderr


def test_the_3d_trainings_start_from_the_plans_2d_network(tmp_path, monkeypatch):
    """With the project's 2D network in the plan, SS and FS start from it (train3d.init:
    pretrain2d, the paper's recipe): their checkpoints name its file. (A detector that needs the
    network but gives the ground truth: a 2D network this small would detect nothing to label.)"""
    import torch
    from pipeline import detectors
    monkeypatch.setitem(detectors.DETECTORS, "gt-net", "pipeline.detectors.gt:detect")
    monkeypatch.setattr(detectors, "NEEDS_NETWORK", detectors.NEEDS_NETWORK | {"gt-net"})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # SS and FS in this process: spawned ones lack the patch
    tiny = {"input_size": 32, "epochs": 1, "iters_per_epoch": 2, "batch_size": 8, "num_threads": 1, "amp": False}
    ov = {**{f"train3d.{k}": v for k, v in tiny.items()}, **{f"pretrain2d.{k}": v for k, v in tiny.items()},
          "pretrain2d.lr_steps": [1], "train3d.lr_steps": [1], "detect2d.detector": "gt-net",
          "dataset.size": 32, "dataset.frames": 32}
    cfg = toy_config(tmp_path, **ov)
    runs = _run(cfg, LABEL_CHAIN + ["train3d"])
    net = Path(runs["pretrain2d"]["location"]) / "train" / "final.pt"
    for key in ("ss", "fs"):
        ck = torch.load(Path(runs["train3d"]["location"][key]) / "train" / "final.pt", weights_only=True)
        assert ck["cfg"]["init"] == str(net), (key, ck["cfg"]["init"])
    # `epipose inspect` says it too
    from pipeline.orchestration.inspection import inspect_store
    assert f"started from {net}" in inspect_store(runs["train3d"]["location"]["ss"])
