"""Lazy name -> "module:function" registries, so a plug-in's heavy imports load only when used."""
from __future__ import annotations

import importlib
from typing import Callable


def resolve(table: dict[str, str], name: str, kind: str) -> Callable:
    """Import and return the callable registered under `name`; a clear error names the choices."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(table)}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)
