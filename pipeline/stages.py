"""The pipeline's stages: each `stage(cfg, store) -> location` of its output in the artifact store.

    dataset -> [pretrain2d] -> detect2d -> label -> train3d (SS, FS) -> refine
            \-> pss_reference ------------------------------------------> evaluate -> report

A stage computes its output's fingerprint from the configuration and its inputs'
fingerprints (`plan`), returns a complete output as it is, and otherwise builds it under the
store's lock in a working folder that a later run resumes (chunked stages: per chunk; training
stages: from their checkpoints), then publishes it atomically. Changing the detector changes
the fingerprints of detect2d and of everything downstream, and of nothing upstream.

Every stage takes `progress` (tqdm bars) and `force` (rebuild even when complete). Events
(`ran` / `reused` / `skipped`, seconds) are appended to `store.events`.
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .camera import Cameras
from .config import STAGES, stage_params
from .store import Artifact, ArtifactStore, ChunkedWriter, StoreError, dims_for, to_jsonable, write_arrays

log = logging.getLogger("pipeline")

# Implementations, by role; tests may point a role at a stand-in module.
MODULES = {
    "labels": "pipeline.labels",
    "train2d": "pipeline.pretrain2d",
    "train3d": "pipeline.train3d",
    "refine": "pipeline.refine",
    "pss": "pipeline.pss",
    "evaluate": "pipeline.evaluate",
    "report": "pipeline.report",
}

# Detectors that need the pretrain2d stage's network.
NEEDS_PRETRAIN = {"network"}

# Upstream stages, for documentation and the flows' ordering (pretrain2d only when needed).
DEPENDS = {
    "dataset": (), "pretrain2d": ("dataset",), "detect2d": ("dataset", "pretrain2d"),
    "label": ("dataset", "detect2d"), "train3d": ("dataset", "label"),
    "refine": ("dataset", "label", "train3d"), "pss_reference": ("dataset",),
    "evaluate": ("dataset", "label", "train3d", "refine", "pss_reference"),
    "report": ("evaluate",),
}

# Each stage's code version, part of its outputs' fingerprints: bump a stage's number when a
# change of code (a fix, another algorithm) changes its output for the same configuration, so
# stores written by older code are rebuilt rather than reused (and so is what follows them).
CODE_VERSIONS = {
    "dataset": 2, "pretrain2d": 2, "detect2d": 1, "label": 1, "train3d": 2, "refine": 2,
    "pss_reference": 1, "evaluate": 1, "report": 2,
}


def impl(role: str):
    """The module playing `role` (see MODULES), with a clear error when it is not there."""
    try:
        return importlib.import_module(MODULES[role])
    except ModuleNotFoundError as e:
        raise StoreError(f"stage implementation {MODULES[role]!r} ({role}) is not available: {e}") from e


@dataclass
class Event:
    stage: str
    name: str
    status: str  # "ran", "reused", "skipped"
    location: str | None
    seconds: float


def _events(store: ArtifactStore) -> list:
    if not hasattr(store, "events"):
        store.events = []
    return store.events


# ---------------------------------------------------------------------------- the plan
def plan(cfg: dict, store: ArtifactStore) -> dict[str, Artifact | None]:
    """Every output's Artifact (location + fingerprint) for a configuration; None = not needed.

    Keys: the stages, with train3d split into "train3d_ss" and "train3d_fs" (the FS baseline
    depends on the dataset only, so a new detector does not retrain it).
    """
    ds_name = cfg["dataset"]["name"]
    A: dict[str, Artifact | None] = {}

    def art(stage, name, inputs, section=None, extra=None):
        conf = {"section": to_jsonable(cfg[section or stage]), "code": CODE_VERSIONS[stage]}
        if extra:
            conf.update(extra)
        return store.artifact(ds_name, stage, name, conf, {k: A[k] for k in inputs if A.get(k)})

    A["dataset"] = art("dataset", ds_name, [])
    det = cfg["detect2d"]["detector"]
    A["pretrain2d"] = art("pretrain2d", "network", ["dataset"]) if det in NEEDS_PRETRAIN else None
    A["detect2d"] = art("detect2d", det, ["dataset", "pretrain2d"])
    A["label"] = art("label", str(cfg["label"].get("mode", "labels")), ["dataset", "detect2d"])
    A["train3d_ss"] = art("train3d", "ss", ["dataset", "label"], extra={"targets": "labels"})
    A["train3d_fs"] = art("train3d", "fs", ["dataset"], extra={"targets": "ground truth"})
    A["refine"] = art("refine", "ru", ["dataset", "label", "train3d_ss"])
    A["pss_reference"] = art("pss_reference", "kmeans", ["dataset"])
    A["evaluate"] = art("evaluate", "metrics", ["dataset", "label", "train3d_ss", "train3d_fs",
                                                "refine", "pss_reference"])
    A["report"] = art("report", "report", ["evaluate"])
    return A


def _produce(store: ArtifactStore, stage: str, artifact: Artifact, build: Callable,
             force: bool = False, verify: bool = True) -> str:
    """Reuse `artifact` when complete (and its chunks verify); else build it under the lock.

    build(group) fills the working group (resuming what it holds) and returns attrs for the
    provenance. A forced rebuild starts from an empty working folder.
    """
    t0 = time.perf_counter()

    def reusable() -> bool:
        if not artifact.is_complete():
            return False
        if verify:
            try:
                bad = artifact.verify()
            except ValueError:  # not a chunked output
                bad = []
            if bad:
                log.warning("%s: %s has corrupt chunks %s; rebuilding them", stage, artifact.location, bad)
                return False
        return True

    if not force and reusable():
        _events(store).append(Event(stage, artifact.name, "reused", artifact.location, time.perf_counter() - t0))
        log.info("%s: reusing %s", stage, artifact.location)
        return artifact.location
    with artifact.lock():
        if not force and reusable():  # a concurrent run finished it while we waited
            _events(store).append(Event(stage, artifact.name, "reused", artifact.location, time.perf_counter() - t0))
            return artifact.location
        if artifact.is_complete() and not force:
            # Complete but corrupt: move it back to work so its good chunks are kept.
            fs = store.fs
            if fs.exists(artifact._fs("work")):
                fs.rm(artifact._fs("work"), recursive=True)
            fs.mv(artifact._fs("final"), artifact._fs("work"), recursive=True)
            g = artifact.begin()
            prov = dict(g.attrs["provenance"])
            prov["complete"] = False
            g.attrs["provenance"] = prov
        else:
            g = artifact.begin(fresh=force)
        log.info("%s: building %s", stage, artifact.location)
        attrs = build(g) or {}
        seconds = time.perf_counter() - t0
        loc = artifact.commit(seconds=round(seconds, 3), **attrs)
    _events(store).append(Event(stage, artifact.name, "ran", loc, time.perf_counter() - t0))
    log.info("%s: wrote %s in %.1f s", stage, loc, seconds)
    return loc


class _Progress:
    """A tqdm bar on the console that also logs every ~10 % (the log reaches Prefect's UI)."""

    def __init__(self, total: int, desc: str, progress: bool):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
        self.total, self.desc, self.n, self.next = total, desc, 0, 0.1

    def update(self, k: int = 1) -> None:
        self.bar.update(k)
        self.n += k
        if self.total and (self.n / self.total >= self.next or self.n == self.total):
            log.info("%s: %d/%d chunks", self.desc, self.n, self.total)
            self.next = (int(10 * self.n / self.total) + 1) / 10

    def close(self) -> None:
        self.bar.close()


def _progress(iterable, total: int, desc: str, progress: bool):
    """Iterate with a _Progress (or return one when iterable is None)."""
    p = _Progress(total, desc, progress)
    if iterable is None:
        return p

    def gen():
        for x in iterable:
            yield x
            p.update()
        p.close()
    return gen()


def _n_frames(ds) -> int:
    return int(ds["rig"].shape[0])


# ---------------------------------------------------------------------------- stages
def dataset(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """Build the dataset contract (docs/stores.md) with the configured adapter."""
    from .data import get_adapter

    A = plan(cfg, store)
    build_fn = get_adapter(cfg["dataset"]["name"])

    def build(g):
        build_fn(stage_params(cfg, "dataset"), g, progress=progress)
        missing = [k for k in ("rig", "K", "R", "t", "dist", "size", "split") if k not in g]
        if missing:
            raise StoreError(f"dataset adapter {cfg['dataset']['name']!r} did not write {missing}")
        return {"frames": _n_frames(g)}

    return _produce(store, "dataset", A["dataset"], build, force)


def pretrain2d(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str | None:
    """Train the 2D detector network (only for detectors that need it; else None)."""
    A = plan(cfg, store)
    art = A["pretrain2d"]
    if art is None:
        _events(store).append(Event("pretrain2d", "-", "skipped", None, 0.0))
        return None

    def build(g):
        mod = impl("train2d")
        ds = A["dataset"].open()
        params = {**stage_params(cfg, "pretrain2d"), "preset": cfg["preset"]}
        ckpt = Path(mod.train(params, ds, art.work_dir() / "train", progress=progress))
        return {"checkpoint": ckpt.relative_to(art.work_dir()).as_posix()}

    return _produce(store, "pretrain2d", art, build, force)


def checkpoint_of(art: Artifact) -> Path:
    """Local path of a complete training artifact's final checkpoint."""
    prov = art.open().attrs["provenance"]
    return art.local_path() / prov["checkpoint"]


def detect2d(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """Run the frozen 2D detector over every frame and view, chunk by chunk (resumable)."""
    from .detectors import get_detector

    A = plan(cfg, store)
    name = cfg["detect2d"]["detector"]
    detect = get_detector(name)
    chunk = int(cfg["detect2d"]["chunk"])

    def build(g):
        ds = A["dataset"].open()
        context = {"dataset": A["dataset"].location}
        if A["pretrain2d"] is not None:
            context["pretrain2d"] = str(checkpoint_of(A["pretrain2d"]))
        w = ChunkedWriter(g, _n_frames(ds), chunk)
        params = stage_params(cfg, "detect2d")
        todo = w.pending(verify=cfg["store"]["verify"])
        for i in _progress(todo, len(todo), f"detect2d ({name})", progress):
            kp = np.asarray(detect(params, ds, w.frames(i), context), dtype=np.float32)
            w.write(i, {"keypoints2d": kp})
        g.attrs.update({"detector": name, "detector_config": to_jsonable(params)})
        return {"frames": w.n_frames}

    return _produce(store, "detect2d", A["detect2d"], build, force, cfg["store"]["verify"])


# ---- label: rig calibration first (per rig), then frame chunks on Dask
def _label_task(kp: np.ndarray, segments: list, cams: dict, lcfg: dict, module: str) -> dict:
    """Labels of one frame chunk: label_chunk per rig segment, concatenated. Runs on a worker."""
    labels = importlib.import_module(module)
    parts = [labels.label_chunk(kp[a:b], cams[gi], lcfg) for a, b, gi in segments]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def _segments(rig: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal rig index in a chunk: [(start, stop, rig), ...] (chunk-relative)."""
    cuts = np.flatnonzero(np.diff(rig)) + 1
    starts = np.r_[0, cuts]
    stops = np.r_[cuts, len(rig)]
    return [(int(a), int(b), int(rig[a])) for a, b in zip(starts, stops)]


def worker_setup() -> None:
    """Run on each Dask worker of a LocalCluster: one OpenCV thread per single-threaded worker
    (Dask already sets OMP/MKL/OpenBLAS to 1), so n workers use n cores, not n x cores."""
    import cv2
    cv2.setNumThreads(1)
    importlib.import_module(MODULES["labels"])


def local_cluster_config():
    """Dask settings for LocalCluster workers that label: without Dask's default
    MALLOC_TRIM_THRESHOLD_=65536, which makes the labeller's numpy temporaries 3x slower
    (measured: 8.8 s vs 2.7 s of CPU for 40k frames)."""
    import dask
    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def dask_client(cfg: dict):
    """A dask.distributed Client: the configured scheduler, or a LocalCluster sized to the machine.

    Returns (client, close) or (None, noop) when `dask.n_workers` is 0 (in-process labelling).
    """
    d = cfg["dask"]
    if d.get("address"):
        from distributed import Client
        client = Client(d["address"])
        return client, client.close
    n = d.get("n_workers")
    if n == 0:
        return None, lambda: None
    from distributed import Client, LocalCluster
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    n = n or os.cpu_count() or 1
    with local_cluster_config():
        cluster = LocalCluster(n_workers=int(n), threads_per_worker=int(d.get("threads_per_worker") or 1),
                               processes=True, dashboard_address=":0", silence_logs=logging.WARNING)
    client = Client(cluster)
    if int(d.get("threads_per_worker") or 1) == 1:
        client.run(worker_setup)

    def close():
        client.close()
        cluster.close()
    return client, close


def label(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """Pseudo-labels: calibrate each rig (persisted first), then label frame chunks on Dask."""
    A = plan(cfg, store)
    chunk = int(cfg["label"]["chunk"])
    lcfg = stage_params(cfg, "label")

    def build(g):
        labels = impl("labels")
        ds = A["dataset"].open()
        kp_arr = A["detect2d"].open()["keypoints2d"]
        rig = np.asarray(ds["rig"][:], dtype=np.int64)
        F, G = len(rig), int(ds["K"].shape[0])
        V = int(ds["K"].shape[1])
        if kp_arr.shape[0] != F:
            raise StoreError(f"detect2d has {kp_arr.shape[0]} frames, dataset {F}")
        # 1. Calibration per rig, written before any chunk so a resumed run reuses it exactly.
        if "R_est" not in g:
            for k, shape in (("R_est", (G, V, 3, 3)), ("t_est", (G, V, 3)), ("K_est", (G, V, 3, 3)),
                             ("dist_est", (G, V, 5)), ("size_est", (G, V, 2))):
                g.create_array(k, shape=shape, dtype="f8", fill_value=np.nan,
                               dimension_names=dims_for(k, len(shape), "rig"))
        done = list(g.attrs.get("calibrated", []))
        diags = dict(g.attrs.get("calibration", {}))
        for gi in range(G):
            if gi in done:
                continue
            frames = np.flatnonzero(rig == gi)
            if len(frames) == 0:
                done.append(gi)
                continue
            log.info("label: calibrating rig %d from %d frames", gi, len(frames))
            cams, diag = labels.calibrate(np.asarray(kp_arr.get_orthogonal_selection((frames,))),
                                          Cameras.from_store(ds, gi), lcfg)
            for k, v in (("R_est", cams.R), ("t_est", cams.t), ("K_est", cams.K),
                         ("dist_est", cams.dist), ("size_est", cams.size)):
                g[k][gi] = v
            diags[str(gi)] = to_jsonable(diag)
            done.append(gi)
            g.attrs.update({"calibration": diags, "calibrated": done})
        cams = {gi: Cameras.from_store(g, gi, "_est")
                for gi in range(G) if np.any(rig == gi)}
        # 2. Frame chunks, mapped over the cluster; each written when it arrives.
        w = ChunkedWriter(g, F, chunk)
        todo = w.pending(verify=cfg["store"]["verify"])
        module = MODULES["labels"]
        args = {}
        for i in todo:
            s = w.frames(i)
            args[i] = (np.asarray(kp_arr[s]), _segments(rig[s]))
        bar = _progress(None, len(todo), "label", progress)
        if todo:
            frames_left = sum(w.frames(i).stop - w.frames(i).start for i in todo)
            small = frames_left < int(cfg["dask"].get("min_frames") or 0) and not cfg["dask"].get("address")
            client, close = dask_client(cfg) if len(todo) > 1 and not small else (None, lambda: None)
            try:
                if client is None:
                    for i in todo:
                        kp, seg = args[i]
                        w.write(i, _label_task(kp, seg, {gi: cams[gi] for _, _, gi in seg}, lcfg, module))
                        bar.update()
                else:
                    from distributed import as_completed
                    futs = {client.submit(_label_task, args[i][0], args[i][1],
                                          {gi: cams[gi] for _, _, gi in args[i][1]}, lcfg, module,
                                          pure=False): i for i in todo}
                    for fut in as_completed(futs):
                        w.write(futs[fut], fut.result())
                        bar.update()
            finally:
                close()
        bar.close()
        failures = getattr(labels, "FAILURES", {})
        g.attrs["failures"] = {str(k): v for k, v in failures.items()}
        ok = np.asarray(g["frame_ok"][:]) if "frame_ok" in g else np.zeros(F, bool)
        return {"frames": F, "frames_labelled": int(ok.sum())}

    return _produce(store, "label", A["label"], build, force, cfg["store"]["verify"])


def _label_targets(A) -> tuple[np.ndarray, np.ndarray]:
    lab = A["label"].open()
    targets = np.asarray(lab["labels_cam"][:], dtype=np.float32)
    mask = np.asarray(lab["valid"][:], dtype=bool) & np.asarray(lab["frame_ok"][:], dtype=bool)[:, None, None]
    mask &= np.all(np.isfinite(targets), axis=-1)
    return targets, mask


def train3d(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> dict:
    """Train the 3D network on the pseudo-labels (SS) and on ground truth (FS baseline).

    Returns {"ss": location, "fs": location}. Each trains in its artifact's working folder,
    where pipeline.train3d keeps checkpoints and resumes from them after an interruption.
    """
    A = plan(cfg, store)
    tcfg = {**stage_params(cfg, "train3d"), "preset": cfg["preset"]}
    out = {}
    for variant in ("ss", "fs"):
        art = A[f"train3d_{variant}"]

        def build(g, art=art, variant=variant):
            mod = impl("train3d")
            ds = A["dataset"].open()
            targets, mask = _label_targets(A) if variant == "ss" else (None, None)
            work = art.work_dir()
            ckpt = Path(mod.train(tcfg, ds, targets, mask, work / "train", progress=progress))
            return {"checkpoint": ckpt.relative_to(work).as_posix(), "variant": variant}

        out[variant] = _produce(store, "train3d", art, build, force)
    return out


def _split_frames(ds, split: int) -> np.ndarray:
    return np.flatnonzero(np.asarray(ds["split"][:]) == split)


def refine(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """Train the refinement unit from the SS network's predictions on the training frames and
    their pseudo-labels (refine.make_pairs: pseudo-labels plus the fitted error by default)."""
    A = plan(cfg, store)
    art = A["refine"]

    def build(g):
        t3, ru = impl("train3d"), impl("refine")
        ds = A["dataset"].open()
        frames = _split_frames(ds, 0)
        targets, mask = _label_targets(A)
        pred = np.asarray(t3.predict(checkpoint_of(A["train3d_ss"]), ds, frames, progress=progress))
        m = mask[frames]
        some = m.any(-1)  # (frame, view) with at least one labelled joint
        if not some.any():
            raise StoreError("refine: no training frame has a pseudo-label")
        rcfg = stage_params(cfg, "refine")
        x, y = ru.make_pairs(rcfg, pred[some], targets[frames][some], m[some])
        work = art.work_dir()
        ckpt = Path(ru.train_refiner(rcfg, x, y, work / "train", progress=progress))
        return {"checkpoint": ckpt.relative_to(work).as_posix(), "pairs": int(len(x))}

    return _produce(store, "refine", art, build, force)


def pss_reference(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """k-means reference poses for PSS: the ground truth of the training subjects."""
    A = plan(cfg, store)
    c = cfg["pss_reference"]

    def build(g):
        pss = impl("pss")
        ds = A["dataset"].open()
        if "poses3d_world" not in ds:
            raise StoreError("pss_reference: the dataset has no 3D ground truth (poses3d_world)")
        # in every camera's frame, as the poses PSS scores (the normalisation keeps orientation)
        poses = pss.reference_poses(ds, _split_frames(ds, 0))
        ref = pss.build_reference(poses, ks=tuple(c["ks"]), seed=int(c["seed"]), n_init=int(c["n_init"]),
                                  max_poses=c["max_poses"])
        attrs = ref.pop("attrs", {})
        for k, v in ref.items():
            a = np.asarray(v)
            g.create_array(k, data=a, dimension_names=("cluster",) + (("joint", "xyz") if a.ndim == 3 else ()))
        g.attrs["reference"] = to_jsonable(attrs)
        return {"n_poses": attrs.get("n_poses")}

    return _produce(store, "pss_reference", A["pss_reference"], build, force)


def _reference_dict(group) -> dict:
    ref = {k: np.asarray(group[k][:]) for k in group.array_keys()}
    ref["attrs"] = dict(group.attrs.get("reference", {}))
    return ref


LABEL_MODES = ("known", "rig", "per-frame")


def _table1(cfg: dict, A: dict, ds, ref: dict, ks: tuple, pck: float, progress: bool) -> dict:
    """The paper's Table 1 on our data: pseudo-labels of the training frames against ground
    truth, from the configured detector and from GT 2D, with extrinsics (`known`) and without
    (`rig`, and the paper's `per-frame`). The configured (detector, mode) row reads the label
    stage's own output; the others are labelled here, in-process (seconds on the studio)."""
    ev, labels = impl("evaluate"), impl("labels")
    train = _split_frames(ds, 0)
    if not len(train):
        return {}
    det, mode_cfg = cfg["detect2d"]["detector"], cfg["label"]["mode"]
    lcfg = stage_params(cfg, "label")
    sources = {det: np.asarray(A["detect2d"].open()["keypoints2d"].get_orthogonal_selection((train,)))}
    if det != "gt" and "keypoints2d_gt" in ds and np.isfinite(ds["keypoints2d_gt"][0]).any():
        from .detectors import get_detector
        gt_cfg = {"invisible_conf": 0.5}  # the preset's GT 2D: every joint placed
        sources["gt"] = np.asarray(get_detector("gt")(gt_cfg, ds, slice(None), {}))[train]
    rig = np.asarray(ds["rig"][:])[train]
    extrinsics = all(Cameras.from_store(ds, g).has_extrinsics for g in np.unique(rig))
    rows = {}
    for name, kp in sources.items():
        for mode in LABEL_MODES:
            if mode == "known" and not extrinsics:
                continue
            if (name, mode) == (det, mode_cfg):
                lab = A["label"].open()
                key = "labels_cam_mm" if mode == "known" and "labels_cam_mm" in lab else "labels_cam"
                out = {k: np.asarray(lab[a].get_orthogonal_selection((train,)))
                       for k, a in (("labels", key), ("valid", "valid"), ("frame_ok", "frame_ok"))}
            else:
                out = {"labels": np.full(kp.shape, np.nan, np.float32), "valid": np.zeros(kp.shape[:3], bool),
                       "frame_ok": np.zeros(len(train), bool)}
                for g in np.unique(rig):
                    sel = rig == g
                    cams = Cameras.from_store(ds, g) if mode == "known" else Cameras.from_store(ds, g).without_extrinsics()
                    res = labels.make_labels(kp[sel], cams, {**lcfg, "mode": mode})
                    out["labels"][sel] = res["labels_cam_mm" if mode == "known" else "labels_cam"]
                    out["valid"][sel], out["frame_ok"][sel] = res["valid"], res["frame_ok"]
            ok = out["frame_ok"].astype(bool)
            mask = out["valid"].astype(bool) & np.all(np.isfinite(out["labels"]), -1)
            row = {"coverage": float(ok.mean()), "summary": {"overall": {}}}
            if ok.any():
                summary, _ = ev.evaluate_dataset(np.where(mask[ok][..., None], out["labels"][ok], np.nan), ds,
                                                 train[ok], units="mm" if mode == "known" else "bones",
                                                 mask=mask[ok], reference=ref, ks=ks, model="labels",
                                                 pck_threshold=pck)
                row["summary"] = to_jsonable(summary)
            rows[f"{name} 2D, {mode}" + (" (trained on)" if (name, mode) == (det, mode_cfg) else "")] = row
    return rows


def evaluate(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """Score FS, SS and SS+RU on the test split, and the training labels; PSS stability."""
    A = plan(cfg, store)
    art = A["evaluate"]
    c = cfg["evaluate"]

    def build(g):
        ev, t3, ru, pss = impl("evaluate"), impl("train3d"), impl("refine"), impl("pss")
        ds = A["dataset"].open()
        ref = _reference_dict(A["pss_reference"].open())
        test = _split_frames(ds, 1)
        work = art.work_dir()
        ks = tuple(cfg["pss_reference"]["ks"])
        preds = {"FS": (np.asarray(t3.predict(checkpoint_of(A["train3d_fs"]), ds, test, progress=progress)), "mm")}
        ss = np.asarray(t3.predict(checkpoint_of(A["train3d_ss"]), ds, test, progress=progress))
        preds["SS"] = (ss, "bones")
        f, V = ss.shape[:2]
        preds["SS + RU"] = (np.asarray(ru.apply_refiner(checkpoint_of(A["refine"]), ss.reshape(f * V, *ss.shape[2:])))
                            .reshape(ss.shape), "bones")
        summaries = {}
        for name, (p, units) in preds.items():
            summary, df = ev.evaluate_dataset(p, ds, test, units=units, reference=ref, model=name,
                                              ks=ks, pck_threshold=float(c["pck_threshold"]))
            key = name.lower().replace(" + ", "_").replace(" ", "_")
            write_arrays(g, {f"pred_{key}": p.astype(np.float32)})
            g[f"pred_{key}"].attrs["units"] = units
            ev.write_per_frame(df, work / f"per_frame_{key}.parquet")
            summaries[name] = {"summary": to_jsonable(summary), "per_frame": f"per_frame_{key}.parquet"}
        labels_rows = _table1(cfg, A, ds, ref, ks, float(c["pck_threshold"]), progress) if c.get("label_rows") else {}
        stab = []
        runs = int(c.get("stability_runs", 0) or 0)
        if runs >= 2:
            gt = ev.ground_truth(ds, test)
            full = gt["mask"].all(-1)
            train_poses = pss.reference_poses(ds, _split_frames(ds, 0))
            for k in ks:
                stab.append(to_jsonable(pss.stability(
                    train_poses, k, runs=runs, seed=int(cfg["pss_reference"]["seed"]),
                    pred=ss[full] * float(ds.attrs.get("mean_bone_mm", 1.0)), gt=gt["gt"][full],
                    max_poses=cfg["pss_reference"]["max_poses"], progress=progress)))
        g.attrs.update({"models": summaries, "labels": labels_rows, "pss_stability": stab,
                        "test_frames": int(len(test))})
        return {"metrics": {n: s["summary"]["overall"] for n, s in summaries.items()}}

    return _produce(store, "evaluate", art, build, force)


def report(cfg: dict, store: ArtifactStore, progress: bool = True, force: bool = False) -> str:
    """The markdown report with its figures; returns the path of report.md."""
    A = plan(cfg, store)
    art = A["report"]

    def build(g):
        rep, ev = impl("report"), impl("evaluate")
        e = A["evaluate"].open()
        eloc = A["evaluate"].local_path()
        ds = A["dataset"].open()
        test = _split_frames(ds, 1)
        models = {}
        preds = {}
        for name, m in dict(e.attrs["models"]).items():
            models[name] = {"summary": m["summary"], "per_frame": ev.read_per_frame(eloc / m["per_frame"])}
            key = name.lower().replace(" + ", "_").replace(" ", "_")
            preds[name] = e[f"pred_{key}"]
        gt = ev.ground_truth(ds, test)["gt"]
        samples = {"gt": gt, "predictions": preds}
        if "images" in ds:
            samples["images"] = _TakeFrames(ds["images"], test)
        results = {"dataset": cfg["dataset"]["name"], "labels": dict(e.attrs.get("labels", {})),
                   "models": models, "pss_reference": _reference_dict(A["pss_reference"].open()),
                   "pss_stability": list(e.attrs.get("pss_stability", [])), "samples": samples,
                   "n_worst": int(cfg["report"]["n_worst"]), "timings": _stage_timings(store, cfg),
                   "training": _training_curves(A),
                   "config": {"preset": cfg.get("preset"),
                              "fingerprints": {k: a.fingerprint for k, a in A.items() if a is not None}}}
        path = rep.write_report(results, art.work_dir())
        return {"report": Path(path).name}

    _produce(store, "report", art, build, force)
    return str(Path(art.local_path()) / "report.md")


def _training_curves(A) -> dict:
    """Loss per epoch (and images/s) of the networks this report's models came from."""
    from .inspect import training_record
    out = {}
    for key, name, note in (("pretrain2d", "2D detector", "smooth L1 + heatmap terms, crop coordinates"),
                            ("train3d_ss", "SS", "smooth L1, pseudo-labels"),
                            ("train3d_fs", "FS", "smooth L1, ground truth"),
                            ("refine", "RU", "L1, intermediate + final")):
        if A.get(key) is None or not A[key].is_complete():
            continue
        rec = training_record(checkpoint_of(A[key]))
        out[name] = {"loss": [float(x) for x in rec["losses"] or []], "images_per_s": rec["images_per_s"],
                     "note": note}
    return out


class _TakeFrames:
    """Lazy view of an array's rows `idx` (the report reads only the frames it shows)."""

    def __init__(self, arr, idx):
        self.arr, self.idx = arr, np.asarray(idx)
        self.shape = (len(self.idx),) + tuple(arr.shape[1:])
        self.dtype = arr.dtype
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows = self.idx[key[0]]
        if np.ndim(rows) == 0:
            return np.asarray(self.arr[(int(rows),) + key[1:]])
        return np.asarray(self.arr.get_orthogonal_selection((rows,)))[(slice(None),) + key[1:]]

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.arr.get_orthogonal_selection((self.idx,)))
        return a if dtype is None else a.astype(dtype)


def _stage_timings(store: ArtifactStore, cfg: dict) -> dict:
    """Seconds each stage took when it was built (from the provenance of this run's outputs)."""
    out = {}
    for key, art in plan(cfg, store).items():
        if art is None or key == "report" or not art.is_complete():
            continue
        s = art.open().attrs["provenance"].get("seconds")
        if s is not None:
            out[key] = float(s)
    return out


STAGE_FUNCTIONS: dict[str, Callable] = {
    "dataset": dataset, "pretrain2d": pretrain2d, "detect2d": detect2d, "label": label,
    "train3d": train3d, "refine": refine, "pss_reference": pss_reference,
    "evaluate": evaluate, "report": report,
}
assert tuple(STAGE_FUNCTIONS) == STAGES


def outputs_of(stage: str, cfg: dict, store: ArtifactStore) -> list[Artifact]:
    """The artifacts a stage writes under this configuration ([] when it is not needed)."""
    A = plan(cfg, store)
    keys = ["train3d_ss", "train3d_fs"] if stage == "train3d" else [stage]
    return [A[k] for k in keys if A.get(k) is not None]


def is_done(stage: str, cfg: dict, store: ArtifactStore) -> bool:
    """True when every output of the stage is complete (and, for chunked ones, verifies)."""
    for art in outputs_of(stage, cfg, store):
        if not art.is_complete():
            return False
        if cfg["store"]["verify"]:
            try:
                if art.verify():
                    return False
            except ValueError:  # not chunked
                pass
    return True


def run_stage(stage: str, cfg: dict, store: ArtifactStore, force: bool = False, progress: bool = True) -> dict:
    """Run one stage; returns {"stage", "location", "status" (ran/reused/skipped), "seconds", "outputs"}."""
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {list(STAGES)}")
    n0 = len(_events(store))
    t0 = time.perf_counter()
    loc = STAGE_FUNCTIONS[stage](cfg, store, progress=progress, force=force)
    evs = _events(store)[n0:]
    status = "ran" if any(e.status == "ran" for e in evs) else (
        "skipped" if evs and all(e.status == "skipped" for e in evs) else "reused")
    return {"stage": stage, "location": loc, "status": status, "seconds": time.perf_counter() - t0,
            "outputs": [asdict(e) for e in evs]}
