"""Renderer: visibility against the depth order, truncation, determinism, crops."""
import numpy as np
import pytest

from pipeline.camera import Cameras, look_at, project
from pipeline.data import render
from pipeline.joints import INDEX, J


def standing_pose() -> np.ndarray:
    """A person at the origin facing +Y (left = -X), Z up, mm; arms hanging."""
    p = {
        "pelvis": (0, 0, 950), "r_hip": (90, 0, 950), "r_knee": (95, 10, 520), "r_ankle": (100, 0, 90),
        "l_hip": (-90, 0, 950), "l_knee": (-95, 10, 520), "l_ankle": (-100, 0, 90),
        "spine": (0, 0, 1170), "thorax": (0, 0, 1420), "neck": (0, 20, 1530), "head": (0, 0, 1720),
        "l_shoulder": (-180, 0, 1400), "l_elbow": (-220, 0, 1120), "l_wrist": (-230, 30, 880),
        "r_shoulder": (180, 0, 1400), "r_elbow": (220, 0, 1120), "r_wrist": (230, 30, 880),
    }
    return np.array([p[n] for n in sorted(p, key=INDEX.get)], dtype=np.float64)


def two_cameras(front=(0, 5000, 1000), back=(0, -5000, 1000), f=1150.0, size=1000) -> Cameras:
    R, t = zip(*(look_at(np.array(c, float), np.array([0, 0, 1000.0])) for c in (front, back)))
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
    return Cameras(np.stack([K, K]), np.stack(R), np.stack(t), np.zeros((2, 5)), np.full((2, 2), float(size)))


def appearance(n):
    a = render.random_appearance(np.random.default_rng(0))
    slot = np.array([render.SLOTS.index(p[5]) for p in render.PARTS])
    return dict(colours=np.broadcast_to(a.colours[slot], (n, render.P, 3)), thickness=np.ones(n),
                light=np.tile([0.3, 0.3, 0.9], (n, 1)), ambient=np.full(n, 0.4))


def _render(poses, cams, views, S=64, bg=None):
    uv = project(poses[:, None], cams.K, cams.R, cams.t, cams.dist)[np.arange(len(views)), views]
    Zr = np.full(len(views), 5000.0)
    boxes = render.crop_boxes(uv, Zr, cams.K[views, 0, 0]).astype(np.float64)
    bgs = np.zeros((1, 10, 10, 3), np.uint8) if bg is None else bg
    imgs, vis = render.render_crops(poses, cams, views, boxes, appearance(len(views)), bgs,
                                    np.zeros(len(views), int), bgs.shape[2] / cams.size[0, 0], S)
    return imgs, vis, boxes, uv


def test_hand_behind_back_is_hidden_from_the_front_only():
    # closed-form scene: the right wrist behind the torso's back, on the camera axis
    pose = standing_pose()
    pose[INDEX["r_elbow"]] = (150, -150, 1050)
    pose[INDEX["r_wrist"]] = (0, -200, 1000)
    cams = two_cameras()
    poses = np.stack([pose, pose])
    _, vis, _, _ = _render(poses, cams, np.array([0, 1]))
    w = INDEX["r_wrist"]
    assert not vis[0, w], "front camera: the torso stands between it and the wrist"
    assert vis[1, w], "back camera: nothing covers the wrist"
    # joints on the camera-facing surface are visible from the front
    for name in ("head", "l_shoulder", "r_shoulder", "l_knee", "r_knee", "thorax"):
        assert vis[0, INDEX[name]], name


def test_far_side_arm_hidden_in_profile():
    # camera on the person's left (-X): the right elbow lies behind the torso
    pose = standing_pose()
    pose[INDEX["r_elbow"]] = (120, 0, 1150)
    pose[INDEX["r_wrist"]] = (60, 0, 950)
    cams = two_cameras(front=(-5000, 0, 1000), back=(5000, 0, 1000))
    _, vis, _, _ = _render(np.stack([pose, pose]), cams, np.array([0, 1]))
    assert not vis[0, INDEX["r_elbow"]] and vis[0, INDEX["l_elbow"]]
    assert vis[1, INDEX["r_elbow"]] and not vis[1, INDEX["l_elbow"]]


def test_visibility_matches_the_z_buffer_of_the_rendered_image():
    # the visibility routine (continuous joint positions) against the rasteriser's id and
    # depth buffers at the joint's pixel, on poses with random arm/leg swings
    rng = np.random.default_rng(1)
    base = standing_pose()
    n = 24
    poses = np.repeat(base[None], n, 0)
    for k in ("l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_knee", "r_knee", "l_ankle", "r_ankle"):
        poses[:, INDEX[k]] += rng.normal(0, 180, (n, 3))
    az = rng.uniform(0, 2 * np.pi, n)
    cams_list = [two_cameras(front=(5000 * np.cos(a), 5000 * np.sin(a), 1500)) for a in az]
    S = 256
    agree = total = hidden = 0
    for i in range(n):
        cams = cams_list[i]
        p = poses[i:i + 1]
        uv = project(p[:, None], cams.K, cams.R, cams.t)[:, 0]
        boxes = render.crop_boxes(uv, np.array([5000.0]), cams.K[:1, 0, 0]).astype(np.float64)
        pr = render.project_parts(p, np.ones(1), cams, np.array([0]), boxes, S)
        _, _, ids, zbuf = render.shade_figure(pr, np.ones((1, render.P, 3)), np.array([[0, 0, -1.0]]),
                                              np.array([0.5]), S, return_depth=True)
        uv_orig = pr.joints * boxes[:, 2:3, None] / S + boxes[:, None, :2]
        vis = render.joint_visibility(pr, uv_orig, cams.size[:1])[0]
        for j in range(J):
            u, v = pr.joints[0, j]
            iu, iv = int(np.floor(u)), int(np.floor(v))
            block = ids[0, iv:iv + 2, iu:iu + 2]
            if block.size < 4 or len(np.unique(block)) != 1 or block[0, 0] < 0:
                continue  # the joint sits on an edge between primitives: the pixel grid decides
            k = block[0, 0]
            zmin = zbuf[0, iv:iv + 2, iu:iu + 2].min()
            zmax = zbuf[0, iv:iv + 2, iu:iu + 2].max()
            if not render.CONTAINS[k, j] and abs(zmin - pr.joints_z[0, j]) < 5 + (zmax - zmin):
                continue  # foreign surface at the joint's own depth: within the grid's error
            expect_hidden = (not render.CONTAINS[k, j]) and zmax < pr.joints_z[0, j]
            total += 1
            hidden += int(expect_hidden)
            agree += int(vis[j] == (not expect_hidden))
    assert total > 250 and hidden >= 10, (total, hidden)
    assert agree == total, f"{total - agree} of {total} joints disagree with the z-buffer"


def test_tiled_rasteriser_equals_the_full_evaluation():
    # culling primitives per tile must not change a single pixel (reference: tile = S)
    rng = np.random.default_rng(5)
    poses = np.repeat(standing_pose()[None], 6, 0)
    poses[:, 11:] += rng.normal(0, 150, (6, 6, 3))
    cams = two_cameras()
    views = np.array([0, 1] * 3)
    uv = project(poses[:, None], cams.K, cams.R, cams.t)[np.arange(6), views]
    boxes = render.crop_boxes(uv, np.full(6, 5000.0), cams.K[views, 0, 0]).astype(np.float64)
    pr = render.project_parts(poses, np.ones(6), cams, views, boxes, 64)
    args = (np.random.default_rng(0).uniform(0, 1, (6, render.P, 3)), np.tile([0.2, -0.3, -0.9], (6, 1)),
            np.full(6, 0.4), 64)
    ref = render.shade_figure(*((pr,) + args), return_depth=True, tile=64)
    for tile in (4, 8, 16):
        out = render.shade_figure(*((pr,) + args), return_depth=True, tile=tile)
        for x, y in zip(ref, out):
            assert np.array_equal(x, y), tile
    assert (ref[2] >= 0).mean() > 0.1  # the figure is there


def test_truncation_at_the_image_border_and_black_outside():
    # a camera so close that the feet leave the image
    pose = standing_pose()
    R, t = look_at(np.array([0, 1500.0, 1400]), np.array([0, 0, 1300.0]))
    K = np.array([[1150.0, 0, 500], [0, 1150, 500], [0, 0, 1]])
    cams = Cameras(K[None], R[None], t[None], np.zeros((1, 5)), np.array([[1000.0, 1000.0]]))
    uv = project(pose[None], K, R, t)[0]
    outside = (uv[:, 1] > 999) | (uv[:, 0] < 0) | (uv[:, 0] > 999) | (uv[:, 1] < 0)
    assert outside[INDEX["l_ankle"]] and not outside[INDEX["head"]]
    bg = np.full((1, 100, 100, 3), 200, np.uint8)
    imgs, vis, boxes, _ = _render(pose[None], cams, np.array([0]), S=64, bg=bg)
    assert not vis[0, outside].any()
    # crop rows below the image's bottom edge are black
    y = boxes[0, 1] + np.arange(64) * boxes[0, 3] / 64
    below = y > 999.5
    x = boxes[0, 0] + np.arange(64) * boxes[0, 2] / 64
    assert below.any() and np.all(imgs[0, below] == 0)
    inside = ~below[:, None] & (x[None] >= 0) & (x[None] <= 999)
    assert np.all(imgs[0][inside].max(1) > 0)


def test_render_is_deterministic_and_figure_is_drawn():
    pose = standing_pose()
    cams = two_cameras()
    poses = np.stack([pose, pose])
    a, va, boxes, uv = _render(poses, cams, np.array([0, 1]))
    b, vb, _, _ = _render(poses, cams, np.array([0, 1]))
    assert np.array_equal(a, b) and np.array_equal(va, vb)
    # the figure covers the projected torso and not the crop's corner (black background)
    S = 64
    c = ((uv[0, INDEX["spine"]] - boxes[0, :2]) * S / boxes[0, 2]).round().astype(int)
    assert a[0, c[1], c[0]].sum() > 0 and a[0, 0, 0].sum() == 0


def test_crop_box_contains_all_joints_and_is_square():
    rng = np.random.default_rng(0)
    uv = rng.uniform(100, 900, (5, 3, J, 2))
    boxes = render.crop_boxes(uv, np.full((5, 3), 5000.0), np.full((5, 3), 1150.0))
    assert np.allclose(boxes[..., 2], boxes[..., 3])
    assert np.all(uv[..., 0] >= boxes[..., None, 0]) and np.all(uv[..., 0] <= (boxes[..., 0] + boxes[..., 2])[..., None])
    assert np.all(uv[..., 1] >= boxes[..., None, 1]) and np.all(uv[..., 1] <= (boxes[..., 1] + boxes[..., 3])[..., None])


@pytest.mark.parametrize("S", [32, 64])
def test_room_background_is_consistent_and_warped_to_crop(S):
    from pipeline.data.rigs import h36m_like_rig
    cams = h36m_like_rig()
    a = render.room_background(cams, 0, np.random.default_rng(3), 0.1)
    b = render.room_background(cams, 0, np.random.default_rng(3), 0.1)
    assert a.shape == (100, 100, 3) and np.array_equal(a, b)
    crop = render.warp_background(a, np.array([-100.0, 400, 400, 400]), 0.1, S)
    assert crop.shape == (S, S, 3)
    assert np.all(crop[:, : S // 8] == 0)  # x < 0 is outside the image
