"""Small stand-in plug-ins for the orchestration tests (no tests in this file).

They exercise the store and flow machinery with the real interfaces of docs/stores.md: a toy
dataset adapter that writes the dataset contract from synthetic poses (tests.synth) seen
by a synthetic rig, and the gt detector under a second name. `register()` makes them
reachable by name (plug-ins are looked up by name), in this process; the subprocess
scripts call it too.
"""
from __future__ import annotations

import os
import time

import numpy as np

from pipeline import camera
from tests import synth
from pipeline.joints import J

DEFAULTS = {"frames": 48, "views": 3, "rigs": 2, "seed": 0, "size": 16, "gt": True}


def GROUND_TRUTH_3D(cfg: dict) -> bool:  # noqa: N802  (the adapter attribute's name)
    """gt False: the toy is footage without 3D ground truth (like a Pose2Sim project)."""
    return bool({**DEFAULTS, **cfg}["gt"])


def build(cfg: dict, out, progress: bool = True) -> None:
    """Toy dataset: random poses, G rigs of V cameras, GT 2D, tiny images (dataset contract)."""
    c = {**DEFAULTS, **cfg}
    F, V, G, S = int(c["frames"]), int(c["views"]), int(c["rigs"]), int(c["size"])
    poses = synth.random_poses(F, seed=int(c["seed"]))  # [F,J,3]
    rigs = [synth.random_rig(V, seed=int(c["seed"]) + g) for g in range(G)]
    rig = (np.arange(F) * G // F).astype(np.int16)  # contiguous blocks per rig
    kp = np.empty((F, V, J, 3), np.float32)
    for g, cams in enumerate(rigs):
        sel = rig == g
        uv = camera.project(poses[sel][:, None], cams.K, cams.R, cams.t, cams.dist)  # [f,V,J,2]
        kp[sel, ..., :2] = uv
        kp[sel, ..., 2] = 1
    stack = lambda k: np.stack([getattr(r, k) for r in rigs])  # noqa: E731
    rng = np.random.default_rng(int(c["seed"]))
    arrays = {
        "poses3d_world": poses.astype(np.float32), "keypoints2d_gt": kp, "rig": rig,
        "K": stack("K"), "R": stack("R"), "t": stack("t"), "dist": stack("dist"), "size": stack("size"),
        "subject": rig.astype(np.int16), "clip": np.zeros(F, np.int16),
        "split": (np.arange(F) % 4 == 3).astype(np.int16), "frame_index": np.arange(F, dtype=np.int32),
        "images": rng.integers(0, 255, (F, V, S, S, 3), dtype=np.uint8),
        "crop_boxes": np.tile(np.array([0, 0, 1000, 1000], np.float32), (F, V, 1)),
    }
    if not c["gt"]:
        del arrays["poses3d_world"]  # its 2D stays: the gt detector stands in for OpenPose
    from pipeline.orchestration.arrays import write_arrays
    write_arrays(out, arrays)
    out.attrs.update({"dataset": "toy", "subjects": [f"S{g}" for g in range(G)], "clips": ["c0"],
                      "actions": {"c0": "walk"}, "fps": 50, "crop_size": S, "mean_bone_mm": 250.0})


def register() -> None:
    """Dataset adapter 'toy' and detector 'gt2' (the gt detector under a second name)."""
    import pipeline.data as data
    import pipeline.detectors as detectors
    data.ADAPTERS["toy"] = "tests.test_stages_standins:build"
    detectors.DETECTORS["gt2"] = "pipeline.detectors.gt:detect"


def toy_config(root, **over):
    """A resolved configuration on the toy dataset, labelled in this process (no Dask)."""
    from pipeline.orchestration import config
    register()
    ov = {"dataset.name": "toy", "detect2d.detector": "gt", "dask.n_workers": 0, "store.root": str(root),
          "label.chunk": 8}
    ov.update(over)
    return config.resolve("cpu", ov)


def main(argv: list[str]) -> None:
    """`python -m tests.test_stages_standins ROOT STAGES JSON_OVERRIDES [slow]`: run stages in a
    fresh process (the kill -9 and concurrency tests start and kill these)."""
    import json

    from pipeline import orchestration
    from pipeline.orchestration.stages import label
    root, which, ov = argv[0], argv[1].split(","), json.loads(argv[2])
    cfg = toy_config(root, **ov)
    if len(argv) > 3 and argv[3] == "slow":  # this process's labeller: slowed down per chunk
        from tests import test_stages_slowlabels
        label.labelling = test_stages_slowlabels
    st = orchestration.ArtifactStore(cfg["store"]["root"])
    for s in which:
        r = orchestration.run_stage(s, cfg, st, progress=False)
        print(json.dumps({"stage": s, "status": r["status"]}), flush=True)


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
