"""PSS reference stability (the paper's Sec. 3.4 study) on the default studio's reference poses.

Reference poses: the studio's training ground truth in every camera's frame (the
`pss_reference` stage's input); the set scored for the mPSS spread: the studio's test ground
truth with Gaussian noise (we have no trained model here; the spread measures the
reference, not a model). When the studio adapter is missing or fails, BVH mocap
(/work/shared/data/motion/bandai_namco_1, through pipeline/data/motion.py) seen by a
4-camera ring stands in, and the output says so.

Side by side in one run: our default reference (pss.DEFAULTS: the consensus of 20 starts) and
the paper's literal "random initialisation" (init="random", n_init=1), the same runs and pairs.

    .venv/bin/python bench/pss.py [--quick] [--runs 20]
    .venv/bin/python bench/pss.py --source h36m --root /data/h36m   # the paper's own poses
With Human3.6M (not on our machines) the study runs on the paper's data and protocol, from
its pose files alone, and keeps its results apart (bench/results/pss-h36m.json, pss-h36m_*.png).
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save  # noqa: E402

from pipeline.evaluation import pss  # noqa: E402
from pipeline.joints import J  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def studio_poses(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(train GT [N,J,3], test GT [M,J,3]) in camera frames, mm, from the studio adapter."""
    import zarr

    from pipeline.data import adapter_defaults, get_adapter
    from pipeline.data.contract import ground_truth

    cfg = adapter_defaults("studio")
    label = "studio (default config): training GT, all views"
    if quick:
        # the same motion and rig; fewer, smaller renders (images are not used here)
        cfg.update(crop_size=16, renders_per_train_clip=1, train_people=1)
        label = "studio (quick: 1 train person, 16 px crops): training GT, all views"
    with tempfile.TemporaryDirectory() as tmp:
        g = zarr.open_group(str(Path(tmp) / "studio.zarr"), mode="w")
        t = time.perf_counter()
        get_adapter("studio")(cfg, g, progress=False)
        print(f"studio built in {time.perf_counter() - t:.1f} s")
        split = np.asarray(g["split"][...])
        tr = ground_truth(g, split == 0)
        te = ground_truth(g, split == 1)
    ok_tr = tr["mask"].all(-1)
    ok_te = te["mask"].all(-1)
    return tr["gt"][ok_tr], te["gt"][ok_te], label


def bvh_poses(quick: bool, every: int = 2) -> tuple[np.ndarray, np.ndarray, str]:
    """(train [N,J,3], test [M,J,3], what): every `every`-th clip of bandai_namco_1 (every 8th
    when quick) at 10 fps, seen by a 4-camera ring; each fifth clip is a test clip."""
    from tests import synth
    from pipeline.camera import world_to_camera
    from pipeline.data.motion import load_clip, resample

    files = sorted((SHARED / "motion" / "bandai_namco_1" / "data").glob("*.bvh"))
    if not files:
        raise SystemExit("no studio and no BVH mocap under ../shared/data: nothing to benchmark")
    files = files[:: (8 if quick else every)]
    cams = synth.ring_rig([0, 70, 180, 250], target=(0, 0, 900))
    tr, te = [], []
    for i, f in enumerate(files):
        P, fps = load_clip(f)
        P, _ = resample(P, fps, 10.0)
        P = P - P[:, :1] + [0, 0, 900]  # root at the rig's target: every camera sees the person
        Xc = world_to_camera(P[:, None], cams.R[None], cams.t[None]).reshape(-1, J, 3)
        (te if i % 5 == 4 else tr).append(Xc)
    return np.concatenate(tr), np.concatenate(te), f"BVH mocap bandai_namco_1 ({len(files)} clips, 10 fps, 4 views)"


def h36m_poses(root: str | Path, quick: bool = False, subjects: tuple[list, list] | None = None
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """(train [N,J,3], test [M,J,3], what) from a Human3.6M folder in its public layout: the
    paper's own setting. Only metadata.xml and the D3_Positions pose files are read (no video);
    the h36m adapter's protocol: train subjects every `train_every`-th frame, test subjects
    every `test_every`-th (64th), each pose in every camera's frame. quick: every 10th sequence.
    `subjects` (train, test) overrides the protocol's subjects. ValueError naming what is missing."""
    from pipeline.camera import world_to_camera
    from pipeline.data import h36m

    cfg = h36m.DEFAULTS
    root = Path(root)
    train, test = subjects or (cfg["train_subjects"], cfg["test_subjects"])
    if not (root / "metadata.xml").is_file():
        raise ValueError(f"{root / 'metadata.xml'}: missing; --root must be a Human3.6M folder in its public layout")
    cams = h36m.read_metadata(root / "metadata.xml", list(train) + list(test), list(cfg["cameras"]))
    out = {}
    for part, subs, every in (("train", train, cfg["train_every"]), ("test", test, cfg["test_every"])):
        poses = []
        for subj in subs:
            files = sorted(f for f in (root / subj / "MyPoseFeatures" / "D3_Positions").glob("*.cdf")
                           if not f.stem.startswith("_ALL"))
            for f in files[:: 10 if quick else 1]:
                P = h36m.read_poses(f)[::every]
                c = cams[subj]
                poses.append(world_to_camera(P[:, None], c.R[None], c.t[None]).reshape(-1, J, 3))
        if not poses:
            raise ValueError(f"{root}: no D3_Positions pose files for the {part} subjects {list(subs)}")
        out[part] = np.concatenate(poses)
    return out["train"], out["test"], (f"Human3.6M ({'+'.join(train)} every {cfg['train_every']}th frame; "
                                       f"{'+'.join(test)} every {cfg['test_every']}th; 4 views)")


# k-means++ restarts of the why study's comparisons (scikit-learn's long-standing n_init)
KPP = 10


def _runs(X: np.ndarray, k: int, runs: int, n_init: int, pred, test, init: str = "k-means++") -> tuple[list, list]:
    """Labels of the reference and mPSS of (pred, test) for `runs` k-means fits (seeds 100 + r)."""
    labels, mp = [], []
    for r in range(runs):
        km = pss._fit(X, k, 100 + r, n_init, init, 300)
        labels.append(km.labels_)
        mp.append(pss.mpss(pred, test, km.cluster_centers_.reshape(k, J, 3)))
    return labels, mp


def _mean_iou(labels: list, k: int = 50) -> float:
    """Mean cluster_iou over every pair of the runs' labels (the paper's stability figure)."""
    return float(np.mean([pss.cluster_iou(labels[a], labels[b], k)
                          for a in range(len(labels)) for b in range(a + 1, len(labels))]))


def _consensus(X: np.ndarray, k: int, seed: int, R: int):
    """The reference's "consensus" k-means of X from R single starts (pipeline.evaluation.pss)."""
    return pss._fit(X, k, seed, R, "consensus", 300)


def library(quick: bool, runs: int, noise_mm: float, max_poses: int, n_studio: int) -> tuple[dict, tuple | None]:
    """The paper's study with the default build on a reference as varied as the paper's: the
    BVH library's train clips (every clip of bandai_namco_1, 17 actions x 15 styles, 4 views)
    as the reference, its test clips with the same noise as the scored set. The spread is
    measured on every test pose and against the number of poses scored, the studio's test set
    size among them (random subsets, the mean over 5 draws: a spread across references
    shrinks with the set it scores). ({}, None) without the library."""
    if not (SHARED / "motion" / "bandai_namco_1").is_dir():
        return {}, None
    tr, te, what = bvh_poses(quick, every=8 if quick else 1)
    rng = np.random.default_rng(1)
    pred = te + rng.normal(0, noise_mm, te.shape)
    pred[:, 0] = te[:, 0]
    n_sub = min(n_studio, len(te))
    out = {"library_n_scored": len(te), "library_n_scored_subset": n_sub}
    for k in (50, 100):
        t = time.perf_counter()
        s = pss.stability(tr, k, runs=runs, seed=1, pred=pred, gt=te, max_poses=max_poses, progress=False,
                          keep_centres=True)
        # PSS of every scored pose against every reference; a subset's mPSS is a mean of columns
        per = np.stack([pss.pss(pred, te, C) for C in s.pop("centres")])  # [runs, N]
        curve = {}
        for n in sorted({250, 500, n_sub, 2000, 4000, len(te)}):
            if n <= len(te):
                draws = [rng.choice(len(te), n, replace=False) for _ in range(1 if n == len(te) else 5)]
                curve[n] = round(float(np.mean([100 * per[:, d].mean(1).std() for d in draws])), 4)
        out[f"library_spread_curve_k{k}"] = [[n, v] for n, v in curve.items()]
        out["library_n_ref_poses"] = s["n_poses"]
        out[f"library_kmeans_iou_k{k}"] = round(s["iou_mean"], 4)
        out[f"library_mpss_spread_pct_k{k}"] = round(s["mpss_std_pct"], 4)
        out[f"library_mpss_spread_pct_k{k}_subset"] = curve[n_sub]
        print(f"library k={k:3d}: {what}, {s['n_poses']} reference poses: "
              f"IoU {s['iou_mean']:.3f} ± {s['iou_std']:.3f}; "
              f"mPSS spread {s['mpss_std_pct']:.3f} pp over {len(te)} scored poses, "
              f"{curve[n_sub]:.3f} pp over {n_sub} of them (mean of 5 random draws) ({runs} runs, "
              f"{time.perf_counter() - t:.0f} s)")
    return out, (tr, te)


def why(ref: np.ndarray, pred: np.ndarray, test: np.ndarray, quick: bool, max_poses: int,
        lib: tuple | None = None, lib_study: dict | None = None, name: str = "pss") -> dict:
    """Why the IoU at k = 50 is what it is, with a figure (bench/results/<name>_why.png):
    (a) restarts: IoU and mPSS spread against k-means++'s n_init (the best of n_init starts);
    (b) which clusters move: IoU of each matched cluster against its size, and the k-means
        objective's spread across runs (a flat objective: many partitions nearly as good);
    (c) diversity: the same study on a BVH library of many actions and actors (bandai_namco_1's
        train clips, when ../shared/data has it) seen by the same 4-camera ring, by k-means++
        here and by the default build in `library`: is the studio's IoU a matter of its data?;
    (d) consensus: each reference started from the k-means of the centres of R single-start
        runs (bagged clustering, Leisch 1999), then Lloyd on every pose: does averaging many
        starts make the reference stable, and at what cost (R fits per reference)? R up to 300
        shows where it levels off;
    (e) the pss_reference stage's motion-capture reference (CMU subject 01 seen by its 24
        virtual cameras), the one footage without 3D ground truth gets: more poses, but
        orientations on a ring, so no more structure for k-means to find.
    The spread against the number of poses scored is `spread_figure`'s."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    X = pss.normalise(ref[np.random.default_rng(0).permutation(len(ref))[:max_poses]])
    runs = 3 if quick else 6
    res, sweep = {}, []
    for n_init in ((1, 4) if quick else (1, 4, 10, 32)):
        t = time.perf_counter()
        L, mp = _runs(X, 50, runs, n_init, pred, test)
        iou = _mean_iou(L)
        sweep.append((n_init, iou, float(100 * np.std(mp))))
        print(f"why (a): n_init {n_init:3d}: IoU@50 {iou:.3f}, mPSS spread {100 * np.std(mp):.2f} pp "
              f"({runs} runs, {time.perf_counter() - t:.0f} s)")
        res[f"why_iou_k50_ninit{n_init}"] = round(iou, 4)
        res[f"why_spread_pct_ninit{n_init}"] = round(100 * float(np.std(mp)), 4)
    # (b) per-cluster IoU against cluster size, runs 0 and 1 of the last sweep
    inter = contingency_matrix(L[0], L[1]).astype(float)
    sa, sb = inter.sum(1), inter.sum(0)
    iou_m = inter / (sa[:, None] + sb[None] - inter)
    r, c = linear_sum_assignment(iou_m, maximize=True)
    weighted = float((iou_m[r, c] * (sa[r] + sb[c]) / 2).sum() / len(X))
    print(f"why (b): matched-cluster IoU {iou_m[r, c].mean():.3f}; weighted by cluster size {weighted:.3f} "
          f"(not the paper's definition: a diagnostic); clusters with IoU < 0.5: {int(np.sum(iou_m[r, c] < 0.5))} of 50")
    res["why_iou_k50_size_weighted"] = round(weighted, 4)
    # (c) a diverse library: every clip (17 actions x 15 styles); its consensus row is `library`'s
    lib_iou = lib_cons = None
    if lib is not None:
        tr = lib[0]
        Xl = pss.normalise(tr[np.random.default_rng(0).permutation(len(tr))[:max_poses]])
        Ll, _ = _runs(Xl, 50, runs, KPP, tr[:200], tr[:200])
        lib_iou = _mean_iou(Ll)
        lib_cons = lib_study["library_kmeans_iou_k50"]
        print(f"why (c): the BVH library's train clips: {len(Xl)} reference poses, IoU@50 {lib_iou:.3f} "
              f"(k-means++ x{KPP}, {runs} runs); the default build on its train clips: {lib_cons:.3f} (library)")
        res["why_iou_k50_bvh_library"] = round(lib_iou, 4)
    # (d) consensus of R single-start runs
    from sklearn.cluster import KMeans
    cons = []
    for R in ((10,) if quick else (20, 100, 300)):
        t = time.perf_counter()
        L, mp, inertia = [], [], []
        for i in range(runs):
            km = _consensus(X, 50, 100 + i, R)
            L.append(km.labels_)
            inertia.append(km.inertia_)
            mp.append(pss.mpss(pred, test, km.cluster_centers_.reshape(50, J, 3)))
        iou = _mean_iou(L)
        best = KMeans(50, n_init=KPP, random_state=0).fit(X).inertia_
        print(f"why (d): consensus of {R} starts: IoU@50 {iou:.3f}, mPSS spread {100 * np.std(mp):.2f} pp, "
              f"inertia {np.mean(inertia):.2f} (k-means++ x{KPP}: {best:.2f}; lower is a better "
              f"clustering) ({runs} runs, {time.perf_counter() - t:.0f} s)")
        res[f"why_iou_k50_consensus{R}"] = round(iou, 4)
        res[f"why_spread_pct_consensus{R}"] = round(100 * float(np.std(mp)), 4)
        res[f"why_inertia_ratio_consensus{R}"] = round(float(np.mean(inertia)) / best, 4)
        cons.append((R, iou))
    # (e) the stage's motion-capture reference
    mocap_iou = None
    if not quick:
        from pipeline.orchestration.stages import pss_reference as stage
        P, what = stage.mocap_reference(dict(stage.DEFAULTS))
        Xm = pss.normalise(P[np.random.default_rng(0).permutation(len(P))[:stage.DEFAULTS["max_poses"]]])
        Lm, _ = _runs(Xm, 50, runs, pss.DEFAULTS["n_init"], test[:200], test[:200], pss.DEFAULTS["init"])
        mocap_iou = _mean_iou(Lm)
        print(f"why (e): the stage's reference, {what}; {len(Xm)} poses clustered: IoU@50 {mocap_iou:.3f} "
              f"({pss.DEFAULTS['init']} x{pss.DEFAULTS['n_init']}, {runs} runs)")
        res["why_iou_k50_stage_mocap"] = round(mocap_iou, 4)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    n = [s[0] for s in sweep]
    ax[0].semilogx(n, [s[1] for s in sweep], "o-", label="IoU@50 (studio reference)")
    if lib_iou is not None:
        ax[0].axhline(lib_iou, color="C2", ls=":", label=f"IoU@50, BVH library (k-means++ x{KPP})")
        ax[0].axhline(lib_cons, color="C2", ls="--", label="IoU@50, BVH library (the default build, train clips)")
    ax[0].semilogx([c[0] for c in cons], [c[1] for c in cons], "^-", color="C3",
                   label="IoU@50, consensus of R single starts (x = R)")
    if mocap_iou is not None:
        ax[0].axhline(mocap_iou, color="C4", ls="-.", label="IoU@50, the stage's mocap reference")
    ax[0].axhline(0.78, color="k", ls="--", lw=0.8, label="paper: 0.78")
    ax[0].set_xlabel("k-means++ restarts (n_init), or starts R of the consensus")
    ax[0].set_ylabel("mean matched-cluster IoU")
    tw = ax[0].twinx()
    tw.semilogx(n, [s[2] for s in sweep], "s--", color="C1", label="mPSS@50 spread (right axis)")
    tw.set_ylabel("mPSS@50 spread (pp)", color="C1")
    # one legend, below the panel: inside it hid the curves
    h0, l0 = ax[0].get_legend_handles_labels()
    h1, l1 = tw.get_legend_handles_labels()
    tw.legend(h0 + h1, l0 + l1, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax[1].scatter((sa[r] + sb[c]) / 2, iou_m[r, c], s=10)
    ax[1].set_xscale("log")
    ax[1].set_xlabel("cluster size (reference poses)")
    ax[1].set_ylabel("IoU with its match in another run")
    fig.tight_layout()
    path = Path(__file__).resolve().parent / "results" / f"{name}_why{'.quick' if quick else ''}.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")  # the legend sits below the left panel
    plt.close(fig)
    print(f"why: figure {path}")
    return res


def spread_figure(out: dict, n_studio: int, quick: bool, name: str = "pss", source: str = "studio") -> None:
    """bench/results/<name>_spread.png from a result's values: the mPSS spread across references
    against the number of poses scored, `library`'s curve for k = 50 and 100 with 1/sqrt(N)
    through its last point, and the studio's spreads at its test set's size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, c in ((50, "C0"), (100, "C1")):
        curve = np.array(out.get(f"library_spread_curve_k{k}", []), dtype=float).reshape(-1, 2)
        if len(curve):
            ax.loglog(curve[:, 0], curve[:, 1], "o-", color=c, label=f"library (Bandai Namco), k = {k}")
            ax.loglog(curve[:, 0], curve[-1, 1] * np.sqrt(curve[-1, 0] / curve[:, 0]), ":", color=c, lw=0.8,
                      label=f"1/sqrt(N) through its last point, k = {k}")
        ax.loglog(n_studio, out[f"mpss_spread_pct_k{k}"], "*", ms=13, color=c, label=f"{source}, k = {k}")
    ax.axhline(0.5, color="k", ls="--", lw=0.8, label="goal: 0.5 pp")
    for axis, ticks in ((ax.xaxis, [250, 500, 1000, 2000, 4000, 8000]), (ax.yaxis, [0.3, 0.5, 0.7, 1, 1.5, 2])):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
        axis.set_ticks(ticks)
    ax.set_xlabel("poses scored (N)")
    ax.set_ylabel("mPSS spread across references (pp)")
    ax.set_title("PSS: one reference build, many runs", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    path = Path(__file__).resolve().parent / "results" / f"{name}_spread{'.quick' if quick else ''}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    print(f"spread: figure {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    ap.add_argument("--runs", type=int, default=None, help="k-means runs (paper: 100; default 20, quick 3)")
    ap.add_argument("--source", choices=("auto", "studio", "bvh", "h36m"), default="auto",
                    help="h36m: the paper's own data, from --root (train S1,5,6,7,8; test S9,11)")
    ap.add_argument("--root", help="Human3.6M folder in its public layout (metadata.xml, S*/MyPoseFeatures)")
    ap.add_argument("--noise-mm", type=float, default=30.0, help="σ per coordinate of the scored set")
    a = ap.parse_args()
    runs = a.runs or (3 if a.quick else 20)
    max_poses = 2000 if a.quick else 200_000

    ref = test = None
    if a.source == "h36m":
        try:
            if not a.root:
                raise ValueError("--source h36m needs --root, the Human3.6M folder")
            ref, test, source = h36m_poses(a.root, a.quick)
        except ValueError as e:  # a user's mistake: one line, status 2
            print(f"pss.py: {e}", file=sys.stderr)
            sys.exit(2)
    if a.source in ("auto", "studio"):
        try:
            ref, test, source = studio_poses(a.quick)
        except Exception as e:  # noqa: BLE001 - fall back, and say why
            if a.source == "studio":
                raise
            print(f"studio unavailable ({type(e).__name__}: {e}); using BVH mocap instead")
    if ref is None:
        ref, test, source = bvh_poses(a.quick)
    rng = np.random.default_rng(0)
    if a.quick and len(test) > 1000:
        test = test[rng.choice(len(test), 1000, replace=False)]
    pred = test + rng.normal(0, a.noise_mm, test.shape)
    pred[:, 0] = test[:, 0]
    print(f"source: {source}; reference poses {len(ref)}, scored poses {len(test)}, runs {runs}")

    t = time.perf_counter()
    built = pss.build_reference(ref, ks=(50, 100), seed=0, max_poses=max_poses)
    build_s = time.perf_counter() - t
    print(f"build_reference k=50,100 on {built['attrs']['n_poses']} poses: {build_s:.2f} s")

    out = {"source": source.split(" ")[0], "n_ref_poses": int(built["attrs"]["n_poses"]), "runs": runs}
    rows = []
    default = f"{pss.DEFAULTS['init']} x{pss.DEFAULTS['n_init']}"
    for label, kw in ((default, {}), ("random x1", {"init": "random", "n_init": 1})):
        for k in (50, 100):
            t = time.perf_counter()
            s = pss.stability(ref, k, runs=runs, seed=1, pred=pred, gt=test, max_poses=max_poses,
                              progress=False, **kw)
            s["secs"] = time.perf_counter() - t
            rows.append((label, s))
            print(f"{label:12s} k={k:3d}: IoU {s['iou_mean']:.3f} ± {s['iou_std']:.3f} (min {s['iou_min']:.3f}); "
                  f"mPSS {100 * s['mpss_mean']:.2f} %, std {s['mpss_std_pct']:.3f} pp, "
                  f"range {s['mpss_range_pct']:.3f} pp; {s['secs']:.1f} s")
            suffix = "" if label == default else "_randinit"
            out[f"kmeans_iou_k{k}{suffix}"] = round(s["iou_mean"], 4)
            out[f"mpss_k{k}{suffix}"] = round(100 * s["mpss_mean"], 3)
            out[f"mpss_spread_pct_k{k}{suffix}"] = round(s["mpss_std_pct"], 4)
    d = {(lab, s["k"]): s for lab, s in rows}
    for k in (50, 100):
        r = d[(default, k)]["iou_mean"] / d[("random x1", k)]["iou_mean"]
        print(f"k={k}: IoU ratio default / random-init = {r:.3f}; paper's IoU 0.78 -> ours / paper = "
              f"{d[(default, k)]['iou_mean'] / 0.78:.3f}")
    out["mpss_spread_pct"] = max(out["mpss_spread_pct_k50"], out["mpss_spread_pct_k100"])
    lib_study, lib = library(a.quick, runs, a.noise_mm, max_poses, len(test))
    out.update(lib_study)
    # Human3.6M's figures beside the studio's, not over them
    name = "pss-h36m" if a.source == "h36m" else "pss"
    spread_figure(out, len(test), a.quick, name, out["source"])
    out.update(why(ref, pred, test, a.quick, max_poses, lib, lib_study, name))
    out["build_s"] = round(build_s, 3)
    save(name, out, a.quick)


if __name__ == "__main__":
    main()
