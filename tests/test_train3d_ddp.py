"""DistributedDataParallel under torchrun (2 CPU processes, gloo): the loop runs and rank 0 writes."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import os, zarr
        from pipeline.training import pose3d
        from tests.test_train3d import TINY, make_store
        if os.environ["RANK"] == "0":
            make_store({str(tmp_path / 'ds.zarr')!r}, F=24)
        import torch.distributed as dist
        dist.init_process_group("gloo")
        dist.barrier()
        ds = zarr.open_group({str(tmp_path / 'ds.zarr')!r}, mode="r")
        pose3d.train({{**TINY, "batch_size": 4}}, ds, None, None, {str(tmp_path / 'out')!r}, progress=False)
        dist.destroy_process_group()
    """))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(tmp_path / "out" / "final.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["images_seen"] == 2 * 3 * 4 * 2  # epochs x iters x batch x processes
