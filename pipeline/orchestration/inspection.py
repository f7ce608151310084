"""`epipose inspect <store>`: what a stage output holds and how good it is.

Prints the provenance, every array's shape / dtype / dimension names, chunk completion, and
per stage: the dataset's splits and subjects; the detector's per-joint detection rate and
pixel error against the ground-truth 2D; the labels' per-joint validity, failures by cause
and per camera pair, and their error against the ground truth (MPJPE in mm through the
dataset's mean bone length, NMPJPE, PMPJPE, per joint) where the dataset has it, on every
frame and on the training split (the report's Table 1 frame set); the rig the labels were made
with: per camera the labels' reprojection error and the bundle adjustment's, per pair the
rotation and baseline-direction error against the dataset's calibration where it has one; the
evaluation's metrics; a training output's epochs, loss and images/s. `plot_dir` also writes
PNGs: label skeletons over the images and error histograms, or the training curve.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..joints import JOINTS, J
from ..training.checkpoint import training_record
from .store import open_group, read_provenance


def _fmt_table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in cells]
    out.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(out)


def _input_group(prov: dict, name: str):
    loc = (prov.get("inputs") or {}).get(name, {}).get("location")
    if not loc:
        return None
    try:
        return open_group(loc, "r")
    except Exception:
        return None


def _arrays_section(g) -> list[str]:
    rows = []
    for k in sorted(g.array_keys()):
        a = g[k]
        rows.append([k, "x".join(map(str, a.shape)), str(a.dtype), ",".join(a.metadata.dimension_names or ()),
                     "x".join(map(str, a.chunks))])
    return ["arrays:", _fmt_table(["name", "shape", "dtype", "dims", "chunks"], rows)] if rows else []


def _provenance_section(prov: dict, attrs: dict) -> list[str]:
    out = [f"stage:       {prov.get('stage')} ({prov.get('name')}), dataset {prov.get('dataset')}",
           f"fingerprint: {prov.get('fingerprint')}   complete: {prov.get('complete')}   "
           f"created {prov.get('created')}  finished {prov.get('finished', '-')}  "
           f"({prov.get('seconds', '-')} s, version {prov.get('package_version')})"]
    for k, v in (prov.get("inputs") or {}).items():
        out.append(f"input:       {k} {v.get('fingerprint')}  {v.get('location')}")
    conf = prov.get("config", {}).get("section", prov.get("config", {}))
    out.append("config:      " + json.dumps(conf, sort_keys=True, default=str)[:600])
    ch = attrs.get("chunks")
    if ch:
        out.append(f"chunks:      {len(ch.get('done', {}))}/{ch.get('n')} complete ({ch.get('size')} frames each)")
    return out


def _gt_camera(ds):
    """GT root-relative camera-frame poses [F,V,J,3] mm of a dataset store, or None."""
    from ..camera import store_poses_in_cameras
    try:
        X = store_poses_in_cameras(ds)
    except (ValueError, TypeError):
        return None
    return X - X[..., :1, :]


def _training(location: str, prov: dict) -> dict | None:
    """The training record of a training output, None for any other output."""
    rel = prov.get("result")
    if not rel or prov.get("stage") not in ("train3d", "pretrain2d", "refine"):
        return None
    path = Path(location) / rel
    return training_record(path) if path.is_file() else None


def _training_section(t: dict) -> list[str]:
    loss = [float(x) for x in t.get("losses") or []]
    out = [f"training:    {len(loss)} epochs, loss {loss[0]:.4g} -> {loss[-1]:.4g}" if loss else "training:    no losses"]
    if t.get("images_per_s"):
        out.append(f"             {float(t['images_per_s']):.0f} images/s")
    if t.get("init"):  # the network whose layers it started from (train3d: the 2D detector)
        out.append(f"             started from {t['init']}")
    elif t.get("pretrained"):
        out.append(f"             backbone from {t['pretrained']}")
    val = t.get("validation") or []
    if val:
        e = [float(v["mpjpe"]) for v in val]
        best = int(np.nanargmin(e))
        out.append(f"validation:  held-out clip, MPJPE {e[0]:.1f} -> {e[-1]:.1f} (best {e[best]:.1f} at epoch "
                   f"{best + 1}), NMPJPE {float(val[-1]['nmpjpe']):.1f} {val[-1].get('units', '')}, "
                   f"loss {float(val[0]['loss']):.4g} -> {float(val[-1]['loss']):.4g}")
    n = t.get("n_samples") or t.get("n_train")
    if n:
        out.append(f"             {n} training samples" + (f", targets in {t['units']}" if t.get("units") else ""))
    return out


def label_errors(lab, ds, min_joints: int = 8) -> dict | None:
    """Label error against GT per (frame, view), over the joints labelled valid:
    {"mpjpe", "nmpjpe", "pmpjpe" [F,V] mm (NaN where the root or fewer than `min_joints`
    joints are valid), "per_joint_nmpjpe" [J] mm, "units"}; None without GT (pipeline.evaluation.metrics)."""
    from ..evaluation import metrics
    from ..joints import ROOT
    gt = _gt_camera(ds)
    if gt is None:
        return None
    L = np.asarray(lab["labels_cam"][:], float)
    ok = np.asarray(lab["valid"][:], bool) & np.asarray(lab["frame_ok"][:], bool)[:, None, None]
    ok &= np.all(np.isfinite(L), -1) & np.all(np.isfinite(gt), -1)
    known = (dict(lab.attrs.get("provenance", {})).get("config", {}).get("section", {}).get("mode") == "known")
    scale = 1.0 if known else float(ds.attrs.get("mean_bone_mm", np.nan))
    use = ok[..., ROOT] & (ok.sum(-1) >= min_joints)
    out = {"units": "mm" if known else f"mean bones x {scale:.1f} mm"}
    for name, fn in (("mpjpe", metrics.mpjpe), ("nmpjpe", metrics.nmpjpe), ("pmpjpe", metrics.pmpjpe)):
        v = np.full(use.shape, np.nan)
        if use.any():
            v[use] = fn(L[use] * scale, gt[use], ok[use])
        out[name] = v
    pj = np.full(J, np.nan)
    if use.any():
        aligned = metrics.scale_align(L[use] * scale, gt[use], ok[use])
        e = metrics.joint_errors(aligned, gt[use], ok[use])
        with np.errstate(invalid="ignore"):
            pj = np.nanmean(e, axis=0) if np.isfinite(e).any() else pj
    out["per_joint_nmpjpe"] = pj
    return out


def _label_section(g, prov) -> list[str]:
    out = []
    valid = np.asarray(g["valid"][:], bool)
    ok = np.asarray(g["frame_ok"][:], bool)
    fail = np.asarray(g["failure"][:])
    names = {int(k): v for k, v in dict(g.attrs.get("failures", {})).items()}
    F = len(ok)
    out.append(f"frames labelled: {int(ok.sum())}/{F} ({100 * ok.mean():.1f} %)")
    codes, counts = np.unique(fail, return_counts=True)
    out.append("failures: " + ", ".join(f"{names.get(int(c), c)}: {n}" for c, n in zip(codes, counts)))
    ds = _input_group(prov, "dataset")
    err = label_errors(g, ds) if ds is not None else None
    rows = []
    for j in range(J):
        r = [JOINTS[j], f"{100 * valid[..., j].mean():.1f}"]
        if err is not None:
            r.append(f"{err['per_joint_nmpjpe'][j]:.1f}")
        rows.append(r)
    out += ["per-joint validity (% of frame-views)" + (" and NMPJPE (mm) against GT" if err else "") + ":",
            _fmt_table(["joint", "valid %"] + (["NMPJPE"] if err else []), rows)]
    if err is not None:
        split = np.asarray(ds["split"][:]) if "split" in ds else np.zeros(F, int)
        out.append(f"label error against GT ({err['units']}), mean over (frame, view) labels with their root "
                   f"and >= 8 valid joints, on those joints:")
        for what, rows in ((f"all {F} frames (train and test)", slice(None)),
                           (f"training split, {int((split == 0).sum())} frames (the report's Table 1 frame set; "
                            "its per-pose masks differ slightly)", split == 0)):
            with np.errstate(invalid="ignore"):
                m = {k: np.nanmean(err[k][rows]) if np.isfinite(err[k][rows]).any() else np.nan
                     for k in ("mpjpe", "nmpjpe", "pmpjpe")}
            out.append(f"  {what}: MPJPE {m['mpjpe']:.1f}  NMPJPE {m['nmpjpe']:.1f}  PMPJPE {m['pmpjpe']:.1f}")
    else:
        out.append("label error against GT: no ground truth in the dataset")
    # failures per camera pair
    pairs = None
    cal = dict(g.attrs.get("calibration", {}))
    for v in cal.values():
        if isinstance(v, dict) and "rig_pairs" in v:
            pairs = v["rig_pairs"]
            break
    pf = np.asarray(g["pair_failure"][:]) if "pair_failure" in g else None
    pr = np.asarray(g["pair_reproj_px"][:], float) if "pair_reproj_px" in g else None
    pu = np.asarray(g["pair_used"][:], bool) if "pair_used" in g else None
    P = next((a.shape[1] for a in (pf, pr, pu) if a is not None), 0)
    if P:
        V = int(valid.shape[1])
        if pairs is None or len(pairs) != P:
            from itertools import combinations
            allp = list(combinations(range(V), 2))
            pairs = allp if len(allp) == P else [[p, -1] for p in range(P)]
        rows = []
        for p in range(P):
            r = [f"{pairs[p][0]}-{pairs[p][1]}"]
            r.append(str(int((pf[:, p] != 0).sum())) if pf is not None else "-")
            r.append(f"{100 * pu[:, p].mean():.1f}" if pu is not None else "-")
            r.append(f"{np.nanmedian(pr[:, p]):.2f}" if pr is not None and np.isfinite(pr[:, p]).any() else "-")
            rows.append(r)
        out += ["per camera pair:", _fmt_table(["pair", "failed frames", "used %", "median reproj px"], rows)]
    if ds is not None:
        out += _rig_section(g, prov, ds)
    return out


def rig_judgement(lab, ds, det, mode: str) -> list[dict]:
    """Per rig of a label store: {"rig", "views" [V] names, "reprojection_px" [V] (median over
    labelled frames and joints of the labels placed in the world, pipeline/geometry/label_world.py,
    projected into each camera, against the keypoints), "ba_rms_px" [V] (rig mode), "pairs"
    [P, 2], "rotation_err_deg" [P], "direction_err_deg" [P] (None without a reference: a
    dataset calibration with every camera placed, in rig mode)}. [] in per-frame mode."""
    from ..camera import Cameras
    from ..evaluation.selfcheck import per_camera
    from ..geometry import label_world, rig as rigmod
    from ..geometry.rig_error import pair_direction_errors
    from .calibrate import pair_errors
    if mode not in ("known", "rig") or (mode == "rig" and "R_est" not in lab):
        return []
    rig = np.asarray(ds["rig"][:])
    kp = np.asarray(det["keypoints2d"][:], float)
    labels = np.asarray(lab["labels_cam"][:], float)
    valid = np.asarray(lab["valid"][:], bool) & np.asarray(lab["frame_ok"][:], bool)[:, None, None]
    scale = np.asarray(lab["scale"][:], float)
    cal = dict(lab.attrs.get("calibration", {}))
    views = ds.attrs.get("views")
    V = kp.shape[1]
    names = [str(v) for v in views] if isinstance(views, list) and len(views) == V else [str(v) for v in range(V)]
    out = []
    for gi in np.unique(rig):
        sel = np.flatnonzero(rig == gi)
        ref = Cameras.from_store(ds, int(gi))
        cams = ref if mode == "known" else Cameras.from_store(lab, int(gi), "_est")
        X = label_world.world_poses(labels[sel], valid[sel], scale[sel], cams.R,
                                    label_world.root_positions(kp[sel], cams))
        info = cal.get(str(int(gi)), {}) if isinstance(cal.get(str(int(gi))), dict) else {}
        r = {"rig": int(gi), "views": names, "reprojection_px": per_camera(label_world.reprojection_px(X, kp[sel], cams)),
             "ba_rms_px": np.asarray(info.get("ba_rms_px_camera", [np.nan] * V), float),
             "pairs": rigmod.all_pairs(V), "rotation_err_deg": None, "direction_err_deg": None}
        if mode == "rig" and ref.has_extrinsics:
            r["rotation_err_deg"] = pair_errors(cams.R, ref.R)
            r["direction_err_deg"] = pair_direction_errors(cams.R, cams.t, ref.R, ref.t)
        out.append(r)
    return out


def _rig_section(g, prov, ds) -> list[str]:
    det = _input_group(prov, "detect2d")
    mode = prov.get("config", {}).get("section", {}).get("mode")
    if det is None:
        return []
    out = []
    for r in rig_judgement(g, ds, det, mode):
        head = (f"rig {r['rig']} ({'the dataset calibration' if mode == 'known' else 'estimated from the people'}): "
                "per camera, labels placed in the world and projected back, median px over labelled frames and joints")
        rows = [[n, f"{e:.2f}" if np.isfinite(e) else "-", f"{b:.2f}" if np.isfinite(b) else "-"]
                for n, e, b in zip(r["views"], r["reprojection_px"], r["ba_rms_px"])]
        out += [head, _fmt_table(["camera", "label reproj px", "bundle adj. RMS px"], rows)]
        if r["rotation_err_deg"] is not None:
            rows = [[f"{r['views'][a]}-{r['views'][b]}", f"{e:.2f}", f"{d:.2f}"]
                    for (a, b), e, d in zip(r["pairs"], r["rotation_err_deg"], r["direction_err_deg"])]
            with np.errstate(invalid="ignore"):
                mean = f"mean rotation {np.nanmean(r['rotation_err_deg']):.2f} deg, direction {np.nanmean(r['direction_err_deg']):.2f} deg"
            out += [f"estimated rig vs the dataset's calibration, per pair ({mean}):",
                    _fmt_table(["pair", "rotation err deg", "direction err deg"], rows)]
        elif mode == "rig":
            out.append("estimated rig vs calibration: the dataset carries no calibration to compare with")
    return out


def _detect_section(g, prov) -> list[str]:
    kp = np.asarray(g["keypoints2d"][:], float)
    det = np.all(np.isfinite(kp[..., :2]), -1)
    ds = _input_group(prov, "dataset")
    gt = np.asarray(ds["keypoints2d_gt"][:], float) if ds is not None and "keypoints2d_gt" in ds else None
    rows = []
    for j in range(J):
        r = [JOINTS[j], f"{100 * det[..., j].mean():.1f}"]
        if gt is not None:
            e = np.linalg.norm(kp[..., j, :2] - gt[..., j, :2], axis=-1)
            r.append(f"{np.nanmedian(e):.2f}" if np.isfinite(e).any() else "-")
        rows.append(r)
    out = [f"detector: {g.attrs.get('detector')}",
           _fmt_table(["joint", "detected %"] + (["median px error vs GT"] if gt is not None else []), rows)]
    return out


def _dataset_section(g) -> list[str]:
    a = dict(g.attrs)
    split = np.asarray(g["split"][:])
    out = [f"frames: {len(split)} (train {int((split == 0).sum())}, test {int((split == 1).sum())}), "
           f"views {g['K'].shape[1]}, rigs {g['K'].shape[0]}",
           f"subjects: {a.get('subjects')}", f"clips: {len(a.get('clips', []))}",
           f"mean_bone_mm: {a.get('mean_bone_mm')}  source: {a.get('source', '-')}  licence: {a.get('licence', '-')}"]
    return out


def _evaluate_section(g) -> list[str]:
    models = dict(g.attrs.get("models", {}))
    keys = ["mpjpe", "nmpjpe", "pmpjpe", "pck", "auc", "mpss_k50", "mpss_k100"]
    rows = [[n] + [f"{m['summary']['overall'].get(k, float('nan')):.3f}" for k in keys] for n, m in models.items()]
    return ["metrics (test split):", _fmt_table(["model"] + keys, rows)] if rows else []


def inspect_store(location: str, plot_dir: str | None = None, n_frames: int = 4) -> str:
    """A text description of the stage output at `location` (and PNGs into plot_dir)."""
    try:
        g = open_group(str(location), "r")
    except Exception as e:
        raise ValueError(f"{location}: not a zarr store ({type(e).__name__}: {e})") from e
    prov = read_provenance(str(location))
    attrs = dict(g.attrs)
    out = [f"store: {location}"]
    out += _provenance_section(prov, attrs) if prov else ["(no provenance: not written by the pipeline)"]
    out += _arrays_section(g)
    stage = prov.get("stage")
    if stage == "label" or "labels_cam" in g:
        out += _label_section(g, prov)
    elif stage == "detect2d" or "keypoints2d" in g:
        out += _detect_section(g, prov)
    elif stage == "dataset" or "poses3d_world" in g:
        out += _dataset_section(g)
    elif stage == "evaluate":
        out += _evaluate_section(g)
    training = _training(str(location), prov) if prov else None
    if training:
        out += _training_section(training)
    if plot_dir is not None:
        paths = plot_store(g, prov, Path(plot_dir), n_frames, training)
        out.append("figures: " + ", ".join(str(p) for p in paths))
    return "\n".join(out)


def _weak_perspective(X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Fit u = a x + bu, v = a y + bv over joints finite in both; X [J,3], uv [J,2] -> [J,2].

    Draws a scale-free label in the image it came from (the label has no absolute depth)."""
    ok = np.all(np.isfinite(X), -1) & np.all(np.isfinite(uv), -1)
    if ok.sum() < 3:
        return np.full((J, 2), np.nan)
    A = np.zeros((2 * ok.sum(), 3))
    A[0::2, 0], A[0::2, 1] = X[ok, 0], 1
    A[1::2, 0], A[1::2, 2] = X[ok, 1], 1
    sol = np.linalg.lstsq(A, uv[ok].reshape(-1), rcond=None)[0]
    return np.stack([sol[0] * X[:, 0] + sol[1], sol[0] * X[:, 1] + sol[2]], -1)


def plot_store(g, prov: dict, out: Path, n_frames: int = 4, training: dict | None = None) -> list[Path]:
    """PNGs: for a label store, label skeletons over the images and error histograms; for a
    training output, its loss per epoch."""
    from ..evaluation.plots import draw_skeleton_2d  # first: it selects the Agg backend
    import matplotlib.pyplot as plt  # noqa: E402
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if training and training.get("losses"):
        loss = np.asarray(training["losses"], float)
        val = training.get("validation") or []
        fig, axs = plt.subplots(1, 2 if val else 1, figsize=(9 if val else 4.5, 3), squeeze=False)
        ax = axs[0][0]
        ax.plot(np.arange(1, loss.size + 1), loss, marker="o", ms=3, label="training")
        if val:  # the held-out clip (pipeline/training/validation.py), per epoch
            e = np.arange(1, len(val) + 1)
            ax.plot(e, [float(v["loss"]) for v in val], marker="s", ms=3, ls="--", label="validation")
            ax.legend(fontsize=7)
            bx = axs[0][1]
            bx.plot(e, [float(v["mpjpe"]) for v in val], marker="o", ms=3, label="MPJPE")
            bx.plot(e, [float(v["nmpjpe"]) for v in val], marker="s", ms=3, label="NMPJPE")
            bx.set_xlabel("epoch")
            from matplotlib.ticker import MaxNLocator as _Ints
            bx.xaxis.set_major_locator(_Ints(integer=True))
            bx.set_ylabel(f"validation ({val[-1].get('units', '')})")
            bx.legend(fontsize=7)
            bx.grid(alpha=0.3)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.set_title(f"{prov.get('stage')} {prov.get('name')}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        p = out / "training_curve.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    if "labels_cam" not in g:
        return paths
    ds = _input_group(prov, "dataset")
    det = _input_group(prov, "detect2d")
    ok = np.asarray(g["frame_ok"][:], bool)
    frames = np.flatnonzero(ok)
    if ds is not None and "images" in ds and det is not None and len(frames):
        pick = frames[np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).astype(int)]
        V = g["labels_cam"].shape[1]
        S = ds["images"].shape[2]
        fig, axes = plt.subplots(len(pick), V, figsize=(2.2 * V, 2.2 * len(pick)), squeeze=False)
        for r, f in enumerate(pick):
            L = np.asarray(g["labels_cam"][f], float)
            kp = np.asarray(det["keypoints2d"][f], float)
            box = np.asarray(ds["crop_boxes"][f], float)
            for v in range(V):
                uv = _weak_perspective(L[v], kp[v, :, :2])
                crop = (uv - box[v, :2]) * (S / box[v, 2:4])
                # plots' colours are BGR (left blue, right red): draw on BGR, show as RGB
                img = np.ascontiguousarray(np.asarray(ds["images"][f, v])[..., ::-1])
                axes[r, v].imshow(draw_skeleton_2d(img, crop, 1, 1)[..., ::-1])
                axes[r, v].set_axis_off()
                axes[r, v].set_title(f"frame {f} view {v}", fontsize=7)
        fig.suptitle("labels drawn in their images (weak-perspective fit to the 2D detections)", fontsize=8)
        fig.tight_layout()
        p = out / "labels_over_images.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    err = label_errors(g, ds) if ds is not None else None
    hists = []
    if err is not None:
        hists += [("NMPJPE vs GT (mm)", err["nmpjpe"]), ("PMPJPE vs GT (mm)", err["pmpjpe"])]
    if "pair_reproj_px" in g:
        hists.append(("pair reprojection error (px)", np.asarray(g["pair_reproj_px"][:], float)))
    if hists:
        fig, axes = plt.subplots(1, len(hists), figsize=(4 * len(hists), 3), squeeze=False)
        for ax, (title, v) in zip(axes[0], hists):
            v = v[np.isfinite(v)].ravel()
            if len(v):
                top = float(np.quantile(v, 0.99))
                over = int((v > top).sum())
                ax.hist(np.clip(v, 0, top), bins=40)
                if over:  # the tail is piled into the last bin: say so
                    ax.annotate(f"last bin: {over} values > {top:.1f}\n(up to {v.max():.1f}) clipped into it",
                                xy=(0.98, 0.95), xycoords="axes fraction", ha="right", va="top", fontsize=7)
            ax.set_title(title + f" ({len(v)} values)", fontsize=9)
            ax.set_ylabel("count")
        fig.tight_layout()
        p = out / "label_errors.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
