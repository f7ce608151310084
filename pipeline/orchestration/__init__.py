"""Orchestration: the stage records, the configuration, the artifact store and the runner.

    from pipeline.orchestration import resolve, plan, run_stage, ArtifactStore
    cfg = resolve("cpu", ["detect2d.detector=gt"])
    run_stage("label", cfg, ArtifactStore(cfg["store"]["root"]))
"""
from __future__ import annotations

from .config import PRESETS, parse_overrides, resolve, stage_names
from .runner import check_sources, plan, run_stage, stage_of, status
from .stages import BY_NAME, STAGES
from .stages.dataset import check_crops, ground_truth_3d
from .store import Artifact, ArtifactStore, StoreError, open_group, read_provenance

__all__ = ["PRESETS", "STAGES", "BY_NAME", "Artifact", "ArtifactStore", "StoreError", "check_crops", "check_sources", "ground_truth_3d", "open_group",
           "parse_overrides", "plan", "read_provenance", "resolve", "run_stage", "stage_names", "stage_of",
           "status"]
