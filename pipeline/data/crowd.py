"""Footage of several people for a rig: walkers crossing the subject, seen as a 2D detector sees
them (noise, gross errors, joints hidden or taken from the person in front), written as a
Pose2Sim project of OpenPose JSON files. For tests and benchmarks of cross-view association
and calibration from people (pipeline/geometry/people.py) with known truth.

- `walker`: a procedural walking person (17 joints, mm, Z up): pelvis along a straight line,
  legs and arms swinging in antiphase; no motion capture needed.
- `place_walk`: a motion clip (e.g. pipeline/data/motion.py) turned and moved to cross a point.
- `project_people`: world people [P,F,J,3] into a rig (pipeline/camera.py's model).
- `occlusion`: joints of a person hidden behind a nearer person's limbs (capsules of
  `radius_mm` around the bones, projected).
- `detections`: the projected people as detections: Gaussian noise, a share of gross errors,
  hidden joints dropped or (share `mix`) taken from the person in front, people shuffled in
  each frame's list as a detector lists them; returns the detections and the truth.
- `write_project`: a Pose2Sim project folder (calibration TOML, pose/<cam>_json/ with OpenPose
  BODY_25B files) and the truth beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import camera
from ..joints import INDEX, J, PARENTS

__all__ = ["walker", "place_walk", "project_people", "occlusion", "detections", "to_body25b", "write_project",
           "studio_crowd"]

BONES = [(j, int(PARENTS[j])) for j in range(J) if PARENTS[j] >= 0]
# 17 joints -> BODY_25B slots (the importer derives pelvis, spine and thorax from these)
_SLOTS = {"r_hip": "r_hip", "r_knee": "r_knee", "r_ankle": "r_ankle", "l_hip": "l_hip", "l_knee": "l_knee",
          "l_ankle": "l_ankle", "neck": "nose", "head": "head_top", "l_shoulder": "l_shoulder",
          "l_elbow": "l_elbow", "l_wrist": "l_wrist", "r_shoulder": "r_shoulder", "r_elbow": "r_elbow",
          "r_wrist": "r_wrist"}


def walker(F: int, start_xy, end_xy, fps: float = 60.0, height_mm: float = 1750.0, phase: float = 0.0,
           cadence_hz: float = 0.9) -> np.ndarray:
    """A person walking from start_xy to end_xy (mm, on the floor z = 0) in F frames.
    -> poses [F,J,3] mm, Z up, in pipeline/joints.py's order. Segment lengths scale with
    height_mm; the hips flex ±25°, the knees bend up to 40° in swing, the arms swing ±20° in
    antiphase with the legs, one stride per 1 / cadence_hz seconds."""
    s = height_mm / 1750.0
    t = np.arange(F) / fps
    a = np.asarray(start_xy, float)
    b = np.asarray(end_xy, float)
    d = b - a
    fwd = np.array([*(d / max(np.linalg.norm(d), 1e-9)), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    side = np.cross(up, fwd)  # the person's left
    w = 2 * np.pi * cadence_hz * t + phase
    pelvis = np.concatenate([a + np.outer(t / max(t[-1], 1e-9), d), np.full((F, 1), 930.0 * s)], 1)
    pelvis[:, 2] += 15.0 * s * np.cos(2 * w)
    out = np.zeros((F, J, 3))
    out[:, INDEX["pelvis"]] = pelvis
    thigh, shank, upper, fore = 440.0 * s, 430.0 * s, 290.0 * s, 260.0 * s

    def limb(top, swing, bend, l1, l2):
        d1 = np.cos(swing)[:, None] * -up + np.sin(swing)[:, None] * fwd
        knee = top + l1 * d1
        a2 = swing - bend
        d2 = np.cos(a2)[:, None] * -up + np.sin(a2)[:, None] * fwd
        return knee, knee + l2 * d2
    for sgn, (hip, knee, ankle, sh, el, wr) in ((1, ("l_hip", "l_knee", "l_ankle", "l_shoulder", "l_elbow", "l_wrist")),
                                                (-1, ("r_hip", "r_knee", "r_ankle", "r_shoulder", "r_elbow", "r_wrist"))):
        ph = w if sgn > 0 else w + np.pi
        hp = pelvis + sgn * 100.0 * s * side
        out[:, INDEX[hip]] = hp
        swing = np.radians(25.0) * np.sin(ph)
        bend = np.radians(40.0) * np.clip(np.sin(ph + np.pi / 2), 0, None)
        out[:, INDEX[knee]], out[:, INDEX[ankle]] = limb(hp, swing, bend, thigh, shank)
        thorax = pelvis + 520.0 * s * up
        shp = thorax + sgn * 180.0 * s * side
        out[:, INDEX[sh]] = shp
        arm = -np.radians(20.0) * np.sin(ph)
        out[:, INDEX[el]], out[:, INDEX[wr]] = limb(shp, arm, -np.radians(15.0) * np.ones(F), upper, fore)
    out[:, INDEX["spine"]] = pelvis + 260.0 * s * up
    out[:, INDEX["thorax"]] = pelvis + 520.0 * s * up
    out[:, INDEX["neck"]] = pelvis + 650.0 * s * up + 60.0 * s * fwd
    out[:, INDEX["head"]] = pelvis + 820.0 * s * up
    return out


def place_walk(poses: np.ndarray, through_xy, heading_deg: float, mid: int | None = None,
               floor_mm: float = 0.0) -> np.ndarray:
    """Motion poses [F,J,3] (Z up) turned about the vertical so their overall travel points
    along heading_deg, moved so the pelvis passes through_xy at frame `mid` (default the middle),
    the lowest ankles on floor_mm. -> [F,J,3]."""
    F = len(poses)
    mid = F // 2 if mid is None else mid
    d = poses[-1, 0, :2] - poses[0, 0, :2]
    yaw0 = np.arctan2(d[1], d[0]) if np.linalg.norm(d) > 100 else 0.0
    a = np.radians(heading_deg) - yaw0
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    q = poses @ Rz.T
    q[..., :2] += np.asarray(through_xy, float) - q[mid, 0, :2]
    q[..., 2] += floor_mm - np.nanpercentile(q[:, [INDEX["l_ankle"], INDEX["r_ankle"]], 2], 2)
    return q


def project_people(X: np.ndarray, cams: camera.Cameras) -> tuple[np.ndarray, np.ndarray]:
    """World people X [P,F,J,3] mm -> pixels [P,F,V,J,2] and depths [P,F,V,J] (camera z, mm)."""
    Xc = np.einsum("vab,pfjb->pfvja", cams.R, X) + cams.t[None, None, :, None, :]
    xn = Xc[..., :2] / Xc[..., 2:3]
    xd = camera.distort(xn, np.broadcast_to(cams.dist[None, None], xn.shape[:-2] + (5,)))
    uv = np.einsum("vab,pfvjb->pfvja", cams.K[:, :2, :2], xd) + cams.K[None, None, :, None, :2, 2]
    return uv, Xc[..., 2]


def _segment_distance(p, a, b):
    ab = b - a
    t = np.clip(np.sum((p - a) * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-9), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def occlusion(uv: np.ndarray, depth: np.ndarray, focal: np.ndarray, radius_mm: float = 90.0):
    """Joints hidden behind a nearer person. uv [P,F,V,J,2], depth [P,F,V,J], focal [V] px.
    A joint of person p is hidden where it lies within radius_mm (projected at the other's
    depth) of a bone of a person q nearer to the camera (median depth). -> hidden [P,F,V,J]
    bool, by [P,F,V,J] the index of the person in front (-1)."""
    P = uv.shape[0]
    hidden = np.zeros(uv.shape[:-1], bool)
    by = np.full(uv.shape[:-1], -1, np.int64)
    with np.errstate(invalid="ignore"):
        zp = np.nanmedian(np.where(depth > 0, depth, np.nan), -1)  # [P,F,V]
    a_idx = [c for c, _ in BONES]
    b_idx = [p for _, p in BONES]
    for p in range(P):
        for q in range(P):
            if p == q:
                continue
            nearer = zp[q] < zp[p]
            d = _segment_distance(uv[p][..., :, None, :], uv[q][..., a_idx, :][..., None, :, :],
                                  uv[q][..., b_idx, :][..., None, :, :])  # [F,V,J,B]
            with np.errstate(invalid="ignore"):
                r = radius_mm * focal[None, :, None] / zp[q][..., None]
                hit = (np.nan_to_num(np.min(np.where(np.isfinite(d), d, np.inf), -1), nan=np.inf) < r)
            hit &= nearer[..., None] & np.isfinite(depth[p]) & (depth[p] > 0)
            by[p][hit & ~hidden[p]] = q
            hidden[p] |= hit
    return hidden, by


def detections(uv: np.ndarray, depth: np.ndarray, cams: camera.Cameras, seed: int = 0, sigma_px: float = 2.0,
               gross: float = 0.02, gross_px: float = 30.0, mix: float = 0.2, min_joints: int = 5,
               keep: np.ndarray | None = None):
    """Projected people as a detector reports them. uv [P,F,V,J,2], depth [P,F,V,J].

    Gaussian noise sigma_px (a share `gross` of joints off by gross_px), confidence in
    [0.4, 0.9]; joints outside the image or behind the camera are missing; a hidden joint
    (occlusion) is missing, or with probability `mix` placed at the joint of the person in
    front (a detector's limbs of the wrong person); a person with fewer than min_joints joints
    is not detected. keep [P,F,V,J,2] optional: positions (with their own errors) used as they
    are for some people (NaN rows: project). Each frame's people are shuffled.
    -> kp [F,V,M,J,3] (NaN padding), truth [F,V,M] (-1 none): whom each detection shows, the
    person most of its joints come from (mostly the person in front, for a hidden person's
    detection made of the front one's limbs)."""
    rng = np.random.default_rng(seed)
    P, F, V = uv.shape[:3]
    hidden, by = occlusion(uv, depth, 0.5 * (cams.K[:, 0, 0] + cams.K[:, 1, 1]))
    noise = rng.normal(0, sigma_px, uv.shape)
    g = rng.random(uv.shape[:-1]) < gross
    noise[g] = rng.normal(0, gross_px, (int(g.sum()), 2))
    det = uv + noise
    if keep is not None:
        own = np.all(np.isfinite(keep), -1)
        det = np.where(own[..., None], keep, det)
    conf = rng.uniform(0.4, 0.9, uv.shape[:-1])
    size = cams.size[None, None, :, None, :]
    inside = np.all((det >= 0) & (det < size), -1) & (depth > 0)
    mixed = hidden & (rng.random(hidden.shape) < mix) & (by >= 0)
    src = np.where(mixed, by, 0)
    pi, fi, vi, ji = np.nonzero(mixed)
    det[pi, fi, vi, ji] = det[src[pi, fi, vi, ji], fi, vi, ji]
    ok = inside & (~hidden | mixed)
    kp3 = np.concatenate([det, conf[..., None]], -1)
    kp3[~ok] = np.nan
    seen = np.isfinite(kp3[..., 0]).sum(-1) >= min_joints  # [P,F,V]
    # whom a detection shows: the person most of its joints come from (a hidden person's
    # detection made mostly of the joints of the one in front shows the one in front)
    owner = np.where(mixed, by, np.arange(P)[:, None, None, None])
    owner = np.where(ok, owner, -1)
    counts = np.stack([(owner == q).sum(-1) for q in range(P)], -1)  # [P,F,V,P]
    shows = counts.argmax(-1)
    M = max(int(seen.sum(0).max()), 1)
    kp = np.full((F, V, M, J, 3), np.nan)
    truth = np.full((F, V, M), -1, np.int64)
    for f in range(F):
        for v in range(V):
            who = rng.permutation(np.flatnonzero(seen[:, f, v]))
            kp[f, v, :len(who)] = kp3[who, f, v]
            truth[f, v, :len(who)] = shows[who, f, v]
    return kp, truth


def to_body25b(kp17: np.ndarray) -> np.ndarray:
    """[...,17,3] (x, y, confidence; NaN missing) -> OpenPose BODY_25B [...,25,3] (zeros missing)."""
    from .openpose import LAYOUTS
    names = LAYOUTS["body25b"]
    out = np.zeros(kp17.shape[:-2] + (25, 3))
    for j, slot in _SLOTS.items():
        out[..., names.index(slot), :] = kp17[..., INDEX[j], :]
    out[~np.all(np.isfinite(out), -1)] = 0.0
    return out


def write_project(root, names: list[str], cams: camera.Cameras, kp: np.ndarray, truth: np.ndarray | None = None,
                  offsets=None) -> Path:
    """A Pose2Sim project: calibration/calibration.toml (cams, mm -> m) and pose/<name>_json/
    <name>.<frame>.json (OpenPose BODY_25B, every detection of kp [F,V,M,J,3] in order).
    offsets [V]: view v's file n holds frame n - offsets[v] of kp, i.e. its file f + offsets[v]
    shows frame f (a view out of sync by that many frames in pipeline.geometry.sync's
    convention); files outside the recording are not written. truth [F,V,M] ->
    truth.json beside. -> root."""
    from .calibration import write_toml_calibration
    root = Path(root)
    (root / "calibration").mkdir(parents=True, exist_ok=True)
    write_toml_calibration(root / "calibration" / "calibration.toml", names, cams)
    F, V = kp.shape[:2]
    off = np.zeros(V, np.int64) if offsets is None else np.asarray(offsets, np.int64)
    raw = to_body25b(kp)
    for v, n in enumerate(names):
        d = root / "pose" / f"{n}_json"
        d.mkdir(parents=True, exist_ok=True)
        for f in range(F):
            src = f - off[v]
            if not 0 <= src < F:
                continue
            people = [{"person_id": [-1], "pose_keypoints_2d": np.round(raw[src, v, m], 3).ravel().tolist()}
                      for m in range(kp.shape[2]) if np.isfinite(kp[src, v, m, :, 0]).any()]
            (d / f"{n}.{f:04d}.json").write_text(json.dumps({"version": 1.3, "people": people}))
    if truth is not None:
        (root / "truth.json").write_text(json.dumps({"truth": truth.tolist(), "offsets": off.tolist()}))
    return root


def studio_crowd(n_people: int = 3, F: int = 120, n_views: int = 4, seed: int = 0, fps: float = 30.0, **kw):
    """A synthetic studio: person 0 (the subject) walks a short line through the middle; the
    others cross the capture area on straight lines that pass 0.7-1.3 m from the middle, in
    front of or behind the subject as the cameras see it (none walks through another: their
    closest approaches to the middle fall at different times). A seeded random rig
    (pipeline/data/rigs.py). -> (cams, poses [P,F,J,3], kp [F,V,M,J,3], truth [F,V,M]); kw go
    to `detections`."""
    from .rigs import random_rig
    rng = np.random.default_rng(seed)
    cams = random_rig(seed, n_views, image_size=(1280, 1024))
    people = [walker(F, (-500.0, -150.0), (500.0, 150.0), fps, 1750.0)]
    for p in range(1, n_people):
        ang = rng.uniform(0, 2 * np.pi)
        u = np.array([np.cos(ang), np.sin(ang)])
        n = np.array([-u[1], u[0]]) * rng.choice([-1, 1]) * (700.0 + 600.0 * (p - 1) / max(n_people - 2, 1))
        span = 1.4 * F / fps * 1000.0  # 1.4 m/s
        when = (p / n_people - 0.5) * span  # the closest approach falls at a different time for each
        a, b = n - u * (span / 2 + when), n + u * (span / 2 - when)
        people.append(walker(F, a, b, fps, rng.uniform(1550, 1900), phase=rng.uniform(0, 6.3)))
    X = np.stack(people)
    uv, depth = project_people(X, cams)
    kp, truth = detections(uv, depth, cams, seed=seed, **kw)
    return cams, X, kp, truth
