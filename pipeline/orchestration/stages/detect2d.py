"""detect2d: the frozen 2D detector writes keypoints for every frame and view, chunk by
chunk (resumable)."""
from __future__ import annotations

import numpy as np

from ... import detectors
from .. import plugins
from ..context import Context
from ..progress import Progress
from ..record import Output, Stage
from ..arrays import ChunkedWriter
from ..store import to_jsonable

KIND = "detector"
OWN = ("detector", "chunk")


def _defaults(preset: str, name: str | None) -> dict:
    return plugins.section(detectors.DETECTORS, name, KIND, preset, {"detector": name, "chunk": 256})


def detector_params(section) -> dict:
    """The detector plug-in's own settings of a detect2d section (without the stage's keys)."""
    return {k: v for k, v in section.items() if k not in OWN}


def _validate(section) -> None:
    from ...registry import check_number
    check_number(section, "chunk", "detect2d", lo=1, integer=True)
    plugins.validate(detectors.DETECTORS, section["detector"], KIND, detector_params(section))


def _sources(section) -> list:
    return plugins.sources(detectors.DETECTORS, section["detector"], KIND, detector_params(section))


def build(ctx: Context) -> dict:
    name = ctx.section["detector"]
    detect = detectors.get_detector(name)
    ds = ctx.open("dataset")
    context = {"dataset": ctx.input("dataset").location}
    if ctx.has("pretrain2d"):
        context["pretrain2d"] = str(ctx.result_path("pretrain2d"))
    w = ChunkedWriter(ctx.group, int(ds["rig"].shape[0]), int(ctx.section["chunk"]))
    todo = w.pending(verify=ctx.cfg["store"]["verify"])
    with Progress(len(todo), f"detect2d ({name})", ctx.progress) as bar:
        for i in todo:
            got = detect(ctx.params, ds, w.frames(i), context)
            # keypoints2d [f,V,J,3], or a dict of frame-indexed arrays holding it (openpose on a dataset
            # with associated people: also people2d [f,V,P,J,3]); more of the chunk's arrays in
            # context["arrays"] (openpose: person_index [f,V], the detection each keypoint came from)
            arrays = dict(got) if isinstance(got, dict) else {"keypoints2d": got}
            arrays.update(context.pop("arrays", {}))
            w.write(i, {k: np.asarray(a) if np.asarray(a).dtype.kind in "iub" else np.asarray(a, dtype=np.float32)
                        for k, a in arrays.items()})
            bar.update()
    ctx.group.attrs.update({"detector": name, "detector_config": to_jsonable(ctx.params),
                            "flags": to_jsonable(context.get("flags", {}))})
    return {"frames": w.n_frames}


STAGE = Stage(
    name="detect2d", version=7, doc=__doc__.strip(), module=__name__,
    outputs=(Output("detect2d", name=lambda s: s["detector"], inputs=("dataset", "pretrain2d")),),
    build=build, defaults=_defaults, validate=_validate, sources=_sources, own_keys=OWN,
    plugin_key="detector", plugins=lambda: plugins.modules(detectors.DETECTORS))
