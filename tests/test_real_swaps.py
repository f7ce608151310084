"""Left/right swap detection by multi-view consistency (pipeline/swaps.py)."""
import numpy as np
import pytest

from tests import synth
from pipeline.joints import INDEX
from tests.swaps import GROUPS, apply_swaps, body_chirality, fix_swaps, hypothesis_costs, pair_inconsistency


def _scene(F=60, V=4, sigma=2.0, seed=0):
    poses = synth.random_poses(F, seed=seed)  # human handedness: right x forward = up
    cams = synth.ring_rig([0, 80, 170, 260][:V])
    kp = synth.observe(poses, cams, sigma_px=sigma, seed=seed)
    return poses, cams, kp


def test_human_handedness_of_correct_labels():
    _, cams, kp = _scene()
    _, _, right = hypothesis_costs(kp, cams)
    chir = body_chirality(kp, cams, right[:, :, 0])        # hypothesis 0: labels as given
    assert np.nanmedian(chir) < -0.5                       # closed form: det[x, z, y] = -1
    mirrored = apply_swaps(kp, np.ones(kp.shape[:2] + (len(GROUPS),), bool), "fix")
    _, _, right_m = hypothesis_costs(mirrored, cams)
    assert np.nanmedian(body_chirality(mirrored, cams, right_m[:, :, 0])) > 0.5


def test_injected_swaps_are_found_and_fixed():
    _, cams, kp = _scene()
    truth = np.random.default_rng(1).random(kp.shape[:2] + (len(GROUPS),)) < 0.15
    bad = apply_swaps(kp, truth, "fix")
    fixed, found, info = fix_swaps(bad, cams)
    # a group swapped in every view is consistent again (a mirror body): invisible by design
    visible = truth & ~truth.all(axis=1, keepdims=True)
    ok = ~(found ^ truth).any(-1)                           # views whose every group was judged right
    truth = visible
    prec = (found & truth).sum() / max(found.sum(), 1)
    rec = (found & truth).sum() / truth.sum()
    assert prec > 0.95 and rec > 0.9, (prec, rec)
    np.testing.assert_allclose(fixed[ok], kp[ok], equal_nan=True)
    # nothing injected: nothing found (no false alarms at 2 px noise)
    _, none, _ = fix_swaps(kp, cams)
    assert none.sum() == 0


def test_flag_mode_blanks_and_none_mode_reports():
    _, cams, kp = _scene(F=20)
    truth = np.zeros(kp.shape[:2] + (len(GROUPS),), bool)
    truth[3, 1, 0] = True                                    # legs of view 1 in frame 3
    bad = apply_swaps(kp, truth, "fix")
    flagged, found, _ = fix_swaps(bad, cams, {"mode": "flag"})
    assert found[3, 1, 0] and found.sum() == 1
    assert np.all(np.isnan(flagged[3, 1, [INDEX["l_knee"], INDEX["r_knee"]]]))
    assert np.all(np.isfinite(flagged[3, 1, INDEX["l_wrist"]]))
    same, found2, _ = fix_swaps(bad, cams, {"mode": "none"})
    np.testing.assert_array_equal(found, found2)
    np.testing.assert_allclose(same, bad, equal_nan=True)


def test_two_views_give_epipolar_costs():
    _, cams, kp = _scene(F=10, V=2)
    asis, flip = pair_inconsistency(kp, cams, 0, 1)
    assert asis.shape == (10, len(GROUPS))
    assert np.nanmedian(asis) < 5 and np.nanmedian(flip) > 3 * np.nanmedian(asis)
    with pytest.raises(ValueError, match="3 views"):
        fix_swaps(kp, cams)


def test_bad_input():
    _, cams, kp = _scene(F=5)
    with pytest.raises(ValueError, match="extrinsics"):
        fix_swaps(kp, cams.without_extrinsics())
    with pytest.raises(ValueError, match="keypoints"):
        fix_swaps(kp[..., :2], cams)
    with pytest.raises(ValueError, match="unknown configuration"):
        fix_swaps(kp, cams, {"rate": 1})
    with pytest.raises(ValueError, match="mode"):
        fix_swaps(kp, cams, {"mode": "drop"})
