"""TRC and CSV export: round trips, OpenSim axes, units, missing points, bad input."""
import numpy as np
import pytest

from pipeline.data.trc import read_csv, read_trc, to_opensim_axes, write_csv, write_trc
from pipeline.joints import JOINTS, J


def _poses(F=5, seed=0):
    X = np.random.default_rng(seed).normal(0, 400, (F, J, 3))
    X[1, 3] = np.nan
    return X


def test_trc_round_trip_units_and_axes(tmp_path):
    X = _poses()
    for units in ("m", "mm"):
        p = write_trc(tmp_path / f"a_{units}.trc", X, 60.0, units=units, up="z")
        names, Y, rate, u = read_trc(p)
        assert names == list(JOINTS) and rate == 60.0 and u == units
        # Z-up world -> OpenSim Y-up: (X, Y, Z) -> (Y, Z, X), a proper rotation
        np.testing.assert_allclose(Y, X[..., [1, 2, 0]], atol=2e-3 if units == "m" else 1e-5, equal_nan=True)
        assert np.all(np.isnan(Y[1, 3]))
    M = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0.0]])
    assert np.isclose(np.linalg.det(M), 1.0)
    np.testing.assert_allclose(to_opensim_axes(X[0], "y"), X[0])


def test_trc_header_layout(tmp_path):
    p = write_trc(tmp_path / "h.trc", _poses(3), 50.0)
    lines = p.read_text().splitlines()
    assert lines[0].startswith("PathFileType\t4\t(X/Y/Z)\th.trc")
    assert lines[2].split("\t")[:5] == ["50", "50", "3", str(J), "m"]
    assert lines[3].split("\t")[:3] == ["Frame#", "Time", JOINTS[0]]
    assert lines[4].split("\t")[2:5] == ["X1", "Y1", "Z1"]
    first = lines[5].split("\t")
    assert first[0] == "1" and float(first[1]) == 0.0 and len(first) == 2 + 3 * J


def test_csv_round_trip(tmp_path):
    X = _poses()
    p = write_csv(tmp_path / "a.csv", X, fps=30.0, frame_index=np.arange(10, 15))
    names, Y, fr = read_csv(p)
    assert names == list(JOINTS) and fr.tolist() == list(range(10, 15))
    np.testing.assert_allclose(Y, X, atol=1e-3, equal_nan=True)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="poses"):
        write_trc(tmp_path / "x.trc", np.zeros((3, J)), 60)
    with pytest.raises(ValueError, match="marker names"):
        write_trc(tmp_path / "x.trc", np.zeros((3, J, 3)), 60, names=["a"] * 3)
    with pytest.raises(ValueError, match="units"):
        write_trc(tmp_path / "x.trc", np.zeros((3, J, 3)), 60, units="ft")
    with pytest.raises(ValueError, match="fps"):
        write_trc(tmp_path / "x.trc", np.zeros((3, J, 3)), 0)
    (tmp_path / "n.trc").write_text("hello\n")
    with pytest.raises(ValueError, match="not a TRC"):
        read_trc(tmp_path / "n.trc")


def test_pose2sim_trc_reads(shared_data):
    names, X, rate, units = read_trc(shared_data / "multiview" / "pose2sim_demo" / "Demo_0-100.trc")
    assert rate == 60 and units == "m" and X.shape == (100, 21, 3) and "RHip" in names
    # Y-up file: the head is the highest point, about 1.5-2 m up (read in mm)
    assert 1400 < np.nanmedian(X[:, names.index("Head"), 1]) < 2000
