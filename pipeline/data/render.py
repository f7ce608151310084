"""A vectorised renderer of a human figure, drawn straight into each view's crop.

The body is a set of primitives around the 17 joints: tapered capsules for limbs, torso and
neck, spheres for the head, face, hands and feet. Each is projected into the crop and
shaded as a solid of revolution (depth and normal from the distance to its projected axis);
a per-pixel z-buffer over the primitives gives the depth order. Left and right limbs wear
different colours (two-tone clothing) so that a network can tell them apart. The room
behind the figure (a tiled floor on z = 0 and a cylindrical wall with panels and posters) is
drawn once per camera from its calibration, so every view of a session sees one consistent
scene, and is warped into each crop.

Per-joint visibility uses the same surfaces: a joint is hidden when the front-most surface at its
image position belongs to a primitive that does not contain it and lies in front of the
joint (the ray to the joint meets another body part first), or when it projects outside the original image.

Crop convention (docs/stores.md): crop pixel (u, v) <-> original (x0 + u·w/S, y0 + v·h/S);
pixel centres at integer coordinates, as OpenCV's warpAffine.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..camera import Cameras, project_camera, world_to_camera
from ..joints import INDEX, J

# ------------------------------------------------------------------ the body

# name, joint a, joint b (or a derived point), radius at a, radius at b (mm), colour slot,
# joints the primitive contains (a contained joint is never hidden by it)
PARTS: tuple[tuple, ...] = (
    ("torso_low", "pelvis", "spine", 125, 120, "top", ("pelvis", "spine", "l_hip", "r_hip")),
    ("torso_up", "spine", "thorax", 120, 100, "top", ("spine", "thorax", "l_shoulder", "r_shoulder")),
    ("hips", "l_hip", "r_hip", 105, 105, "bottom", ("pelvis", "l_hip", "r_hip")),
    ("chest", "l_shoulder", "r_shoulder", 70, 70, "top", ("thorax", "l_shoulder", "r_shoulder")),
    ("neck", "thorax", "neck", 50, 48, "skin", ("thorax", "neck")),
    ("skull", "@head_c", "@head_c", 100, 100, "hair", ("neck", "head")),
    ("face", "@face_c", "@face_c", 78, 78, "skin", ("neck", "head")),
    ("l_upper_arm", "l_shoulder", "l_elbow", 50, 42, "top_l", ("l_shoulder", "l_elbow")),
    ("l_forearm", "l_elbow", "l_wrist", 40, 32, "top_l", ("l_elbow", "l_wrist")),
    ("l_hand", "@l_hand", "@l_hand", 45, 45, "skin", ("l_wrist",)),
    ("r_upper_arm", "r_shoulder", "r_elbow", 50, 42, "top_r", ("r_shoulder", "r_elbow")),
    ("r_forearm", "r_elbow", "r_wrist", 40, 32, "top_r", ("r_elbow", "r_wrist")),
    ("r_hand", "@r_hand", "@r_hand", 45, 45, "skin", ("r_wrist",)),
    ("l_thigh", "l_hip", "l_knee", 80, 58, "bottom_l", ("l_hip", "l_knee", "pelvis")),
    ("l_shin", "l_knee", "l_ankle", 55, 42, "bottom_l", ("l_knee", "l_ankle")),
    ("l_foot", "l_ankle", "@l_toe", 42, 36, "shoe_l", ("l_ankle",)),
    ("r_thigh", "r_hip", "r_knee", 80, 58, "bottom_r", ("r_hip", "r_knee", "pelvis")),
    ("r_shin", "r_knee", "r_ankle", 55, 42, "bottom_r", ("r_knee", "r_ankle")),
    ("r_foot", "r_ankle", "@r_toe", 42, 36, "shoe_r", ("r_ankle",)),
)
P = len(PARTS)
SLOTS = ("top", "top_l", "top_r", "bottom", "bottom_l", "bottom_r", "skin", "hair", "shoe_l", "shoe_r")
DERIVED = ("head_c", "face_c", "l_hand", "r_hand", "l_toe", "r_toe")

# contains[p, j]: part p contains joint j
CONTAINS = np.zeros((P, J), dtype=bool)
for _p, _part in enumerate(PARTS):
    for _name in _part[6]:
        CONTAINS[_p, INDEX[_name]] = True


@dataclass(frozen=True)
class Appearance:
    """One synthetic person's look. colours [len(SLOTS), 3] in [0,1]; thickness scales the
    radii (body build); light [3] unit vector towards the light (world); ambient in [0,1]."""

    colours: np.ndarray
    thickness: float
    light: np.ndarray
    ambient: float


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Random clothing colours (distinct left/right tones on sleeves, legs and shoes), skin,
    hair, build and lighting."""
    def hsv(h, s, v):
        rgb = cv2.cvtColor(np.uint8([[[h * 179, s * 255, v * 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
        return rgb / 255.0

    top_h, bottom_h = rng.uniform(0, 1, 2)
    accent_h = (top_h + rng.uniform(0.3, 0.7)) % 1.0
    top = hsv(top_h, rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95))
    bottom = hsv(bottom_h, rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.7))
    accent = hsv(accent_h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    # left limbs keep the garment colour, right limbs are mixed with an accent colour
    top_r = 0.35 * top + 0.65 * accent
    bottom_r = 0.35 * bottom + 0.65 * accent
    skin = hsv(rng.uniform(0.02, 0.08), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    hair = hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.45))
    shoe_l = hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.05, 0.3))
    shoe_r = hsv(accent_h, 0.9, 0.9)
    colours = np.stack([top, top, top_r, bottom, bottom, bottom_r, skin, hair, shoe_l, shoe_r])
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.deg2rad(25), np.deg2rad(80))
    light = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    return Appearance(colours, float(rng.uniform(0.85, 1.2)), light, float(rng.uniform(0.3, 0.55)))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def body_points(poses: np.ndarray) -> dict[str, np.ndarray]:
    """Derived points of the body (head and face centres, hands, toes). poses [...,J,3] mm,
    world Z up -> dict of [...,3]. The facing direction comes from the torso: forward =
    left × up (Z-up world; left = l_hip - r_hip + l_shoulder - r_shoulder)."""
    g = lambda n: poses[..., INDEX[n], :]  # noqa: E731
    up = _unit(g("thorax") - g("pelvis"))
    left = _unit(g("l_hip") - g("r_hip") + g("l_shoulder") - g("r_shoulder"))
    fwd = _unit(np.cross(left, up))
    head_axis = g("head") - g("neck")
    head_c = g("neck") + 0.55 * head_axis
    face_c = head_c + 45.0 * fwd - 0.1 * head_axis
    out = {"head_c": head_c, "face_c": face_c}
    for s in "lr":
        fore = g(f"{s}_wrist") - g(f"{s}_elbow")
        out[f"{s}_hand"] = g(f"{s}_wrist") + 0.3 * fore
        shin = _unit(g(f"{s}_knee") - g(f"{s}_ankle"))
        foot_dir = _unit(fwd - np.sum(fwd * shin, axis=-1, keepdims=True) * shin)
        out[f"{s}_toe"] = g(f"{s}_ankle") + 130.0 * foot_dir - 25.0 * shin
    return out


def part_geometry(poses: np.ndarray, thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Primitive end points and radii. poses [N,J,3] mm, thickness [N] ->
    A [N,P,3], B [N,P,3], radii [N,P,2] mm."""
    pts = body_points(poses)
    get = lambda n: pts[n[1:]] if n.startswith("@") else poses[:, INDEX[n]]  # noqa: E731
    A = np.stack([get(p[1]) for p in PARTS], axis=1)
    B = np.stack([get(p[2]) for p in PARTS], axis=1)
    radii = np.array([[p[3], p[4]] for p in PARTS], dtype=np.float64)[None] * thickness[:, None, None]
    # the head keeps its size whatever the build
    for name in ("skull", "face"):
        k = [p[0] for p in PARTS].index(name)
        radii[:, k] = radii[:, k] / thickness[:, None]
    return A, B, radii


# ------------------------------------------------------------------ surfaces

def _surfaces(q: np.ndarray, a: np.ndarray, b: np.ndarray, rho: np.ndarray, z: np.ndarray,
              r3: np.ndarray):
    """Front surfaces of the primitives at query points.

    q [N,Q,2] crop px; a, b [N,P,2] projected ends; rho [N,P,2] projected radii (px);
    z [N,P,2] depths of the ends (mm); r3 [N,P,2] radii (mm).
    Returns depth [N,P,Q] of the surface (valid where s < 1), s [N,P,Q] (distance to the
    axis over the local radius), rho_t [N,P,Q], the in-plane offset from the axis [N,P,Q,2]
    and h = sqrt(1 - s²) [N,P,Q]. Computed in the dtype of the inputs (float32 for images).
    """
    # x and y kept apart: reductions over a length-2 axis are slow in numpy
    ax, ay = a[..., 0, None], a[..., 1, None]                  # [N,P,1]
    abx, aby = b[..., 0, None] - ax, b[..., 1, None] - ay
    qx, qy = q[:, None, :, 0], q[:, None, :, 1]                # [N,1,Q]
    qax, qay = qx - ax, qy - ay                                # [N,P,Q]
    inv_L2 = 1.0 / (abx * abx + aby * aby + 1e-6)
    t = np.clip((qax * abx + qay * aby) * inv_L2, 0.0, 1.0)
    offx, offy = qax - t * abx, qay - t * aby
    rho_t = rho[..., :1] + t * (rho[..., 1:] - rho[..., :1])
    s = np.sqrt(offx * offx + offy * offy) / rho_t
    h = np.sqrt(np.clip(1.0 - s * s, 0.0, 1.0))
    depth = z[..., :1] + t * (z[..., 1:] - z[..., :1]) - (r3[..., :1] + t * (r3[..., 1:] - r3[..., :1])) * h
    off = (offx, offy)
    return depth, s, rho_t, off, h


@dataclass
class Projected:
    """Primitives and joints of N images, projected into their crops."""

    a: np.ndarray      # [N,P,2]
    b: np.ndarray      # [N,P,2]
    rho: np.ndarray    # [N,P,2]
    z: np.ndarray      # [N,P,2]
    r3: np.ndarray     # [N,P,2]
    joints: np.ndarray  # [N,J,2] crop px
    joints_z: np.ndarray  # [N,J]


def project_parts(poses: np.ndarray, thickness: np.ndarray, cams: Cameras, views: np.ndarray,
                  boxes: np.ndarray, S: int) -> Projected:
    """poses [N,J,3] world mm; thickness [N]; views [N] camera index; boxes [N,4] (x0,y0,w,h)."""
    A, B, radii = part_geometry(poses, thickness)
    R, t, K, dist = cams.R[views], cams.t[views], cams.K[views], cams.dist[views]
    X = np.concatenate([A, B, poses], axis=1)               # [N, 2P+J, 3]
    Xc = world_to_camera(X, R, t)
    uv = project_camera(Xc, K, dist)
    scale = S / boxes[:, 2]                                  # px of crop per original px
    crop = (uv - boxes[:, None, :2]) * scale[:, None, None]
    Z = Xc[..., 2]
    a, b, jt = crop[:, :P], crop[:, P:2 * P], crop[:, 2 * P:]
    za, zb = Z[:, :P], Z[:, P:2 * P]
    f = K[:, 0, 0][:, None] * scale[:, None]
    rho = np.stack([radii[..., 0] * f / za, radii[..., 1] * f / zb], axis=-1)
    return Projected(a, b, rho, np.stack([za, zb], -1), radii, jt, Z[:, 2 * P:])


def joint_visibility(pr: Projected, uv_orig: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Visible flags [N,J]: inside the original image (uv_orig [N,J,2], size [N,2] (w, h)),
    in front of the camera, and the front-most surface at the joint's image position belongs
    to a primitive that contains the joint, or lies behind the joint (the z-buffer's
    answer at that point: what the rendered pixel shows)."""
    depth, s, *_ = _surfaces(pr.joints, pr.a, pr.b, pr.rho, pr.z, pr.r3)   # [N,P,J]
    depth = np.where(s < 1.0, depth, np.inf)
    front = np.argmin(depth, axis=1)                                    # [N,J]
    front_z = np.take_along_axis(depth, front[:, None], 1)[:, 0]
    # hidden: the front-most surface at the joint is a foreign part, in front of the joint
    hides = ~CONTAINS.T[np.arange(J)[None], front] & (front_z < pr.joints_z)
    inside = ((uv_orig[..., 0] >= 0) & (uv_orig[..., 0] <= size[:, None, 0] - 1)
              & (uv_orig[..., 1] >= 0) & (uv_orig[..., 1] <= size[:, None, 1] - 1) & (pr.joints_z > 0))
    return inside & ~hides


def shade_figure(pr: Projected, colours: np.ndarray, light_cam: np.ndarray, ambient: np.ndarray,
                 S: int, aa: float = 0.7, return_depth: bool = False, tile: int | None = None
                 ) -> tuple[np.ndarray, ...]:
    """Rasterise N crops of size S. colours [N,P,3]; light_cam [N,3] unit vector towards the
    light in camera axes; ambient [N].

    The crop is cut into tiles of `tile` px (default 8; S when S is not a multiple); each tile
    evaluates only the primitives whose projected bounding box touches it, padded to the
    batch's largest such count. Culling is conservative, so the result equals tile = S.
    Returns rgb [N,S,S,3] float in [0,1], alpha [N,S,S] (coverage, anti-aliased at the
    silhouette) and ids [N,S,S] int (front-most primitive, -1 for background); with
    return_depth also the z-buffer [N,S,S] (mm, inf for background)."""
    N = pr.a.shape[0]
    tile = tile or 8
    if S % tile:
        tile = S
    T = S // tile
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731  (pixels need no float64)
    a, b, rho, z, r3 = (f32(x) for x in (pr.a, pr.b, pr.rho, pr.z, pr.r3))
    # which primitives can touch each tile: bounding boxes grown by radius + soft edge
    grow = rho.max(-1) + aa + 1.0
    lo, hi = np.minimum(a, b) - grow[..., None], np.maximum(a, b) + grow[..., None]   # [N,P,2]
    t0 = np.arange(T, dtype=np.float32) * tile
    t1 = t0 + tile - 1
    ox = (hi[..., None, 0] >= t0) & (lo[..., None, 0] <= t1)                         # [N,P,Tx]
    oy = (hi[..., None, 1] >= t0) & (lo[..., None, 1] <= t1)                         # [N,P,Ty]
    over = (oy[:, :, :, None] & ox[:, :, None, :]).reshape(N, P, T * T).transpose(0, 2, 1)  # [N,T²,P]
    pmax = max(1, int(over.sum(-1).max()))
    order = np.argsort(~over, axis=-1, kind="stable")[..., :pmax]                   # [N,T²,pmax]
    valid = np.take_along_axis(over, order, -1)
    n_idx = np.arange(N)[:, None, None]
    g = lambda x: x[n_idx, order].reshape(N * T * T, pmax, *x.shape[2:])  # noqa: E731
    # pixel centres of each tile [T², tile², 2]
    yy, xx = np.meshgrid(np.arange(tile, dtype=np.float32), np.arange(tile, dtype=np.float32), indexing="ij")
    ty, tx = np.meshgrid(t0, t0, indexing="ij")
    qx = (tx.reshape(-1, 1) + xx.reshape(1, -1))
    qy = (ty.reshape(-1, 1) + yy.reshape(1, -1))
    q = np.broadcast_to(np.stack([qx, qy], -1)[None], (N, T * T, tile * tile, 2)).reshape(N * T * T, tile * tile, 2)
    depth, s, rho_t, (offx, offy), h = _surfaces(q, g(a), g(b), g(rho), g(z), g(r3))
    soft = (s < 1.0 + aa / np.maximum(rho_t, 1e-6)) & valid.reshape(N * T * T, pmax, 1)
    depth = np.where(soft, depth, np.float32(np.inf))
    k = np.argmin(depth, axis=1)[:, None]                           # [NT²,1,tile²]
    take = lambda x: np.take_along_axis(x, k, 1)[:, 0]              # noqa: E731
    zbuf = take(depth)
    hit = np.isfinite(zbuf)
    s_w, rho_w, h_w = take(s), np.maximum(take(rho_t), 1e-6), take(h)
    # normal of a solid of revolution: in-plane offset over radius, and towards the camera
    nx, ny, nz = take(offx) / rho_w, take(offy) / rho_w, -h_w
    norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-9
    L = np.repeat(f32(light_cam), T * T, axis=0)
    lam = np.clip((nx * L[:, 0, None] + ny * L[:, 1, None] + nz * L[:, 2, None]) / norm, 0, 1)
    spec = lam ** 24 * 0.25
    amb = np.repeat(f32(ambient), T * T)[:, None]
    shade = amb + (1 - amb) * lam
    ids = np.take_along_axis(order.reshape(N * T * T, pmax), k[:, 0], 1)          # global part ids
    col = np.take_along_axis(np.repeat(f32(colours), T * T, axis=0), ids[..., None], 1)
    rgb = np.where(hit[..., None], np.clip(col * shade[..., None] + spec[..., None], 0, 1), 0)
    alpha = np.where(hit, np.clip((1.0 - s_w) * rho_w / aa + 0.5, 0, 1), 0.0)
    ids = np.where(hit, ids, -1)

    def untile(x):  # [N·T², tile², ...] -> [N, S, S, ...]
        x = x.reshape(N, T, T, tile, tile, *x.shape[2:])
        return np.swapaxes(x, 2, 3).reshape(N, S, S, *x.shape[5:])

    out = (untile(rgb), untile(alpha), untile(ids))
    if return_depth:
        out = out + (untile(zbuf),)
    return out


# ------------------------------------------------------------------ the room

def room_background(cams: Cameras, v: int, rng: np.random.Generator, scale: float = 0.25,
                    room_radius: float | None = None) -> np.ndarray:
    """The room as seen by camera v, at `scale` of its image size: uint8 [h', w', 3].

    A tiled floor on z = 0 and a cylindrical wall (radius room_radius, default 1.4 x the
    farthest camera) with vertical panels and a few posters; colours from rng (call it with
    the same seeded state for every view of a session so all views share one room)."""
    state = rng.bit_generator.state
    w, h = (cams.size[v] * scale).round().astype(int)
    u, vv = np.meshgrid((np.arange(w) + 0.5) / scale - 0.5, (np.arange(h) + 0.5) / scale - 0.5)
    Kinv = np.linalg.inv(cams.K[v])
    d_cam = np.einsum("ij,hwj->hwi", Kinv, np.stack([u, vv, np.ones_like(u)], -1))
    d = np.einsum("ji,hwj->hwi", cams.R[v], d_cam)          # world directions
    C = cams.centers[v]
    Rr = room_radius or 1.4 * np.max(np.linalg.norm(cams.centers[:, :2], axis=1))
    # each session's room: same draws for all views
    floor_a, floor_b, wall, trim = (rng.uniform(0.15, 0.85, 3) for _ in range(4))
    tile = rng.uniform(400, 900)
    n_post = 8
    post_th = rng.uniform(0, 2 * np.pi, n_post)
    post_z = rng.uniform(800, 2200, n_post)
    post_w = rng.uniform(0.08, 0.3, n_post)
    post_h = rng.uniform(300, 900, n_post)
    post_c = rng.uniform(0.05, 0.95, (n_post, 3))
    panel = rng.integers(12, 40)
    wall_h = rng.uniform(2600, 3400)
    # value-noise textures (plaster, worn floor), sampled by wall (angle, height) and floor (x, y)
    wall_tex = rng.uniform(0.8, 1.1, (12, 96)).astype(np.float32)
    floor_tex = rng.uniform(0.75, 1.1, (48, 48)).astype(np.float32)
    rng.bit_generator.state = state  # leave rng as the caller gave it: every view sees one room
    out = np.zeros((h, w, 3))
    # wall: |C_xy + λ d_xy| = Rr, the positive root
    dxy, cxy = d[..., :2], C[:2]
    A = np.sum(dxy * dxy, -1) + 1e-12
    Bq = 2 * np.sum(dxy * cxy, -1)
    Cq = np.sum(cxy * cxy) - Rr * Rr
    lam_w = (-Bq + np.sqrt(np.maximum(Bq * Bq - 4 * A * Cq, 0))) / (2 * A)
    Pw = C + lam_w[..., None] * d
    floor = d[..., 2] < 0
    lam_f = np.where(floor, -C[2] / np.where(floor, d[..., 2], -1), np.inf)
    floor &= lam_f < lam_w
    th = np.arctan2(Pw[..., 1], Pw[..., 0])
    stripe = 0.85 + 0.15 * (np.floor((th + np.pi) / (2 * np.pi) * panel) % 2)
    wall_rgb = wall[None, None] * stripe[..., None]
    wall_rgb = np.where((Pw[..., 2] < 150)[..., None] | (Pw[..., 2] > wall_h)[..., None], trim, wall_rgb)
    for k in range(n_post):
        dth = np.angle(np.exp(1j * (th - post_th[k])))
        m = (np.abs(dth) < post_w[k] / 2) & (np.abs(Pw[..., 2] - post_z[k]) < post_h[k] / 2)
        wall_rgb[m] = post_c[k] * (0.8 + 0.2 * np.sin(Pw[m][:, 2] / 40.0))[:, None]
    # wall texture: 96 cells around, 12 up to 3.6 m (wraps around the angle)
    mx = ((th + np.pi) / (2 * np.pi) * 96).astype(np.float32)
    my = np.clip(Pw[..., 2] / 300.0, 0, 11).astype(np.float32)
    wall_rgb = wall_rgb * cv2.remap(wall_tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)[..., None]
    Pf = C + np.where(np.isfinite(lam_f), lam_f, 0)[..., None] * d
    checker = ((np.floor(Pf[..., 0] / tile) + np.floor(Pf[..., 1] / tile)) % 2)[..., None]
    floor_rgb = checker * floor_a + (1 - checker) * floor_b
    fx = np.clip(Pf[..., 0] / 300.0 + 24, 0, 47).astype(np.float32)
    fy = np.clip(Pf[..., 1] / 300.0 + 24, 0, 47).astype(np.float32)
    floor_rgb = floor_rgb * cv2.remap(floor_tex, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)[..., None]
    out = np.where(floor[..., None], floor_rgb, wall_rgb)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def warp_background(bg: np.ndarray, box: np.ndarray, bg_scale: float, S: int) -> np.ndarray:
    """The part of a background (at bg_scale of the original image) under crop box
    (x0,y0,w,h), resampled to S x S; black outside the original image."""
    s = box[2] / S
    # crop (u,v) -> original (x0 + u s, y0 + v s) -> bg ((x+0.5) bg_scale - 0.5)
    M = np.array([[s * bg_scale, 0, (box[0] + 0.5) * bg_scale - 0.5],
                  [0, s * bg_scale, (box[1] + 0.5) * bg_scale - 0.5]])
    return cv2.warpAffine(bg, M, (S, S), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


# ------------------------------------------------------------------ crops and images

def crop_boxes(uv: np.ndarray, Z_root: np.ndarray, f: np.ndarray, margin: float = 0.15,
               pad_mm: float = 160.0) -> np.ndarray:
    """Square crop boxes around projected joints. uv [...,J,2] original px; Z_root [...] depth
    of the pelvis (mm); f [...] focal (px). The side is the larger bbox side plus the body's
    thickness (pad_mm at the root's depth) on each side, enlarged by `margin`.
    Returns [...,4] (x0, y0, w, h) float32."""
    lo, hi = np.nanmin(uv, axis=-2), np.nanmax(uv, axis=-2)
    c = (lo + hi) / 2
    side = (np.max(hi - lo, axis=-1) + 2 * pad_mm * f / Z_root) * (1 + margin)
    return np.concatenate([c - side[..., None] / 2, side[..., None], side[..., None]], -1).astype(np.float32)


def render_crops(poses: np.ndarray, cams: Cameras, views: np.ndarray, boxes: np.ndarray,
                 appearance: dict[str, np.ndarray], backgrounds: np.ndarray, bg_index: np.ndarray,
                 bg_scale: float, S: int, noise_seed: np.ndarray | None = None,
                 batch: int | None = None, noise_sigma: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
    """Render N crops.

    poses [N,J,3] world mm; views [N]; boxes [N,4] (x0,y0,w,h) original px;
    appearance: 'colours' [N,P,3], 'thickness' [N], 'light' [N,3] (world), 'ambient' [N];
    backgrounds [G,h',w',3] uint8, bg_index [N]; noise_seed [N] int (Gaussian sensor noise of
    noise_sigma, seeded per image; None for none). Returns images [N,S,S,3] uint8 and visible [N,J] bool.
    """
    N = poses.shape[0]
    # small batches keep the [n,P,S²] temporaries in cache: measured fastest at ~3e5 elements
    batch = batch or max(1, int(3.2e5 // (P * S * S)))
    images = np.empty((N, S, S, 3), np.uint8)
    visible = np.empty((N, J), bool)
    for s0 in range(0, N, batch):
        sl = slice(s0, min(N, s0 + batch))
        vw = views[sl]
        pr = project_parts(poses[sl], appearance["thickness"][sl], cams, vw, boxes[sl].astype(np.float64), S)
        light_cam = np.einsum("nij,nj->ni", cams.R[vw], appearance["light"][sl])
        rgb, alpha, _ = shade_figure(pr, appearance["colours"][sl], light_cam, appearance["ambient"][sl], S)
        uv_orig = pr.joints * (boxes[sl, 2:3, None] / S) + boxes[sl, None, :2]
        visible[sl] = joint_visibility(pr, uv_orig, cams.size[vw])
        for i, n in enumerate(range(sl.start, sl.stop)):
            bg = warp_background(backgrounds[bg_index[n]], boxes[n], bg_scale, S).astype(np.float32) / 255
            # nothing exists outside the original image: the figure is cut there as well
            x = boxes[n, 0] + np.arange(S) * boxes[n, 2] / S
            y = boxes[n, 1] + np.arange(S) * boxes[n, 3] / S
            w, h = cams.size[vw[i]]
            inside = ((y[:, None] >= -0.5) & (y[:, None] <= h - 0.5)) & ((x[None] >= -0.5) & (x[None] <= w - 0.5))
            img = alpha[i, ..., None] * rgb[i] + (1 - alpha[i, ..., None]) * bg
            if noise_seed is not None:
                g = np.random.default_rng(int(noise_seed[n]))
                img = img + g.normal(0, noise_sigma, img.shape)
            img = img * inside[..., None]
            images[n] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, visible
