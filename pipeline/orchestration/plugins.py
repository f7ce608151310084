"""Plug-ins (dataset adapters, 2D detectors) as the stage records see them: looked up by
name in their package's table, their section = the orchestration's keys + the plug-in
module's DEFAULTS and PRESETS[preset], validated by the module's own `resolve_cfg(cfg)` when
it has one (else unknown keys are refused), their source files from its `sources(cfg)`."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Mapping

from ..registry import with_defaults
from .config import module_section


def module_of(table: Mapping[str, str], name, kind: str) -> ModuleType:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(table)}")
    return importlib.import_module(table[name].partition(":")[0])


def section(table: Mapping[str, str], name, kind: str, preset: str, own: Mapping) -> dict:
    """The orchestration's own keys `own` followed by the plug-in's defaults for `preset`."""
    defaults = module_section(module_of(table, name, kind), preset)
    clash = set(defaults) & set(own)
    if clash:
        raise ValueError(f"{kind} {name!r} defines reserved keys {sorted(clash)}")
    return {**own, **defaults}


def validate(table: Mapping[str, str], name, kind: str, params: Mapping) -> None:
    mod = module_of(table, name, kind)
    if hasattr(mod, "resolve_cfg"):
        mod.resolve_cfg(dict(params))
    else:
        with_defaults(dict(params), dict(getattr(mod, "DEFAULTS", {})), f"{kind} {name}")


def sources(table: Mapping[str, str], name, kind: str, params: Mapping) -> list[Path]:
    mod = module_of(table, name, kind)
    return list(mod.sources(dict(params))) if hasattr(mod, "sources") else []


def modules(table: Mapping[str, str]) -> list[str]:
    return sorted({v.partition(":")[0] for v in table.values()})
