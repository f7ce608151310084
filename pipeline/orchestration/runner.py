"""The plan and the runner: every output's location from the stage records, and running a
stage's outputs, reusing what is complete and verified.

`plan(cfg, store)` walks the stage records in order: an output's fingerprint hashes its
stage's section, code version, source files' identities, its own params and its inputs'
fingerprints, so a change anywhere upstream moves it. `run_stage` returns a complete output
as it is when it verifies (every file against its manifest, its inputs' content unchanged
since it was built); repairs corrupt chunks of chunked arrays; rebuilds anything else that
fails; and otherwise builds the output under its lock, resuming what an interrupted run left.

A stage whose outputs are independent trainings (`Stage.parallel`: train3d's SS and FS,
refine's two units) shares the CPU cores among its needed outputs (threads.shared_by), and
builds the pending ones side by side, one spawned process each, on a machine with two cores
or more and no GPU: one training rarely keeps two cores busy, two trainings do. A child's
log lines and warnings come back to this process; a child dies with it (Linux).
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from ..training import threads

from .config import stage_names
from .arrays import write_coordinates
from .context import Context
from .identity import sources_identity
from .record import Output, Stage
from .stages import BY_NAME, STAGES
from .store import Artifact, ArtifactStore, StoreError, read_provenance, to_jsonable

log = logging.getLogger("pipeline")


def plan(cfg: Mapping, store: ArtifactStore, upto: str | None = None) -> dict[str, Artifact | None]:
    """Every output's Artifact for a configuration, by plan key; None where not needed. With
    `upto` (a stage name), the stages up to and including it only: what a stage builds depends
    on earlier stages alone, so a later stage's settings (a missing train3d.init) cannot stop it."""
    ds_name = cfg["dataset"]["name"]
    A: dict[str, Artifact | None] = {}
    last = STAGES.index(stage_of(upto)) if upto is not None else len(STAGES) - 1
    for stage in STAGES[:last + 1]:
        section = cfg[stage.name]
        outs = [o for o in stage.outputs if o.needed(cfg)]
        sources = sources_identity(_existing_sources(stage, section)) if outs else {}
        for out in stage.outputs:
            if out not in outs:
                A[out.key] = None
                continue
            unknown = [k for k in out.inputs if k not in A]
            if unknown:
                raise RuntimeError(f"{out.key}: inputs {unknown} are not outputs of an earlier stage")
            conf = {"section": to_jsonable(section), "code": stage.version}
            if sources:
                conf["sources"] = sources
            if out.params:
                conf["params"] = dict(out.params)
            A[out.key] = store.artifact(ds_name, stage.name, out.folder_name(section), conf,
                                        {k: A[k] for k in out.inputs if A[k] is not None and out.uses(cfg, k)})
    return A


def _existing_sources(stage: Stage, section: Mapping) -> list:
    """The stage's source files; a missing one is a ValueError naming the key that names it
    (e.g. train3d.init), else the stage, and what to do."""
    paths = list(stage.sources(section))
    for p in paths:
        if Path(p).is_file():
            continue
        keys = [f"{stage.name}.{k}" for k, v in section.items()
                for x in (v if isinstance(v, (list, tuple)) else [v])
                if isinstance(x, str) and x and Path(x).expanduser().resolve() == Path(p).expanduser().resolve()]
        what = "is not a file" if Path(p).exists() else "does not exist"
        if keys:
            raise ValueError(f"{keys[0]}: {Path(p).expanduser().resolve()} {what}: give an existing file, or null")
        raise ValueError(f"{stage.name}: its source file {p} {what}: check the {stage.name} settings that name it")
    return paths


def check_sources(cfg: Mapping, chain: Iterable[str]) -> None:
    """Every source file of the chain's needed stages exists: the planning's refusal
    (_existing_sources), before anything runs or a server starts."""
    for name in chain:
        stage = stage_of(name)
        if any(o.needed(cfg) for o in stage.outputs):
            _existing_sources(stage, cfg[name])


def stage_of(name: str) -> Stage:
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}; choose one of {list(stage_names())}")
    return BY_NAME[name]


def _verdict(art: Artifact, verify: bool):
    """(reusable, Verdict or None) of an output."""
    if not art.is_complete():
        return False, None
    if not verify:
        return True, None
    v = art.check()
    return v.ok, v


def _event(out: Output, art: Artifact | None, status: str, t0: float, stage: Stage) -> dict:
    result = None
    if art is not None and stage.result and status != "pending":
        rel = read_provenance(art.location, art.store.storage_options).get(stage.result)
        result = str(art.local_path() / rel) if rel else None
    return {"key": out.key, "name": art.name if art else out.key, "status": status,
            "location": art.location if art else None, "result": result, "seconds": time.perf_counter() - t0}


def _summary(stage: Stage, events: list[dict], t0: float) -> dict:
    status = ("ran" if any(e["status"] == "ran" for e in events) else
              "pending" if any(e["status"] == "pending" for e in events) else
              "skipped" if all(e["status"] == "skipped" for e in events) else "reused")
    live = [e for e in events if e["status"] != "skipped"]
    if not live:
        loc = None
    elif len(stage.outputs) == 1:
        loc = live[0]["location"]
    else:
        loc = {e["name"]: e["location"] for e in live}
    return {"stage": stage.name, "status": status, "location": loc, "seconds": time.perf_counter() - t0,
            "result": live[0]["result"] if len(live) == 1 else None, "outputs": events}


def status(name: str, cfg: Mapping, store: ArtifactStore) -> dict:
    """What `run_stage` would do, without doing it: status "reused", "skipped" or "pending"."""
    stage, t0 = stage_of(name), time.perf_counter()
    A = plan(cfg, store, upto=name)
    events = []
    for out in stage.outputs:
        art = A[out.key]
        if art is None:
            events.append(_event(out, None, "skipped", t0, stage))
        else:
            ok, _ = _verdict(art, cfg["store"]["verify"])
            events.append(_event(out, art, "reused" if ok else "pending", t0, stage))
    return _summary(stage, events, t0)


def run_stage(name: str, cfg: Mapping, store: ArtifactStore, force: bool = False, progress: bool = True) -> dict:
    """Run one stage's outputs. Returns {"stage", "status" (ran/reused/skipped), "location"
    (one output's, or {name: location}), "result" (its main file, if any), "seconds",
    "outputs": [per-output events]}. `force` rebuilds complete outputs from scratch."""
    stage, t0 = stage_of(name), time.perf_counter()
    A = plan(cfg, store, upto=name)
    needed = [o for o in stage.outputs if A[o.key] is not None]
    sharers = len(needed) if stage.parallel and not _gpu() else 1
    reusable: set[str] = set()
    built: dict[str, tuple[bool, float]] = {}
    if sharers > 1 and threads.cpu_threads() >= 2:
        verify = bool(cfg["store"]["verify"])
        reusable = {o.key for o in needed if not force and _verdict(A[o.key], verify)[0]}
        todo = [o for o in needed if o.key not in reusable]
        if len(todo) > 1:
            built = _build_side_by_side(stage, todo, cfg, store, A, force, sharers)
    events = []
    with threads.shared_by(sharers):  # an output built here gets the share it has side by side
        for out in stage.outputs:
            art = A[out.key]
            t1 = time.perf_counter()
            if art is None:
                events.append(_event(out, None, "skipped", t1, stage))
            elif out.key in built:
                ran, seconds = built[out.key]
                events.append({**_event(out, art, "ran" if ran else "reused", t1, stage), "seconds": seconds})
            elif out.key in reusable:  # verified above: not twice
                log.info("%s: reusing %s", stage.name, art.location)
                events.append(_event(out, art, "reused", t1, stage))
            else:
                ran = _produce(stage, out, art, cfg, store, A, force, progress)
                events.append(_event(out, art, "ran" if ran else "reused", t1, stage))
    return _summary(stage, events, t0)


def _gpu() -> bool:
    import torch
    return torch.cuda.is_available()


def _build_side_by_side(stage: Stage, todo: list[Output], cfg: Mapping, store: ArtifactStore, A: Mapping,
                        force: bool, sharers: int) -> dict[str, tuple[bool, float]]:
    """Build `todo` (outputs of a parallel stage) each in a spawned process with its share of
    the cores: {key: (built?, seconds)}. Raises the first child's error after every child has
    ended (the others' outputs are kept)."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    target = logging.getLogger("pipeline")
    built, errors = {}, []
    with ProcessPoolExecutor(len(todo), mp_context=mp, initializer=_child_start,
                             initargs=(queue, _plugin_tables())) as pool:
        # the plan travels with the work: a child does not hash the sources again
        futures = {pool.submit(_child_produce, stage.name, o.key, dict(cfg), store, dict(A), force, sharers): o
                   for o in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            _drain(queue, target)
            for fut in done:
                try:
                    ran, seconds, said = fut.result()
                except BaseException as e:  # noqa: BLE001 - raised below, after the others end
                    errors.append(e)
                    continue
                for category, message in said:  # the child logged them; the caller sees them
                    warnings.warn(message, category, stacklevel=2)
                built[futures[fut].key] = (ran, seconds)
    # after the pool has joined its processes: a child's last records leave its queue's feeder
    # thread at the child's exit, after its result may already have arrived
    _drain(queue, target)
    if errors:
        from concurrent.futures.process import BrokenProcessPool
        if isinstance(errors[0], BrokenProcessPool):
            # multiprocessing's own words name neither the stage nor the usual cause
            raise RuntimeError(
                f"{stage.name}: a process building its outputs side by side ended abruptly. A script that runs "
                "stages must start them under `if __name__ == \"__main__\":` (the spawned processes import the "
                "script again; its traceback then says so), else the process was killed (out of memory?)") from errors[0]
        raise errors[0]
    return built


def _drain(queue, target: logging.Logger) -> None:
    import queue as q
    while True:
        try:
            record = queue.get_nowait()
        except (q.Empty, OSError, ValueError):
            return
        target.handle(record)


def _plugin_tables() -> dict:
    """The plug-in tables as this process has them (a plug-in registered at run time, by a
    user's script or a test, is not in a spawned child's fresh import)."""
    from .. import data, detectors
    return {"adapters": dict(data.ADAPTERS), "detectors": dict(detectors.DETECTORS),
            "needs_network": frozenset(detectors.NEEDS_NETWORK)}


def _child_start(queue, tables: dict) -> None:
    """A side-by-side child: dies with its parent (Linux prctl PR_SET_PDEATHSIG), sends its
    `pipeline` log records to the parent, knows the parent's plug-ins."""
    from .. import data, detectors
    data.ADAPTERS.update(tables["adapters"])
    detectors.DETECTORS.update(tables["detectors"])
    detectors.NEEDS_NETWORK = detectors.NEEDS_NETWORK | tables["needs_network"]
    import ctypes
    import logging.handlers
    import signal
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    lg = logging.getLogger("pipeline")
    lg.handlers[:] = [logging.handlers.QueueHandler(queue)]
    lg.setLevel(logging.INFO)
    lg.propagate = False


def _child_produce(name: str, key: str, cfg: dict, store: ArtifactStore, A: dict, force: bool, sharers: int):
    """One output of a parallel stage, in a child: (built?, seconds, [(category, message)] of
    its warnings)."""
    stage, t1 = stage_of(name), time.perf_counter()
    out = next(o for o in stage.outputs if o.key == key)
    with threads.shared_by(sharers), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ran = _produce(stage, out, A[key], cfg, store, A, force, progress=False)
    said = []
    for w in caught:
        if issubclass(w.category, UserWarning) and (w.category, str(w.message)) not in said:
            said.append((w.category, str(w.message)))
    return ran, time.perf_counter() - t1, said


def _flags(stage: Stage, caught: list) -> list[str]:
    """The warnings a build raised (flagged frames, cameras left out, ...): logged on the
    `pipeline` logger (Prefect's run log), raised again for the caller, and returned for the
    output's provenance, so that a flag outlives the console it was printed on."""
    said = []
    for w in caught:
        if not issubclass(w.category, UserWarning):
            continue
        msg = str(w.message)
        if msg not in said:
            said.append(msg)
            log.warning("%s: %s", stage.name, msg)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return said[:100]


def _view_names(stage: Stage, group, A: Mapping) -> list[str] | None:
    """The dataset's camera names (its `views` attribute), for the outputs' view coordinate."""
    try:
        attrs = group.attrs if stage.name == "dataset" else A["dataset"].open().attrs
    except (KeyError, AttributeError, StoreError):
        return None
    views = attrs.get("views")
    return [str(v) for v in views] if isinstance(views, list) else None


def _produce(stage: Stage, out: Output, art: Artifact, cfg: Mapping, store: ArtifactStore,
             A: Mapping, force: bool, progress: bool) -> bool:
    """Build `art` unless it is complete and verifies; True when it was built."""
    verify = bool(cfg["store"]["verify"])
    t0 = time.perf_counter()
    ok, _ = _verdict(art, verify)
    if ok and not force:
        log.info("%s: reusing %s", stage.name, art.location)
        return False
    with art.lock():
        ok, v = _verdict(art, verify)
        if ok and not force:  # a concurrent run finished it while we waited
            return False
        if v is not None and not force and v.chunks and not v.other and not v.stale:
            log.warning("%s: %s: %s; recomputing them", stage.name, art.location, v)
            group = art.reopen_for_repair()
        else:
            if v is not None and not v.ok:
                log.warning("%s: %s: %s; rebuilding it", stage.name, art.location, v)
            group = art.begin(fresh=force or v is not None)
        missing = [k for k in out.inputs if A.get(k) is not None and not A[k].is_complete()]
        if missing:
            raise StoreError(f"{stage.name}: inputs {missing} are not built "
                             f"({', '.join(A[k].location for k in missing)}); run their stages first")
        log.info("%s: building %s", stage.name, art.location)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attrs = stage.build(Context(stage, out, cfg, store, A, group, progress)) or {}
        said = _flags(stage, caught)
        write_coordinates(group, _view_names(stage, group, A))
        seconds = time.perf_counter() - t0
        art.commit(seconds=round(seconds, 3), warnings=said, **attrs)
    log.info("%s: wrote %s in %.1f s", stage.name, art.location, seconds)
    return True
