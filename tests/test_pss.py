"""Pose Structure Score (pipeline/pss.py): references are closed forms, scikit-learn's own
KMeans, and the paper's Figure 4 claim (Kocabas et al. 2019, Sec. 3.4)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline.evaluation import metrics, pss
from tests import synth
from pipeline.joints import INDEX, J, PARENTS


@pytest.fixture(scope="module")
def ref_poses():
    return synth.random_poses(3000, seed=1)


@pytest.fixture(scope="module")
def reference(ref_poses):
    return pss.build_reference(ref_poses, ks=(20, 50), seed=0, init="k-means++", n_init=2)


def test_normalise_closed_form():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(4, J, 3)) * 300
    v = pss.normalise(P)
    rr = (P - P[:, :1]).reshape(4, -1)
    np.testing.assert_allclose(v, rr / np.linalg.norm(rr, axis=1, keepdims=True))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)
    # translation and scale drop out; rotation does not (camera-frame clustering)
    np.testing.assert_allclose(pss.normalise(2.5 * P + [100, -20, 4000]), v, atol=1e-12)
    Rz = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    assert not np.allclose(pss.normalise(P @ Rz.T), v)


def test_reference_matches_sklearn(ref_poses, reference):
    from sklearn.cluster import KMeans

    C = reference["centers_k20"]
    assert C.shape == (20, J, 3) and reference["counts_k20"].sum() == 3000
    assert np.all(np.diff(reference["counts_k20"]) <= 0)  # largest cluster first
    km = KMeans(20, n_init=2, random_state=0).fit(pss.normalise(ref_poses))
    # same clustering as sklearn's, up to the order of clusters
    order = np.argsort(-np.bincount(km.labels_, minlength=20), kind="stable")
    np.testing.assert_allclose(C.reshape(20, -1), km.cluster_centers_[order], atol=1e-9)
    q = synth.random_poses(200, seed=5)
    np.testing.assert_array_equal(order[pss.assign(q, C)], km.predict(pss.normalise(q)))


def test_pss_basic(reference, ref_poses):
    q = ref_poses[:100]
    np.testing.assert_array_equal(pss.pss(q, q, reference, 50), 1.0)
    # PSS is scale-free: mean-bone units and mm agree
    assert pss.mpss(q / 250.0, q, reference, 50) == 1.0
    # a pose turned around falls in another cluster most of the time
    Rz = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    turned = (q - q[:, :1]) @ Rz.T
    assert pss.mpss(turned, q, reference, 50) < 0.2


def _subtree(j):
    out = [j]
    for c in range(J):
        if PARENTS[c] in out and c not in out:
            out.append(c)
    return out


def _structural_edit(P):
    """Both arms swung 150° up about the shoulders, the right knee bent the other way."""
    P = P.copy()
    for side in "rl":
        sh, el = INDEX[f"{side}_shoulder"], INDEX[f"{side}_elbow"]
        ax = np.cross(P[el] - P[sh], P[INDEX["neck"]] - P[INDEX["pelvis"]])
        R = Rotation.from_rotvec(np.radians(150) * ax / np.linalg.norm(ax)).as_matrix()
        idx = _subtree(el)
        P[idx] = (P[idx] - P[sh]) @ R.T + P[sh]
    hip, kn, an = INDEX["r_hip"], INDEX["r_knee"], INDEX["r_ankle"]
    u = (P[kn] - P[hip]) / np.linalg.norm(P[kn] - P[hip])
    a = P[an] - P[kn]
    P[an] = P[kn] + 2 * (a @ u) * u - a  # reflect the shank about the thigh's line
    return P


def _edit_vs_noise(Q, reference, k, seed=3):
    """(mPSS of structurally edited poses, mPSS of Gaussian-noise poses at the same MPJPE,
    median MPJPE) for ground-truth poses Q [N,J,3]."""
    E = np.stack([_structural_edit(q) for q in Q])
    d = metrics.mpjpe(E, Q)
    noise = np.random.default_rng(seed).standard_normal(Q.shape)
    noise[:, 0] = 0
    noisy = Q + noise * (d / metrics.mpjpe(Q + noise, Q))[:, None, None]
    np.testing.assert_allclose(metrics.mpjpe(noisy, Q), d)  # equal MPJPE, pose by pose
    return pss.mpss(E, Q, reference, k), pss.mpss(noisy, Q, reference, k), float(np.median(d))


def test_figure4_structure_vs_noise(reference):
    """Paper, Fig. 4: poses at the SAME MPJPE from the ground truth get different PSS when the
    error changes the structure (arms raised, a knee bent backwards) rather than jittering
    every joint: PSS tells them apart where MPJPE cannot. Synthetic plausible poses."""
    s_edit, s_noise, d = _edit_vs_noise(synth.random_poses(300, seed=2), reference, 50)
    assert d > 50
    # measured: 0.69 vs 0.18 at a median MPJPE of 190 mm
    assert s_noise > 0.55, s_noise
    assert s_edit < 0.35, s_edit
    assert s_noise - s_edit > 0.35


def test_figure4_on_real_mocap(shared_data):
    """The same claim on professional mocap (Bandai Namco BVH) seen by a 4-camera ring:
    reference from some clips, queries from others, k = 50 and 100."""
    from pipeline.camera import world_to_camera
    from pipeline.data.motion import load_clip

    files = sorted((shared_data / "motion" / "bandai_namco_1" / "data").glob("*.bvh"))
    if not files:
        pytest.skip("no Bandai Namco BVH files")
    cams = synth.ring_rig([0, 70, 180, 250], target=(0, 0, 900))
    ref, qry = [], []
    for i, f in enumerate(files[::6]):
        P = load_clip(f)[0][::3]
        Xc = world_to_camera((P - P[:, :1] + [0, 0, 900])[:, None], cams.R[None], cams.t[None])
        (qry if i % 4 == 3 else ref).append(Xc.reshape(-1, J, 3))
    ref, qry = np.concatenate(ref), np.concatenate(qry)
    reference = pss.build_reference(ref, ks=(50, 100), n_init=1)
    Q = qry[np.random.default_rng(0).choice(len(qry), 400, replace=False)]
    for k in (50, 100):
        s_edit, s_noise, d = _edit_vs_noise(Q, reference, k)
        # measured: edits 0.00 / noise 0.66 (k=50), 0.00 / 0.56 (k=100), median MPJPE 173 mm
        assert s_edit < 0.15 and s_noise > 0.4, (k, s_edit, s_noise)


def test_bad_input(ref_poses, reference):
    q = ref_poses[:10].copy()
    bad = q.copy()
    bad[3, 5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pss.pss(bad, q, reference, 50)
    with pytest.raises(ValueError, match="joints"):
        pss.pss(q[:, :16], q[:, :16], reference, 50)
    with pytest.raises(ValueError, match="differ in shape"):
        pss.pss(q[:5], q, reference, 50)
    with pytest.raises(ValueError, match="larger than the number"):
        pss.build_reference(ref_poses[:30], ks=(50,))
    with pytest.raises(ValueError, match="k=100|centers_k100"):
        pss.pss(q, q, reference, 100)
    with pytest.raises(ValueError, match="say which k"):
        pss.pss(q, q, reference)


def test_reference_drops_incomplete_poses(ref_poses):
    P = ref_poses[:200].copy()
    P[:7, 3] = np.nan
    ref = pss.build_reference(P, ks=(5,), n_init=1)
    assert ref["attrs"]["n_poses"] == 193 and ref["attrs"]["n_dropped"] == 7
    assert ref["counts_k5"].sum() == 193


def test_reference_from_zarr_group(reference, ref_poses):
    import zarr

    g = zarr.group()
    pss.write_reference(reference, g)
    assert g["centers_k20"].metadata.dimension_names == ("cluster", "joint", "xyz")
    back = pss.read_reference(g)
    np.testing.assert_array_equal(back["centers_k50"], reference["centers_k50"])
    assert back["attrs"]["ks"] == [20, 50]
    q = ref_poses[:50] + np.random.default_rng(0).normal(0, 30, (50, J, 3))
    np.testing.assert_array_equal(pss.pss(q, ref_poses[:50], g, 20), pss.pss(q, ref_poses[:50], reference, 20))


def test_cluster_iou_closed_form():
    # clusters {0,1},{2,3} vs {0,1,2},{3}: IoU 2/3 and 1/2 under the best matching
    assert pss.cluster_iou(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), 2) == pytest.approx((2 / 3 + 0.5) / 2)
    lab = np.random.default_rng(0).integers(0, 7, 500)
    perm = np.random.default_rng(1).permutation(7)
    assert pss.cluster_iou(lab, perm[lab], 7) == pytest.approx(1.0)
    # an empty cluster in one run counts as IoU 0
    assert pss.cluster_iou(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), 2) == pytest.approx(0.25)


def test_consensus_reference_is_a_kmeans_fixed_point_and_finds_true_clusters():
    """The default "consensus" build (bagged clustering): its centres are the means of their
    members (a converged Lloyd step, by definition of k-means), it recovers well separated
    clusters exactly, a seed fixes it, and an unknown init is refused by name."""
    rng = np.random.default_rng(3)
    base = synth.random_poses(6, seed=4)
    blobs = np.concatenate([b + rng.normal(0, 5, (80, J, 3)) for b in base])
    ref = pss.build_reference(blobs, ks=(6,), seed=1)
    assert ref["attrs"]["init"] == "consensus" and ref["attrs"]["n_init"] == pss.DEFAULTS["n_init"]
    X = pss.normalise(blobs)
    lab = pss.assign(blobs, ref["centers_k6"])
    for c in range(6):
        np.testing.assert_allclose(ref["centers_k6"][c].ravel(), X[lab == c].mean(0), atol=1e-9)
    truth = np.repeat(np.arange(6), 80)
    assert pss.cluster_iou(lab, truth, 6) == pytest.approx(1.0)
    again = pss.build_reference(blobs, ks=(6,), seed=1)
    np.testing.assert_array_equal(again["centers_k6"], ref["centers_k6"])
    with pytest.raises(ValueError, match="init must be one of"):
        pss.build_reference(blobs, ks=(6,), init="kmeans")


def test_stability_separated_blobs_vs_uniform():
    """Well separated pose clusters give IoU 1 and no mPSS spread; featureless data does not."""
    rng = np.random.default_rng(0)
    base = synth.random_poses(5, seed=9)
    blobs = np.concatenate([b + rng.normal(0, 5, (100, J, 3)) for b in base])
    pred = blobs[::7] + rng.normal(0, 5, blobs[::7].shape)
    s = pss.stability(blobs, 5, runs=4, pred=pred, gt=blobs[::7], n_init=2, progress=False)
    assert s["pairs"] == 6 and s["iou_mean"] == pytest.approx(1.0)
    assert s["mpss_std_pct"] == 0.0 and s["mpss_mean"] == 1.0
    uni = rng.normal(size=(600, J, 3))
    u = pss.stability(uni, 30, runs=3, n_init=1, progress=False, pred=uni[:50] + 0.3, gt=uni[:50],
                      keep_centres=True)
    assert u["iou_mean"] < 0.7
    # the kept centres are the runs' references: scoring the same set against them gives "mpss"
    assert len(u["centres"]) == 3 and u["centres"][0].shape == (30, J, 3) and u["n_scored"] == 50
    assert [pss.mpss(uni[:50] + 0.3, uni[:50], C) for C in u["centres"]] == u["mpss"]
    with pytest.raises(ValueError, match="at least 2 runs"):
        pss.stability(uni, 5, runs=1)
