"""Benchmark: the networks on the default studio, end to end, side by side in one run.

    .venv/bin/python bench/train.py [--quick] [--work DIR] [--detector network|gt]

1. The 2D detector is trained on the studio's training subjects (2D labels only) and scored
   on its test subjects (PCK at 0.05/0.1 of the crop box, mean pixel error).
2. Its keypoints on every frame are turned into pseudo-labels (pipeline.geometry.labels.make_labels,
   rig mode: no extrinsics used).
3. The 3D network trains on the pseudo-labels (SS) and on ground truth (FS), same preset,
   both starting from the 2D network (the pipeline's train3d.init).
4. The refinement unit: the self-contained one trains on (a) (SS prediction, pseudo-label)
   pairs of training frames and (b) pseudo-labels plus noise fitted to the SS training errors;
   the paper's (Sec. 3.3) on clean targets from motion capture (the training subjects' 3D) with
   (c) the SS predictions on those frames, (d) that 3D plus the modelled SS errors or (e, full
   size) cross-fitted SS predictions (2 folds of the training people: test-like errors); the
   targets are in each pose's own mean bones (the SS unit), and (f) with (c)'s inputs once more
   with the people's sizes kept (divided by the dataset's mean bone), to show what the one test
   person's size does to MPJPE. All are applied to SS; mPSS@50 of SS and SS + RU against the
   training subjects' 3D reference; a figure (bench/results/train_ru_why.png) of the per-joint
   errors and the share of poses each improves. (full size) (c) and (f) judged on unseen
   training people too (ru_validation: the cross-fitted networks), the way to choose a unit's
   settings.
5. On the test subjects: MPJPE (SS scaled by the dataset's mean bone length in mm), MPJPE at
   each person's own size (an oracle scale: what no pose in mean bones shows), NMPJPE, PMPJPE;
   SS/FS ratios; RU gains by metric (figure bench/results/train_ru_scale.png); training images/s.
6. (full size only) Why the RU gains little: the share of SS test poses closer to ground truth
   after a left/right relabel, and an RU trained on one test clip's pairs applied to the other.
7. (--seeds N) SS and FS trained again with N - 1 more seeds of the 3D networks (same data,
   labels and detector): each seed's test MPJPE and SS / FS, their mean and spread, so that a
   change to training is judged against the noise of one run, not on one draw.
The last line is one JSON object with the figures. GPU throughput: bench/gpu.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save  # noqa: E402

from pipeline.training import detector2d, loop, pose3d, refiner
from pipeline.evaluation import metrics  # noqa: E402
from pipeline.camera import Cameras  # noqa: E402


def build_studio(path: Path, quick: bool, fps: float | None) -> "zarr.Group":
    """The default studio (the adapter's DEFAULTS), built once into `path` and reused."""
    import zarr
    from pipeline.data import adapter_defaults, get_adapter
    if (path / "zarr.json").is_file() and zarr.open_group(str(path), mode="r").attrs.get("bench_complete"):
        return zarr.open_group(str(path), mode="r")
    cfg = adapter_defaults("studio")
    if quick:  # fewer frames and renders: the plumbing only
        cfg.update({"fps": 6.0, "renders_per_train_clip": 1, "train_people": 1})
    if fps:
        cfg["fps"] = float(fps)
    shutil.rmtree(path, ignore_errors=True)
    g = zarr.open_group(str(path), mode="w")
    get_adapter("studio")(cfg, g, progress=True)
    g.attrs["bench_complete"] = True
    return zarr.open_group(str(path), mode="r")


def pseudo_labels(ds, kp2d: np.ndarray, min_conf: float | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """make_labels per rig (rig mode); returns labels_cam [F,V,J,3], mask [F,V,J], summary."""
    from pipeline.geometry import labels
    rig = np.asarray(ds["rig"][:])
    F_, V = kp2d.shape[:2]
    lab = np.full(kp2d.shape[:3] + (3,), np.nan, np.float32)
    ok = np.zeros(kp2d.shape[:3], bool)
    for g in np.unique(rig):
        sel = np.flatnonzero(rig == g)
        cams = Cameras.from_store(ds, g).without_extrinsics()
        lcfg = {"mode": "rig"} if min_conf is None else {"mode": "rig", "min_confidence": min_conf}
        out = labels.make_labels(kp2d[sel], cams, lcfg)
        lab[sel] = out["labels_cam"]
        ok[sel] = np.asarray(out["valid"], bool) & np.asarray(out["frame_ok"], bool)[:, None, None]
    ok &= np.all(np.isfinite(lab), -1)
    return lab, ok, {"frames_labelled": float(np.mean(ok.any(-1).any(-1)))}


def mean_bone_mm(ds) -> float:
    if "mean_bone_mm" in ds.attrs:
        return float(ds.attrs["mean_bone_mm"])
    from pipeline.geometry.labels import canonical_scale
    train = np.asarray(ds["split"][:]) == 0
    return float(np.nanmean(canonical_scale(np.asarray(ds["poses3d_world"][:])[train])))


def scores(pred_mm: np.ndarray, gt: np.ndarray, mask: np.ndarray, own: np.ndarray | None = None) -> dict:
    """MPJPE, NMPJPE, PMPJPE (mm); with own [f] (person_scale of the frames), "mpjpe_own": the
    MPJPE of SS poses scaled to each person's own size instead of the dataset's mean."""
    out = {"mpjpe": float(np.nanmean(metrics.mpjpe(pred_mm, gt, mask))),
           "nmpjpe": float(np.nanmean(metrics.nmpjpe(pred_mm, gt, mask))),
           "pmpjpe": float(np.nanmean(metrics.pmpjpe(pred_mm, gt, mask)))}
    if own is not None:
        out["mpjpe_own"] = float(np.nanmean(metrics.mpjpe(pred_mm * own[:, None, None, None], gt, mask)))
    return out


# JSON key parts of the RU's gains by targets and by metric
KIND_KEY = {"per pose": "", "sizes kept": "_sizes_kept"}
METRIC_KEY = {"mpjpe": "", "mpjpe_own": "_own", "nmpjpe": "_nmpjpe", "pmpjpe": "_pmpjpe"}


def person_scale(ds) -> np.ndarray:
    """[F]: each frame's person's mean bone length over the dataset's (mean_bone_mm), the
    factor that would turn SS's millimetres (mean bones x the dataset's mean) into that
    person's: an oracle, since no pose in mean bones shows a person's size."""
    from pipeline.joints import mean_bone_length
    subj = np.asarray(ds["subject"][:])
    b = mean_bone_length(np.asarray(ds["poses3d_world"][:]))
    per = {q: float(np.nanmean(b[subj == q])) for q in np.unique(subj)}
    return np.array([per[q] for q in subj]) / mean_bone_mm(ds)


def ru_study(pred: np.ndarray, gt: np.ndarray, lab: np.ndarray, lmask: np.ndarray, clip: np.ndarray,
             mb: float, work: Path, ru_over: dict) -> dict:
    """Why the RU gains little here, on the test frames (pred, gt, lab [f,V,J,3], SS units
    except gt in mm; clip [f]):
    - flip_share: share of SS test poses closer to ground truth after a left/right relabel
      (an ambiguity no pose-only refiner can resolve);
    - held-out RU: an RU trained on one test clip's (prediction, pseudo-label) pairs, i.e. on
      errors exactly like the test errors (same unseen person), applied to the other clip:
      an optimistic bound on what a held-out noise model could give."""
    from pipeline.joints import FLIP
    P, G = pred.reshape(-1, *pred.shape[2:]) * mb, gt.reshape(-1, *gt.shape[2:])
    e = np.linalg.norm(P - G, axis=-1).mean(-1)
    ef = np.linalg.norm(P[:, FLIP] - G, axis=-1).mean(-1)
    out = {"flip_share": float(np.mean(ef < e))}
    clips = np.unique(clip)
    gains = {}
    for a, b in zip(clips, np.roll(clips, -1)):
        if a == b:
            break
        A, B = clip == a, clip == b
        for kind in ("predictions", "noise"):
            rc = {"training_data": kind, **ru_over}
            x, y = refiner.make_pairs(rc, pred[A].reshape(-1, *pred.shape[2:]), lab[A].reshape(-1, *lab.shape[2:]),
                                     lmask[A].reshape(-1, lmask.shape[-1]))
            ck = refiner.train_refiner(rc, x, y, work / f"ru-heldout-{kind}-clip{a}", progress=False)
            pb = pred[B].reshape(-1, *pred.shape[2:])
            r = refiner.apply_refiner(ck, pb)
            gb = gt[B].reshape(-1, *gt.shape[2:])
            m = np.all(np.isfinite(gb), -1)
            s0 = float(np.nanmean(metrics.mpjpe(pb * mb, gb, m)))
            s1 = float(np.nanmean(metrics.mpjpe(r * mb, gb, m)))
            gains[f"clip{a}_to_clip{b}_{kind}"] = 1 - s1 / s0
    out["heldout_ru_gain"] = gains
    return out


def refine_with(rc: dict, x: np.ndarray, y: np.ndarray, out_dir: Path, pred: np.ndarray) -> np.ndarray:
    """Train the unit `rc` on pairs (x, y) in out_dir (reused when complete there) and apply it
    to SS predictions pred [f,V,J,3] -> refined [f,V,J,3], same units."""
    ck = refiner.train_refiner(rc, x, y, out_dir)
    return refiner.apply_refiner(ck, pred.reshape(-1, *pred.shape[2:])).reshape(pred.shape)


def ru_validation(ds, trainf: np.ndarray, size: np.ndarray, folds_dir: Path, clean: np.ndarray, cmask: np.ndarray,
                  gt: np.ndarray, gmask: np.ndarray, ru_over: dict, work: Path) -> dict:
    """The paper's unit judged on training people it never saw (how to choose its settings
    without the test people): each cross-fitted SS network (folds_dir/fold<f>, trained without
    fold f's people) predicts its own training people, whose 3D (clean [f,V,J,3] per-pose mean
    bones, mask cmask; size [f] their person_scale) trains a unit, applied to its predictions of fold f's people; targets per
    pose and with the people's sizes kept. -> {kind: {metric: gain}} (scores' metrics, the mean
    over the folds)."""
    from pipeline.training import refiner_data
    subj = np.asarray(ds["subject"][:])[trainf]
    mb = mean_bone_mm(ds)
    out: dict = {"per pose": [], "sizes kept": []}
    for f, hold in enumerate(refiner_data.crossfit_folds(subj, 2)):
        ck = folds_dir / f"fold{f}" / "final.pt"
        ho = np.isin(subj, hold)
        p_tr, p_ho = pose3d.predict(ck, ds, trainf[~ho]), pose3d.predict(ck, ds, trainf[ho])
        some = cmask[~ho].any(-1)
        g, m, o = gt[trainf[ho]], gmask[trainf[ho]], size[ho]
        s0 = scores(p_ho * mb, g, m, o)
        for kind, targets in (("per pose", clean), ("sizes kept", clean * size[:, None, None, None])):
            rc = {"training_data": "predictions", **ru_over}
            x, y = refiner.make_pairs(rc, p_tr[some], targets[~ho][some], cmask[~ho][some])
            s1 = scores(refine_with(rc, x, y, work / f"{kind.replace(' ', '-')}-fold{f}", p_ho) * mb, g, m, o)
            out[kind].append({k: 1 - s1[k] / s0[k] for k in s0})
    return {kind: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} for kind, rows in out.items()}


def scale_figure(test_g: dict, val_g: dict, sizes: str, path: Path) -> Path:
    """The RU's gains on SS by metric (MPJPE, MPJPE at the person's own size, NMPJPE, PMPJPE),
    for targets per pose and with sizes kept, on the test people and (when measured) on unseen
    training people: what part of an MPJPE gain is the one test person's size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = ["MPJPE", "MPJPE at own size", "NMPJPE", "PMPJPE"]
    rows = {f"test, targets {k}": g for k, g in test_g.items()}
    rows.update({f"validation, targets {k}": g for k, g in val_g.items()})
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(labels))
    w = 0.8 / len(rows)
    for i, (name, g) in enumerate(rows.items()):
        ax.bar(x + i * w, [100 * g[m] for m in METRIC_KEY], w, label=name,
               color=f"C{i % 2}", alpha=1.0 if name.startswith("test") else 0.5)
    ax.axhline(10, color="k", ls=":", lw=1, label="goal (MPJPE)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x + 0.4 - w / 2, labels)
    ax.set_ylabel("gain of SS + RU over SS (%)")
    ax.set_title(sizes, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def why_figure(ss_mm: np.ndarray, refined: dict, gt: np.ndarray, mask: np.ndarray, path: Path) -> Path:
    """Per-joint MPJPE (mm) of SS and each SS + RU on the test frames ([f,V,J,3] each), and the
    share of test poses each makes better: where a unit helps and where it cannot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pipeline.joints import JOINTS

    def per_joint(p):
        e = np.linalg.norm((p - p[..., :1, :]) - (gt - gt[..., :1, :]), axis=-1)
        return np.nanmean(np.where(mask, e, np.nan).reshape(-1, gt.shape[-2]), 0)
    fig, ax = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(gt.shape[-2])
    rows = {"SS": ss_mm, **refined}
    w = 0.8 / len(rows)
    for i, (name, p) in enumerate(rows.items()):
        ax[0].bar(x + i * w, per_joint(p), w, label=name)
    ax[0].set_xticks(x + 0.4 - w / 2, JOINTS, rotation=60, ha="right", fontsize=7)
    ax[0].set_ylabel("MPJPE (mm), test")
    ax[0].legend(fontsize=7)
    e0 = np.nanmean(np.where(mask, np.linalg.norm(ss_mm - gt, axis=-1), np.nan), -1).ravel()
    better = [float(np.nanmean(np.nanmean(np.where(mask, np.linalg.norm(p - gt, axis=-1), np.nan), -1).ravel() < e0))
              for p in refined.values()]
    ax[1].barh(list(refined), better)
    ax[1].set_xlabel("share of test poses the unit improves")
    ax[1].tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def seed_study(a, ds, lab, lmask, test, gt, gmask, mb, o3: dict, tag: str, work: Path, res: dict,
               timings: dict, ru: dict) -> dict:
    """SS and FS with seeds 1 .. a.seeds - 1 beside seed o3's (already in res): test MPJPE per
    seed, SS / FS per seed, their mean and sample standard deviation; and the paper's refinement
    unit (targets from motion capture, inputs that seed's SS predictions on the training images;
    ru = {"frames", "keep", "clean", "mask", "over", "gain", "tag"}: seed o3's unit already measured) trained
    again on each seed's SS with that seed, its MPJPE gain per seed. {} for one seed."""
    if a.seeds < 2:
        return {}
    base = int(o3.get("seed", 0))
    ss, fs = [res["SS"]["mpjpe"]], [res["FS"]["mpjpe"]]
    gains, gains_own = [ru["gain"]], [ru["gain_own"]]
    t = time.perf_counter()
    others = [s for s in range(a.seeds + 1) if s != base][:a.seeds - 1]
    for s in others:
        cfg = {**o3, "seed": s}
        ck_ss = pose3d.train(cfg, ds, lab, lmask, work / "nets" / f"ss-{a.detector}{tag}-seed{s}")
        ck_fs = pose3d.train(cfg, ds, None, None, work / "nets" / f"fs{tag}-seed{s}")
        pred_ss = pose3d.predict(ck_ss, ds, test)
        s0 = scores(pred_ss * mb, gt[test], gmask[test], ru["own"])
        ss.append(s0["mpjpe"])
        fs.append(scores(pose3d.predict(ck_fs, ds, test), gt[test], gmask[test])["mpjpe"])
        rc = {"training_data": "predictions", "seed": s, **ru["over"]}
        x, y = refiner.make_pairs(rc, pose3d.predict(ck_ss, ds, ru["frames"])[ru["keep"]], ru["clean"], ru["mask"])
        r = refine_with(rc, x, y, work / "nets" / f"ru-mocap-perpose-predictions-{a.detector}{ru['tag']}-seed{s}", pred_ss)
        s1 = scores(r * mb, gt[test], gmask[test], ru["own"])
        gains.append(1 - s1["mpjpe"] / s0["mpjpe"])
        gains_own.append(1 - s1["mpjpe_own"] / s0["mpjpe_own"])
        print(f"seed {s}: SS {ss[-1]:.1f} mm, FS {fs[-1]:.1f} mm, SS / FS {ss[-1] / fs[-1]:.3f}, "
              f"RU (motion capture) gain {gains[-1]:+.1%}, at the person's own size {gains_own[-1]:+.1%}", flush=True)
    timings["seeds_s"] = time.perf_counter() - t
    ratio = np.array(ss) / np.array(fs)
    sd = lambda x: float(np.std(x, ddof=1))  # noqa: E731
    print(f"{a.seeds} seeds ({[base, *others]}): SS {np.mean(ss):.1f} ± {sd(ss):.1f} mm, FS {np.mean(fs):.1f} ± "
          f"{sd(fs):.1f} mm, SS / FS {ratio.mean():.3f} ± {sd(ratio):.3f}, RU (motion capture) gain "
          f"{np.mean(gains):+.1%} ± {sd(gains):.1%}, at the person's own size {np.mean(gains_own):+.1%} ± "
          f"{sd(gains_own):.1%} (mean ± sample std)")
    return {"seeds": [base, *others], "seeds_ss_mpjpe": [round(v, 2) for v in ss],
            "seeds_ru_gain_mocap": [round(float(v), 4) for v in gains],
            "seeds_ru_gain_mocap_mean": float(np.mean(gains)), "seeds_ru_gain_mocap_std": sd(gains),
            "seeds_ru_gain_mocap_own": [round(float(v), 4) for v in gains_own],
            "seeds_ru_gain_mocap_own_mean": float(np.mean(gains_own)),
            "seeds_fs_mpjpe": [round(v, 2) for v in fs], "seeds_ss_over_fs": [round(float(v), 4) for v in ratio],
            "seeds_ss_over_fs_mean": float(ratio.mean()), "seeds_ss_over_fs_std": sd(ratio),
            "seeds_ss_mpjpe_std": sd(ss), "seeds_fs_mpjpe_std": sd(fs)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, < 1 minute: checks the plumbing only")
    ap.add_argument("--work", type=Path, default=Path("/tmp/epipose_bench_train"))
    ap.add_argument("--detector", choices=("network", "gt"), default="network",
                    help="2D keypoints for the labels: the trained detector, or ground-truth 2D")
    ap.add_argument("--fps", type=float, default=None, help="studio frame rate override (default: the adapter's)")
    ap.add_argument("--store", type=Path, default=None, help="use this dataset store instead of building the studio")
    ap.add_argument("--ru", type=json.loads, default={},
                    help='refinement unit overrides as JSON, e.g. \'{"epochs": 60}\' (pipeline.training.refiner keys)')
    ap.add_argument("--train3d", type=json.loads, default={},
                    help='JSON overrides of the 3D preset, e.g. \'{"epochs": 12}\' (trained into their own folders)')
    ap.add_argument("--fresh", action="store_true", help="delete earlier trained networks in --work")
    ap.add_argument("--seeds", type=int, default=1,
                    help="train SS and FS with this many 3D seeds (0, 1, ...): the spread of SS / FS")
    a = ap.parse_args(argv)
    work = a.work / ("quick" if a.quick else "full")
    if a.fresh:
        shutil.rmtree(work / "nets", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    timings = {}

    t = time.perf_counter()
    if a.store is not None:
        import zarr
        ds = zarr.open_group(str(a.store), mode="r")
    else:
        ds = build_studio(work / "studio.zarr", a.quick, a.fps)
    timings["dataset_s"] = time.perf_counter() - t
    F_, V = ds["images"].shape[:2]
    split = np.asarray(ds["split"][:])
    test, trainf = np.flatnonzero(split == 1), np.flatnonzero(split == 0)
    print(f"studio: {F_} frames x {V} views, crops {ds['images'].shape[2]} px, "
          f"{trainf.size} train / {test.size} test frames")
    over = {"epochs": 1, "iters_per_epoch": 4} if a.quick else {}
    # SS and FS train on every training clip, as the figures before validation did (the
    # pipeline's default holds one out for its per-epoch validation; bench/train.py compares)
    o3_base = {"val_clips": 0}
    ru_over = {**({"epochs": 2, "hidden": 128} if a.quick else {}), **a.ru}

    # 1. the 2D detector
    t = time.perf_counter()
    ck2 = detector2d.train(over, ds, work / "nets" / "pretrain2d")
    timings["pretrain2d_s"] = time.perf_counter() - t
    det = detector2d.evaluate(ck2, ds, split=1)
    print(f"2D detector on test subjects: PCK@0.05 {det['pck@0.05']:.3f}  PCK@0.1 {det['pck@0.1']:.3f}  "
          f"mean {det['mean_px']:.1f} px  (median {det['median_px']:.1f} px, {det['mean_crop_px']:.2f} crop px)")

    # 2. pseudo-labels from its keypoints
    t = time.perf_counter()
    if a.quick and a.detector == "network":
        a.detector = "gt"  # a detector trained for seconds cannot calibrate a rig: quick checks plumbing only
    if a.detector == "network":
        kp2d = detector2d.predict(ck2, ds, slice(None))
    else:
        kp2d = np.asarray(ds["keypoints2d_gt"][:], np.float32)
    # the network's heatmap confidence ranks joints poorly (see the report): keep every detection
    lab, lmask, linfo = pseudo_labels(ds, kp2d, 0.0 if a.detector == "network" else None)
    timings["labels_s"] = time.perf_counter() - t
    gt_all = pose3d.gt_camera_poses(ds)
    mb0 = mean_bone_mm(ds)
    lab_s = {k: float(np.nanmean(f(lab[trainf] * mb0, gt_all[trainf], lmask[trainf])))
             for k, f in (("nmpjpe", metrics.nmpjpe), ("pmpjpe", metrics.pmpjpe))}
    print(f"labels: {linfo['frames_labelled']:.1%} of frames labelled; vs ground truth on training frames: "
          f"NMPJPE {lab_s['nmpjpe']:.1f} mm, PMPJPE {lab_s['pmpjpe']:.1f} mm")

    # 3. SS and FS
    t = time.perf_counter()
    tag = "".join(f"-{k}{v}" for k, v in sorted(a.train3d.items())).replace(" ", "")
    rtag = tag + "".join(f"-ru{k}{v}" for k, v in sorted(a.ru.items())).replace(" ", "")  # the units' folders
    # both start from the 2D network, as the pipeline's train3d does (init: pretrain2d)
    o3 = {**over, **o3_base, "init": str(ck2), **a.train3d}
    ck_ss = pose3d.train(o3, ds, lab, lmask, work / "nets" / f"ss-{a.detector}{tag}")
    timings["train_ss_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ck_fs = pose3d.train(o3, ds, None, None, work / "nets" / f"fs{tag}")
    timings["train_fs_s"] = time.perf_counter() - t
    ck_meta = loop.load_checkpoint(ck_ss)  # weights_only=True (pipeline.training.checkpoint)
    ips, threads = float(ck_meta["images_per_s"]), ck_meta["cfg"]["num_threads"]
    ips_fs = float(loop.load_checkpoint(ck_fs)["images_per_s"])

    gt = pose3d.gt_camera_poses(ds)
    gmask = np.all(np.isfinite(gt), -1)
    mb = mean_bone_mm(ds)
    pred_fs = pose3d.predict(ck_fs, ds, test)
    pred_ss = pose3d.predict(ck_ss, ds, test)
    scale = person_scale(ds)  # every frame's, computed once
    own = scale[test]
    res = {"FS": scores(pred_fs, gt[test], gmask[test]), "SS": scores(pred_ss * mb, gt[test], gmask[test], own)}

    # 4. the refinement unit, two kinds of training data
    pred_tr = pose3d.predict(ck_ss, ds, trainf)
    some = lmask[trainf].any(-1)
    P, L, M = pred_tr[some], lab[trainf][some], lmask[trainf][some]
    refined = {}
    for kind in ("predictions", "noise"):
        t = time.perf_counter()
        rc = {"training_data": kind, **ru_over}
        x, y = refiner.make_pairs(rc, P, L, M)
        r = refine_with(rc, x, y, work / "nets" / f"ru-{kind}-{a.detector}{rtag}", pred_ss)
        timings[f"ru_{kind}_s"] = time.perf_counter() - t
        res[f"SS+RU({kind})"] = scores(r * mb, gt[test], gmask[test], own)
        refined[f"SS+RU({kind})"] = r * mb
    # 4b. the paper's unit (Sec. 3.3): clean targets from motion capture (here the training
    # subjects' own 3D in each camera's frame), inputs the SS predictions on the training images
    # ("predictions", as the official code), that 3D plus the modelled SS errors ("noise") or, at
    # full size, (e) inputs with test-like errors: cross-fitted SS predictions ("crossfit": 2
    # folds of the training people, each predicted by an SS network that never saw that person)
    from pipeline.training import refiner_data
    clean, cmask = refiner_data.clean_targets(ds, trainf)
    someg = cmask.any(-1)
    mocap_kinds = ("predictions", "noise") if a.quick else ("predictions", "noise", "crossfit")
    held = None
    if "crossfit" in mocap_kinds:
        t = time.perf_counter()
        held = refiner_data.crossfit_predictions(o3, ds, lab, lmask, trainf, 2,
                                                 work / "nets" / f"crossfit-{a.detector}{tag}")[someg]
        timings["crossfit_ss_s"] = time.perf_counter() - t
    for kind in mocap_kinds:
        t = time.perf_counter()
        rc = {"training_data": kind, **ru_over}
        x, y = refiner.make_pairs(rc, pred_tr[someg], clean[someg], cmask[someg],
                                  heldout=held if kind == "crossfit" else None)
        r = refine_with(rc, x, y, work / "nets" / f"ru-mocap-perpose-{kind}-{a.detector}{rtag}", pred_ss)
        timings[f"ru_mocap_{kind}_s"] = time.perf_counter() - t
        res[f"SS+RU(mocap,{kind})"] = scores(r * mb, gt[test], gmask[test], own)
        refined[f"SS+RU(mocap,{kind})"] = r * mb
    # (f) targets that keep each person's size (the 3D divided by one length, the dataset's mean
    # bone, for everyone), against per-pose mean bones (the SS network's unit, the default)
    t = time.perf_counter()
    rc = {"training_data": "predictions", **ru_over}
    size_tr = scale[trainf]
    kept = clean * size_tr[:, None, None, None]
    x, y = refiner.make_pairs(rc, pred_tr[someg], kept[someg], cmask[someg])
    r = refine_with(rc, x, y, work / "nets" / f"ru-mocap-sizes-kept-{a.detector}{rtag}", pred_ss)
    res["SS+RU(mocap,sizes kept)"] = scores(r * mb, gt[test], gmask[test], own)
    timings["ru_mocap_sizes_kept_s"] = time.perf_counter() - t
    val = {}
    if held is not None:
        t = time.perf_counter()
        val = ru_validation(ds, trainf, size_tr, work / "nets" / f"crossfit-{a.detector}{tag}", clean, cmask, gt, gmask,
                            ru_over, work / "nets" / f"ru-val-{a.detector}{rtag}")
        timings["ru_validation_s"] = time.perf_counter() - t
    # mPSS@50 against a reference of the training subjects' 3D (the pss_reference stage's default)
    from pipeline.evaluation import pss
    ref50 = pss.build_reference(pss.reference_poses(ds, trainf), ks=(50,), seed=0)
    full = gmask[test].all(-1) & np.isfinite(pred_ss).all((-2, -1))
    mpss50 = {name: pss.mpss(p[full], gt[test][full], ref50, 50)
              for name, p in {"SS": pred_ss * mb, **refined}.items()}
    # the SS network's own training error, which the noise model copies
    train_err = float(np.nanmean(metrics.mpjpe(P * mb, L * mb, M)))
    study = {} if a.quick else ru_study(pred_ss, gt[test], lab[test], lmask[test], np.asarray(ds["clip"][:])[test],
                                        mb, work / "nets" / f"study-{a.detector}{rtag}", ru_over)

    print(f"\n{'model':<26}{'MPJPE':>9}{'NMPJPE':>9}{'PMPJPE':>9}   (mm, test subjects, {test.size} frames x {V} views)")
    for k, v in res.items():
        print(f"{k:<26}{v['mpjpe']:>9.1f}{v['nmpjpe']:>9.1f}{v['pmpjpe']:>9.1f}")
    ratio = {m: res["SS"][m] / res["FS"][m] for m in ("mpjpe", "nmpjpe", "pmpjpe")}
    gains = {kind: {m: 1 - res[f"SS+RU({kind})"][m] / res["SS"][m] for m in ("mpjpe", "nmpjpe", "pmpjpe")}
             for kind in ("predictions", "noise")}
    best = max(gains, key=lambda k: gains[k]["mpjpe"])
    print(f"SS / FS: MPJPE {ratio['mpjpe']:.2f}  NMPJPE {ratio['nmpjpe']:.2f}  PMPJPE {ratio['pmpjpe']:.2f}"
          f"  (paper, Human3.6M: 1.48; goal <= 1.25)")
    for kind, g in gains.items():
        print(f"RU gain on SS, trained on {kind}: MPJPE {g['mpjpe']:+.1%}  NMPJPE {g['nmpjpe']:+.1%}  "
              f"PMPJPE {g['pmpjpe']:+.1%}  (paper: 20 %)")
    gm = {kind: 1 - res[f"SS+RU(mocap,{kind})"]["mpjpe"] / res["SS"]["mpjpe"] for kind in mocap_kinds}
    print(f"RU gain on SS, targets from motion capture (training subjects' 3D): inputs SS predictions "
          f"{gm['predictions']:+.1%}, 3D + modelled SS errors {gm['noise']:+.1%}"
          + (f", cross-fitted SS predictions {gm['crossfit']:+.1%}" if "crossfit" in gm else "")
          + "  (paper: 20 %; goal >= 10 %)")
    print("mPSS@50 (%): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in mpss50.items()))
    metric_names = ("mpjpe", "mpjpe_own", "nmpjpe", "pmpjpe")
    test_g = {kind: {m: 1 - res[row][m] / res["SS"][m] for m in metric_names}
              for kind, row in (("per pose", "SS+RU(mocap,predictions)"), ("sizes kept", "SS+RU(mocap,sizes kept)"))}
    sizes = (f"the test people's mean bone: {own.mean():.3f} of the training people's mean "
             f"(training people: {size_tr.min():.3f} .. {size_tr.max():.3f})")
    print(f"{sizes}; RU (motion capture, SS predictions) gains on SS, per metric "
          "(MPJPE, MPJPE at the person's own size, NMPJPE, PMPJPE):")
    for kind, g in test_g.items():
        print(f"  targets {kind:<10} test: " + "  ".join(f"{g[m]:+.1%}" for m in metric_names)
              + ("" if kind not in val else "   validation (unseen training people): "
                 + "  ".join(f"{val[kind][m]:+.1%}" for m in metric_names)))
    # full-size figures beside the results (bench/results/train[-gt]_ru_*.png), quick ones in --work
    figs = work if a.quick else Path(__file__).resolve().parent / "results"
    stem = "train" if a.detector == "network" else f"train-{a.detector}"
    fig2 = scale_figure(test_g, val, sizes, figs / f"{stem}_ru_scale.png")
    print(f"the RU's gain by metric, test and validation: {fig2}")
    fig = why_figure(pred_ss * mb, refined, gt[test], gmask[test], figs / f"{stem}_ru_why.png")
    print(f"per-joint error of SS and SS + RU: {fig}")
    print(f"SS training error vs its labels (train frames): {train_err:.1f} mm; mean bone {mb:.1f} mm")
    if study:
        print(f"SS test poses closer to ground truth after a left/right relabel: {study['flip_share']:.1%}")
        print("RU trained on one test clip's (prediction, pseudo-label) pairs, MPJPE gain on the other: "
              + ", ".join(f"{k} {v:+.1%}" for k, v in study["heldout_ru_gain"].items()))
    seeds = seed_study(a, ds, lab, lmask, test, gt, gmask, mb, o3, tag, work, res, timings,
                       {"frames": trainf, "keep": someg, "clean": clean[someg], "mask": cmask[someg],
                        "over": ru_over, "gain": gm["predictions"], "tag": rtag, "own": own,
                        "gain_own": test_g["per pose"]["mpjpe_own"]})
    print(f"training images/s (cpu preset, num_threads={threads}, {os.cpu_count()} cores): SS {ips:.0f}, FS {ips_fs:.0f}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    out = {"quick": a.quick, "detector": a.detector, "frames": int(F_), "views": int(V),
           "fs_mpjpe": res["FS"]["mpjpe"], "ss_mpjpe": res["SS"]["mpjpe"],
           "fs_nmpjpe": res["FS"]["nmpjpe"], "ss_nmpjpe": res["SS"]["nmpjpe"],
           "fs_pmpjpe": res["FS"]["pmpjpe"], "ss_pmpjpe": res["SS"]["pmpjpe"],
           "ss_over_fs": ratio["mpjpe"], "ss_over_fs_nmpjpe": ratio["nmpjpe"], "ss_over_fs_pmpjpe": ratio["pmpjpe"],
           "ss_ru_mpjpe": res[f"SS+RU({best})"]["mpjpe"], "ru_training_data": best,
           "ru_gain": gains[best]["mpjpe"], "ru_gain_predictions": gains["predictions"]["mpjpe"],
           "ru_gain_noise": gains["noise"]["mpjpe"],
           "ru_gain_mocap": gm["predictions"], "ru_gain_mocap_noise": gm["noise"],
           **{f"{pre}ru_gain_mocap{KIND_KEY[kind]}{METRIC_KEY[m]}": g[m] for pre, gains_ in (("", test_g), ("val_", val))
              for kind, g in gains_.items() for m in metric_names if pre or kind != "per pose" or m != "mpjpe"},
           "test_person_bone_ratio": float(own.mean()),
           **({"ru_gain_mocap_crossfit": gm["crossfit"],
               "ss_ru_crossfit_mpss50": mpss50["SS+RU(mocap,crossfit)"]} if "crossfit" in gm else {}),
           "ss_mpss50": mpss50["SS"], "ss_ru_mpss50": mpss50["SS+RU(mocap,predictions)"],
           "ss_ru_labels_mpss50": mpss50[f"SS+RU({best})"],
           "detector_pck": det["pck@0.1"], "detector_pck_005": det["pck@0.05"], "detector_mean_px": det["mean_px"],
           "labelled_frames": linfo["frames_labelled"],
           "label_nmpjpe": lab_s["nmpjpe"], "label_pmpjpe": lab_s["pmpjpe"], "train_images_per_s": ips,
           "ss_train_vs_label_mpjpe": train_err, **{f"study_{k}": v for k, v in study.items()}, **seeds,
           "total_s": time.perf_counter() - t_all}
    save("train" if a.detector == "network" else f"train-{a.detector}",
         {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}, a.quick)
    return out


if __name__ == "__main__":
    main()
