"""The run context: what a stage's build sees of the pipeline.

A build reads its inputs and writes its output only through its `Context`: `open(key)` gives
a verified input's group, `result_path(key)` its main file (a training output's checkpoint),
`group` is the output's working group, `work_dir` a folder inside it for files. The
provenance, events and publication are the runner's (pipeline/orchestration/runner.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import zarr

from .record import Output, Stage
from .store import Artifact, ArtifactStore, StoreError, read_provenance

log = logging.getLogger("pipeline")


@dataclass
class Context:
    stage: Stage
    output: Output
    cfg: Mapping
    store: ArtifactStore
    plan: Mapping[str, Artifact | None]
    group: zarr.Group | None = None
    progress: bool = True

    @property
    def params(self) -> dict:
        """The stage's section without the orchestration's own keys: what its module takes."""
        sec = self.cfg[self.stage.name]
        return {k: v for k, v in sec.items() if k not in self.stage.own_keys}

    @property
    def section(self) -> Mapping:
        return self.cfg[self.stage.name]

    @property
    def preset(self) -> str:
        return self.cfg["preset"]

    @property
    def artifact(self) -> Artifact:
        return self.plan[self.output.key]

    @property
    def work_dir(self) -> Path:
        return self.artifact.work_dir()

    def files(self, name: str) -> Path:
        """A folder `name` inside the output for the files a build writes itself (tables,
        checkpoints), made a zarr subgroup so that zarr and xarray, listing the output, see a
        group there rather than an unknown object (which they warn about)."""
        self.group.require_group(name)
        p = self.work_dir / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def has(self, key: str) -> bool:
        """Whether the plan holds `key` and this output's configuration reads it (Output.uses)."""
        return self.plan.get(key) is not None and self.output.uses(self.cfg, key)

    def input(self, key: str) -> Artifact:
        if key not in self.output.inputs:
            raise StoreError(f"{self.output.key} does not declare {key!r} as an input (declared: {self.output.inputs})")
        if not self.output.uses(self.cfg, key):
            raise StoreError(f"{self.output.key}: this configuration does not read its input {key!r}")
        art = self.plan.get(key)
        if art is None:
            raise StoreError(f"{self.output.key}: its input {key!r} is not part of this configuration's plan")
        return art

    def open(self, key: str) -> zarr.Group:
        """A declared input's complete group (read-only)."""
        return self.input(key).open()

    def result_path(self, key: str) -> Path:
        """The main file of a declared input (the provenance's `result`, e.g. a checkpoint)."""
        art = self.input(key)
        prov = read_provenance(art.location, self.store.storage_options)
        rel = prov.get("result")
        if not rel:
            raise StoreError(f"{art.location} names no result file")
        return art.local_path() / rel

    def relative(self, path: Path) -> str:
        """`path` (inside the working folder) relative to it: what the provenance records."""
        return Path(path).relative_to(self.work_dir).as_posix()
