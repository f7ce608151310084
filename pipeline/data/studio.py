"""The `studio` adapter: a multi-view studio rendered from real motion capture.

Motion: by default one real recording, CMU subject 01 (fetched from PyPI, see fetch.py);
or every BVH file of `motion_dir` (e.g. the Bandai Namco or CMU BVH folders), one clip each.

Honest account of the default split: the CMU recording is ONE performer and ONE take. It is
resampled, then cut into `n_segments` temporally disjoint segments separated by
`segment_gap_s` seconds (dropped), and each segment is treated as a separate clip; every
`test_every`-th segment is a test clip. Test poses therefore come from other moments of the
same performance: disjoint in time, never the same frames, but the same person's style. With
`motion_dir`, whole files are clips and the split is by clip (or by performer, with
`split_by: performer` and a `performer_regex` on the file name).

Subjects in the store are synthetic people: an appearance (clothing, skin, hair, build),
a skeleton scale, a heading (the motion rotated about the vertical) and a room. Each train
clip is performed by `renders_per_train_clip` train people; test clips by test people only,
whose looks and rooms no train image shows (drawn from random streams of their own, so the
test set is the same whatever `train_people` is). Root translation comes from the mocap,
recentred on the capture volume; a clip whose root path leaves a `volume_mm` square is cut
into windows that fit, each recentred (a walk across 8 m becomes several clips).

Every rendered crop is a picture: `image_ok` [F, V] is all True. `sources(cfg)` lists the motion
files a build reads (none for the default recording: its pinned download identifies it).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from ..camera import Cameras, project, world_to_camera
from ..cores import process_imap
from ..joints import J, JOINTS
from . import fetch, motion, render, rigs
from ..registry import with_defaults

# the store holds 3D ground truth (poses3d_world): the chain plans the FS baseline and GT metrics
GROUND_TRUTH_3D = True

DEFAULTS: dict = {
    "motion_files": None,          # [asf, amc] to use instead of fetching CMU subject 01
    "motion_dir": None,            # folder of BVH files: one clip per file (overrides the default)
    "motion_glob": "*.bvh",
    "max_clips": None,             # use at most this many files of motion_dir (sorted, then evenly picked)
    "unit_mm": "auto",             # BVH length unit (mm per unit) or 'auto'
    "licence": None,               # licence of motion_dir's files (default: read from a LICENSE file there)
    "cache_dir": None,             # where fetched motion goes (default <artifacts>/_cache/motion)
    "fps": 60.0,                   # resampled frame rate
    "dedup_mm": 10.0,              # drop a frame unless a joint moved this much since the last kept one
    "n_segments": 8,               # single recording: temporally disjoint segments, each one clip
    "segment_gap_s": 0.5,          # seconds dropped between segments
    "test_every": 4,               # every k-th clip (segments 3, 7, ...) is a test clip
    "split_by": "clip",            # 'clip' or 'performer' (motion_dir only)
    "performer_regex": r"^(\d+)_", # group 1 of this on the file stem names the performer
    "test_performers": None,       # list of performer names for the test split
    "volume_mm": 3000.0,           # root path must fit this square; longer walks are cut
    "min_clip_s": 1.0,             # windows shorter than this are dropped
    "n_views": 4,
    "rig": "h36m",                 # 'h36m', 'h36m_jitter' or 'random'
    "rig_seed": 0,
    "rig_options": {},             # random_rig keywords (radius_mm, height_mm, focal_px, distortion, image_size)
    "crop_size": 64,
    "crop_margin": 0.1,
    "train_people": 8,             # appearances seen in training: 8 rather than 3 took the detector's
                                   # PCK@0.05 on the test person from 0.73 to 0.87, SS MPJPE from 131 to 102
    "test_people": 1,
    "renders_per_train_clip": 2,
    "scale_range": [0.92, 1.08],   # skeleton scale of the synthetic people
    "max_offset_mm": 300.0,        # random shift of a clip on the floor
    "bg_scale": 0.25,              # resolution of the room images relative to the camera image
    "noise": 0.0,                  # sensor noise sigma (fraction of full scale) baked into the images;
                                   # 0 keeps stores small (noise makes crops incompressible), augment at training instead
    "seed": 0,
    "chunk": 64,
}

CMU01_ACTION = "playground jumps"


def _motion_files(cfg: dict) -> list[Path]:
    """The BVH files of motion_dir a build reads (sorted, then evenly picked to max_clips)."""
    folder = Path(cfg["motion_dir"])
    if not folder.is_dir():
        raise ValueError(f"studio: motion_dir {folder} is not a folder")
    files = sorted(folder.glob(cfg["motion_glob"]))
    if not files:
        raise ValueError(f"{folder}: no files match {cfg['motion_glob']!r}")
    if cfg["max_clips"] and len(files) > cfg["max_clips"]:
        idx = np.linspace(0, len(files) - 1, int(cfg["max_clips"])).round().astype(int)
        files = [files[i] for i in np.unique(idx)]
    return files


def _licence_file(folder: Path) -> Path | None:
    for up in (folder, *folder.parents[:2]):
        for name in ("LICENSE", "LICENCE", "LICENSE.txt", "LICENSE.md"):
            if (up / name).is_file():
                return up / name
    return None


def sources(cfg: dict) -> list[Path]:
    """Every file a build with this configuration reads: the motion files (motion_files, or
    the chosen BVH files of motion_dir and the LICENSE file whose first line becomes the
    licence); [] for the default CMU recording, identified by its pin (fetch.py). Sorted,
    absolute, by listing only."""
    cfg = with_defaults(cfg, DEFAULTS, "studio")
    if cfg["motion_dir"]:
        files = _motion_files(cfg)
        lic = None if cfg["licence"] else _licence_file(Path(cfg["motion_dir"]))
        return sorted({p.resolve() for p in files + ([lic] if lic else [])})
    if cfg["motion_files"]:
        paths = [Path(p) for p in cfg["motion_files"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"studio: motion_files {missing} do not exist")
        return sorted({p.resolve() for p in paths})
    return []


def _load_clips(cfg: dict, progress: bool) -> tuple[list[dict], str, str]:
    """[{name, action, performer, poses [F,J,3] mm, fps}], licence, source."""
    if cfg["motion_dir"]:
        folder = Path(cfg["motion_dir"])
        files = _motion_files(cfg)
        clips = []
        for f in tqdm(files, desc="motion", disable=not progress):
            poses, fps = motion.load_clip(f, cfg["unit_mm"])
            m = re.match(r"dataset-\d+_([^_]+)_([^_]+)_", f.stem)  # Bandai Namco: content_style_id
            action = f"{m.group(1)} ({m.group(2)})" if m else f.stem
            pm = re.search(cfg["performer_regex"], f.stem)
            clips.append(dict(name=f.stem, action=action, performer=pm.group(1) if pm else f.stem,
                              poses=poses, fps=fps))
        licence = cfg["licence"] or _licence_of(folder)
        return clips, licence, f"BVH motion from {folder} ({len(files)} files)"
    if cfg["motion_files"]:
        asf, amc = (Path(p) for p in cfg["motion_files"])
    else:
        asf, amc = fetch.fetch_cmu_demo(cfg["cache_dir"], progress)
    m = motion.read_asf_amc(asf, amc, fps=120.0)
    poses = motion.to_h36m(m)
    fps = float(cfg["fps"])
    res, _ = motion.resample(poses, m.fps, fps)
    gap = int(round(cfg["segment_gap_s"] * fps))
    clips = []
    for k, seg in enumerate(motion.split_segments(len(res), int(cfg["n_segments"]), gap)):
        # frame_index counts resampled frames from the start of the recording
        clips.append(dict(name=f"cmu01_seg{k}", action=CMU01_ACTION, performer="cmu01",
                          poses=res[seg], fps=fps, first=int(seg[0]), resampled=True))
    return clips, fetch.LICENCE, fetch.SOURCE


def _licence_of(folder: Path) -> str:
    lic = _licence_file(folder)
    if lic is not None:
        head = lic.read_text(errors="replace").strip().splitlines()
        return f"see {lic}: {head[0][:120] if head else ''}"
    if "bandai" in str(folder).lower():
        return "Bandai Namco Research Motiondataset: CC BY-NC 4.0 (non-commercial)"
    if "cmu" in str(folder).lower():
        return "CMU Graphics Lab Motion Capture Database: free for research and commercial use"
    return "unknown: check the motion files' licence"


def _windows(root_xy: np.ndarray, size: float, min_len: int) -> list[slice]:
    """Cut a root path [F,2] into consecutive windows whose bounding box fits size x size."""
    out, start = [], 0
    lo = hi = root_xy[0]
    for i in range(1, len(root_xy) + 1):
        if i < len(root_xy):
            nlo, nhi = np.minimum(lo, root_xy[i]), np.maximum(hi, root_xy[i])
            if np.all(nhi - nlo <= size):
                lo, hi = nlo, nhi
                continue
        if i - start >= min_len:
            out.append(slice(start, i))
        if i < len(root_xy):
            start, lo, hi = i, root_xy[i], root_xy[i]
    return out


def prepare_frames(cfg: dict, progress: bool = False) -> dict:
    """Motion -> per-frame 3D ground truth and split, before rendering.

    Returns dict: poses [F,J,3] world mm; subject, clip, split [F] int16; frame_index [F]
    int32; names of subjects and clips; actions; people (appearance parameters per subject);
    licence; source."""
    cfg = {**DEFAULTS, **cfg}
    seed = int(cfg["seed"])
    clips, licence, source = _load_clips(cfg, progress)
    fps = float(cfg["fps"])
    # resample (BVH clips), cut to the volume, drop near-duplicates
    pieces = []
    for c in clips:
        if c.get("resampled"):
            poses, idx = c["poses"], np.arange(len(c["poses"])) + c["first"]
        else:
            poses, src = motion.resample(c["poses"], c["fps"], fps)
            idx = np.arange(len(poses))
        wins = _windows(poses[:, 0, :2], float(cfg["volume_mm"]), max(2, int(cfg["min_clip_s"] * fps)))
        for k, w in enumerate(wins):
            p, ix = poses[w], idx[w]
            keep = motion.drop_near_duplicates(p, float(cfg["dedup_mm"]))
            name = c["name"] if len(wins) == 1 else f"{c['name']}#{k}"
            pieces.append(dict(name=name, action=c["action"], performer=c["performer"],
                               parent=c["name"], poses=p[keep], index=ix[keep]))
    if not pieces:
        raise ValueError("studio: no clip is long enough after cutting to the capture volume")

    # split: by clip (every test_every-th source clip) or by performer; windows of one
    # source clip always share its split
    parents = list(dict.fromkeys(pc["parent"] for pc in pieces))
    if cfg["split_by"] == "performer":
        if not cfg["motion_dir"]:
            raise ValueError("studio: split_by 'performer' needs motion_dir (the default motion has one performer)")
        performers = sorted({pc["performer"] for pc in pieces})
        test_perf = set(cfg["test_performers"] or performers[-max(1, len(performers) // 4):])
        if len(performers) < 2:
            raise ValueError(f"studio: split_by 'performer' needs two performers, found {performers}")
        is_test = {pc["parent"]: pc["performer"] in test_perf for pc in pieces}
    elif cfg["split_by"] == "clip":
        k = int(cfg["test_every"])
        is_test = {p: (i % k) == k - 1 for i, p in enumerate(parents)}
        if not any(is_test.values()):
            is_test[parents[-1]] = True
        if all(is_test.values()):
            raise ValueError("studio: need at least two clips to split train and test")
    else:
        raise ValueError(f"studio: split_by must be 'clip' or 'performer', got {cfg['split_by']!r}")

    n_train, n_test = int(cfg["train_people"]), int(cfg["test_people"])
    if n_train < 1 or n_test < 1:
        raise ValueError("studio: need at least one train and one test person")
    subjects = [f"synth{i:02d}" for i in range(n_train + n_test)]
    test_people = list(range(n_train, n_train + n_test))
    rng = np.random.default_rng([seed, 1])
    people = []
    for i in range(n_train + n_test):
        # random streams (look, size, room): test people have their own, so the test set stays
        # the same whatever train_people is
        (look, size, room), j = ((2, 4, 3), i) if i < n_train else ((6, 7, 8), i - n_train)
        a = render.random_appearance(np.random.default_rng([seed, look, j]))
        scale = float(np.random.default_rng([seed, size, j]).uniform(*cfg["scale_range"]))
        people.append(dict(colours=a.colours, thickness=a.thickness, light=a.light, ambient=a.ambient,
                           scale=scale, room=[seed, room, j]))

    out = dict(poses=[], subject=[], clip=[], split=[], frame_index=[])
    clip_names, actions, clip_performer = [], {}, {}
    r = max(1, int(cfg["renders_per_train_clip"]))
    train_cursor = test_cursor = 0
    for pc in pieces:
        test = is_test[pc["parent"]]
        if test:
            who = [test_people[test_cursor % n_test]]
            test_cursor += 1
        else:
            who = [(train_cursor + j) % n_train for j in range(min(r, n_train))]
            train_cursor += 1
        for person in who:
            # each rendering: the person's own scale (stature), a random heading, a shift on the floor
            p = pc["poses"]
            centre = np.array([*p[:, 0, :2].mean(0), 0.0])
            yaw = rng.uniform(0, 2 * np.pi)
            scale = people[person]["scale"]
            shift = np.array([*rng.uniform(-1, 1, 2) * cfg["max_offset_mm"], 0.0])
            c, s = np.cos(yaw), np.sin(yaw)
            Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
            q = (p - centre) * scale @ Rz.T + shift
            name = f"{pc['name']}@{subjects[person]}"
            ci = len(clip_names)
            clip_names.append(name)
            actions[name] = pc["action"]
            clip_performer[name] = pc["performer"]
            n = len(q)
            out["poses"].append(q)
            out["subject"].append(np.full(n, person))
            out["clip"].append(np.full(n, ci))
            out["split"].append(np.full(n, int(test)))
            out["frame_index"].append(pc["index"])
    res = {k: np.concatenate(v) for k, v in out.items()}
    res.update(subjects=subjects, clips=clip_names, actions=actions, clip_performer=clip_performer,
               people=people, licence=licence, source=source, fps=fps,
               performers=sorted({pc["performer"] for pc in pieces}))
    return res


def _rig(cfg: dict) -> Cameras:
    opts = dict(cfg["rig_options"] or {})
    return rigs.make_rig(cfg["rig"], int(cfg["n_views"]), int(cfg["rig_seed"]), **opts)


def _arr(out: zarr.Group, name: str, data: np.ndarray, dims: tuple[str, ...], chunks=None):
    a = out.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks or data.shape,
                         dimension_names=dims, overwrite=True)
    a[...] = data
    return a


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


# from this many chunks of images on, they render in worker processes (below, starting them
# costs more than it saves)
PROCESS_CHUNKS = 8
_SHARED: tuple = ()


def _render_setup(shared: tuple) -> None:
    """In each rendering process: what every chunk shares (cameras, backgrounds, settings)."""
    global _SHARED
    _SHARED = shared


def _render_chunk(args: tuple) -> tuple:
    """(f1, poses, views, boxes, appearance, background index, noise seeds) of a chunk ->
    (f1, images [n,S,S,3], visible [n,J]), with _render_setup's shared inputs."""
    f1, poses, vw, boxes, app, bg_index, noise = args
    cams, backgrounds, bg_scale, S, sigma = _SHARED
    imgs, vis = render.render_crops(poses, cams, vw, boxes, app, backgrounds, bg_index, bg_scale, S,
                                    noise_seed=noise, noise_sigma=sigma)
    return f1, imgs, vis


def build(cfg: dict, out: zarr.Group, progress: bool = True) -> None:
    """Write the dataset contract (docs/stores.md) for the studio into `out`.

    Resumable: images are written in chunks of `chunk` frames and counted in
    attrs['images_done']; a rerun with the same configuration continues from there, and
    every image depends only on (seed, frame, view), so the result is bit-identical."""
    cfg = with_defaults(cfg, DEFAULTS, "studio")
    S = int(cfg["crop_size"])
    chash = config_hash(cfg)
    resume = out.attrs.get("config_hash") == chash and "images" in out and "image_ok" in out
    fr = prepare_frames(cfg, progress)
    cams = _rig(cfg)
    poses = fr["poses"]
    F, V = len(poses), cams.V

    Xc = world_to_camera(poses[:, None], cams.R[None], cams.t[None])          # [F,V,J,3]
    uv = project(poses[:, None], cams.K[None], cams.R[None], cams.t[None], cams.dist[None])  # [F,V,J,2]
    if np.any(Xc[..., 2] <= 0):
        raise ValueError("studio: a joint falls behind a camera; the rig is too close to the volume")
    root = Xc[..., 0, 2]
    boxes = render.crop_boxes(uv, root, cams.K[None, :, 0, 0], margin=float(cfg["crop_margin"]))

    train = fr["split"] == 0
    mean_bone = motion.mean_bone_mm(poses[train])

    if not resume:
        # the hash is recorded last: a run killed before that rewrites everything
        out.attrs.update({"config_hash": None, "images_done": 0})
        _arr(out, "poses3d_world", poses.astype(np.float32), ("frame", "joint", "xyz"))
        _arr(out, "poses3d_cam", Xc.astype(np.float32), ("frame", "view", "joint", "xyz"))
        _arr(out, "crop_boxes", boxes.astype(np.float32), ("frame", "view", "box"))
        _arr(out, "rig", np.zeros(F, np.int16), ("frame",))
        for k in ("K", "R", "t", "dist", "size"):
            a = getattr(cams, k)[None].astype(np.float64)
            _arr(out, k, a, ("rig", "view") + {"K": ("row", "col"), "R": ("row", "col"), "t": ("xyz",),
                                               "dist": ("coef",), "size": ("wh",)}[k])
        for k in ("subject", "clip", "split"):
            _arr(out, k, fr[k].astype(np.int16), ("frame",))
        _arr(out, "frame_index", fr["frame_index"].astype(np.int32), ("frame",))
        kp = np.concatenate([uv, np.zeros((F, V, J, 1))], -1).astype(np.float32)
        _arr(out, "keypoints2d_gt", kp, ("frame", "view", "joint", "xyv"), chunks=(min(F, 4096), V, J, 3))
        out.create_array("images", shape=(F, V, S, S, 3), dtype=np.uint8, chunks=(int(cfg["chunk"]), 1, S, S, 3),
                         dimension_names=("frame", "view", "y", "x", "rgb"), overwrite=True)
        # every rendered crop is a picture (image_ok: the contract's flag for undecodable frames)
        _arr(out, "image_ok", np.ones((F, V), bool), ("frame", "view"))
        out.attrs.update({
            "dataset": "studio", "subjects": fr["subjects"], "clips": fr["clips"], "actions": fr["actions"],
            "fps": fr["fps"], "crop_size": S, "licence": fr["licence"], "source": fr["source"],
            "joints": list(JOINTS), "mean_bone_mm": mean_bone,
            "performers": fr["performers"], "clip_performer": fr["clip_performer"],
            "rig": {"kind": cfg["rig"], "n_views": V, "seed": int(cfg["rig_seed"]),
                    "options": cfg["rig_options"] or {}, "note": "one static rig (G = 1); cameras in K, R, t, dist, size"},
            "world": "Z up, millimetres, floor at z = 0",
            "frame_index_note": "resampled frame number at `fps` within the source recording or file",
            "split_note": ("clip split; the default motion is one CMU recording cut into temporally "
                           "disjoint segments (a gap dropped between them), each segment a clip"
                           if not cfg["motion_dir"] else f"split by {cfg['split_by']}"),
            "subjects_note": "synthetic people (appearance, build, scale, heading, room); test people never appear in train",
            "config": json.loads(json.dumps(cfg, default=str)),
        })
        out.attrs.update({"config_hash": chash, "images_done": 0})

    # --- images, chunk by chunk
    chunk = int(cfg["chunk"])
    done = int(out.attrs.get("images_done", 0))
    people = fr["people"]
    bg_scale = float(cfg["bg_scale"])
    n_people = len(people)
    backgrounds = np.stack([render.room_background(cams, v, np.random.default_rng(person["room"]), bg_scale)
                            for person in people for v in range(V)])
    slot = np.array([render.SLOTS.index(p[5]) for p in render.PARTS])
    colours = np.stack([p["colours"][slot] for p in people])          # [people,P,3]
    thick = np.array([p["thickness"] for p in people])
    light = np.stack([p["light"] for p in people])
    amb = np.array([p["ambient"] for p in people])
    kp_arr, img_arr = out["keypoints2d_gt"], out["images"]
    starts = range(done, F, chunk)

    def chunk_args(f0: int) -> tuple:
        f1 = min(F, f0 + chunk)
        fl = np.repeat(np.arange(f0, f1), V)
        vw = np.tile(np.arange(V), f1 - f0)
        who = fr["subject"][fl]
        app = dict(colours=colours[who], thickness=thick[who], light=light[who], ambient=amb[who])
        noise = (np.int64(cfg["seed"]) * 1_000_003 + fl * V + vw) if cfg["noise"] else None
        return f1, poses[fl], vw, boxes[fl, vw].astype(np.float64), app, who * V + vw, noise

    # the rendering (numpy on small arrays: it holds the GIL) runs in a process per core when
    # there are enough chunks to pay for starting them; each image depends only on its frame and
    # view, and the chunks are written in order, so images_done always counts a finished prefix
    shared = (cams, backgrounds, bg_scale, S, float(cfg["noise"]))
    workers = 1 if len(starts) < PROCESS_CHUNKS else None
    done_chunks = process_imap(_render_chunk, map(chunk_args, starts), workers, _render_setup, (shared,))
    for f0, (f1, imgs, vis) in zip(starts, tqdm(done_chunks, desc="render", disable=not progress,
                                                total=len(starts))):
        img_arr[f0:f1] = imgs.reshape(f1 - f0, V, S, S, 3)
        kp = kp_arr[f0:f1]
        kp[..., 2] = vis.reshape(f1 - f0, V, J)
        kp_arr[f0:f1] = kp
        out.attrs["images_done"] = f1
    out.attrs["complete"] = True
