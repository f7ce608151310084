"""Prefect flows: one per stage, and `epipolarpose` chaining them.

The flows are thin: they resolve the configuration (a named preset plus dotted overrides,
validated before anything is written), call the runner of pipeline.orchestration for each
stage record in order, and forward the stage logic's log lines (logger "pipeline") to
Prefect's run logger. A user's mistake (bad configuration or input: ValueError, StoreError)
ends the run Failed with its one-line message, without a traceback.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Dict, List, Optional, Union

from prefect import flow, get_run_logger
from prefect.states import Failed

from pipeline import orchestration as orch
from pipeline.training.checkpoint import CheckpointWriteError
from pipeline.orchestration import ArtifactStore, StoreError

Overrides = Optional[Union[List[str], Dict[str, Any]]]
# a user's mistake or the machine's (a full disk): one line naming the cause, no traceback
USER_ERRORS = (ValueError, StoreError, FileNotFoundError, CheckpointWriteError)


class _ToPrefect(logging.Handler):
    def __init__(self, target):
        super().__init__(logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.target.log(record.levelno, record.getMessage())
        except Exception:  # never let logging break a stage
            pass


@contextlib.contextmanager
def forward_logs():
    """Send the `pipeline` logger's records to the current Prefect run's logger."""
    src = logging.getLogger("pipeline")
    handler = _ToPrefect(get_run_logger())
    old, prop = src.level, src.propagate
    src.setLevel(logging.INFO)
    src.propagate = False  # Prefect's handler shows it once, under the run's name
    src.addHandler(handler)
    try:
        yield
    finally:
        src.removeHandler(handler)
        src.setLevel(old)
        src.propagate = prop


def resolve_config(preset: str = "cpu", overrides: Overrides = None, detector: Optional[str] = None,
                   root: Optional[str] = None) -> dict:
    """The run's configuration; `detector` and `root` are shorthands for two overrides."""
    ov = orch.parse_overrides(overrides)
    if detector:
        ov["detect2d.detector"] = detector
    if root:
        ov["store.root"] = root
    return orch.resolve(preset, ov)


class StageFailed(RuntimeError):
    """A stage stopped on a user's mistake; the message names the stage and the cause."""


def check_chain(cfg: dict, only: Optional[str] = None) -> List[str]:
    """The stages a run executes (all, or up to `only`), checked before anything is built:
    ValueError for an unknown stage, a chain whose networks would need crops that nothing
    places (orch.check_crops), or a file its settings name that does not exist (orch.check_sources:
    the key, e.g. train3d.init)."""
    names = orch.stage_names()
    if only is not None and only not in names:
        raise ValueError(f"only: unknown stage {only!r}; choose one of {list(names)}")
    chain = list(names[: names.index(only) + 1]) if only else list(names)
    orch.check_crops(cfg, chain)
    orch.check_sources(cfg, chain)
    return chain


def _run(stage: str, cfg: dict, force: bool, progress: bool) -> dict:
    logger = get_run_logger()
    store = ArtifactStore(cfg["store"]["root"])
    with forward_logs():
        r = orch.run_stage(stage, cfg, store, force=force, progress=progress)
    logger.info("%s: %s in %.1f s -> %s", stage, r["status"], r["seconds"], r["location"])
    return r


def _make_stage_flow(stage: str):
    def stage_flow(preset: str = "cpu", overrides: Overrides = None, force: bool = False,
                   progress: bool = True, cfg: Optional[Dict[str, Any]] = None):
        try:
            return _run(stage, cfg if cfg is not None else resolve_config(preset, overrides), force, progress)
        except USER_ERRORS as e:
            get_run_logger().error("%s: %s", stage, e)
            return Failed(message=f"{stage}: {e}")

    stage_flow.__name__ = f"{stage}_flow"
    stage_flow.__doc__ = f"Run the {stage!r} stage (reused when its output is complete). {orch.stage_of(stage).doc}"
    return flow(name=stage, log_prints=True, validate_parameters=True)(stage_flow)


STAGE_FLOWS = {s: _make_stage_flow(s) for s in orch.stage_names()}
# module-level names, so a deployment can point at e.g. flows/epipolarpose.py:label_flow
globals().update({f"{s}_flow": f for s, f in STAGE_FLOWS.items()})


@flow(name="epipolarpose", log_prints=True, validate_parameters=True)
def epipolarpose(preset: str = "cpu", overrides: Overrides = None, only: Optional[str] = None,
                 detector: Optional[str] = None, root: Optional[str] = None, progress: bool = True):
    """The whole pipeline: dataset -> detect2d -> label -> train3d -> refine -> evaluate -> report.

    preset: "cpu" (default) or "paper"; overrides: ["section.key=value", ...] or a mapping.
    only: run the chain up to this stage and rebuild this stage (upstream outputs are reused).
    detector: shorthand for detect2d.detector (re-runs detect2d and what follows it).
    Returns {"config", "stages": [{stage, status, location, seconds}], "report", "metrics"}.
    A bad configuration or input ends the run Failed with a one-line message naming the cause.
    """
    logger = get_run_logger()
    try:
        cfg = resolve_config(preset, overrides, detector, root)
        chain = check_chain(cfg, only)
    except USER_ERRORS as e:
        logger.error("%s", e)
        return Failed(message=str(e))
    logger.info("epipolarpose: preset %s, root %s, stages %s", preset, cfg["store"]["root"], chain)
    if not orch.ground_truth_3d(cfg):  # known from the adapter before anything runs
        logger.info("epipolarpose: dataset %r carries no 3D ground truth: no fully supervised baseline, no "
                    "ground-truth metrics; the evaluation measures the labels' reprojection error and the models "
                    "against the labels, across views and in mPSS (pipeline/evaluation/selfcheck.py)",
                    cfg["dataset"]["name"])
    from tqdm.auto import tqdm
    results = []
    t0 = time.perf_counter()
    store = ArtifactStore(cfg["store"]["root"])
    with tqdm(chain, desc="epipolarpose", disable=not progress, unit="stage") as bar:
        for stage in bar:
            bar.set_postfix_str(stage)
            force = stage == only
            try:
                r = orch.status(stage, cfg, store)
            except USER_ERRORS as e:
                logger.error("%s: %s", stage, e)
                return Failed(message=f"{stage}: {e}")
            if force or r["status"] == "pending":
                state = STAGE_FLOWS[stage](cfg=cfg, force=force, progress=progress, return_state=True)
                if state.is_failed():
                    return Failed(message=state.message)
                r = state.result()
            else:  # complete and verified: no sub-flow run needed (keeps a second run to seconds)
                logger.info("%s: %s %s", stage, r["status"], r["location"] or "")
            results.append(r)
    summary = {"config": cfg, "stages": [{k: r[k] for k in ("stage", "status", "location", "seconds", "result")}
                                         for r in results],
               "seconds": time.perf_counter() - t0}
    for r in results:  # what each stage adds to the summary (the metrics, the report's path)
        stage = orch.stage_of(r["stage"])
        if stage.summary is not None and r["location"]:
            summary.update(stage.summary(r))
    logger.info("epipolarpose: done (%s)", ", ".join(f"{r['stage']} {r['status']}" for r in results))
    return summary


# (key, title, multiplier): the ground-truth metrics, and those measured without ground truth
GT_COLUMNS = (("mpjpe", "MPJPE", 1.0), ("nmpjpe", "NMPJPE", 1.0), ("pmpjpe", "PMPJPE", 1.0), ("pck", "PCK%", 100.0),
              ("auc", "AUC%", 100.0), ("mpss_k50", "mPSS@50%", 100.0), ("mpss_k100", "mPSS@100%", 100.0))
NO_GT_COLUMNS = (("labels_mpjpe", "vsLabels", 1.0), ("labels_nmpjpe", "N-vsLab", 1.0), ("labels_pmpjpe", "P-vsLab", 1.0),
                 ("view_consistency", "ViewCons", 1.0), ("mpss_k50", "mPSS@50%", 100.0),
                 ("mpss_k100", "mPSS@100%", 100.0))


def format_metrics(metrics: dict) -> str:
    """A plain-text table: one row per model, MPJPE/NMPJPE/PMPJPE (mm), PCK/AUC/mPSS (%), as the
    report; for a dataset without 3D ground truth, the errors against the pseudo-labels, the
    consistency across views (the `units` each row names) and mPSS against the labels."""
    no_gt = any("labels_mpjpe" in m for m in metrics.values())
    cols = NO_GT_COLUMNS if no_gt else GT_COLUMNS
    head = f"{'model':<10}" + "".join(f"{t:>10}" for _, t, _ in cols) + ("  units" if no_gt else "")
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        cells = []
        for key, _, mul in cols:
            v = m.get(key)
            cells.append(f"{v * mul:>10.1f}" if isinstance(v, (int, float)) and v == v else f"{'-':>10}")
        lines.append(f"{name:<10}" + "".join(cells) + (f"  {m.get('units', '')}" if no_gt else ""))
    if no_gt:
        lines.append("no 3D ground truth: errors against the pseudo-labels (vsLabels: MPJPE, N-: scale-aligned, "
                     "P-: Procrustes), ViewCons: disagreement between the views' predictions of one instant, "
                     "mPSS: prediction and label in the same cluster")
    return "\n".join(lines)


def format_stages(summary: dict) -> str:
    lines = [f"{'stage':<14}{'status':<9}{'seconds':>9}  location"]
    for r in summary["stages"]:
        lines.append(f"{r['stage']:<14}{r['status']:<9}{r['seconds']:>9.1f}  {r['location'] or '-'}")
    return "\n".join(lines)
