"""CPU threads chosen at run time (pipeline.training.threads) and their contract with the bits:
the same thread count gives bit-identical training; a resumed run takes the count its
checkpoint recorded."""
import numpy as np
import torch

from pipeline import cores
from pipeline.training import loop, threads


def test_cpu_threads_order(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.cpu_threads(5) == 5          # a configuration's number wins
    assert threads.cpu_threads(None) == 3       # then OMP_NUM_THREADS
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.cpu_threads(None) == threads.available_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")  # unusable: ignored
    assert threads.cpu_threads(None) == threads.available_cores()


def test_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cores._quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores._quota(tmp_path) == float("inf")
    assert cores._quota(tmp_path / "absent") == float("inf")


def test_deterministic_sets_and_restores_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    prev = torch.get_num_threads()
    with loop.deterministic(None):
        assert torch.get_num_threads() == 2
    with loop.deterministic(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == prev


def _train(n_threads):
    torch.set_num_threads(n_threads)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 30 * 30, 5))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randn(16, 5, generator=g)
    for _ in range(3):
        loss = ((m(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_same_threads_same_bits():
    prev = torch.get_num_threads()
    try:
        for n in (1, 2):
            assert torch.equal(_train(n), _train(n))
    finally:
        torch.set_num_threads(prev)


def test_resume_takes_the_recorded_threads(tmp_path, monkeypatch):
    """num_threads unset: trained with 2 threads, killed after epoch 1, resumed where only 1 is
    given: the run ends bit-identical to the uninterrupted 2-thread run (the checkpoint's
    cpu_threads)."""
    from tests.test_train3d import TINY, make_store
    from pipeline.training import pose3d
    store = make_store(tmp_path / "ds.zarr")
    cfg = {**TINY, "num_threads": None}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    a = pose3d.train(cfg, store, None, None, tmp_path / "a", progress=False)
    pose3d.train({**cfg, "epochs": 1}, store, None, None, tmp_path / "b", progress=False)
    (tmp_path / "b" / "final.pt").unlink()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    b = pose3d.train(cfg, store, None, None, tmp_path / "b", progress=False)
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["cpu_threads"] == cb["cpu_threads"] == 2
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])


def test_openmp_wait_policy_follows_the_machines_load_and_the_user_wins(monkeypatch):
    """threads.wait_policy: spin (the library's default) when the cores are free, sleep
    (PASSIVE) when other processes keep a core busy or only one thread runs; a user's
    OMP_WAIT_POLICY is kept (pipeline.training sets it only when unset)."""
    import os
    import subprocess
    import sys
    from pipeline.training import threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.wait_policy(busy=0.1) is None
    assert threads.wait_policy(busy=1.0) == "PASSIVE"
    monkeypatch.setattr(threads, "available_cores", lambda: 1)
    assert threads.wait_policy(busy=0.0) == "PASSIVE"
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.wait_policy(busy=0.0) == "PASSIVE"
    assert 0.0 <= threads.busy_cores(0.05) <= (os.cpu_count() or 1) + 1e-9
    code = "import os, pipeline.training, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_trainings_side_by_side_share_the_cores(monkeypatch):
    """cpu_threads inside shared_by(n): each of n trainings gets its part, at least one thread;
    a configured num_threads is kept as asked."""
    from pipeline.training import threads
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.cpu_threads() == 4
    with threads.shared_by(2):
        assert threads.cpu_threads() == 2
        assert threads.cpu_threads(3) == 3
    with threads.shared_by(8):
        assert threads.cpu_threads() == 1
    assert threads.cpu_threads() == 4
