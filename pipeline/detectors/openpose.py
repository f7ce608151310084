"""The OpenPose / COCO JSON detector plug-in: any external detector's keypoints enter here.

The files are read by pipeline/data/openpose.py (layouts, the mapping onto the 17 joints,
damaged files). Several people in a frame: `person` = "auto" (the dataset's associated subject,
its `person_index` from pipeline/geometry/people.py, where it has one; else "largest"),
"largest" (box of confident keypoints, area x mean confidence), "track" (largest in the clip's first frame with a person, then the
one whose box overlaps the previous choice most; always replayed from the clip's start, so
chunks agree), "first", or an integer index. A missing file or a frame without a person gives
NaN for that (frame, view) and is counted in the warning and in `context["flags"]["openpose"]`,
with the number of people in each file (`people_count`) and the share of frames with more
than one person per view (`multi_person`, warned: the selection may take a bystander).
Points more than half an image outside the image are set to NaN and counted.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import zarr

from ..data.openpose import check_layouts, outside_image, read_view
from ..joints import J
from ..registry import with_defaults


# finds the person in a dataset's videos on its own: a videos dataset may place its crops with it
FINDS_PEOPLE = True

DEFAULTS: dict = {
    "format": "auto",       # "auto", "body25b", "body25", "coco17"
    "person": "auto",       # auto: the dataset's associated subject (its person_index, pipeline/geometry/
                            # people.py) when it has one, else "largest"; "largest", "track", "first", or an index
    "min_conf": 0.05,       # keypoints below this confidence become NaN
    "json_dirs": None,      # None: the dataset's attrs["openpose_json"]; else one folder/file per view
}


def _short(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def sources(cfg: dict) -> list[Path]:
    """The files this detector reads from its own configuration (`json_dirs`): sorted absolute
    paths; [] when it reads the dataset's attrs['openpose_json'] (the dataset's sources cover them)."""
    c = with_defaults(cfg, DEFAULTS, "openpose detector")
    src = c["json_dirs"]
    if src is None:
        return []
    items = [s for v in src.values() for s in v] if isinstance(src, dict) else [src] if isinstance(src, (str, Path)) else list(src)
    out = set()
    for s in items:
        p = Path(s).resolve()
        if p.is_dir():
            out.update(f.resolve() for f in p.glob("*.json"))
        elif p.is_file():
            out.add(p)
        else:
            raise ValueError(f"openpose: keypoint source {p} (detect2d.json_dirs) does not exist")
    return sorted(out)


def _sources(cfg: dict, dataset: zarr.Group) -> dict[int, list[str]]:
    """clip index -> one source per view."""
    src = cfg["json_dirs"] if cfg["json_dirs"] is not None else dataset.attrs.get("openpose_json")
    if src is None:
        raise ValueError("openpose: no keypoint files: set json_dirs or build the dataset with attrs['openpose_json']")
    clips = list(dataset.attrs.get("clips", []))
    if isinstance(src, dict):
        missing = [c for c in clips if c not in src]
        if missing:
            raise ValueError(f"openpose: no keypoint folders for clips {missing}")
        return {i: list(src[c]) for i, c in enumerate(clips)}
    if isinstance(src, (str, Path)):
        src = [src]
    return {i: list(src) for i in range(max(len(clips), 1))}


def detect(cfg: dict, dataset: zarr.Group, frames: slice, context: dict):
    """keypoints2d [f,V,J,3] of the store's `frames`, read from the JSON files.

    With person "auto" and a dataset holding `person_index` [F,V,P] (the detections of each
    associated person, person 0 the subject; the pose2sim adapter writes it), keypoints2d is
    the subject's and, with P > 1, people2d [f,V,P,J,3] is returned too (every associated
    person, for calibrating from all of them). The dataset's attrs["frame_offsets"] [V] shift
    each view's file numbers (its file n + offset is frame n). Which person of each view's
    JSON file keypoints2d holds goes to context["arrays"]["person_index"] [f,V] int16 (-1
    none; the detect2d stage stores it beside keypoints2d).

    Flags in context["flags"]["openpose"] (and a warning naming the views or files):
    missing_file, no_person, damaged_file, outside_image ((frame, view) counts; NaN there),
    people_count [f][V] (people in each file, -1 without a readable file) and multi_person
    {view: share of its frames with more than one person}."""
    c = with_defaults(cfg, DEFAULTS, "openpose detector")
    F = dataset["frame_index"].shape[0]
    start, stop, step = frames.indices(F)
    ids = np.arange(start, stop, step)
    frame_index = np.asarray(dataset["frame_index"][:])[ids]
    clip = np.asarray(dataset["clip"][:])[ids] if "clip" in dataset else np.zeros(len(ids), np.int64)
    V = dataset["K"].shape[1]
    size = None
    if "size" in dataset:
        rig = np.asarray(dataset["rig"][:])[ids] if "rig" in dataset else np.zeros(len(ids), np.int64)
        size = np.asarray(dataset["size"][:], dtype=np.float64)[rig]          # [f,V,2]
    sources_ = _sources(c, dataset)
    person, index = c["person"], None
    if person == "auto":
        person = "largest"
        if "person_index" in dataset:
            index = np.asarray(dataset["person_index"][:])[ids]  # [f,V,P]
    offsets = np.asarray(dataset.attrs.get("frame_offsets") or [0] * V, np.int64)
    P = index.shape[2] if index is not None else 0
    everyone = np.full((len(ids), V, P, J, 3), np.nan, dtype=np.float32) if P > 1 else None
    out = np.full((len(ids), V, J, 3), np.nan, dtype=np.float32)
    people = np.full((len(ids), V), -1, dtype=np.int64)
    which = np.full((len(ids), V), -1, dtype=np.int16)
    missing_file = no_person = n_damaged = n_outside = 0
    damaged_files: list[str] = []
    outside_views: dict[str, int] = {}
    names = [""] * V
    for ci in np.unique(clip):
        srcs = sources_[int(ci)]
        if len(srcs) != V:
            raise ValueError(f"openpose: {len(srcs)} keypoint sources for {V} views ({_short([str(s) for s in srcs])})")
        rows = np.flatnonzero(clip == ci)
        # read once per stage run (the context lives as long as the run): no re-listing per chunk
        cache = context.setdefault("_openpose_views", {})
        views = []
        for s in srcs:
            key = (str(Path(s).resolve()), c["format"], person, float(c["min_conf"]))
            if key not in cache:
                cache[key] = read_view(s, c["format"], person, c["min_conf"])
            views.append(cache[key])
        check_layouts(views)
        for v, vk in enumerate(views):
            names[v] = names[v] or Path(vk.source).name
            numbers = vk.numbers
            want = frame_index[rows] + offsets[v]
            pos = np.clip(np.searchsorted(numbers, want), 0, max(len(numbers) - 1, 0))
            found = (len(numbers) > 0) & (numbers[pos] == want)
            missing_file += int((~found).sum())
            if index is not None:  # the associated people's detections, by their index in each file
                sel = index[rows[found], v]  # [n,P]
                allp = vk.everyone[pos[found][:, None], np.clip(sel, 0, vk.everyone.shape[1] - 1)]
                allp = np.where((sel >= 0)[..., None, None], allp, np.nan)
                vals = allp[:, 0].copy()
                which[rows[found], v] = sel[:, 0]
                if everyone is not None:
                    everyone[rows[found], v] = allp
            else:
                vals = vk.kp[pos[found]].copy()
                which[rows[found], v] = vk.chosen[pos[found]]
            bad = np.array([int(n) in vk.damaged for n in numbers[pos[found]]], dtype=bool)
            n_damaged += int(bad.sum())
            damaged_files += [vk.damaged[int(n)] for n in numbers[pos[found]][bad]]
            if size is not None:
                far = outside_image(vals, size[rows[found], v]) & np.isfinite(vals[..., 0])
                if far.any():
                    vals[far] = np.nan
                    n_outside += int(far.sum())
                    outside_views[names[v]] = outside_views.get(names[v], 0) + int(far.any(-1).sum())
            nobody = np.all(np.isnan(vals[..., 0]), axis=-1)
            no_person += int((nobody & ~bad).sum())
            which[rows[found][nobody], v] = -1
            out[rows[found], v] = vals
            people[rows[found], v] = vk.people[pos[found]]
    flags = {"missing_file": missing_file, "no_person": no_person, "damaged_file": n_damaged,
             "outside_image": n_outside, "people_count": people.tolist()}
    with np.errstate(invalid="ignore", divide="ignore"):
        multi = {names[v]: float(np.mean(people[:, v] > 1)) for v in range(V) if np.any(people[:, v] > 1)}
    flags["multi_person"] = multi
    context.setdefault("flags", {})["openpose"] = flags
    if missing_file or no_person:
        warnings.warn(f"openpose: {missing_file} (frame, view) without a file and {no_person} without a person: NaN",
                      stacklevel=2)
    if n_damaged:
        warnings.warn(f"openpose: {n_damaged} damaged keypoint file(s) read as missing frames (NaN): "
                      f"{_short(damaged_files, 2)}; fix or remove them", stacklevel=2)
    if n_outside:
        warnings.warn(f"openpose: {n_outside} keypoints far outside the image set to NaN "
                      f"(frames per view: {outside_views}); check the JSON files", stacklevel=2)
    if multi:
        share = ", ".join(f"{k} {100 * s:.0f}%" for k, s in multi.items())
        if index is None:
            warnings.warn(f"openpose: more than one person in view on a share of frames ({share}); person="
                          f"{c['person']!r} keeps one per frame and may take a bystander for the subject: check "
                          "these views, build the dataset with person 'associate' (pose2sim), or set person to "
                          "'track' or an index (counts in context['flags']['openpose']['people_count'])",
                          stacklevel=2)
        else:
            warnings.warn(f"openpose: more than one person in view on a share of frames ({share}); the dataset's "
                          f"associated subject is read (person_index), and its {index.shape[2]} associated people "
                          "as people2d", stacklevel=2)
    context.setdefault("arrays", {})["person_index"] = which
    if everyone is not None:
        return {"keypoints2d": out, "people2d": everyone}
    return out
