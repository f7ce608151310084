"""Pose Structure Score (PSS), as defined in EpipolarPose (Kocabas et al., CVPR 2019, Sec. 3.4).

The authors never released their PSS code; this module is our reading of the paper, made exact.

Normalisation (`normalise`): a pose P [J,3] is made root-relative (the root joint,
`joints.ROOT`, is subtracted from every joint), flattened to a 3J vector in joint order
(x0, y0, z0, x1, ...) and divided by that vector's Euclidean norm. So the normalised pose
is a unit vector in R^(3J); units (mm or mean bones) and the person's size drop out, the
orientation in the camera frame does not (the paper clusters camera-frame poses too).

Reference (`build_reference`): k-means (scikit-learn `KMeans`) of the normalised reference
poses (ground truth of the training subjects, in each camera's frame; the pseudo-labels
where there is no ground truth), for each k (paper: 50 and 100). A pose's cluster is its
nearest centre (Euclidean, in normalised space), exactly what `KMeans.predict` does.
Initialisation (`INITS`): scikit-learn's "k-means++" or "random", the best of n_init starts;
or "consensus" (the default): bagged clustering (Leisch 1999), the size-weighted k-means of
the centres of n_init single k-means++ starts, which starts one last k-means of every pose.
Poses of continuous motion have no clusters k-means would find twice; many starts agree
where a single start's partition is arbitrary (bench/pss.py measures both).

PSS(p, q) = 1 if p and q fall in the same cluster, else 0; mPSS@k is its mean over a set of
(prediction, ground-truth) pairs.

Stability (`stability`): the paper's check that the reference does not hinge on k-means'
initialisation: many runs with different random seeds, the clusters of every pair of runs
matched one-to-one (Hungarian, `scipy.optimize.linear_sum_assignment`, maximising IoU of
the clusters as sets of reference poses), the mean IoU of matched clusters (paper: 0.78),
and the spread of one prediction set's mPSS across the references (paper: ±0.1 %).
"""
from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np

from ..data.contract import ground_truth
from ..joints import J, ROOT, check_joints

DEFAULT_KS = (50, 100)
# the pss_reference stage's configuration: the keyword arguments of build_reference
INITS = ("consensus", "k-means++", "random")
DEFAULTS = {"ks": [50, 100], "seed": 0, "n_init": 20, "init": "consensus", "max_iter": 300,
            "max_poses": 200_000}
NORMALISATION = ("root-relative (joint ROOT subtracted), flattened to a 3J vector, "
                 "divided by its Euclidean norm")


def _as_poses(poses, name: str) -> np.ndarray:
    arr = np.asarray(poses, dtype=np.float64)
    check_joints(arr, name)
    if arr.shape[-1] != 3:
        raise ValueError(f"{name}: expected 3D joints (last axis 3), got shape {arr.shape}")
    return arr


def normalise(poses: np.ndarray) -> np.ndarray:
    """Normalised pose vectors for PSS. poses [...,J,3] -> [...,3J], unit Euclidean norm.

    Raises ValueError on non-finite joints or a degenerate pose (all joints at the root).
    """
    P = _as_poses(poses, "poses")
    if not np.all(np.isfinite(P)):
        bad = int(np.sum(~np.all(np.isfinite(P), axis=(-1, -2))))
        raise ValueError(f"poses: {bad} pose(s) contain NaN/inf joints; PSS needs complete poses")
    v = (P - P[..., ROOT:ROOT + 1, :]).reshape(*P.shape[:-2], 3 * J)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n <= 1e-12):
        raise ValueError("poses: degenerate pose (every joint at the root) cannot be normalised")
    return v / n


def _fit(X: np.ndarray, k: int, seed: int, n_init: int, init: str, max_iter: int):
    """A fitted scikit-learn KMeans of X [N,D] (labels_, cluster_centers_, inertia_); init one
    of INITS, n_init its starts (module docstring)."""
    from sklearn.cluster import KMeans

    if init not in INITS:
        raise ValueError(f"PSS reference: init must be one of {INITS}, got {init!r}")
    if init != "consensus":
        return KMeans(n_clusters=k, init=init, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)
    rs = np.random.default_rng(seed)
    centres, sizes = [], []
    for _ in range(int(n_init)):
        km = KMeans(k, n_init=1, max_iter=max_iter, random_state=int(rs.integers(2 ** 31))).fit(X)
        centres.append(km.cluster_centers_)
        sizes.append(np.bincount(km.labels_, minlength=k))
    top = KMeans(k, n_init=10, random_state=int(rs.integers(2 ** 31))).fit(
        np.concatenate(centres), sample_weight=np.concatenate(sizes).astype(np.float64))
    return KMeans(k, init=top.cluster_centers_, n_init=1, max_iter=max_iter).fit(X)


def _reference_vectors(poses, max_poses: int | None, seed: int) -> tuple[np.ndarray, int, int]:
    """Normalised vectors [N,3J] of the complete poses among `poses` [...,J,3]; (X, n_used, n_dropped)."""
    P = _as_poses(poses, "reference poses").reshape(-1, J, 3)
    ok = np.all(np.isfinite(P), axis=(1, 2))
    P = P[ok]
    P = P[np.linalg.norm(P - P[:, ROOT:ROOT + 1], axis=(1, 2)) > 1e-12]
    dropped = int(len(ok) - len(P))
    if max_poses is not None and len(P) > max_poses:
        # a fixed random subset keeps very large references (Human3.6M: millions) tractable
        P = P[np.sort(np.random.default_rng(seed).choice(len(P), max_poses, replace=False))]
    return normalise(P), len(P), dropped


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k = {k} is larger than the number of usable reference poses ({n})")
    return k


def reference_poses(dataset, frames=None) -> np.ndarray:
    """The reference poses of a dataset store: ground truth of `frames` (default: the training
    split, split == 0) in EVERY camera's frame, complete poses only -> [N,J,3] mm, N <= f*V.

    Use these, not `poses3d_world`: the normalisation keeps orientation, so a world-frame
    reference (z up) puts camera-frame poses (y down) into a handful of clusters and PSS
    loses its meaning (on BVH mocap seen by 4 views, test poses used 5 of 50 world-frame
    clusters, 35 of 50 camera-frame ones)."""

    if frames is None:
        frames = np.asarray(dataset["split"][...]) == 0
    g = ground_truth(dataset, frames)
    return g["gt"][g["mask"].all(-1)]


def build_reference(poses: np.ndarray, ks=DEFAULT_KS, seed: int = 0, n_init: int = DEFAULTS["n_init"],
                    init: str = DEFAULTS["init"], max_iter: int = 300,
                    max_poses: int | None = 200_000) -> dict:
    """k-means reference for PSS. poses [...,J,3] (any units, root-relative or not; any leading
    dims, e.g. [F,V,J,3]) in the frame of the poses to be scored: each camera's frame
    (`reference_poses` gives them from a dataset store; pseudo-labels `labels_cam` are too). Poses with NaN joints are dropped
    (counted in attrs["n_dropped"]); `max_poses` caps the count by a seeded random subset.

    Returns a dict, ready to be written as a zarr group by the pss_reference stage:
      "centers_k{k}": float64 [k,J,3]  k-means centres in normalised space (see `normalise`),
                                       ordered by decreasing cluster size
      "counts_k{k}":  int64 [k]        reference poses per cluster
      "attrs":        dict              ks, seed, n_init, init, n_poses, n_dropped, inertia, normalisation
    Raises ValueError when k exceeds the number of usable poses.
    """
    ks = tuple(int(k) for k in np.atleast_1d(ks))
    X, n, dropped = _reference_vectors(poses, max_poses, seed)
    out: dict = {}
    inertia = {}
    for k in ks:
        _check_k(k, n)
        km = _fit(X, k, seed, n_init, init, max_iter)
        counts = np.bincount(km.labels_, minlength=k)
        order = np.argsort(-counts, kind="stable")
        out[f"centers_k{k}"] = km.cluster_centers_[order].reshape(k, J, 3)
        out[f"counts_k{k}"] = counts[order].astype(np.int64)
        inertia[str(k)] = float(km.inertia_)
    out["attrs"] = {"ks": list(ks), "seed": int(seed), "n_init": int(n_init), "init": init,
                    "max_iter": int(max_iter), "n_poses": int(n), "n_dropped": dropped,
                    "inertia": inertia, "normalisation": NORMALISATION}
    return out


def write_reference(reference: dict, group) -> None:
    """Write a `build_reference` dict into a zarr group: arrays with `dimension_names`
    (centers_k{k}: cluster, joint, xyz; counts_k{k}: cluster), "attrs" as group attributes."""
    for key, arr in reference.items():
        if key == "attrs":
            continue
        dims = ("cluster", "joint", "xyz") if key.startswith("centers_") else ("cluster",)
        group.create_array(key, data=np.asarray(arr), dimension_names=dims, overwrite=True)
    group.attrs.update(reference.get("attrs", {}))


def read_reference(group) -> dict:
    """The dict of `build_reference` back from a zarr group written by `write_reference`."""
    out = {k: np.asarray(group[k][...]) for k in group.array_keys()
           if k.startswith(("centers_k", "counts_k"))}
    out["attrs"] = dict(group.attrs)
    if not any(k.startswith("centers_k") for k in out):
        raise ValueError("zarr group holds no PSS reference (no centers_k* arrays)")
    return out


def centers_of(reference, k: int | None = None) -> np.ndarray:
    """Centres [k,J,3] from a reference: an array [k,J,3], or a mapping (the dict of
    `build_reference`, or the zarr group it was written to) holding "centers_k{k}"."""
    if isinstance(reference, np.ndarray) or not hasattr(reference, "__getitem__"):
        C = np.asarray(reference, dtype=np.float64)
    else:
        if k is None:
            attrs = reference["attrs"] if isinstance(reference, Mapping) and "attrs" in reference \
                else dict(getattr(reference, "attrs", {}))
            ks = list(attrs.get("ks", []))
            if len(ks) != 1:
                raise ValueError(f"reference holds ks={ks}: say which k")
            k = ks[0]
        key = f"centers_k{int(k)}"
        try:
            C = np.asarray(reference[key][...], dtype=np.float64)
        except KeyError:
            raise ValueError(f"reference has no {key!r} (built for other ks)") from None
    if C.ndim != 3:
        raise ValueError(f"centres: expected [k,J,3], got shape {C.shape}")
    check_joints(C, "centres")
    if k is not None and C.shape[0] != int(k):
        raise ValueError(f"centres: expected k={k} centres, got {C.shape[0]}")
    return C


def assign(poses: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Cluster index of each pose: nearest centre in normalised space. poses [...,J,3],
    centers [k,J,3] (normalised, as stored by `build_reference`) -> int64 [...]."""
    from sklearn.metrics import pairwise_distances_argmin

    X = normalise(poses)
    C = np.asarray(centers, dtype=np.float64).reshape(len(centers), 3 * J)
    if X.size == 0:
        return np.zeros(X.shape[:-1], dtype=np.int64)
    return pairwise_distances_argmin(X.reshape(-1, 3 * J), C).reshape(X.shape[:-1]).astype(np.int64)


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p = _as_poses(pred, "predictions")
    g = _as_poses(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"predictions {p.shape} and ground truth {g.shape} differ in shape")
    if not np.all(np.isfinite(p)):
        raise ValueError("predictions contain NaN/inf: PSS needs complete predicted poses")
    if not np.all(np.isfinite(g)):
        raise ValueError("ground truth contains NaN/inf: drop incomplete poses before PSS")
    return p, g


def pss(pred: np.ndarray, gt: np.ndarray, reference, k: int | None = None) -> np.ndarray:
    """PSS per pose: 1.0 where pred and gt fall in the same cluster, else 0.0.
    pred, gt [...,J,3] (any common units); reference: see `centers_of`. -> float64 [...]."""
    p, g = _check_pair(pred, gt)
    C = centers_of(reference, k)
    return (assign(p, C) == assign(g, C)).astype(np.float64)


def mpss(pred: np.ndarray, gt: np.ndarray, reference, k: int | None = None) -> float:
    """mPSS@k: the mean PSS over all poses of pred, gt [...,J,3]."""
    s = pss(pred, gt, reference, k)
    if s.size == 0:
        raise ValueError("mPSS of an empty set")
    return float(s.mean())


def cluster_iou(labels_a: np.ndarray, labels_b: np.ndarray, k: int) -> float:
    """Mean IoU of two clusterings of the same N points (labels in [0,k)), clusters matched
    one-to-one by the Hungarian algorithm maximising the summed IoU. -> float in [0,1]."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    if la.shape != lb.shape or la.ndim != 1:
        raise ValueError(f"labels must be two 1-D arrays of equal length, got {la.shape}, {lb.shape}")
    # fix the label sets to 0..k-1 so empty clusters still count (IoU 0)
    inter = contingency_matrix(np.r_[la, np.arange(k)], np.r_[lb, np.arange(k)]).astype(np.float64)
    inter -= np.eye(k)
    size_a, size_b = inter.sum(1), inter.sum(0)
    union = size_a[:, None] + size_b[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    r, c = linear_sum_assignment(iou, maximize=True)
    return float(iou[r, c].mean())


def stability(poses: np.ndarray, k: int, runs: int = 10, seed: int = 0,
              pred: np.ndarray | None = None, gt: np.ndarray | None = None,
              n_init: int = DEFAULTS["n_init"], init: str = DEFAULTS["init"], max_iter: int = 300,
              max_poses: int | None = 200_000, max_pairs: int | None = None,
              keep_centres: bool = False, progress: bool = True) -> dict:
    """The paper's stability study of the PSS reference for one k.

    `runs` k-means fits of the same reference poses [...,J,3] (the settings of
    `build_reference`), run r seeded with seed + 1 + r; every pair of runs (or a seeded random
    `max_pairs` of them) compared by `cluster_iou`. With pred, gt [...,J,3] (an evaluation
    set), mPSS@k is computed against every run's reference.

    Returns {"k", "runs", "pairs", "iou_mean", "iou_std", "iou_min",
             and with pred/gt: "n_scored" (poses in the set), "mpss" (list per run), "mpss_mean",
             "mpss_std_pct", "mpss_range_pct";
             with keep_centres: "centres" (list per run of [k,J,3], to score other sets)}
    (pct = percentage points of mPSS). The paper reports IoU 0.78 and a ±0.1 % mPSS spread. A
    spread shrinks as the set scored grows (bench/pss.py measures how): compare spreads at one
    n_scored.
    """
    from tqdm.auto import tqdm

    if runs < 2:
        raise ValueError(f"stability needs at least 2 runs, got {runs}")
    if (pred is None) != (gt is None):
        raise ValueError("give both pred and gt, or neither")
    if pred is not None:
        pred, gt = _check_pair(pred, gt)
    X, n, _ = _reference_vectors(poses, max_poses, seed)
    k = _check_k(k, n)
    labels, centres, mp = [], [], []
    for r in tqdm(range(runs), desc=f"k-means k={k}", disable=not progress):
        km = _fit(X, k, seed + 1 + r, n_init, init, max_iter)
        labels.append(km.labels_)
        centres.append(km.cluster_centers_.reshape(k, J, 3))
        if pred is not None:
            mp.append(mpss(pred, gt, centres[-1]))
    pairs = list(combinations(range(runs), 2))
    if max_pairs is not None and len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), max_pairs, replace=False))]
    ious = np.array([cluster_iou(labels[a], labels[b], k)
                     for a, b in tqdm(pairs, desc="matching", disable=not progress)])
    out = {"k": k, "runs": runs, "pairs": len(pairs), "n_poses": n,
           "iou_mean": float(ious.mean()), "iou_std": float(ious.std()), "iou_min": float(ious.min())}
    if pred is not None:
        m = np.array(mp)
        out.update(n_scored=int(np.prod(pred.shape[:-2])), mpss=m.tolist(), mpss_mean=float(m.mean()),
                   mpss_std_pct=float(100 * m.std()), mpss_range_pct=float(100 * (m.max() - m.min())))
    if keep_centres:
        out["centres"] = centres
    return out
