"""Small stand-in stage implementations for the orchestration tests (no tests in this file).

They exercise the store and flow machinery with the real interfaces of docs/stores.md and
/tmp/common.md: a toy dataset adapter that writes the dataset contract from synthetic poses
(pipeline.synth) seen by a synthetic rig, and a stand-in labeller with `calibrate` and
`label_chunk` whose output depends deterministically on its input (so a resumed run can be
compared bit for bit). `register()` makes them reachable by name, in this process; the
subprocess scripts call it too.
"""
from __future__ import annotations

import os
import time

import numpy as np

from pipeline import camera, synth
from pipeline.joints import J

DEFAULTS = {"frames": 48, "views": 3, "rigs": 2, "seed": 0, "size": 16}


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
    from pipeline.store import write_arrays
    write_arrays(out, arrays)
    out.attrs.update({"dataset": "toy", "subjects": [f"S{g}" for g in range(G)], "clips": ["c0"],
                      "actions": {"c0": "walk"}, "fps": 50, "crop_size": S, "mean_bone_mm": 250.0})


# ---- stand-in labeller (pipeline.labels interface)
FAILURES = {0: "ok", 1: "too few joints"}
LABEL_DEFAULTS = {"mode": "rig", "delay_s": 0.0}


def calibrate(kp2d, cams, cfg):
    """Keeps the given cameras (the `known` mode) and reports how many frames it pooled."""
    return cams, {"frames": int(kp2d.shape[0])}


def label_chunk(kp2d, cams, cfg):
    """Deterministic function of the chunk's keypoints and cameras (DLT triangulation)."""
    delay = float(cfg.get("delay_s", 0.0) or os.environ.get("STANDIN_DELAY_S", 0.0))
    if delay:
        time.sleep(delay)
    kp = np.asarray(kp2d, np.float64)
    f, V = kp.shape[:2]
    P = cams.P  # [V,3,4]
    x, y = kp[..., 0], kp[..., 1]  # [f,V,J]
    rows = np.concatenate([x[..., None] * P[None, :, None, 2] - P[None, :, None, 0],
                           y[..., None] * P[None, :, None, 2] - P[None, :, None, 1]], axis=1)  # [f,2V,J,4]
    A = np.moveaxis(rows, 2, 1)  # [f,J,2V,4]
    ok = np.all(np.isfinite(A), axis=(-1, -2))
    A = np.where(ok[..., None, None], A, 0.0) + np.where(ok[..., None, None], 0.0, np.eye(4)[None, None, :1])
    X = np.linalg.svd(A)[2][..., -1, :]
    X = X[..., :3] / X[..., 3:]
    Xc = np.einsum("vij,fnj->fvni", cams.R, X) + cams.t[None, :, None]
    lab = Xc - Xc[:, :, :1]
    valid = np.repeat(ok[:, None], V, axis=1)
    return {"labels_cam": lab.astype(np.float32), "valid": valid,
            "frame_ok": valid.all((1, 2)), "failure": np.where(valid.all((1, 2)), 0, 1).astype(np.int8),
            "pair_inliers": np.full((f, V * (V - 1) // 2), J, np.int16)}


def make_labels(kp2d, cams, cfg):
    c, _ = calibrate(kp2d, cams, cfg)
    return label_chunk(kp2d, c, cfg)


def register(standin_labels: bool = False) -> None:
    """Dataset adapter 'toy' and detector 'gt2' (the gt detector under a second name); the
    labeller is pipeline.labels, or with standin_labels this module's."""
    import pipeline.data as data
    import pipeline.detectors as detectors
    from pipeline import config, stages
    data.ADAPTERS["toy"] = "tests.test_stages_standins:build"
    detectors.DETECTORS["gt2"] = "pipeline.detectors.gt:detect"
    if standin_labels:
        stages.MODULES["labels"] = "tests.test_stages_standins"
        config.STAGE_MODULES["label"] = "tests.test_stages_standins:LABEL_DEFAULTS"
    else:
        stages.MODULES["labels"] = "pipeline.labels"
        config.STAGE_MODULES["label"] = "pipeline.labels"


def toy_config(root, standin_labels: bool = False, **over):
    """A resolved configuration on the toy dataset, labelled in this process (no Dask)."""
    from pipeline import config
    register(standin_labels)
    ov = {"dataset.name": "toy", "detect2d.detector": "gt", "dask.n_workers": 0, "store.root": str(root),
          "label.chunk": 8}
    ov.update(over)
    return config.resolve("cpu", ov)


def main(argv: list[str]) -> None:
    """`python -m tests.test_stages_standins ROOT STAGES JSON_OVERRIDES [slow]`: run stages in a
    fresh process (the kill -9 and concurrency tests start and kill these)."""
    import json

    from pipeline import stages, store
    root, which, ov = argv[0], argv[1].split(","), json.loads(argv[2])
    cfg = toy_config(root, **ov)
    if len(argv) > 3 and argv[3] == "slow":
        stages.MODULES["labels"] = "tests.test_stages_slowlabels"
    st = store.ArtifactStore(cfg["store"]["root"])
    for s in which:
        r = stages.run_stage(s, cfg, st, progress=False)
        print(json.dumps({"stage": s, "status": r["status"]}), flush=True)


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
