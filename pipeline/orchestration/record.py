"""A stage, declared once: the record the plan, the runner, the CLI and the flows read.

A `Stage` names its configuration section (its `name`), the defaults and validation of that
section, the files it reads beyond its inputs (`sources`), its code version and its outputs.
Each `Output` names the outputs it reads (`inputs`, plan keys) and its own fixed settings
(`params`, e.g. the fully supervised baseline's {"targets": "ground truth"}). The plan
(pipeline/orchestration/runner.py) walks the records in order; nothing else lists stages,
dependencies or versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .identity import module_closure


def _always(cfg: Mapping) -> bool:
    return True


def _no_sources(section: Mapping) -> list[Path]:
    return []


@dataclass(frozen=True)
class Output:
    """One output of a stage.

    key: the plan key, unique over the pipeline (the stage's name when it has one output).
    name: the output's folder name before its fingerprint, or a function of the stage's section.
    inputs: plan keys of the outputs it reads (one that the plan leaves out is skipped).
    params: fixed settings of this output (part of its fingerprint; the build reads them).
    needed: cfg -> bool; an output not needed is left out of the plan (status "skipped").
    uses: (cfg, input key) -> bool; False where this configuration does not read that declared
      input (it is then no part of the output's fingerprint).
    """
    key: str
    name: str | Callable[[Mapping], str]
    inputs: tuple[str, ...] = ()
    params: Mapping = field(default_factory=dict)
    needed: Callable[[Mapping], bool] = _always
    uses: Callable[[Mapping, str], bool] = lambda cfg, key: True

    def folder_name(self, section: Mapping) -> str:
        return self.name(section) if callable(self.name) else self.name


@dataclass(frozen=True)
class Stage:
    """A stage of the pipeline.

    name: the stage and its configuration section.
    version: bump when a change of code changes its outputs for the same configuration
      (tests/test_code_versions.py fails when the code changed and this did not).
    build: Context -> dict | None; fills `ctx.group` for `ctx.output` (resuming what a killed
      run left there) and returns attributes for the provenance.
    defaults: (preset, plug-in name or None) -> the section's default values.
    validate: section -> None; raises ValueError naming a bad key (before anything is written).
    sources: section -> files whose content the stage reads beyond its inputs.
    own_keys: section keys the orchestration consumes (not passed to the stage's module).
    plugin_key: the section key naming a plug-in (dataset adapter, detector), if any.
    plugins: lazily listed modules of the plug-ins (their code belongs to this stage).
    result: the provenance attribute naming the output's main file (e.g. a checkpoint).
    summary: a run's result of this stage -> what it adds to the chain's summary (the
      evaluation's metrics, the report's path).
    derive: (cfg, overridden dotted keys) -> None; sets the keys of its section that follow
      other sections (the dataset's crop size follows the networks' input size) unless the
      user set them, and raises ValueError naming both keys when the user's values disagree.
    parallel: its outputs are independent trainings: on the CPU they share the cores (each
      needed output gets its part, whether or not the others are built, so its bits do not
      depend on what was cached) and those to build run side by side in processes
      (pipeline/orchestration/runner.py).
    """
    name: str
    version: int
    doc: str
    outputs: tuple[Output, ...]
    build: Callable
    defaults: Callable[[str, str | None], dict]
    validate: Callable[[Mapping], None]
    module: str
    sources: Callable[[Mapping], list] = _no_sources
    own_keys: tuple[str, ...] = ()
    plugin_key: str | None = None
    plugins: Callable[[], list[str]] = list
    result: str | None = None
    summary: Callable[[dict], dict] | None = None
    derive: Callable[[dict, set], None] | None = None
    parallel: bool = False

    def code_modules(self) -> list[str]:
        """Project modules this stage runs (its module, its plug-ins, what they import). A
        plug-in registered from outside the project (a user's package, a test's stand-in) is
        not the project's code and is left out."""
        own = [m for m in self.plugins() if m.startswith(("pipeline.", "models."))]
        return module_closure([self.module, *own], exclude=("pipeline.orchestration",))
