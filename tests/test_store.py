"""The artifact store: fingerprints, atomic publication, per-chunk completion and checksums."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.orchestration.arrays import ChunkedWriter, checksum
from pipeline.orchestration.store import ArtifactStore, StoreError, fingerprint, open_group


def _write(art, n=10, chunk=4, commit=True, upto=None):
    with art.lock():
        g = art.begin()
        w = ChunkedWriter(g, n, chunk)
        for i in w.pending()[:upto]:
            s = w.frames(i)
            w.write(i, {"x": np.arange(s.start, s.stop, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                        "ok": np.ones(s.stop - s.start, bool)})
        if commit:
            art.commit()
    return art


def test_fingerprint_covers_config_inputs_and_name():
    base = fingerprint("label", "rig", {"a": 1, "b": [1, 2]}, {"detect2d": "abc"})
    assert base == fingerprint("label", "rig", {"b": [1, 2], "a": 1}, {"detect2d": "abc"})  # key order
    assert base != fingerprint("label", "rig", {"a": 2, "b": [1, 2]}, {"detect2d": "abc"})
    assert base != fingerprint("label", "rig", {"a": 1, "b": [1, 2]}, {"detect2d": "abd"})
    assert base != fingerprint("label", "known", {"a": 1, "b": [1, 2]}, {"detect2d": "abc"})
    assert len(base) == 12


def test_layout_commit_and_reuse(tmp_path):
    st = ArtifactStore(tmp_path)
    art = st.artifact("toy", "label", "rig", {"k": 1})
    assert art.location == str(tmp_path / "toy" / "label" / f"rig-{art.fingerprint}")
    assert not art.is_complete()
    _write(art, commit=False)
    # A finished but unpublished working copy is not an output.
    assert not art.is_complete() and not Path(art.location).exists()
    assert Path(art.work_location).name.startswith(".") and st.list() == []
    art.commit()
    assert art.is_complete() and not Path(art.work_location).exists()
    assert st.list() == [art.location]
    g = art.open()
    prov = g.attrs["provenance"]
    assert prov["complete"] and prov["fingerprint"] == art.fingerprint and prov["config"] == {"k": 1}
    assert g["x"].metadata.dimension_names == ("frame", "x_1")
    np.testing.assert_array_equal(g["x"][:, 0], np.arange(10))


def test_old_configuration_is_never_mistaken(tmp_path):
    """A store written by another configuration, even copied under the new name, is rejected."""
    st = ArtifactStore(tmp_path)
    old = _write(st.artifact("toy", "label", "rig", {"threshold_px": 3.0}))
    new = st.artifact("toy", "label", "rig", {"threshold_px": 2.0})
    assert new.location != old.location and not new.is_complete()
    os.rename(old.location, new.location)  # someone renames the old output to the new name
    assert not new.is_complete()
    with pytest.raises(StoreError, match="missing or incomplete"):
        new.open()
    # An input's new fingerprint changes the location too.
    up1 = st.artifact("toy", "detect2d", "gt", {"sigma_px": 0})
    up2 = st.artifact("toy", "detect2d", "gt", {"sigma_px": 2})
    a1 = st.artifact("toy", "label", "rig", {}, {"detect2d": up1})
    a2 = st.artifact("toy", "label", "rig", {}, {"detect2d": up2})
    assert a1.location != a2.location


def test_resume_keeps_done_chunks_and_checksums_catch_corruption(tmp_path):
    st = ArtifactStore(tmp_path)
    art = st.artifact("toy", "detect2d", "gt", {})
    _write(art, n=10, chunk=4, commit=False, upto=2)  # interrupted after 2 of 3 chunks
    with art.lock():
        g = art.begin()  # resumes
        w = ChunkedWriter(g, 10, 4)
        assert w.pending() == [2]
    _write(art, n=10, chunk=4)
    assert art.check().ok
    # Garble chunk 1 of x on disk: detected by the manifest (the sha256 of every file recorded
    # at commit) and, once back in the working folder, by the chunk's own checksum.
    chunk_file = Path(art.location, "x", "c", "1", "0")
    assert chunk_file.is_file()
    chunk_file.write_bytes(b"garbage")
    v = art.check()
    assert not v.ok and v.chunks == {"x": [1]} and v.other == []
    assert ChunkedWriter.from_group(open_group(art.location)).corrupt_chunks() == [1]
    # A valid-but-different chunk (values changed behind the store's back) is caught too.
    g = open_group(art.location, "r+")
    g["x"][0] = -1
    assert art.check().chunks == {"x": [0, 1]}
    assert ChunkedWriter.from_group(open_group(art.location)).corrupt_chunks() == [0, 1]


def test_manifest_covers_every_file_and_the_attributes(tmp_path):
    """Outputs that are not chunks (a checkpoint, an estimated rig, attributes) are verified
    too; a changed, truncated, added or removed file is named."""
    st = ArtifactStore(tmp_path)
    art = st.artifact("toy", "train3d", "ss", {})
    with art.lock():
        g = art.begin()
        g.create_array("R_est", data=np.eye(3)[None], dimension_names=("rig", "r", "c"))
        (art.work_dir() / "train").mkdir()
        (art.work_dir() / "train" / "final.pt").write_bytes(b"weights" * 100)
        g.attrs["calibration"] = {"0": {"rms_px": 1.0}}
        art.commit(result="train/final.pt")
    assert art.check().ok
    final = Path(art.location, "train", "final.pt")
    final.write_bytes(final.read_bytes()[:50])  # truncated
    assert art.check().other == ["train/final.pt"]
    final.write_bytes(b"weights" * 100)
    assert art.check().ok
    open_group(art.location, "r+")["R_est"][0, 0, 0] = 0.5  # an edited rig
    v = art.check()
    assert not v.ok and v.other and v.other[0].startswith("R_est/") and v.chunks == {}
    open_group(art.location, "r+")["R_est"][0, 0, 0] = 1.0
    assert art.check().ok
    g = open_group(art.location, "r+")
    g.attrs["calibration"] = {"0": {"rms_px": 0.1}}  # edited attributes
    assert art.check().other == ["zarr.json"]
    g.attrs["calibration"] = {"0": {"rms_px": 1.0}}
    (final.parent / "extra.pt").write_bytes(b"x")  # a file nobody wrote
    assert art.check().other == ["train/extra.pt"]


def test_an_input_rebuilt_with_other_content_makes_its_users_stale(tmp_path):
    """The provenance records each input's content digest as it was used: rebuilding the input
    under the same fingerprint with other content makes the output stale; with the same
    content (a deterministic rebuild) it stays valid."""
    st = ArtifactStore(tmp_path)
    up = st.artifact("toy", "dataset", "toy", {})

    def build_up(value):
        with up.lock():
            g = up.begin(fresh=True)
            g.create_array("x", data=np.full(4, value), dimension_names=("frame",))
            up.commit()

    build_up(1.0)
    down = _write(st.artifact("toy", "detect2d", "gt", {}, {"dataset": up}))
    assert down.check().ok
    build_up(1.0)
    assert down.check().ok
    build_up(2.0)
    v = down.check()
    assert not v.ok and v.stale == ["dataset"] and "rebuilt" in str(v)


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 65, "a b"])
def test_no_configuration_value_becomes_an_unsafe_path(tmp_path, name):
    st = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="cannot name an output"):
        st.artifact("toy", "label", name, {})
    with pytest.raises(StoreError, match="cannot name an output"):
        st.artifact(name, "label", "rig", {})
    assert list(tmp_path.iterdir()) == []


def test_chunk_layout_change_is_an_error(tmp_path):
    g = zarr.open_group(str(tmp_path / "g"), mode="w")
    ChunkedWriter(g, 10, 4)
    with pytest.raises(ValueError, match="chunk layout changed"):
        ChunkedWriter(g, 10, 5)
    w = ChunkedWriter(g, 10, 4)
    with pytest.raises(ValueError, match="expected 4"):
        w.write(0, {"x": np.zeros(3)})


def test_checksum_sees_dtype_and_values():
    a = {"x": np.zeros(4, np.float32)}
    assert checksum(a) == checksum({"x": np.zeros(4, np.float32)})
    assert checksum(a) != checksum({"x": np.zeros(4, np.float64)})
    assert checksum(a) != checksum({"x": np.array([0, 0, 0, 1], np.float32)})


def test_fsspec_root(tmp_path):
    """A root given as a URL goes through fsspec (memory:// here; s3:// etc. alike)."""
    st = ArtifactStore("memory://epipose-test")
    assert not st.local
    art = _write(st.artifact("toy", "detect2d", "gt", {"u": 1}))
    assert art.location.startswith("memory://epipose-test/toy/detect2d/gt-")
    assert art.is_complete() and art.check().ok
    np.testing.assert_array_equal(art.open()["x"][:, 0], np.arange(10))
    # Files a stage writes itself (checkpoints) travel with the commit.
    a2 = st.artifact("toy", "train3d", "ss", {})
    with a2.lock():
        a2.begin()
        (a2.work_dir() / "checkpoints").mkdir()
        (a2.work_dir() / "checkpoints" / "final.pt").write_bytes(b"weights")
        a2.commit()
    assert (a2.local_path() / "checkpoints" / "final.pt").read_bytes() == b"weights"
    assert st.list("toy", "train3d") == [a2.location]


def test_leftovers_are_what_no_run_is_writing(tmp_path):
    """leftovers(): an interrupted working folder is listed (and removable) once no run holds
    its lock; one being written, a complete output and its lock are never listed."""
    st = ArtifactStore(tmp_path)
    done = _write(st.artifact("toy", "label", "rig", {"k": 1}))
    stale = _write(st.artifact("toy", "label", "rig", {"k": 2}), commit=False, upto=1)  # a killed run
    busy = st.artifact("toy", "label", "rig", {"k": 3})
    with busy.lock():
        busy.begin()
        assert busy.being_written() and not stale.being_written()
        found = st.leftovers("toy")
        assert [(loc, kind) for loc, kind, _ in found] == [(stale.work_location, "partial")]
        assert found[0][2] > 0
    assert {loc for loc, _, _ in st.leftovers()} == {stale.work_location, busy.work_location}
    st.remove(stale.work_location)
    assert not Path(stale.work_location).exists() and done.is_complete()
    with pytest.raises(StoreError, match="not an output"):
        st.remove(str(tmp_path))
