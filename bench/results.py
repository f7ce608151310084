"""The benchmarks' results, kept and rendered: every benchmark saves its JSON line with
`save(name, result, quick)` into bench/results/<name>[.quick].json (with the date, commit and
machine), and `python bench/results.py` writes docs/results.md from those files, goals beside
the figures, and the README's block of measured figures (between README_BEGIN and README_END:
full-size runs only, each with its command, commit and date, or the command still to run).
Figures in the documentation come from here, not from memory; tests/test_results_doc.py
checks that the README's block is what these files give.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results"
DOC = REPO / "docs" / "results.md"
README = REPO / "README.md"
README_BEGIN = "<!-- measured figures: written by `python bench/results.py` from bench/results/*.json; do not edit -->"
README_END = "<!-- end of measured figures -->"
# the README's figures: (benchmark, key, what it is, format)
README_FIGURES = [
    ("chain", "demo_s", "`make demo` from a fresh artifact root, wall clock (s)", "{:.0f}"),
    ("chain", "rerun_s", "a second `make demo`, every stage reused (s)", "{:.1f}"),
    ("train", "ss_over_fs", "SS ÷ FS test MPJPE on the studio, the project's 2D network's keypoints", "{:.2f}"),
    ("train", "seeds_ss_over_fs_mean", "the same over several seeds of the 3D networks (mean; each seed in "
     "docs/results.md)", "{:.2f}"),
    ("train-gt", "ss_over_fs", "SS ÷ FS test MPJPE on the studio, ground-truth 2D (the paper's GT 2D)", "{:.2f}"),
    ("train", "ru_gain_mocap", "refinement unit the paper's way (targets from motion capture, each pose in its own "
     "mean bones): MPJPE gain on SS", "{:+.1%}"),
    ("train", "seeds_ru_gain_mocap_mean", "the same over the seeds of the 3D networks (mean; each seed in "
     "docs/results.md)", "{:+.1%}"),
    ("train", "ru_gain_mocap_pmpjpe", "the same unit's PMPJPE gain on SS (the pose's structure, without scale and "
     "rotation)", "{:+.1%}"),
    ("train", "val_ru_gain_mocap", "the same unit's MPJPE gain on training people the networks never saw "
     "(cross-fitted networks: validation)", "{:+.1%}"),
    ("train", "ru_gain_mocap_sizes_kept", "the unit with targets that keep each person's size: MPJPE gain on the "
     "studio's one test person, its smallest (at the person's own size and in validation: docs/results.md)",
     "{:+.1%}"),
    ("train", "ss_ru_mpss50", "mPSS@50 of SS + RU (SS alone beside it in docs/results.md)", "{:.1%}"),
    ("train", "ru_gain", "self-contained refinement unit (trained on SS's own pseudo-label pairs): MPJPE gain on SS",
     "{:+.1%}"),
    ("train", "study_heldout_ru_gain", "RU trained on one test clip's errors, gain on the other (share)", None),
    ("pss", "kmeans_iou_k50", "PSS reference: k-means IoU between runs at k = 50 (the paper: 0.78)", "{:.2f}"),
    ("pss", "kmeans_iou_k100", "the same at k = 100", "{:.2f}"),
    ("pss", "library_kmeans_iou_k50", "the same build at k = 50 on a varied mocap library (Bandai Namco's train "
     "clips, 17 actions x 15 styles)", "{:.2f}"),
    ("pss", "mpss_spread_pct", "PSS: spread of mPSS between k-means runs, scored on the studio's test set (percentage "
     "points; the paper: about 0.1)",
     "{:.2f}"),
    ("pss", "library_mpss_spread_pct_k50_subset", "the library's mPSS@50 spread, scored on as many poses as the "
     "studio's test set (pp)", "{:.2f}"),
    ("people", "rot_err_deg_single", "rig from the people vs Qualisys, the real recording: mean pair rotation error (deg)",
     "{:.2f}"),
]

# benchmark -> [(key, goal, comparison)]: the goals the issues set, checked in docs/results.md
GOALS = {
    "faults": [("silent_wrong", 0, "=="), ("crashes", 0, "=="), ("stale_reuse", 0, "=="), ("corrupt_reuse", 0, "=="),
               ("unsafe_load_ran_code", 0, "=="), ("identical_after_resume", "kill_points", "==")],
    "labels": [("rig_over_known_pmpjpe_s2", 1.1, "<="), ("rig_rot_err_deg_max_s2", 0.035, "<="),
               ("rig_rot_err_deg_max_s2_outliers5", 0.042, "<="), ("calibrate_s_2k", 2.0, "<="),
               ("peak_mb_100k_over_input_dlt", 4.0, "<="), ("peak_mb_100k_over_input_labels", 4.0, "<="),
               ("label_frames_per_s", 20000, ">=")],
    "train": [("ss_over_fs", 1.25, "<="), ("ru_gain_mocap", 0.10, ">=")],
    "train-gt": [("ss_over_fs", 1.25, "<=")],
    "pss": [("kmeans_iou_k50", 0.78, ">="), ("mpss_spread_pct", 0.5, "<="),
            # the same goals for the same build on a reference as varied as the paper's
            ("library_kmeans_iou_k50", 0.78, ">="), ("library_mpss_spread_pct_k50_subset", 0.5, "<=")],
    "real": [],
    "chain": [("demo_s", 300, "<="), ("cpu_utilisation", 0.8, ">=")],
    "render": [],
    "sync": [("false_alarms", 0, "==")],
    "gpu": [],
    # issue 12 (rot_err_deg_bystanders: within 0.1 degree of the single-person figure, compare by eye)
    "people": [("refused_bad_rigs", "bad_rigs", "=="), ("sync_offset_err_frames", 0, "=="), ("calibrate_s", 30, "<=")],
}
TITLES = {
    "faults": "Trust under faults (`bench/faults.py`)",
    "labels": "Label geometry (`bench/labels.py`)",
    "train": "Networks on the studio (`bench/train.py`)",
    "train-gt": "Networks on the studio with GT 2D (`bench/train.py --detector gt`)",
    "pss": "Pose Structure Score stability (`bench/pss.py`)",
    "real": "The real Pose2Sim recording (`bench/real.py`)",
    "chain": "The chain end to end (`bench/chain.py`)",
    "render": "Studio rendering (`bench/render.py`)",
    "sync": "Synchronisation from keypoints (`bench/sync.py`)",
    "gpu": "GPU (`bench/gpu.py`)",
    "people": "Calibration from people (`bench/people.py`)",
}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension: timings and even the last digits of
    trained metrics (oneDNN and numpy pick kernels by it) are comparable only on the same kind."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "")
    return f"{name} ({simd})" if simd else name


def save(name: str, result: dict, quick: bool = False) -> Path:
    """Print the result as the benchmark's last line (one JSON object) and keep it."""
    line = json.dumps(result)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}{'.quick' if quick else ''}.json"
    meta = {"benchmark": name, "quick": quick, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": _commit(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "cpu": cpu_model(), "python": platform.python_version(), "argv": sys.argv[1:]}
    path.write_text(json.dumps({"meta": meta, "result": result}, indent=1, sort_keys=True) + "\n")
    print(line, flush=True)
    return path


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v[:12]) + (" ..." if len(v) > 12 else "")
    return str(v)


def _goal_rows(name: str, res: dict) -> list[str]:
    rows = []
    for key, goal, op in GOALS.get(name, []):
        if key not in res:
            continue
        target = res.get(goal) if isinstance(goal, str) else goal
        v = res[key]
        ok = {"==": v == target, "<=": v <= target, ">=": v >= target}[op]
        rows.append(f"| `{key}` | {_fmt(v)} | {op} {_fmt(target)}{f' (`{goal}`)' if isinstance(goal, str) else ''} "
                    f"| {'met' if ok else '**not met**'} |")
    return rows


def render() -> str:
    parts = ["# Results", "",
             "Written by `python bench/results.py` from the JSON lines the benchmarks saved in "
             "`bench/results/` (each benchmark's last line). Rerun a benchmark, then this script, to "
             "update a figure; never type one here. Ratios measured side by side in one run are what "
             "these noisy shared machines can compare; absolute times drift.", ""]
    files = sorted(OUT.glob("*.json"))
    if not files:
        return "\n".join(parts + ["No results saved yet."]) + "\n"
    for name in [*TITLES, *sorted({f.name.split(".")[0] for f in files} - set(TITLES))]:
        for path in [OUT / f"{name}.json", OUT / f"{name}.quick.json"]:
            if not path.is_file():
                continue
            data = json.loads(path.read_text())
            meta, res = data["meta"], data["result"]
            parts += [f"## {TITLES.get(name, name)}{' (quick)' if meta['quick'] else ''}", "",
                      f"`python bench/{name}.py {' '.join(meta.get('argv', []))}`".replace(" `", "`") +
                      f" at commit `{meta['commit']}`, {meta['date']}, {meta['cpus']} CPUs "
                      f"({meta.get('cpu') or meta['machine']}).", ""]
            if not meta["quick"]:  # the figures a full run drew beside its results
                pngs = sorted(OUT.glob(f"{name}_*.png"))
                parts += [" ".join(f"![{f.stem}](../bench/results/{f.name})" for f in pngs), ""] if pngs else []
            goals = _goal_rows(name, res)
            if goals:
                parts += ["| goal | measured | target | |", "|---|---|---|---|", *goals, ""]
            parts += ["| figure | value |", "|---|---|"]
            parts += [f"| `{k}` | {_fmt(v)} |" for k, v in _flat(res).items()]
            parts.append("")
    return "\n".join(parts)


def _readme_value(v, fmt) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_readme_value(x, '{:+.1%}')}" for k, x in v.items())
    if fmt and isinstance(v, (int, float)):
        return fmt.format(v)
    return _fmt(v)


def render_readme_block() -> str:
    """The README's measured figures, from the full-size results kept in bench/results."""
    rows = ["| figure | value | measured by |", "|---|---|---|"]
    for name, key, what, fmt in README_FIGURES:
        path = OUT / f"{name}.json"
        cmd = f"python bench/{name.split('-')[0]}.py" + (" --detector gt" if name == "train-gt" else "")
        res = json.loads(path.read_text()) if path.is_file() else None
        if res is None or key not in res["result"]:
            rows.append(f"| {what} | not measured yet | `{cmd}`, then `python bench/results.py` |")
            continue
        m = res["meta"]
        rows.append(f"| {what} | {_readme_value(res['result'][key], fmt)} | `{cmd}` at `{m['commit']}`, "
                    f"{m['date'][:10]}, {m['cpus']} CPUs{' (' + m['cpu'] + ')' if m.get('cpu') else ''} |")
    return "\n".join([README_BEGIN, *rows, README_END])


def update_readme(text: str) -> str:
    """The README text with its measured-figures block replaced by render_readme_block()."""
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{README}: no measured-figures block (the markers of bench/results.py)")
    head, rest = text.split(README_BEGIN, 1)
    return head + render_readme_block() + rest.split(README_END, 1)[1]


def main() -> int:
    DOC.write_text(render())
    README.write_text(update_readme(README.read_text()))
    print(f"wrote {DOC} and the measured figures of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
