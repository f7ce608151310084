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


def with_defaults(cfg: dict | None, defaults: dict, what: str) -> dict:
    """`defaults` overridden by `cfg`; a key `defaults` lacks is a ValueError naming it."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"{what}: unknown configuration keys {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **cfg}
