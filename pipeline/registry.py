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


def check_choice(cfg: dict, key: str, choices, what: str) -> None:
    """ValueError naming `what`.`key` when cfg[key] is not one of `choices`."""
    if cfg.get(key) not in tuple(choices):
        raise ValueError(f"{what}: {key} must be one of {list(choices)}, got {cfg.get(key)!r}")


def check_number(cfg: dict, key: str, what: str, *, lo: float | None = None, hi: float | None = None,
                 integer: bool = False, allow_none: bool = False) -> None:
    """ValueError naming `what`.`key` unless cfg[key] is a number (an integer with `integer`)
    in [lo, hi]; None passes only with `allow_none`."""
    v = cfg.get(key)
    if v is None and allow_none:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or float(v).is_integer())
    if not ok or v != v:
        raise ValueError(f"{what}: {key} must be {kind}{' or null' if allow_none else ''}, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
        raise ValueError(f"{what}: {key} must be {rng}, got {v!r}")
