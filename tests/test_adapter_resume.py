"""kill -9 while a dataset adapter builds, then run again: the run resumes and ends bit-identical
to an uninterrupted build (every array, its chunks and dimension names, and the attrs).

The build runs in a real subprocess (`pipeline.orchestration.run_stage("dataset", ...)`) that sends
itself SIGKILL just before its n-th write to the zarr store (a chunk, a metadata document or an
attrs update; deletions count too), n drawn at random over the writes of an uninterrupted build;
the next run resumes from whatever the killed one left, and may itself be killed.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests import faults_inputs as fi

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, signal, sys, warnings
import zarr.storage
cfg, kill_at = json.loads(sys.argv[1]), int(sys.argv[2])
n = [0]
def wrap(name):
    orig = getattr(zarr.storage.LocalStore, name)
    async def method(self, *a, **k):
        n[0] += 1
        if n[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return await orig(self, *a, **k)
    setattr(zarr.storage.LocalStore, name, method)
for name in ("set", "delete", "delete_dir"):
    if hasattr(zarr.storage.LocalStore, name):
        wrap(name)
warnings.simplefilter("ignore")
from pipeline.orchestration import run_stage
from pipeline.orchestration.store import ArtifactStore
res = run_stage("dataset", cfg, ArtifactStore(cfg["store"]["root"]), progress=False)
print(json.dumps({"writes": n[0], "location": res["location"], "status": res["status"]}))
"""


def _child(cfg: dict, kill_at: int = 0) -> tuple[int, dict | None, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg), str(kill_at)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    return p.returncode, out, p.stderr[-2000:]


def _cfg(overrides: dict, root: Path) -> dict:
    from pipeline.orchestration.config import resolve
    return json.loads(json.dumps(resolve("cpu", {**overrides, "store.root": str(root)})))


def assert_same_store(a: zarr.Group, b: zarr.Group) -> None:
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for k in a.array_keys():
        x, y = a[k], b[k]
        assert (x.shape, x.dtype, x.chunks, x.metadata.dimension_names) == \
            (y.shape, y.dtype, y.chunks, y.metadata.dimension_names), k
        assert np.array_equal(x[...], y[...], equal_nan=x.dtype.kind == "f"), k
    pa, pb = dict(a.attrs), dict(b.attrs)
    prov_a, prov_b = pa.pop("provenance"), pb.pop("provenance")
    assert pa == pb
    assert prov_a["complete"] and prov_b["complete"] and prov_a["fingerprint"] == prov_b["fingerprint"]


def _setups(kind: str, tmp: Path) -> dict:
    if kind == "pose2sim":
        return fi.chain(fi.base_project(tmp / "in"))
    if kind == "videos":
        return {"dataset.name": "videos", "dataset.root": str(fi.videos_base(tmp / "in")), "detect2d.detector": "gt"}
    from tests.test_data_h36m import CFG, make_fixture
    root = tmp / "in" / "h36m"
    make_fixture(root, {"S1": 12, "S9": 70})
    return {"dataset.name": "h36m", "dataset.root": str(root), "detect2d.detector": "gt",
            **{f"dataset.{k}": v for k, v in CFG.items()}}


def _reference(cfg: dict, monkeypatch) -> tuple[int, zarr.Group]:
    """An uninterrupted build in this process, counting its writes as the child does."""
    from pipeline.orchestration import run_stage
    from pipeline.orchestration.store import ArtifactStore
    n = [0]
    with monkeypatch.context() as m:
        for name in ("set", "delete", "delete_dir"):
            if hasattr(zarr.storage.LocalStore, name):
                orig = getattr(zarr.storage.LocalStore, name)

                async def method(self, *a, _orig=orig, **k):
                    n[0] += 1
                    return await _orig(self, *a, **k)
                m.setattr(zarr.storage.LocalStore, name, method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loc = run_stage("dataset", cfg, ArtifactStore(cfg["store"]["root"]), progress=False)["location"]
    return n[0], zarr.open_group(loc, mode="r")


def _kill_and_resume(kind: str, tmp_path: Path, monkeypatch, trials: int, kills_per_trial: int, seed: int) -> list:
    ov = _setups(kind, tmp_path)
    N, reference = _reference(_cfg(ov, tmp_path / "ref"), monkeypatch)
    assert N > 5
    rng = np.random.default_rng(seed)
    log = []
    for trial in range(trials):
        root = tmp_path / f"run{trial}"
        cfg = _cfg(ov, root)
        points = sorted(int(x) for x in rng.integers(1, N + 1, kills_per_trial))
        for j, n in enumerate(points):
            rc, out, err = _child(cfg, n)
            if j == 0:    # from scratch the n-th write comes, so the kill lands
                assert rc == -9, (n, rc, err)
            else:         # a resumed run writes less: it may finish first
                assert rc in (-9, 0), (n, rc, err)
            log.append((trial, n, rc))
        rc, out, err = _child(cfg)
        assert rc == 0, (points, err)
        assert out["status"] in ("ran", "reused")
        got = zarr.open_group(out["location"], mode="r")
        try:
            assert_same_store(got, reference)
        except AssertionError as e:
            raise AssertionError(f"{kind}: killed at writes {points} of {N}: {e}") from e
        # nothing half-built is left beside the published output
        assert not [p for p in Path(out["location"]).parent.iterdir() if p.name.endswith(".partial")]
    return log


@pytest.mark.parametrize("kind", ["pose2sim", "videos", "h36m"])
def test_kill9_during_the_adapter_then_resume_is_identical(kind, tmp_path, monkeypatch):
    kills = 2 if kind == "pose2sim" else 1
    log = _kill_and_resume(kind, tmp_path, monkeypatch, trials=1, kills_per_trial=kills,
                           seed={"pose2sim": 1, "videos": 2, "h36m": 3}[kind])
    assert sum(rc == -9 for _, _, rc in log) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pose2sim", "videos", "h36m"])
def test_kill9_at_many_random_points(kind, tmp_path, monkeypatch):
    log = _kill_and_resume(kind, tmp_path, monkeypatch, trials=4, kills_per_trial=3, seed=10)
    assert sum(rc == -9 for _, _, rc in log) >= 4


@pytest.mark.parametrize("every", [pytest.param(True, marks=pytest.mark.slow), False])
def test_resume_on_a_group_left_at_every_write(tmp_path, every):
    """The same guarantee in-process for the Pose2Sim adapter: interrupt the build before its
    n-th write (an exception where the kill would be), then build again on that group; the
    result equals the uninterrupted build. Every n (slow), or 6 drawn at random."""
    from pipeline.data import pose2sim
    proj = fi.base_project(tmp_path / "in")
    cfg = {"root": str(proj), "crop_size": 16}

    class Stop(Exception):
        pass

    def build(path, stop_at=0):
        g = zarr.open_group(path, mode="a")
        store = g.store
        calls = [0]
        orig = store.set

        async def counted(key, value):
            calls[0] += 1
            if calls[0] == stop_at:
                raise Stop
            return await orig(key, value)
        store.set = counted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pose2sim.build(cfg, g, progress=False)
            except Stop:
                return None
        return calls[0]

    N = build(tmp_path / "ref.zarr")
    ref = zarr.open_group(tmp_path / "ref.zarr", mode="r")
    points = range(1, N + 1) if every else sorted(np.random.default_rng(5).choice(np.arange(1, N + 1), 6, replace=False))
    for n in points:
        path = tmp_path / f"g{n}.zarr"
        assert build(path, n) is None
        build(path)
        got = zarr.open_group(path, mode="r")
        for k in ref.array_keys():
            assert np.array_equal(got[k][...], ref[k][...], equal_nan=ref[k].dtype.kind == "f"), (n, k)
        assert dict(got.attrs) == dict(ref.attrs), n
