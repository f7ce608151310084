"""label: pseudo-labels from multi-view geometry. Each rig is calibrated first (its cameras
persisted before any chunk, so a resumed run reuses them exactly), then frame chunks are
labelled, on Dask when there are enough of them."""
from __future__ import annotations

import logging

import numpy as np

from ...geometry import labels as labelling
from ...camera import Cameras
from ..cluster import dask_client, worth_a_cluster
from ..config import module_section
from ..context import Context
from ..progress import Progress
from ..record import Output, Stage
from ..arrays import ChunkedWriter, dims_for
from ..store import StoreError, to_jsonable

log = logging.getLogger("pipeline")
OWN = ("chunk",)
RIG_ARRAYS = (("R_est", (3, 3)), ("t_est", (3,)), ("K_est", (3, 3)), ("dist_est", (5,)), ("size_est", (2,)))


def _defaults(preset: str, _plugin) -> dict:
    return {"chunk": 1024, **module_section(labelling, preset)}


def _validate(section) -> None:
    from ...registry import check_number
    check_number(section, "chunk", "label", lo=1, integer=True)
    labelling.resolve_cfg({k: v for k, v in section.items() if k not in OWN})


def label_task(kp: np.ndarray, segments: list, cams: dict, lcfg: dict, label_chunk) -> dict:
    """Labels of one frame chunk: label_chunk per rig segment, concatenated (runs on a worker)."""
    parts = [label_chunk(kp[a:b], cams[gi], lcfg) for a, b, gi in segments]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def segments(rig: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal rig index in a chunk: [(start, stop, rig), ...] (chunk-relative)."""
    cuts = np.flatnonzero(np.diff(rig)) + 1
    starts, stops = np.r_[0, cuts], np.r_[cuts, len(rig)]
    return [(int(a), int(b), int(rig[a])) for a, b in zip(starts, stops)]


def _view_names(ds) -> list[str] | None:
    """The cameras' names for messages (the dataset's `views` attribute), when it has them."""
    names = ds.attrs.get("views")
    return [str(n) for n in names] if isinstance(names, list) and len(names) == ds["K"].shape[1] else None


def _calibrate(ctx: Context, ds, kp_arr, rig: np.ndarray, people_arr=None) -> dict[int, Cameras]:
    """Every rig's cameras for labelling, estimated once and kept in the working group."""
    g = ctx.group
    G, V = int(ds["K"].shape[0]), int(ds["K"].shape[1])
    for k, shape in RIG_ARRAYS:  # each on its own: a kill -9 may fall between two of them
        if k not in g:
            g.create_array(k, shape=(G, V) + shape, dtype="f8", fill_value=np.nan,
                           dimension_names=dims_for(k, 2 + len(shape), "rig"))
    done = list(g.attrs.get("calibrated", []))
    diags = dict(g.attrs.get("calibration", {}))
    for gi in range(G):
        frames = np.flatnonzero(rig == gi)
        if gi in done or len(frames) == 0:
            continue
        log.info("label: calibrating rig %d from %d frames", gi, len(frames))
        extra = None
        if people_arr is not None and people_arr.shape[2] > 1:  # the associated bystanders calibrate too
            from ...geometry import people
            extra = people.rows(np.asarray(people_arr.get_orthogonal_selection((frames,)))[:, :, 1:],
                                people.DEFAULTS["min_motion_px"])[0]
        cams, diag = labelling.calibrate(np.asarray(kp_arr.get_orthogonal_selection((frames,))),
                                         Cameras.from_store(ds, gi), ctx.params, names=_view_names(ds), extra=extra)
        for k, v in (("R_est", cams.R), ("t_est", cams.t), ("K_est", cams.K), ("dist_est", cams.dist),
                     ("size_est", cams.size)):
            g[k][gi] = v
        diags[str(gi)] = to_jsonable(diag)
        done.append(gi)
        g.attrs.update({"calibration": diags, "calibrated": done})
    return {gi: Cameras.from_store(g, gi, "_est") for gi in range(G) if np.any(rig == gi)}


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    det = ctx.open("detect2d")
    kp_arr = det["keypoints2d"]
    people_arr = det["people2d"] if "people2d" in det else None
    rig = np.asarray(ds["rig"][:], dtype=np.int64)
    F = len(rig)
    if kp_arr.shape[0] != F:
        raise StoreError(f"detect2d has {kp_arr.shape[0]} frames, the dataset {F}")
    cams = _calibrate(ctx, ds, kp_arr, rig, people_arr)
    w = ChunkedWriter(ctx.group, F, int(ctx.section["chunk"]))
    todo = w.pending(verify=ctx.cfg["store"]["verify"])
    args = {i: (np.asarray(kp_arr[w.frames(i)]), segments(rig[w.frames(i)])) for i in todo}
    lcfg = ctx.params
    d = ctx.cfg["dask"]
    left = sum(w.frames(i).stop - w.frames(i).start for i in todo)
    use_dask = len(todo) > 1 and worth_a_cluster(d, left)
    client, close = dask_client(d) if use_dask else (None, lambda: None)
    with Progress(len(todo), "label", ctx.progress) as bar:
        try:
            if client is None:
                for i in todo:
                    kp, seg = args[i]
                    w.write(i, label_task(kp, seg, {gi: cams[gi] for *_, gi in seg}, lcfg, labelling.label_chunk))
                    bar.update()
            else:
                from distributed import as_completed
                futs = {client.submit(label_task, kp, seg, {gi: cams[gi] for *_, gi in seg}, lcfg,
                                      labelling.label_chunk, pure=False): i for i, (kp, seg) in args.items()}
                for fut in as_completed(futs):
                    w.write(futs[fut], fut.result())
                    bar.update()
        finally:
            close()
    ctx.group.attrs["failures"] = {str(k): v for k, v in getattr(labelling, "FAILURES", {}).items()}
    # which detection (person in each view's JSON file) every label came from: the detector's
    # record (openpose), else the dataset's associated subject (a network on crops that follow it)
    src = det["person_index"][:] if "person_index" in det else ds["person_index"][:, :, 0] if "person_index" in ds \
        else None
    if src is not None:
        ctx.group.create_array("person_index", data=np.asarray(src, dtype=np.int16), dimension_names=("frame", "view"),
                               overwrite=True)
    ok = np.asarray(ctx.group["frame_ok"][:]) if "frame_ok" in ctx.group else np.zeros(F, bool)
    _labelled_share(ctx.group, rig, ok)
    return {"frames": F, "frames_labelled": int(ok.sum())}


def _labelled_share(g, rig: np.ndarray, ok: np.ndarray) -> None:
    """Each rig's share of its frames labelled, beside its calibration diagnostics (attrs
    `calibration[rig]["frames_labelled_share"]`): a rig that labels few frames is suspect."""
    diags = dict(g.attrs.get("calibration", {}))
    for gi in np.unique(rig):
        sel = rig == gi
        diags.setdefault(str(int(gi)), {})["frames_labelled_share"] = round(float(ok[sel].mean()), 4)
    g.attrs["calibration"] = diags


STAGE = Stage(
    name="label", version=15, doc=__doc__.strip(), module=__name__,
    outputs=(Output("label", name=lambda s: s["mode"], inputs=("dataset", "detect2d")),),
    build=build, defaults=_defaults, validate=_validate, own_keys=OWN)
