"""Calibration from people on real footage, for bench/real.py (`--people`, or alone:
`.venv/bin/python bench/people.py [--root DEMO] [--out DIR]`).

The Pose2Sim recording (4 real cameras, 100 frames, OpenPose BODY_25B; a second real person,
standing, in cam01 and cam02) with bystanders added to every view, written as a Pose2Sim
project and calibrated by `epipose calibrate`'s logic (pipeline/orchestration/calibrate.py):
- two walkers from motion capture (the shared Bandai-Namco and CMU clips; procedural walkers
  from pipeline/data/crowd.py where those are absent) crossing the subject, and two copies of
  the subject from other frames (33 and 66 frames later) moved 1.1 m aside, carrying the
  subject's own OpenPose errors; all projected with the rig the subject's own keypoints pull
  to (least-squares bundle adjustment started at Qualisys), so that the bystanders carry no
  information closer to Qualisys than the subject itself (projected with Qualisys, they pull
  the estimate towards it: measured 0.34 degrees against 1.34 for the subject alone, a
  flattering and false figure); people hide each other's joints (a nearer person's limbs),
  20 % of hidden joints are taken from the person in front, people are shuffled in each file.
- the same with one view desynchronised by k frames, calibrated with sync "correct".
- deliberately corrupted inputs (a view shuffled in time, mirrored, upside down, random
  points, permuted joints, out of sync beyond the search, wrong focal length, every view
  shuffled, each view following another person): each must be refused, or its bad views
  left out; a returned rig containing a corrupted view counts as "returned".
- a multi-person synthetic studio (pipeline/data/crowd.py, 4 walkers, random rigs): rotation
  error from everyone vs from the subject alone, association purity.
Figures: rot_err_deg_single (the recording as it is), rot_err_deg_bystanders,
rot_err_deg_bystanders_true_association (the same data, people matched by the generator's
truth), sync_offset_err_frames, refused_bad_rigs / bad_rigs, calibrate_s (the command on the
recording), studio figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.camera import Cameras  # noqa: E402
from pipeline.data import crowd, motion  # noqa: E402
from pipeline.data.calibration import read_toml_calibration  # noqa: E402
from pipeline.data.openpose import read_people  # noqa: E402
from pipeline.geometry import label_settings, people, rig  # noqa: E402
from pipeline.geometry.calibration import calibrate as calibrate_cameras  # noqa: E402
from pipeline.geometry.triangulate import triangulate_dlt  # noqa: E402
from pipeline.orchestration import calibrate as cal  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO = SHARED / "multiview" / "pose2sim_demo"
WALKS = [("motion/bandai_namco_1/data/dataset-1_walk_normal_001.bvh", 30.0, (300.0, 500.0)),
         ("motion/cmu/bvh11_subject131/131_01.bvh", 200.0, (-400.0, -450.0))]
QUIET = {"log": lambda s: None}


def _demo(root: Path):
    names, ref = read_toml_calibration(next((root / "calibration").glob("*.toml")))
    folders = sorted((root / "pose").glob("*_json"))
    _, kp, _ = read_people(folders)
    return names, ref, kp, folders


def _subject(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest person of each file (the subject in every frame of this recording) and the index."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(kp[..., :2], -2) - np.nanmin(kp[..., :2], -2)
    area = np.nan_to_num(span[..., 0] * span[..., 1], nan=-1)
    m = area.argmax(-1)
    F, V = m.shape
    return kp[np.arange(F)[:, None], np.arange(V)[None], m], m


def floor_rig(kp_subject: np.ndarray, ref: Cameras) -> Cameras:
    """The rig the subject's keypoints pull to: least-squares bundle adjustment started at the
    reference, expressed in the reference's world and millimetres."""
    c = label_settings.resolve_cfg({})
    xn, w = label_settings.normalised(kp_subject, ref, c)
    R0 = ref.R @ ref.R[0].T
    t0 = ref.t - np.einsum("vab,b->va", R0, ref.t[0])
    s = np.linalg.norm(t0[1])
    Rf, tf, _ = rig.bundle_adjust(xn, w, ref.K, R0, t0 / s, 400, "linear", 1.0, 200)
    return Cameras(ref.K, Rf @ ref.R[0], tf * s + np.einsum("vab,b->va", Rf, ref.t[0]), ref.dist, ref.size)


def bystander_project(out: Path, seed: int = 0, offsets=None, demo: Path = DEMO) -> dict:
    """The recording with bystanders (module docstring) as a Pose2Sim project at `out`.
    -> {names, ref (Qualisys), kp [F,V,M,J,3] as written (before offsets), truth [F,V,M]
    (0 subject, 1-2 walkers, 3-4 copies, 5 the recording's other people)}."""
    names, ref, kp, _ = _demo(demo)
    F, V = kp.shape[:2]
    sizes = np.array([[1080, 1920], [1080, 1920], [1088, 1920], [1088, 1920.]])[:V]
    ref = Cameras(ref.K, ref.R, ref.t, ref.dist, sizes)
    subj, m = _subject(kp)
    proj = floor_rig(subj, ref)
    c = label_settings.resolve_cfg({})
    xn, w = label_settings.normalised(subj, proj, c)
    Xs, _ = triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), proj.R, proj.t)
    uv_s, _ = crowd.project_people(Xs[None], proj)
    resid = subj[..., :2] - uv_s[0]
    centre = np.nanmedian(Xs[:, 0, :2], 0)
    floor = np.nanpercentile(Xs[:, [3, 6], 2], 2)
    X = [Xs]
    for k, (path, heading, off) in enumerate(WALKS):
        p = demo.parents[1] / path  # .../shared/data
        if p.is_file():
            clip, fps = motion.load_clip(p)
            clip, _ = motion.resample(clip, fps, 60.0)
            s0 = (len(clip) - F) // 2
            X.append(crowd.place_walk(clip[s0:s0 + F], centre + np.array(off), heading, floor_mm=floor))
        else:
            a = np.radians(heading)
            d = np.array([np.cos(a), np.sin(a)]) * 1200.0
            X.append(crowd.walker(F, centre + off - d, centre + off + d, 60.0))
    for k, dy in ((33, 1100.0), (66, -1100.0)):
        g = np.roll(Xs, -k, axis=0).copy()
        g[..., 1] += dy
        X.append(g)
    X = np.stack(X)
    uv, depth = crowd.project_people(X, proj)
    keep = np.full(uv.shape, np.nan)
    keep[0] = subj[..., :2]
    keep[3] = uv[3] + np.roll(resid, -33, axis=0)
    keep[4] = uv[4] + np.roll(resid, -66, axis=0)
    det, truth = crowd.detections(uv, depth, proj, seed=seed, sigma_px=2.5, keep=keep)
    # the recording's own other people (the woman standing in cam01/cam02, a skeleton model)
    others = np.ones(kp.shape[:3], bool)
    others[np.arange(F)[:, None], np.arange(V)[None], m] = False
    others &= np.isfinite(kp[..., 0]).sum(-1) >= 5
    extra = int(others.sum(-1).max())
    M = det.shape[2] + extra
    kp_out = np.full((F, V, M) + kp.shape[3:], np.nan)
    tr_out = np.full((F, V, M), -1, np.int64)
    kp_out[:, :, :det.shape[2]] = det
    tr_out[:, :, :det.shape[2]] = truth
    for f in range(F):
        for v in range(V):
            o = np.flatnonzero(others[f, v])
            n0 = int((truth[f, v] >= 0).sum())
            kp_out[f, v, n0:n0 + len(o)] = kp[f, v, o]
            tr_out[f, v, n0:n0 + len(o)] = 5
    crowd.write_project(out, names, ref, kp_out, tr_out, offsets=offsets)
    return {"names": names, "ref": ref, "kp": kp_out, "truth": tr_out, "proj": proj}


def scale_and_up(res: dict, kp: np.ndarray, truth: np.ndarray, ref: Cameras) -> dict:
    """The metric scale from the subject's height and the upright world, against Qualisys: the
    subject's stature measured on its Qualisys triangulation is given as --height would be;
    scale error = 1 - (the similarity aligning our camera centres to Qualisys'), up error = angle
    between our world z and Qualisys' z (its world is Z-up) after that alignment."""
    from pipeline.geometry import world
    sub = np.full(kp.shape[:2] + kp.shape[3:], np.nan)
    f, v, m = np.nonzero(truth == 0)
    sub[f, v] = kp[f, v, m]
    xn, w = label_settings.normalised(sub, ref, label_settings.resolve_cfg({}))
    Xq, _ = triangulate_dlt(xn.transpose(0, 2, 1, 3), w.transpose(0, 2, 1), ref.R, ref.t)
    est = res["cams"]
    s, _ = world.metric_scale(est.R, est.t, res["X"], height_mm=world.stature(Xq))
    out = world.to_world(est.R, est.t, res["X"], s)
    C = -np.einsum("vji,vj->vi", out["R"], out["t"])
    s2, Q, _ = world.align_similarity(C, ref.centers, out["R"], ref.R)
    up = Q.T @ np.array([0.0, 0.0, 1.0])
    return {"scale_err_height": round(abs(1.0 / s2 - 1.0), 4), "up_err_deg": round(float(np.degrees(np.arccos(
        np.clip(up[2], -1, 1)))), 2), "up_from": out["source"]}


def _true_rows(kp, truth):
    rows = []
    for p in range(int(truth.max()) + 1):
        r = np.full(kp.shape[:2] + kp.shape[3:], np.nan)
        f, v, m = np.nonzero(truth == p)
        r[f, v] = kp[f, v, m]
        seen = np.isfinite(r[..., 0]).any(-1).sum(1) >= 2
        rows.append(r[seen])
    return np.concatenate(rows)


def corrupted(kp: np.ndarray, size: np.ndarray, seed: int = 0, truth: np.ndarray | None = None) -> dict:
    """Deliberately corrupted multi-person inputs: {name: (kp [F,V,M,J,3], focal factors [V], bad views)}.
    With truth [F,V,M]: also each view keeping one person, a different one in each view (the
    issue's "each view following its own person")."""
    rng = np.random.default_rng(seed)
    F, V = kp.shape[:2]
    one = np.ones(V)
    out = {}
    k = kp.copy(); k[:, 1] = kp[rng.permutation(F), 1]; out["a view shuffled in time"] = (k, one, [1])
    k = np.stack([kp[rng.permutation(F), v] for v in range(V)], 1); out["every view shuffled in time"] = (k, one, list(range(V)))
    k = kp.copy(); k[:, 2, ..., 0] = size[2, 0] - kp[:, 2, ..., 0]; out["a view mirrored"] = (k, one, [2])
    k = kp.copy(); k[:, 3, ..., 1] = size[3, 1] - kp[:, 3, ..., 1]; out["a view upside down"] = (k, one, [3])
    k = kp.copy(); k[:, 2] = np.roll(kp[:, 2], 30, axis=0); out["a view 30 frames out of sync"] = (k, one, [2])
    k = kp.copy(); k[:, 0] = np.roll(kp[:, 0], 45, axis=0); k[:, 3] = np.roll(kp[:, 3], -25, axis=0)
    out["two views out of sync (45, -25 frames)"] = (k, one, [0, 3])
    k = kp.copy()
    fin = np.isfinite(kp[:, 1, ..., 0])
    k[:, 1, ..., 0] = np.where(fin, rng.uniform(0, size[1, 0], fin.shape), np.nan)
    k[:, 1, ..., 1] = np.where(fin, rng.uniform(0, size[1, 1], fin.shape), np.nan)
    out["a view of random points"] = (k, one, [1])
    k = kp.copy(); k[:, 2] = kp[:, 2][..., rng.permutation(kp.shape[3]), :]; out["a view with its joints permuted"] = (k, one, [2])
    f = one.copy(); f[1] = 0.6; out["wrong focal length (x0.6) for a view"] = (kp, f, [1])
    f = one * 2.0; out["every focal length x2"] = (kp, f, list(range(V)))
    if truth is not None:
        k = np.full(kp.shape[:2] + (1,) + kp.shape[3:], np.nan)
        for v in range(V):
            fr, m = np.nonzero(truth[:, v] == v + 1)  # view v keeps person v + 1: walkers and copies
            k[fr, v, 0] = kp[fr, v, m]
        out["each view keeping another person"] = (k, one, list(range(V)))
    return out


def run_corrupted(kp, ref_path: Path, ref: Cameras, tmp: Path, truth=None) -> list[dict]:
    """Every corrupted input through the command's logic: refused, bad views left out, or returned."""
    rows = []
    names, cams = read_toml_calibration(ref_path)
    for name, (k, focal, bad) in corrupted(kp, ref.size, truth=truth).items():
        path = ref_path
        if np.any(focal != 1):
            K = cams.K.copy()
            K[:, 0, 0] *= focal
            K[:, 1, 1] *= focal
            path = tmp / f"focal_{len(rows)}.toml"
            from pipeline.data.calibration import write_toml_calibration
            write_toml_calibration(path, names, Cameras(K, cams.R, cams.t, cams.dist, cams.size))
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = cal.run(k, path, {"sync": "check"}, **QUIET)
            placed = np.all(np.isfinite(res["cams"].R), axis=(1, 2))
            outcome = "returned" if placed[bad].any() else "left out"
            why = f"placed {placed.astype(int).tolist()}"
        except ValueError as e:
            outcome, why = "refused", str(e)[:160]
        rows.append({"input": name, "outcome": outcome, "seconds": round(time.perf_counter() - t0, 1), "why": why})
        print(f"  {name:42s} {outcome:9s} {rows[-1]['seconds']:5.1f} s  {why}")
    return rows


def studio(seeds=(0, 1, 2), n_people=4, F=120) -> dict:
    """Multi-person synthetic studio: rotation error (deg, mean over pairs) from everyone vs the
    subject alone (the truth's), association purity (share of associated detections showing
    the person they were assigned to, majority person per track)."""
    def calibrate(rows, cams, final):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return calibrate_cameras(rows, cams.without_extrinsics(), {"mode": "rig", "sync": "off", "ba": final})[0]
    every, alone, purity, subject_ok = [], [], [], []
    for seed in seeds:
        cams, _, kp, truth = crowd.studio_crowd(n_people, F, 4, seed=seed)
        res = people.associate(kp, cams.without_extrinsics(), calibrate=calibrate)
        idx = res["person_index"]
        good = tot = 0
        for p in range(idx.shape[2]):
            f, v = np.nonzero(idx[:, :, p] >= 0)
            who = truth[f, v, idx[f, v, p]]
            good += np.bincount(who).max()
            tot += len(who)
            if p == 0:
                subject_ok.append(float(np.mean(who == 0)))
        purity.append(good / tot)
        every.append(cal.pair_errors(calibrate(people.rows(res["people_kp"])[0], cams, True).R, cams.R).mean())
        sub = np.full(kp.shape[:2] + kp.shape[3:], np.nan)
        f, v, m = np.nonzero(truth == 0)
        sub[f, v] = kp[f, v, m]
        alone.append(cal.pair_errors(calibrate(sub, cams, True).R, cams.R).mean())
    return {"studio_rot_err_deg_everyone": round(float(np.mean(every)), 4),
            "studio_rot_err_deg_subject_alone": round(float(np.mean(alone)), 4),
            "studio_association_purity": round(float(np.mean(purity)), 4),
            "studio_subject_share": round(float(np.mean(subject_ok)), 4)}


def bench(out_dir: Path, demo: Path = DEMO, k: int = 3, quick: bool = False) -> dict:
    """Every figure of the module docstring; quick: one studio seed instead of three."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig: dict = {}
    ref_path = next((demo / "calibration").glob("*.toml"))
    names, ref, kp, _ = _demo(demo)
    ref = Cameras(ref.K, ref.R, ref.t, ref.dist, np.array([[1080, 1920], [1080, 1920], [1088, 1920], [1088, 1920.]]))
    # 1. the recording as it is, through the command (calibrate_s: the whole command)
    t0 = time.perf_counter()
    from flows.cli import main as cli
    rc = cli(["calibrate", "--keypoints", str(demo / "pose"), "--intrinsics", str(ref_path), "--out",
              str(out_dir / "pose2sim_demo.toml"), "--reference", str(ref_path)])
    fig["calibrate_s"] = round(time.perf_counter() - t0, 1)
    rep = json.loads((out_dir / "pose2sim_demo_report.json").read_text()) if rc == 0 else {}
    err = list(rep.get("rotation_error_deg_vs_reference", {}).values())
    fig["rot_err_deg_single"] = round(float(np.mean(err)), 3) if err else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 2. bystanders
        proj = bystander_project(tmp / "crowd", demo=demo)
        t0 = time.perf_counter()
        res = cal.run(tmp / "crowd" / "pose", ref_path, {"sync": "check"}, reference=ref_path, **QUIET)
        fig["calibrate_s_bystanders"] = round(time.perf_counter() - t0, 1)
        e = res["pair_err_deg"]
        fig["rot_err_deg_bystanders"] = round(float(np.mean(e)), 3)
        fig["rot_err_max_deg_bystanders"] = round(float(np.max(e)), 3)
        idx = res["subject_index"]
        tr = proj["truth"]
        f, v = np.nonzero(idx >= 0)
        fig["bystanders_subject_share"] = round(float(np.mean(tr[f, v, idx[f, v]] == 0)), 4)
        fig["bystanders_subject_views"] = f"{len(f)} of {int((tr == 0).sum())}"
        fig["bystanders_people_found"] = int(res["association"]["people_kp"].shape[2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est, _ = calibrate_cameras(_true_rows(proj["kp"], tr), ref.without_extrinsics(), {"mode": "rig", "sync": "off"})
        fig["rot_err_deg_bystanders_true_association"] = round(float(np.mean(cal.pair_errors(est.R, ref.R))), 3)
        fig.update(scale_and_up(res, proj["kp"], proj["truth"], ref))
        print(f"bystanders: rotation error {e.round(2).tolist()} mean {np.mean(e):.3f} deg (single person "
              f"{fig['rot_err_deg_single']}; same data with the true association "
              f"{fig['rot_err_deg_bystanders_true_association']}); subject {fig['bystanders_subject_views']} "
              f"views, {100 * fig['bystanders_subject_share']:.1f} % of them right; {fig['calibrate_s_bystanders']} s")
        # 3. one view out of sync by k frames, corrected
        off = np.zeros(len(names), np.int64)
        off[2] = k
        bystander_project(tmp / "desync", offsets=off, demo=demo)
        res = cal.run(tmp / "desync" / "pose", ref_path, {"sync": "correct"}, reference=ref_path, **QUIET)
        fig["sync_offset_err_frames"] = int(np.abs(np.asarray(res["offsets"]) - off).max())
        fig["rot_err_deg_bystanders_desync_corrected"] = round(float(np.mean(res["pair_err_deg"])), 3)
        print(f"desynchronised by {off.tolist()}: estimated {np.asarray(res['offsets']).tolist()}; rotation error after "
              f"correction {fig['rot_err_deg_bystanders_desync_corrected']} deg")
        # 4. corrupted inputs
        print("corrupted inputs (bystander project):")
        rows = run_corrupted(proj["kp"], ref_path, ref, tmp, proj["truth"])
    fig["bad_rigs"] = len(rows)
    fig["refused_bad_rigs"] = sum(r["outcome"] != "returned" for r in rows)
    fig["bad_rigs_refused_outright"] = sum(r["outcome"] == "refused" for r in rows)
    fig["bad_rigs_max_s"] = max(r["seconds"] for r in rows)
    (out_dir / "bad_rigs.json").write_text(json.dumps(rows, indent=1))
    # 5. synthetic studio
    t0 = time.perf_counter()
    fig.update(studio(seeds=(0,) if quick else (0, 1, 2)))
    print(f"studio: everyone {fig['studio_rot_err_deg_everyone']} deg vs subject alone "
          f"{fig['studio_rot_err_deg_subject_alone']}; purity {fig['studio_association_purity']} "
          f"({time.perf_counter() - t0:.0f} s)")
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(DEMO))
    ap.add_argument("--out", default="artifacts/bench_people")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    from bench.results import save
    save("people", bench(Path(a.out), Path(a.root), quick=a.quick), a.quick)


if __name__ == "__main__":
    main()
