"""Prefect flows and the `epipose` CLI: validated parameters, `--only` and `--detector`
re-run exactly the right stages (the rest is reused), and (slow) the server path:
a real local Prefect server on loopback with SQLite, a process work pool, `prefect deploy`,
`prefect deployment run`, `prefect worker start --run-once`."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_stages_standins import register

REPO = Path(__file__).resolve().parents[1]
LABEL_CHAIN = ["dataset", "pretrain2d", "detect2d", "label"]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness
    # the harness's own start-up deadline (30 s by default) is missed on a loaded machine:
    # "Timed out while attempting to connect to ephemeral Prefect API server"
    with prefect_test_harness(server_startup_timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])):
        yield


def _statuses(summary) -> dict:
    return {r["stage"]: r["status"] for r in summary["stages"]}


def _ov(root):
    return {"dataset.name": "toy", "detect2d.detector": "gt", "dask.n_workers": 0, "label.chunk": 8,
            "store.root": str(root)}


def test_only_and_detector_rerun_the_right_stages(tmp_path, harness):
    from flows.epipolarpose import epipolarpose
    register()
    ov = _ov(tmp_path)
    first = epipolarpose(overrides=ov, only="label", progress=False)
    assert list(_statuses(first)) == LABEL_CHAIN
    assert _statuses(first) == {"dataset": "ran", "pretrain2d": "skipped", "detect2d": "ran", "label": "ran"}
    # --only label: label rebuilt, everything upstream reused, nothing downstream run.
    again = epipolarpose(overrides=ov, only="label", progress=False)
    assert _statuses(again) == {"dataset": "reused", "pretrain2d": "skipped", "detect2d": "reused", "label": "ran"}
    # --detector: detect2d and label re-run under new fingerprints; the dataset is reused.
    other = epipolarpose(overrides=ov, only="label", detector="gt2", progress=False)
    assert _statuses(other) == {"dataset": "reused", "pretrain2d": "skipped", "detect2d": "ran", "label": "ran"}
    loc = {r["stage"]: r["location"] for r in other["stages"]}
    assert "/detect2d/gt2-" in loc["detect2d"]
    assert loc["label"] != {r["stage"]: r["location"] for r in first["stages"]}["label"]


def test_parameters_are_validated(tmp_path, harness):
    """A bad parameter ends the run Failed with a one-line message naming it (no traceback),
    before anything is written."""
    from flows.epipolarpose import epipolarpose
    register()

    def failed(**kw):
        state = epipolarpose(progress=False, return_state=True, **kw)
        assert state.is_failed()
        return state.message

    assert "label.chunkz" in failed(overrides={**_ov(tmp_path), "label.chunkz": 3}, only="dataset")
    assert "unknown preset 'fast'" in failed(preset="fast", overrides=_ov(tmp_path))
    assert "unknown stage 'labels'" in failed(overrides=_ov(tmp_path), only="labels")
    msg = failed(overrides={**_ov(tmp_path), "label.chunk": "many"}, only="dataset")
    assert re.search(r"label.chunk.*expected a value like \d+ \(int\)", msg)
    assert "mode must be one of" in failed(overrides={**_ov(tmp_path), "label.mode": "../../../x"})
    assert not any(tmp_path.iterdir())  # nothing written: not even a lock


def test_stage_flow_alone_and_cli(tmp_path, harness, capsys):
    from flows.cli import main
    from flows.epipolarpose import STAGE_FLOWS
    register()
    r = STAGE_FLOWS["dataset"](overrides=_ov(tmp_path), progress=False)
    assert r["status"] == "ran" and Path(r["location"]).is_dir()
    sets = [a for k, v in _ov(tmp_path).items() for a in ("--set", f"{k}={v}")]
    assert main(["run", "--only", "detect2d", "--no-progress"] + sets) == 0
    out = capsys.readouterr().out
    assert "dataset       reused" in out and "detect2d      ran" in out and "label" not in out
    assert main(["run", "--set", "label.nope=1"] + sets) == 2
    assert "label.nope" in capsys.readouterr().err
    assert main(["config", "--preset", "paper"]) == 0
    assert '"name": "h36m"' in capsys.readouterr().out


def test_clean_lists_then_deletes_leftovers_and_superseded(tmp_path, harness, capsys):
    """`epipose clean`: a dry run by default; --yes deletes an interrupted run's working folder;
    --superseded adds complete outputs of the dataset the configuration no longer uses."""
    from flows.cli import main
    from flows.epipolarpose import STAGE_FLOWS
    register()
    old = STAGE_FLOWS["dataset"](overrides={**_ov(tmp_path), "label.chunk": 8}, progress=False)["location"]
    ov = {**_ov(tmp_path), "dataset.seed": 1}
    new = STAGE_FLOWS["dataset"](overrides=ov, progress=False)["location"]
    stale = tmp_path / "toy" / "label" / ".rig-0123456789ab.partial"
    stale.mkdir(parents=True)
    (stale / "zarr.json").write_text("{}")
    sets = [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    assert main(["clean"] + sets) == 0
    out = capsys.readouterr().out
    assert "partial" in out and str(stale) in out and old not in out and "--yes" in out and stale.exists()
    assert main(["clean", "--superseded", "--yes"] + sets) == 0
    out = capsys.readouterr().out
    assert "superseded" in out and old in out and "removed 2" in out
    assert not stale.exists() and not Path(old).exists() and Path(new).is_dir()
    assert main(["clean"] + sets) == 0
    assert "nothing to clean" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_server_deploy_and_worker(tmp_path):
    """The README's server path, end to end on loopback (SQLite under a temporary PREFECT_HOME)."""
    prefect = str(Path(sys.executable).with_name("prefect"))
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_SERVER_API_PORT=str(port),
               PREFECT_SERVER_API_HOST="127.0.0.1", PYTHONPATH=str(REPO))
    # A copy of the project's prefect.yaml whose `demo` deployment runs the toy chain up to label.
    work = tmp_path / "proj"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", "artifacts", ".prefect", ".git", "*.pyc"))
    env["PWD"] = str(work)  # the pull step's working directory (the worker's folder)
    run = lambda *a, **kw: subprocess.run([prefect, *a], cwd=work, env=env, capture_output=True, text=True,  # noqa: E731
                                          timeout=kw.get("timeout", 240))
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while run("config", "view").returncode != 0 or _health(port) is False:
            assert time.time() - t0 < 120, "server did not start"
            time.sleep(1)
        r = run("work-pool", "create", "epipose-process", "--type", "process", "--overwrite")
        assert r.returncode == 0, r.stderr
        r = run("--no-prompt", "deploy", "--all")
        assert r.returncode == 0, r.stdout + r.stderr
        params = {"only": "label", "progress": False, "root": str(tmp_path / "artifacts"),
                  "overrides": {"dataset.n_segments": 2, "dataset.train_people": 1, "detect2d.detector": "gt"}}
        r = run("deployment", "run", "epipolarpose/demo", "--params", json.dumps(params))
        assert r.returncode == 0, r.stdout + r.stderr
        r = run("worker", "start", "--pool", "epipose-process", "--run-once", timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        r = run("flow-run", "ls", "--state", "COMPLETED")
        assert "epipolarpose" in r.stdout or r.returncode == 0
        labels = list((tmp_path / "artifacts").glob("studio/label/rig-*"))
        assert labels, "the deployment's run wrote no label store"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _health(port: int) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False
