"""The evaluation report: one markdown file and its PNG figures, the paper's tables on our data.

`write_report(results, out_dir) -> Path` (the path of `report.md`). `results` is a plain dict
that the orchestration fills from the stage outputs; every key is optional, and a section
whose inputs are missing is left out (and listed at the end of the report as not run).

results = {
  "title":    str,                         # default "EpipolarPose evaluation"
  "dataset":  str,                         # dataset name, shown in the header
  "config":   dict,                        # resolved configuration / fingerprints (JSON block)
  "labels": {                              # Table 1 analogue: quality of the training labels
      "<row>": {                           #   e.g. "GT 2D, known extrinsics", "GT 2D, rig (no
          "summary":  dict,                #   extrinsics)", "detector 'network', rig"
                                           #   summary = pipeline.evaluation.scoring.score(...)[0]
          "coverage": float,               #   fraction of frames labelled (frame_ok), optional
          "note":     str,                 #   optional
      }, ...},
  "models": {                              # Table 2/3 analogue: FS, SS, SS+RU
      "<row>": {
          "summary":   dict,               #   evaluate summary
          "per_frame": DataFrame | path,   #   evaluate's per-frame table (or its Parquet file)
          "note":      str,                #   optional
      }, ...},
  "pss_reference": dict | zarr.Group,      # pipeline.evaluation.pss.build_reference output (Fig. 6 thumbnails)
  "pss_stability": [dict, ...],            # pipeline.evaluation.pss.stability outputs, one per k
  "samples": {                             # arrays for the figures, aligned with per_frame's
      "images":      array [F,V,S,S,3] uint8,  # "frame" (0..F-1) and "view"; a zarr array is
      "gt":          array [F,V,J,3] mm,       # fine (only the frames shown are read)
      "predictions": {"<model row>": array [F,V,J,3]},  # in the model's units: the report
  },                                       #   multiplies by its summary["scale_mm"]
  "qualitative": [(frame, view), ...],     # frames for the qualitative figure (default: picked
                                           #   at the 10/50/90 % quantiles of the main model's MPJPE)
  "main_model": str,                       # model whose errors choose frames (default: "SS" if
                                           #   present, else the first model)
  "n_worst":  int,                         # worst frames shown per model (default 6)
  "without_ground_truth": dict,             # no 3D ground truth: pipeline.evaluation.selfcheck's
                                           #   figures (the evaluate stage's attribute)
  "timings":  {"<stage>": seconds},        # per-stage wall time
  "training": {                            # training curves (one PNG, one table)
      "<network>": {"loss": [float, ...],  #   mean loss per epoch
                    "images_per_s": float, #   optional
                    "note": str,           #   optional, e.g. the loss and its units
                    "validation": [{"loss", "mpjpe", "nmpjpe", "units"}, ...]},  # optional, per epoch:
                                           #   the held-out clip (pipeline/training/validation.py)
      }, ...},
}
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


# (summary key, column title, kind): kind "mm" prints millimetres, "pct" a fraction as percent
COLUMNS = (("mpjpe", "MPJPE (mm)", "mm"), ("nmpjpe", "NMPJPE (mm)", "mm"),
           ("pmpjpe", "PMPJPE (mm)", "mm"), ("pck", "PCK@150 (%)", "pct"),
           ("npck", "NPCK@150 (%)", "pct"), ("auc", "AUC (%)", "pct"),
           ("mpss_k50", "mPSS@50 (%)", "pct"), ("mpss_k100", "mPSS@100 (%)", "pct"))


def _num(v) -> float:
    """A float from a summary value; NaN for None or non-numbers (JSON stores write NaN as "nan")."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v, kind: str) -> str:
    v = _num(v)
    if not math.isfinite(v):
        return "–"
    return f"{100 * v:.1f}" if kind == "pct" else f"{v:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _metric_table(entries: dict, extra: tuple[tuple[str, str], ...] = ()) -> str:
    """One row per entry: name, the COLUMNS present in any summary, extra (key, title) fields."""
    present = [c for c in COLUMNS if any(c[0] in e.get("summary", {}).get("overall", {})
                                         for e in entries.values())]
    header = [""] + [t for _, t, _ in present] + [t for _, t in extra] + ["poses"]
    rows = []
    for name, e in entries.items():
        o = e.get("summary", {}).get("overall", {})
        row = [name] + [_fmt(o.get(k), kind) for k, _, kind in present]
        for key, _ in extra:
            row.append(_fmt(e.get(key), "pct"))
        row.append(str(o.get("n_poses", "–")))
        rows.append(row)
    return _table(header, rows)


def _per_frame(entry):
    pf = entry.get("per_frame")
    if pf is None:
        return None
    if isinstance(pf, (str, Path)):
        from .scoring import read_per_frame

        return read_per_frame(pf)
    return pf


def _scaled(samples: dict, models: dict, name: str, f: int, v: int) -> np.ndarray:
    scale = _num(models.get(name, {}).get("summary", {}).get("scale_mm", 1.0))
    return np.asarray(samples["predictions"][name][f, v], dtype=np.float64) * scale


def _plt():
    from . import plots  # noqa: F401  (selects the Agg backend)
    import matplotlib.pyplot as plt

    return plt


def _per_action_section(models: dict, out_dir: Path) -> list[str]:
    """Per-action MPJPE / NMPJPE / mPSS@50 tables (actions x models) and a bar chart."""
    plt = _plt()
    actions = sorted({a for e in models.values() for a in e.get("summary", {}).get("per_action", {})})
    if not actions:
        return []
    md = ["## Per action", ""]
    for key, title, kind in (COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[6]):
        rows = []
        for a in actions:
            rows.append([a] + [_fmt(e["summary"].get("per_action", {}).get(a, {}).get(key), kind)
                               for e in models.values()])
        rows.append(["**mean over actions**"] + [_fmt(e["summary"].get("action_mean", {}).get(key), kind)
                                                 for e in models.values()])
        if all(c == "–" for r in rows for c in r[1:]):
            continue
        md += [f"**{title}**", "", _table(["action"] + list(models), rows), ""]
    vals = {n: [_num(e["summary"].get("per_action", {}).get(a, {}).get("mpjpe")) for a in actions]
            for n, e in models.items()}
    if len(actions) == 1:  # one action: one bar per model, named on the axis (no legend to hide them)
        fig, ax = plt.subplots(figsize=(max(3.5, 1.2 * len(models)), 3.2))
        ax.bar(np.arange(len(models)), [v[0] for v in vals.values()], 0.6,
               color=[f"C{i}" for i in range(len(models))])
        ax.set_xticks(np.arange(len(models)), list(models))
        ax.set_title(actions[0], fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(actions) * len(models)), 3.5))
        w = 0.8 / max(len(models), 1)
        for i, (name, v) in enumerate(vals.items()):
            ax.bar(np.arange(len(actions)) + i * w, v, w, label=name)
        ax.set_xticks(np.arange(len(actions)) + 0.4 - w / 2, actions, rotation=30, ha="right")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_ylabel("MPJPE (mm)")
    fig.tight_layout()
    fig.savefig(out_dir / "per_action_mpjpe.png", dpi=100)
    plt.close(fig)
    md += ["![per-action MPJPE](per_action_mpjpe.png)", ""]
    return md


def _error_cdf(models: dict, out_dir: Path) -> list[str]:
    plt = _plt()
    frames = {n: _per_frame(e) for n, e in models.items()}
    frames = {n: d for n, d in frames.items() if d is not None and len(d)}
    if not frames:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, d in frames.items():
        for ax, col in zip(axes, ("mpjpe", "nmpjpe")):
            x = np.sort(d[col].dropna().to_numpy())
            if len(x):
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=name)
    for ax, t in zip(axes, ("MPJPE (mm)", "NMPJPE (mm)")):
        ax.set_xlabel(t)
        ax.set_ylabel("fraction of poses ≤ x")
        ax.axvline(150, color="grey", lw=0.5, ls="--")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "error_cdf.png", dpi=100)
    plt.close(fig)
    return ["Cumulative distribution of per-pose errors (dashed: the 150 mm PCK threshold).", "",
            "![error CDF](error_cdf.png)", ""]


def _validation(entry: dict) -> dict:
    """A network's held-out validation per epoch as arrays {"loss", "mpjpe", "nmpjpe"} and its units."""
    val = entry.get("validation") or []
    out = {k: np.asarray([v.get(k, np.nan) for v in val], dtype=np.float64) for k in ("loss", "mpjpe", "nmpjpe")}
    out["units"] = val[0].get("units", "") if val else ""
    return out


def _training_section(training: dict, out_dir: Path) -> list[str]:
    """Loss per epoch of each trained network: one panel each (log scale), the held-out
    validation loss on it and, below, the validation MPJPE / NMPJPE per epoch; and a table."""
    curves = {n: np.asarray(e.get("loss", []), dtype=np.float64) for n, e in training.items()}
    curves = {n: c for n, c in curves.items() if c.size}
    if not curves:
        return []
    vals = {n: _validation(training[n]) for n in curves}
    any_val = any(v["mpjpe"].size for v in vals.values())
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(2 if any_val else 1, len(curves), figsize=(3.2 * len(curves), 5.4 if any_val else 2.8),
                             squeeze=False)
    for i, (name, c) in enumerate(curves.items()):
        ax, v = axes[0][i], vals[name]
        ax.plot(np.arange(1, c.size + 1), c, marker="o", ms=3, label="training")
        if v["loss"].size:
            ax.plot(np.arange(1, v["loss"].size + 1), v["loss"], marker="s", ms=3, ls="--", label="validation")
            ax.legend(fontsize=7)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        if any_val:
            bx = axes[1][i]
            if v["mpjpe"].size:
                e = np.arange(1, v["mpjpe"].size + 1)
                bx.plot(e, v["mpjpe"], marker="o", ms=3, label="MPJPE")
                bx.plot(e, v["nmpjpe"], marker="s", ms=3, label="NMPJPE")
                bx.set_ylabel(f"validation ({v['units']})", fontsize=8)
                bx.legend(fontsize=7)
                bx.grid(alpha=0.3)
            else:
                bx.axis("off")
            bx.set_xlabel("epoch")
            bx.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=100)
    plt.close(fig)

    def held(v):
        if not v["mpjpe"].size:
            return "-"
        best = int(np.nanargmin(v["mpjpe"]))
        return (f"{v['mpjpe'][-1]:.1f} / {v['nmpjpe'][-1]:.1f} (best {v['mpjpe'][best]:.1f} at epoch {best + 1})"
                f" {v['units']}")
    rows = [[n, training[n].get("start", "-"), str(c.size), f"{c[0]:.4g}", f"{c[-1]:.4g}", held(vals[n]),
             _fmt(training[n].get("images_per_s"), "num"), training[n].get("note", "")]
            for n, c in curves.items()]
    lines = ["## Training", "",
             _table(["network", "starts from", "epochs", "first loss", "last loss",
                     "validation MPJPE / NMPJPE, last epoch", "images/s", "loss"], rows), ""]
    if any_val:
        lines += ["Validation: a held-out clip of the training people (never the test people), left out of "
                  "training and scored after every epoch against the training targets (pseudo-labels for SS, "
                  "ground truth for FS). A validation curve that rises while the training loss falls is "
                  "overfitting.", ""]
    return lines + ["![training curves](training_curves.png)", ""]


def _stability_section(stab) -> list[str]:
    if isinstance(stab, dict):
        stab = list(stab.values()) if all(isinstance(v, dict) for v in stab.values()) else [stab]
    rows = []
    for s in stab:
        rows.append([str(s["k"]), str(s["runs"]), str(s["pairs"]),
                     f"{_num(s['iou_mean']):.3f} ± {_num(s['iou_std']):.3f}", f"{_num(s['iou_min']):.3f}",
                     _fmt(s.get("mpss_mean"), "pct"),
                     f"{_num(s['mpss_std_pct']):.2f}" if "mpss_std_pct" in s else "–",
                     f"{_num(s['mpss_range_pct']):.2f}" if "mpss_range_pct" in s else "–",
                     str(s.get("n_scored", "–"))])
    return ["## PSS stability", "",
            "k-means of the reference re-run with different seeds; clusters of every pair of runs "
            "matched by the Hungarian algorithm on their IoU (paper: mean IoU 0.78, mPSS spread ±0.1 %). "
            "The spread of mPSS between references shrinks as more poses are scored: compare spreads "
            "over sets of one size.",
            "", _table(["k", "runs", "pairs", "mean IoU ± std", "min IoU", "mPSS (%)",
                        "mPSS std (pct. points)", "mPSS range (pct. points)", "poses scored"], rows), ""]


def _centres_figure(reference, out_dir: Path, k: int = 50, limit: int = 50) -> list[str]:
    from .plots import plot_skeleton_3d
    from .pss import centers_of

    plt = _plt()
    try:
        C = centers_of(reference, k)
    except ValueError:
        ks = (reference.get("attrs", {}) if isinstance(reference, dict) else dict(reference.attrs)).get("ks", [])
        if not ks:
            return []
        k = int(ks[0])
        C = centers_of(reference, k)
    counts = reference.get(f"counts_k{k}") if isinstance(reference, dict) else (
        reference[f"counts_k{k}"][...] if f"counts_k{k}" in reference else None)
    n = min(len(C), limit)
    cols = 10
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(1.6 * cols, 1.8 * rows + 0.3))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        plot_skeleton_3d(ax, C[i])
        ax.set_axis_off()
        ax.view_init(elev=10, azim=-90)
        ax.set_title(f"#{i}" + (f" n={int(counts[i])}" if counts is not None else ""), fontsize=7)
    from .plots import side_legend
    # fixed margins: tight_layout measures every 3D panel, seconds for a grid of fifty
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1 - 0.55 / (1.8 * rows + 0.3), wspace=0.0, hspace=0.15)
    side_legend(fig, loc="upper center", ncol=3)
    fig.savefig(out_dir / f"pss_centres_k{k}.png", dpi=90)
    plt.close(fig)
    return [f"## PSS cluster centres (k = {k}; the paper's Fig. 6)", "",
            "Normalised k-means centres of the reference poses, largest cluster first "
            "(n = reference poses in the cluster).", "", f"![centres](pss_centres_k{k}.png)", ""]


def _pick_qualitative(models: dict, main: str) -> list[tuple[int, int]]:
    d = _per_frame(models[main])
    if d is None or not len(d):
        return []
    d = d.dropna(subset=["mpjpe"]).sort_values("mpjpe")
    if not len(d):
        return []
    picks = []
    for q in (0.1, 0.5, 0.9):
        r = d.iloc[min(int(q * len(d)), len(d) - 1)]
        picks.append((int(r["frame"]), int(r["view"])))
    return list(dict.fromkeys(picks))


def _pose_rows_figure(path: Path, rows: list[dict], columns: list[str]) -> None:
    """rows: {"image": [S,S,3] | None, "title": str, "poses": {column: (pose [J,3], overlay|None)}}."""
    from .plots import axes_mm, plot_skeleton_3d, side_legend

    plt = _plt()
    ncol = 1 + len(columns)
    fig = plt.figure(figsize=(2.6 * ncol, 2.6 * len(rows)))
    for r, row in enumerate(rows):
        ax = fig.add_subplot(len(rows), ncol, r * ncol + 1)
        if row.get("image") is not None:
            ax.imshow(row["image"])
        ax.set_axis_off()
        ax.set_title(row.get("title", ""), fontsize=8)
        for c, name in enumerate(columns):
            ax = fig.add_subplot(len(rows), ncol, r * ncol + c + 2, projection="3d")
            pose, over = row["poses"].get(name, (None, None))
            if over is not None:
                plot_skeleton_3d(ax, over, color="grey", alpha=0.5)
            if pose is not None:
                plot_skeleton_3d(ax, pose)
            ax.view_init(elev=10, azim=-90)
            axes_mm(ax)
            ax.set_title(row.get("subtitles", {}).get(name, name), fontsize=8)
    # fixed margins (tight_layout measures every 3D panel: seconds per figure); the panels' own
    # tick labels sit inside their boxes
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.02, top=1 - 0.5 / (2.6 * len(rows)), wspace=0.25,
                        hspace=0.3)
    side_legend(fig, loc="upper center", ncol=3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _image(samples: dict, f: int, v: int):
    im = samples.get("images")
    if im is None:
        return None
    return np.asarray(im[f, v])


def _qualitative_section(results: dict, models: dict, main: str, out_dir: Path) -> list[str]:
    samples = results.get("samples") or {}
    if "gt" not in samples:
        return []
    picks = results.get("qualitative") or _pick_qualitative(models, main)
    names = [n for n in models if n in samples.get("predictions", {})]
    if not picks:
        return []
    d = _per_frame(models[main]) if main is not None else None
    ids = dict(zip(d["frame"], d["frame_id"])) if d is not None and "frame_id" in d.columns else {}
    rows = []
    for f, v in picks:
        gt = np.asarray(samples["gt"][f, v], dtype=np.float64)
        gt = gt - gt[0]
        poses = {"GT": (gt, None)}
        for n in names:
            poses[n] = (_scaled(samples, models, n, f, v), gt)
        rows.append({"image": _image(samples, f, v), "title": f"frame {ids.get(f, f)}, view {v}", "poses": poses})
    _pose_rows_figure(out_dir / "qualitative.png", rows, ["GT"] + names)
    return ["## Qualitative results", "",
            "Input crop, ground truth, and each model's prediction (grey: ground truth overlaid), "
            "camera frame, mm.", "", "![qualitative](qualitative.png)", ""]


def _spread_worst(d, n: int):
    """The n worst rows of a per-frame table by MPJPE, one view per frame and frames at least
    `gap` dataset rows apart within a subject and action (neighbouring frames look alike):
    gap = the number of distinct frames / (4 n), at least 1. -> (rows, gap)."""
    d = d.dropna(subset=["mpjpe"]).sort_values("mpjpe", ascending=False)
    gap = max(1, int(d["frame"].nunique()) // max(4 * n, 1))
    keys = [c for c in ("subject", "action") if c in d.columns]
    picked, taken = [], []
    for i, r in d.iterrows():
        key = tuple(r[c] for c in keys)
        if any(k == key and abs(int(r["frame"]) - f) < gap for k, f in taken):
            continue
        picked.append(i)
        taken.append((key, int(r["frame"])))
        if len(picked) == n:
            break
    return d.loc[picked], gap


def _worst_section(results: dict, models: dict, out_dir: Path) -> list[str]:
    samples = results.get("samples") or {}
    n_worst = int(results.get("n_worst", 6))
    md = []
    for name, e in models.items():
        d = _per_frame(e)
        if d is None or not len(d) or n_worst <= 0:
            continue
        worst, gap = _spread_worst(d, n_worst)
        cols = [c for c in ("frame_id", "view", "action", "subject", "mpjpe", "nmpjpe", "pmpjpe", "pss_k50")
                if c in worst.columns]
        rows = [[f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
                for _, r in worst.iterrows()]
        safe = "".join(ch if ch.isalnum() else "_" for ch in name)
        md += [f"### {name}", "", f"The {len(worst)} worst poses, at least {gap} frames apart (one view each).", "",
               _table(cols, rows), ""]
        if "gt" in samples and name in samples.get("predictions", {}):
            fig_rows = []
            for _, r in worst.iterrows():
                f, v = int(r["frame"]), int(r["view"])
                gt = np.asarray(samples["gt"][f, v], dtype=np.float64)
                gt = gt - gt[0]
                fig_rows.append({"image": _image(samples, f, v), "title": f"frame {r['frame_id']}, view {v}",
                                 "poses": {"GT": (gt, None), name: (_scaled(samples, models, name, f, v), gt)},
                                 "subtitles": {name: f"{name}: {r['mpjpe']:.0f} mm"}})
            _pose_rows_figure(out_dir / f"worst_{safe}.png", fig_rows, ["GT", name])
            md += [f"![worst {name}](worst_{safe}.png)", ""]
    return (["## Worst frames (by MPJPE)", ""] + md) if md else []


def write_report(results: dict, out_dir: Path) -> Path:
    """Write `report.md` and its PNGs into out_dir (created); return the markdown's path.
    `results` follows the schema in this module's docstring."""
    if not isinstance(results, dict):
        raise ValueError(f"results must be a dict (see pipeline/report.py), got {type(results).__name__}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = results.get("labels") or {}
    models = results.get("models") or {}
    for group, entries in (("labels", labels), ("models", models)):
        for name, e in entries.items():
            if not isinstance(e, dict) or "summary" not in e:
                raise ValueError(f"results[{group!r}][{name!r}] needs a 'summary' (pipeline.evaluation.scoring output)")
    main = results.get("main_model") or ("SS" if "SS" in models else next(iter(models), None))
    if main is not None and main not in models:
        raise ValueError(f"main_model {main!r} is not among the models {list(models)}")

    md = [f"# {results.get('title', 'EpipolarPose evaluation')}", ""]
    head = []
    if results.get("dataset"):
        head.append(f"Dataset: **{results['dataset']}**.")
    head.append(f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    md += [" ".join(head), ""]
    skipped = []

    if labels:
        md += ["## Training labels (the paper's Table 1)", "",
               "Pseudo-labels of the training frames against the ground truth (each camera's frame). "
               "Scale-free labels are put in mm by one global scalar, the dataset's mean bone length; "
               "NMPJPE, PMPJPE, NPCK and mPSS do not depend on it.", "",
               _metric_table(labels, (("coverage", "labelled (%)"),)), ""]
        notes = [f"- {n}: {e['note']}" for n, e in labels.items() if e.get("note")]
        md += notes + ([""] if notes else [])
    else:
        skipped.append("training-label table (no `labels`)")

    if models:
        md += ["## 3D pose models (the paper's Tables 2 and 3)", "",
               "FS: trained on ground truth; SS: trained on the pseudo-labels; SS + RU: with the "
               "paper's refinement unit (clean targets from motion capture); SS + RU (labels): with the "
               "self-contained unit (targets: the pseudo-labels). Test split.", "", _metric_table(models), ""]
        notes = [f"- {n}: {e['note']}" for n, e in models.items() if e.get("note")]
        md += notes + ([""] if notes else [])
        md += _per_action_section(models, out_dir)
        md += _error_cdf(models, out_dir)
    elif results.get("without_ground_truth"):
        from .selfcheck import markdown as without_gt
        md += without_gt(results["without_ground_truth"])
        skipped.append("ground-truth tables and figures (the dataset has no 3D ground truth)")
    else:
        skipped.append("model table (no `models`)")

    training = _training_section(results.get("training") or {}, out_dir)
    md += training
    if not training:
        skipped.append("training curves (no `training`)")

    if results.get("pss_stability"):
        md += _stability_section(results["pss_stability"])
    else:
        skipped.append("PSS stability (no `pss_stability`)")
    if results.get("pss_reference") is not None:
        md += _centres_figure(results["pss_reference"], out_dir)
    else:
        skipped.append("cluster centres (no `pss_reference`)")

    if models:
        q = _qualitative_section(results, models, main, out_dir)
        md += q
        if not q:
            skipped.append("qualitative figure (no `samples`)")
        md += _worst_section(results, models, out_dir)

    if results.get("timings"):
        rows = [[k, f"{float(v):.1f}"] for k, v in results["timings"].items()]
        total = sum(float(v) for v in results["timings"].values())
        md += ["## Stage timings", "",
               "Each output's build time, when it was built (a reused output keeps the time of the run that "
               "built it); their sum is not a run's wall clock.", "",
               _table(["stage", "seconds"], rows + [["sum of build times", f"{total:.1f}"]]), ""]
    if results.get("config"):
        md += ["## Configuration", "", "```json", json.dumps(results["config"], indent=2, default=str), "```", ""]
    if skipped:
        md += ["## Not in this report", ""] + [f"- {s}" for s in skipped] + [""]

    path = out_dir / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text("\n".join(md))
    tmp.replace(path)
    return path
