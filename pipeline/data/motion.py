"""Motion capture: BVH and CMU ASF/AMC readers, forward kinematics, the 17-joint mapping.

Every reader returns a `Motion`: joint positions of the source skeleton in millimetres in
the project's world frame (Z up; mocap files are Y up, converted by (x, y, z) -> (x, -z, y),
a proper rotation, so no mirroring), plus the source frame rate. `to_h36m` maps a Motion onto
the 17 joints of pipeline/joints.py with a per-source table (documented in MAPPINGS).

Choices that apply to every source (stated once here):
- pelvis = midpoint of the two hip joints (Human3.6M's root lies between its hips; mocap
  roots sit a few centimetres above them);
- the head joint is the top of the head, neck/nose the top of the neck (chin/nose level);
- where a source has no joint there (Bandai Namco's Head has a zero-length end site), the
  point is placed along the joint's own rest offset, rotated with the joint ("tip").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..joints import JOINTS, J, bone_lengths  # noqa: F401  (bone_lengths: part of this module's API)

# Y-up mocap -> Z-up world: (x, y, z) -> (x, -z, y); det = +1
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])

# candidate units of BVH files (mm per file unit); the one giving a ~1.7 m figure is chosen
UNIT_CANDIDATES_MM = {"mm": 1.0, "cm": 10.0, "inch": 25.4, "cmu": 25.4 / 0.45, "m": 1000.0}


@dataclass
class Motion:
    """Joint positions of one clip. positions [F, N, 3] mm, world Z up; names [N]; fps.

    `tips` holds extra points named 'X:tip<k>' computed by FK (see module docstring).
    """

    positions: np.ndarray
    names: list[str]
    fps: float
    source: str = ""
    format: str = ""
    tips: dict[str, np.ndarray] = field(default_factory=dict)

    def point(self, name: str) -> np.ndarray:
        if name in self.tips:
            return self.tips[name]
        return self.positions[:, self.names.index(name)]


# ---------------------------------------------------------------- BVH

@dataclass
class BvhSkeleton:
    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray          # [N,3] file units
    channels: list[list[str]]    # per joint
    is_end: np.ndarray           # [N] bool (End Site)


def _parse_bvh(text: str, path: str) -> tuple[BvhSkeleton, np.ndarray, float]:
    tokens = text.split()
    names, parents, offsets, channels, is_end = [], [], [], [], []
    stack: list[int] = []
    i = 0
    pending = None
    try:
        while i < len(tokens):
            tok = tokens[i]
            if tok in ("ROOT", "JOINT"):
                pending = (tokens[i + 1], False)
                i += 2
            elif tok == "End":
                parent_name = names[stack[-1]] if stack else "root"
                pending = (f"{parent_name}_end", True)
                i += 2
            elif tok == "{":
                name, end = pending
                names.append(name)
                parents.append(stack[-1] if stack else -1)
                offsets.append(np.zeros(3))
                channels.append([])
                is_end.append(end)
                stack.append(len(names) - 1)
                i += 1
            elif tok == "}":
                stack.pop()
                i += 1
            elif tok == "OFFSET":
                offsets[stack[-1]] = np.array([float(v) for v in tokens[i + 1:i + 4]])
                i += 4
            elif tok == "CHANNELS":
                n = int(tokens[i + 1])
                channels[stack[-1]] = tokens[i + 2:i + 2 + n]
                i += 2 + n
            elif tok == "MOTION":
                break
            elif tok == "HIERARCHY":
                i += 1
            else:
                raise ValueError(f"unexpected token {tok!r}")
        # MOTION  Frames: F  Frame Time: dt  values...
        if tokens[i] != "MOTION" or tokens[i + 1] != "Frames:" or tokens[i + 3:i + 5] != ["Frame", "Time:"]:
            raise ValueError("missing MOTION header")
        F = int(tokens[i + 2])
        dt = float(tokens[i + 5])
        C = sum(len(c) for c in channels)
        values = np.asarray(tokens[i + 6:], dtype=np.float64)
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: not a readable BVH file ({e})") from None
    if values.size != F * C:
        raise ValueError(f"{path}: BVH declares {F} frames x {C} channels but holds {values.size} values")
    sk = BvhSkeleton(names, np.array(parents), np.array(offsets), channels, np.array(is_end))
    return sk, values.reshape(F, C), 1.0 / dt


def bvh_fk(sk: BvhSkeleton, values: np.ndarray, tips: list[tuple[str, float]] | None = None
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Forward kinematics. values [F, C] -> positions [F, N, 3] (file units, file axes).

    Rotation channels compose in the listed order (intrinsic: 'Zrotation Yrotation Xrotation'
    gives Rz·Ry·Rx). Position channels, where a joint has them, replace its OFFSET (the
    Bandai Namco files carry them on every joint). tips [(joint, k)]: the point
    joint + G_joint · (k · OFFSET_joint), returned in the second dict as 'joint:tip<k>'.
    """
    F = values.shape[0]
    N = len(sk.names)
    pos = np.zeros((F, N, 3))
    rot = np.zeros((F, N, 3, 3))
    col = 0
    for j in range(N):
        ch = sk.channels[j]
        local_t = np.broadcast_to(sk.offsets[j], (F, 3)).copy()
        order, angles = "", []
        for c in ch:
            v = values[:, col]
            col += 1
            axis = c[0].upper()
            if c[1:].lower() == "position":
                local_t[:, "XYZ".index(axis)] = v
            elif c[1:].lower() == "rotation":
                order += axis
                angles.append(v)
            else:
                raise ValueError(f"unknown BVH channel {c!r}")
        local_R = (Rotation.from_euler(order, np.stack(angles, 1), degrees=True).as_matrix()
                   if order else np.broadcast_to(np.eye(3), (F, 3, 3)))
        p = sk.parents[j]
        if p < 0:
            rot[:, j] = local_R
            pos[:, j] = local_t
        else:
            rot[:, j] = rot[:, p] @ local_R
            pos[:, j] = pos[:, p] + np.einsum("fij,fj->fi", rot[:, p], local_t)
    extra = {}
    for name, k in tips or []:
        j = sk.names.index(name)
        extra[f"{name}:tip{k:g}"] = pos[:, j] + np.einsum("fij,j->fi", rot[:, j], k * sk.offsets[j])
    return pos, extra


def _auto_unit(pos: np.ndarray) -> float:
    """mm per file unit: the candidate that makes the figure's vertical extent ~1.6 m."""
    extent = np.median(pos[..., 1].max(-1) - pos[..., 1].min(-1))
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("cannot infer units: the skeleton has no vertical extent")
    best = min(UNIT_CANDIDATES_MM.values(), key=lambda u: abs(np.log(extent * u / 1600.0)))
    return best


def read_bvh(path: str | Path, unit_mm: float | str = "auto") -> Motion:
    """Read a BVH file into a Motion (mm, Z up). unit_mm: mm per file unit, or 'auto'.

    Raises ValueError naming the file for unreadable content or a skeleton no mapping knows.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read BVH ({e})") from None
    sk, values, fps = _parse_bvh(text, str(path))
    sk.names = [_strip_ns(n) for n in sk.names]
    mapping_name = detect_mapping(sk.names, str(path))
    tips = MAPPINGS[mapping_name].get("tips", [])
    pos, extra = bvh_fk(sk, values, tips)
    unit = _auto_unit(pos) if unit_mm == "auto" else float(unit_mm)
    conv = lambda a: np.einsum("ij,...j->...i", Y_UP_TO_Z_UP, a) * unit  # noqa: E731
    return Motion(conv(pos), list(sk.names), fps, str(path), mapping_name,
                  {k: conv(v) for k, v in extra.items()})


def _strip_ns(name: str) -> str:
    """'mixamorig:LeftArm' -> 'LeftArm'."""
    return name.rsplit(":", 1)[-1]


# ---------------------------------------------------------------- ASF / AMC

def _asf_blocks(text: str) -> dict[str, str]:
    parts = re.split(r"^\s*:(\w+)", text, flags=re.M)
    return {parts[i].lower(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def read_asf_amc(asf_path: str | Path, amc_path: str | Path, fps: float = 120.0,
                 unit_mm: float | None = None) -> Motion:
    """Read a CMU ASF skeleton and AMC motion into a Motion of bone END points (mm, Z up).

    ASF semantics (Acclaim): a bone's rotation is G_b = G_parent · C_b · M_b · C_b⁻¹ with
    C_b from `axis` and M_b from the AMC degrees of freedom, both composed as Rz·Ry·Rx; its
    end point is parent_end + G_b · (direction · length). Positions are named after the
    bone whose end they are ('root' for the root). unit_mm: mm per file length unit;
    default 25.4 / `:units length` (CMU: lengths in inches times 0.45). CMU records at 120 fps.
    """
    asf_path, amc_path = Path(asf_path), Path(amc_path)
    try:
        blocks = _asf_blocks(asf_path.read_text())
    except OSError as e:
        raise ValueError(f"{asf_path}: cannot read ASF ({e})") from None
    if "bonedata" not in blocks or "hierarchy" not in blocks:
        raise ValueError(f"{asf_path}: not an ASF file (no :bonedata / :hierarchy section)")
    units = dict(re.findall(r"(\w+)\s+(\S+)", blocks.get("units", "")))
    deg = units.get("angle", "deg").lower().startswith("deg")
    if unit_mm is None:
        unit_mm = 25.4 / float(units.get("length", 1.0))

    bones: dict[str, dict] = {}
    for blk in re.findall(r"begin(.*?)end", blocks["bonedata"], flags=re.S):
        kv = {}
        for line in blk.strip().splitlines():
            f = line.split()
            if f:
                kv[f[0].lower()] = f[1:]
        name = kv["name"][0]
        ax = [float(v) for v in kv["axis"][:3]]
        order = kv["axis"][3].upper() if len(kv["axis"]) > 3 else "XYZ"
        direction = np.array([float(v) for v in kv["direction"]])
        # a unit vector in the format; files round it to 6 digits
        direction = direction / max(np.linalg.norm(direction), 1e-12)
        bones[name] = dict(direction=direction,
                           length=float(kv["length"][0]),
                           C=_euler(order, np.array(ax), deg),
                           dof=[d.lower() for d in kv.get("dof", [])])
    root = dict(re.findall(r"(\w+)\s+([^\n]+)", blocks.get("root", "")))
    root_order = root.get("order", "TX TY TZ RX RY RZ").split()
    root_axis = root.get("axis", "XYZ").strip().upper()
    root_C = _euler(root_axis, np.array([float(v) for v in root.get("orientation", "0 0 0").split()]), deg)

    parent: dict[str, str] = {}
    for line in blocks["hierarchy"].splitlines():
        f = line.split()
        if not f or f[0] in ("begin", "end"):
            continue
        for child in f[1:]:
            parent[child] = f[0]
    order_names = _topological(parent)

    frames = _parse_amc(amc_path)
    F = len(frames)
    if F == 0:
        raise ValueError(f"{amc_path}: AMC holds no frames")

    def dofs(name, want):
        return np.array([fr.get(name, [0.0] * want) for fr in frames], dtype=np.float64)

    rv = dofs("root", len(root_order))
    if rv.shape[1] != len(root_order):
        raise ValueError(f"{amc_path}: root has {rv.shape[1]} values, ASF order says {len(root_order)}")
    trans = np.zeros((F, 3))
    ang = {}
    for k, ch in enumerate(root_order):
        ch = ch.upper()
        if ch[0] == "T":
            trans[:, "XYZ".index(ch[1])] = rv[:, k]
        else:
            ang[ch[1]] = rv[:, k]
    G = {"root": root_C @ _euler_dof(ang, deg, F) @ root_C.T}
    P = {"root": trans}
    for name in order_names:
        if name == "root":
            continue
        if name not in bones:
            raise ValueError(f"{asf_path}: hierarchy names bone {name!r} that :bonedata lacks")
        b = bones[name]
        vals = dofs(name, len(b["dof"]))
        if vals.shape[1] != len(b["dof"]):
            raise ValueError(f"{amc_path}: bone {name!r} has {vals.shape[1]} values, ASF dof says {len(b['dof'])}")
        ang = {d[1].upper(): vals[:, k] for k, d in enumerate(b["dof"]) if d[0] == "r"}
        M = _euler_dof(ang, deg, F)
        G[name] = G[parent[name]] @ b["C"] @ M @ b["C"].T
        P[name] = P[parent[name]] + np.einsum("fij,j->fi", G[name], b["direction"] * b["length"])
    names = list(P)
    pos = np.stack([P[n] for n in names], axis=1)
    pos = np.einsum("ij,...j->...i", Y_UP_TO_Z_UP, pos) * unit_mm
    return Motion(pos, names, fps, f"{asf_path}+{amc_path.name}", "asf")


def _euler(order: str, angles: np.ndarray, deg: bool) -> np.ndarray:
    # Acclaim 'XYZ' = rotate about X, then Y, then Z (fixed axes) = Rz·Ry·Rx: scipy lowercase
    return Rotation.from_euler(order.lower(), angles, degrees=deg).as_matrix()


def _euler_dof(ang: dict[str, np.ndarray], deg: bool, F: int) -> np.ndarray:
    """Rz·Ry·Rx from per-axis angle arrays [F] (missing axes = 0) -> [F,3,3]."""
    a = np.stack([ang.get(ax, np.zeros(F)) for ax in "XYZ"], axis=1)
    return Rotation.from_euler("xyz", a, degrees=deg).as_matrix()


def _topological(parent: dict[str, str]) -> list[str]:
    out, seen = ["root"], {"root"}
    children: dict[str, list[str]] = {}
    for c, p in parent.items():
        children.setdefault(p, []).append(c)
    stack = list(reversed(children.get("root", [])))
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        out.append(n)
        stack.extend(reversed(children.get(n, [])))
    return out


def _parse_amc(path: Path) -> list[dict[str, list[float]]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read AMC ({e})") from None
    frames: list[dict[str, list[float]]] = []
    cur = None
    for ln, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s[0] in "#:":
            continue
        f = s.split()
        if len(f) == 1 and f[0].isdigit():
            cur = {}
            frames.append(cur)
            continue
        if cur is None:
            raise ValueError(f"{path}:{ln}: bone values before the first frame number")
        try:
            cur[f[0]] = [float(v) for v in f[1:]]
        except ValueError:
            raise ValueError(f"{path}:{ln}: non-numeric value in {s!r}") from None
    return frames


# ---------------------------------------------------------------- 17-joint mapping

# Per source: 17 joint -> a source point name, ("mid", a, b) or a "X:tip<k>" name.
# ASF (CMU Acclaim): points are bone ENDS: hip = end of hipjoint, knee = end of femur,
# ankle = end of tibia, spine = end of lowerback (~21 cm above the pelvis), thorax = end of
# lowerneck (shoulder height, as Human3.6M's thorax), neck/nose = end of upperneck, head =
# end of head (top),
# shoulder = end of clavicle, elbow = end of humerus, wrist = end of radius.
# CMU BVH (bvh11 / Acclaim-derived names): the same points, as joint ORIGINS.
# Bandai Namco: spine = Spine, thorax = Neck, neck/nose and head along the Head joint's
# rest offset (1x and 2.8x its 6.5 cm), shoulder = UpperArm, elbow = LowerArm, wrist = Hand.
# cgspeed / Mixamo naming: spine = Spine1, thorax = Neck, neck/nose = Head, head = HeadTop_End
# or the Head end site.
_LIMBS = ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")


def _sided(table: dict[str, tuple[str, str]]) -> dict:
    out = {}
    for part, (lname, rname) in table.items():
        out[f"l_{part}"], out[f"r_{part}"] = lname, rname
    return out


MAPPINGS: dict[str, dict] = {
    "asf": {
        "joints": {
            "pelvis": ("mid", "lhipjoint", "rhipjoint"), "spine": "lowerback", "thorax": "lowerneck",
            "neck": "upperneck", "head": "head",
            **_sided({"hip": ("lhipjoint", "rhipjoint"), "knee": ("lfemur", "rfemur"),
                      "ankle": ("ltibia", "rtibia"), "shoulder": ("lclavicle", "rclavicle"),
                      "elbow": ("lhumerus", "rhumerus"), "wrist": ("lradius", "rradius")}),
        },
    },
    "cmu_bvh": {
        "joints": {
            "pelvis": ("mid", "LeftHip", "RightHip"), "spine": "Chest", "thorax": "Neck",
            "neck": "Head", "head": "Head_end",
            **_sided({"hip": ("LeftHip", "RightHip"), "knee": ("LeftKnee", "RightKnee"),
                      "ankle": ("LeftAnkle", "RightAnkle"), "shoulder": ("LeftShoulder", "RightShoulder"),
                      "elbow": ("LeftElbow", "RightElbow"), "wrist": ("LeftWrist", "RightWrist")}),
        },
    },
    "bandai_namco": {
        "joints": {
            "pelvis": ("mid", "UpperLeg_L", "UpperLeg_R"), "spine": "Spine", "thorax": "Neck",
            "neck": "Head:tip1", "head": "Head:tip2.8",
            **_sided({"hip": ("UpperLeg_L", "UpperLeg_R"), "knee": ("LowerLeg_L", "LowerLeg_R"),
                      "ankle": ("Foot_L", "Foot_R"), "shoulder": ("UpperArm_L", "UpperArm_R"),
                      "elbow": ("LowerArm_L", "LowerArm_R"), "wrist": ("Hand_L", "Hand_R")}),
        },
        "tips": [("Head", 1.0), ("Head", 2.8)],
    },
    "mixamo": {
        "joints": {
            "pelvis": ("mid", "LeftUpLeg", "RightUpLeg"), "spine": "Spine1", "thorax": "Neck",
            "neck": "Head", "head": "Head_end",
            **_sided({"hip": ("LeftUpLeg", "RightUpLeg"), "knee": ("LeftLeg", "RightLeg"),
                      "ankle": ("LeftFoot", "RightFoot"), "shoulder": ("LeftArm", "RightArm"),
                      "elbow": ("LeftForeArm", "RightForeArm"), "wrist": ("LeftHand", "RightHand")}),
        },
    },
}
# every mapping covers the 17 joints exactly
for _m in MAPPINGS.values():
    assert set(_m["joints"]) == set(JOINTS), sorted(set(JOINTS) ^ set(_m["joints"]))


def _required(mapping: dict) -> set[str]:
    req = set()
    for v in mapping["joints"].values():
        for n in (v[1:] if isinstance(v, tuple) else (v,)):
            req.add(n.split(":tip")[0])
    return req


def detect_mapping(names: list[str], path: str = "") -> str:
    """The mapping whose joint names the skeleton has; ValueError naming the file otherwise."""
    have = set(names)
    for key, m in MAPPINGS.items():
        if key != "asf" and _required(m) <= have:
            return key
    best = min((k for k in MAPPINGS if k != "asf"), key=lambda k: len(_required(MAPPINGS[k]) - have))
    missing = sorted(_required(MAPPINGS[best]) - have)
    raise ValueError(f"{path}: unknown skeleton: none of the joint mappings {sorted(MAPPINGS)} fits "
                     f"its joint names {sorted(have)}; closest is {best!r}, which lacks {missing}")


def to_h36m(m: Motion) -> np.ndarray:
    """Map a Motion onto the 17 joints (pipeline/joints.py order). Returns [F, 17, 3] mm."""
    table = MAPPINGS[m.format]["joints"]
    out = np.empty((m.positions.shape[0], J, 3))
    for j, name in enumerate(JOINTS):
        spec = table[name]
        try:
            if isinstance(spec, tuple):
                out[:, j] = 0.5 * (m.point(spec[1]) + m.point(spec[2]))
            else:
                out[:, j] = m.point(spec)
        except (ValueError, KeyError):
            raise ValueError(f"{m.source}: mapping {m.format!r} needs point {spec!r}, which the file lacks") from None
    return out


def load_clip(path: str | Path, unit_mm: float | str = "auto") -> tuple[np.ndarray, float]:
    """BVH file -> (poses [F,17,3] mm world Z-up, fps)."""
    m = read_bvh(path, unit_mm)
    return to_h36m(m), m.fps


# ---------------------------------------------------------------- processing

def resample(poses: np.ndarray, fps_in: float, fps_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample poses [F,J,3] from fps_in to fps_out by linear interpolation in time.

    Returns (poses [F',J,3], source times in frames [F']). When fps_in is an integer
    multiple of fps_out this picks every n-th frame exactly.
    """
    if fps_out <= 0 or fps_in <= 0:
        raise ValueError(f"resample: fps must be positive (got {fps_in} -> {fps_out})")
    F = poses.shape[0]
    src = np.arange(0, (F - 1) + 1e-9, fps_in / fps_out)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, F - 1)
    w = (src - i0)[:, None, None]
    return poses[i0] * (1 - w) + poses[i1] * w, src


def drop_near_duplicates(poses: np.ndarray, threshold_mm: float) -> np.ndarray:
    """Indices of frames to keep: a frame is kept when some joint of its root-relative pose
    moved more than threshold_mm from the last KEPT frame (greedy, in time order).
    poses [F,J,3] -> keep [F'] int."""
    if threshold_mm <= 0 or len(poses) == 0:
        return np.arange(len(poses))
    rel = poses - poses[:, :1]
    keep = [0]
    last = rel[0]
    for f in range(1, len(rel)):
        if np.max(np.linalg.norm(rel[f] - last, axis=-1)) > threshold_mm:
            keep.append(f)
            last = rel[f]
    return np.asarray(keep)


def split_segments(F: int, n_segments: int, gap: int) -> list[np.ndarray]:
    """Cut frames 0..F-1 into n_segments temporally disjoint runs separated by `gap` frames
    (the gap frames are dropped so neighbouring segments share no near-identical poses)."""
    usable = F - gap * (n_segments - 1)
    if n_segments < 1 or usable < n_segments:
        raise ValueError(f"split_segments: {F} frames cannot hold {n_segments} segments with gap {gap}")
    edges = np.linspace(0, usable, n_segments + 1).round().astype(int)
    return [np.arange(edges[i], edges[i + 1]) + i * gap for i in range(n_segments)]


def mean_bone_mm(poses: np.ndarray) -> float:
    """Mean length over the 16 bones and all frames. poses [F,J,3] mm."""
    return float(np.nanmean(bone_lengths(poses)))
