"""pss_reference: k-means reference poses for the Pose Structure Score, from the training
subjects' ground truth in every camera's frame (the frame of the poses PSS scores)."""
from __future__ import annotations

from ...evaluation import pss
from ...registry import check_number, with_defaults
from ..artifacts import split_frames
from ..context import Context
from ..record import Output, Stage
from ..store import StoreError

DEFAULTS = {"ks": [50, 100], "seed": 0, "n_init": 4, "max_poses": 20000}


def _validate(section) -> None:
    c = with_defaults(dict(section), DEFAULTS, "pss_reference")
    ks = c["ks"]
    if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in ks):
        raise ValueError(f"pss_reference: ks must be a list of integers >= 2, got {ks!r}")
    check_number(c, "seed", "pss_reference", lo=0, integer=True)
    check_number(c, "n_init", "pss_reference", lo=1, integer=True)
    check_number(c, "max_poses", "pss_reference", lo=1, integer=True, allow_none=True)


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    if "poses3d_world" not in ds:
        raise StoreError("pss_reference: the dataset has no 3D ground truth (poses3d_world)")
    c = ctx.params
    poses = pss.reference_poses(ds, split_frames(ds, 0))
    ref = pss.build_reference(poses, ks=tuple(c["ks"]), seed=int(c["seed"]), n_init=int(c["n_init"]),
                              max_poses=c["max_poses"])
    pss.write_reference(ref, ctx.group)
    return {"n_poses": ref["attrs"].get("n_poses")}


STAGE = Stage(
    name="pss_reference", version=2, doc=__doc__.strip(), module=__name__,
    outputs=(Output("pss_reference", "kmeans", inputs=("dataset",)),),
    build=build, defaults=lambda preset, _p: dict(DEFAULTS), validate=_validate)
