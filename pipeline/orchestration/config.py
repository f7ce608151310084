"""Resolved pipeline configuration: a named preset plus dotted overrides, validated.

A configuration is a nested dict with one section per stage (the stage records of
pipeline/orchestration/stages/, in order) and two run sections that never enter a
fingerprint: `store` (artifact root, verification) and `dask` (where labelling runs). A
stage's section comes from its record's `defaults(preset, plug-in)`, which reads its
module's DEFAULTS and PRESETS[preset] (one source per section). A preset also names the
plug-ins it uses (`PLUGINS`); an override naming another plug-in takes that plug-in's keys.

Overrides are "section.key=value" strings or a {dotted key: value} mapping; string values are
parsed as YAML scalars ("2" -> 2, "true" -> True, "[50, 100]" -> list). An unknown key, a
value of the wrong type, a choice that does not exist or a value out of range is a
ValueError naming the key, raised here, before anything is read or written.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

import yaml

PRESETS = ("cpu", "paper")
# The plug-ins each preset uses (dataset adapter, 2D detector). The demo is the product:
# labels from the project's own frozen 2D network, trained on the training subjects' 2D labels.
PLUGINS: dict[str, dict[str, str]] = {
    "cpu": {"dataset": "studio", "detect2d": "network"},
    "paper": {"dataset": "h36m", "detect2d": "network"},
}
RUN_SECTIONS = ("store", "dask")
RUN_DEFAULTS = {
    "store": {"root": "artifacts", "verify": True},
    # address None: a LocalCluster sized to the machine (n_workers None = one per core),
    # started when at least `min_frames` frames remain to label (below, starting workers costs
    # more than it saves); n_workers 0: no cluster, label chunks computed in this process.
    "dask": {"address": None, "n_workers": None, "threads_per_worker": 1, "min_frames": 20000},
}


def _stages():
    from .stages import STAGES
    return STAGES


def stage_names() -> tuple[str, ...]:
    return tuple(s.name for s in _stages())


def _deep_update(dst: dict, src: Mapping) -> dict:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def module_section(module, preset: str) -> dict:
    """A module's DEFAULTS deep-merged with its PRESETS[preset] (when it has PRESETS)."""
    out = copy.deepcopy(dict(getattr(module, "DEFAULTS", {}) or {}))
    presets = getattr(module, "PRESETS", None)
    if presets:
        if preset not in presets:
            raise ValueError(f"{module.__name__}.PRESETS has no preset {preset!r} (has {sorted(presets)})")
        _deep_update(out, copy.deepcopy(dict(presets[preset])))
    return out


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """["a.b=1", ...] or {"a.b": 1} -> {"a.b": 1}; string values are parsed as YAML scalars."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    elif isinstance(overrides, str):
        raise ValueError(f"overrides must be a list of 'section.key=value' or a mapping, got the string {overrides!r}")
    else:
        items = []
        for s in overrides:
            if not isinstance(s, str) or "=" not in s:
                raise ValueError(f"override {s!r}: expected 'section.key=value'")
            k, _, v = s.partition("=")
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        if isinstance(v, str):
            try:
                v = yaml.safe_load(v) if v != "" else ""
            except yaml.YAMLError:
                pass  # keep the raw string
        out[str(k)] = v
    return out


def _check_type(key: str, old: Any, new: Any) -> None:
    if old is None or new is None:
        return
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, (int, float)):
        ok = isinstance(new, (int, float)) and (isinstance(old, float) or isinstance(new, int))
    elif isinstance(old, (list, tuple)):
        ok = isinstance(new, (list, tuple))
    elif isinstance(old, dict):
        ok = isinstance(new, dict)
    else:
        ok = isinstance(new, type(old))
    if not ok:
        raise ValueError(f"config key {key!r}: expected a value like {old!r} "
                         f"({type(old).__name__}), got {new!r} ({type(new).__name__})")


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """cfg["a"]["b"] = value for key "a.b"; an unknown section or key is a ValueError naming it."""
    parts = key.split(".")
    if len(parts) < 2:
        raise ValueError(f"config key {key!r}: expected 'section.key' with section one of "
                         f"{list(RUN_SECTIONS) + list(stage_names())}")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict) or p not in node:
            where = ".".join(parts[:i]) or "the configuration"
            known = sorted(node) if isinstance(node, dict) else []
            raise ValueError(f"unknown config key {key!r}: {where} has no {p!r} (known: {known})")
        node = node[p]
    last = parts[-1]
    if not isinstance(node, dict) or last not in node:
        known = sorted(node) if isinstance(node, dict) else []
        raise ValueError(f"unknown config key {key!r}: {'.'.join(parts[:-1])} has no {last!r} "
                         f"(known: {known})")
    _check_type(key, node[last], value)
    if isinstance(value, dict) and isinstance(node[last], dict):
        for k, v in value.items():
            set_dotted(cfg, f"{key}.{k}", v)
    else:
        node[last] = copy.deepcopy(list(value) if isinstance(value, tuple) else value)


def _validate_run(cfg: dict) -> None:
    from ..registry import check_number
    s, d = cfg["store"], cfg["dask"]
    if not isinstance(s["root"], str) or not s["root"].strip():
        raise ValueError(f"config key 'store.root': a folder or an fsspec URL is needed, got {s['root']!r}")
    if not isinstance(s["verify"], bool):
        raise ValueError(f"config key 'store.verify': true or false, got {s['verify']!r}")
    if d["address"] is not None and not isinstance(d["address"], str):
        raise ValueError(f"config key 'dask.address': a scheduler address such as tcp://host:8786 or null, "
                         f"got {d['address']!r}")
    check_number(d, "n_workers", "dask", lo=0, integer=True, allow_none=True)
    check_number(d, "threads_per_worker", "dask", lo=1, integer=True)
    check_number(d, "min_frames", "dask", lo=0, integer=True)


def validate(cfg: dict) -> None:
    """Every section's keys: choices, types and ranges. ValueError naming the section and key."""
    _validate_run(cfg)
    for stage in _stages():
        try:
            stage.validate(cfg[stage.name])
        except ValueError as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(stage.name) else f"{stage.name}: {msg}") from None


def resolve(preset: str = "cpu", overrides: Iterable[str] | Mapping[str, Any] | None = None) -> dict:
    """The full, validated configuration of a run: preset, its sections' defaults, then overrides.

    The plug-in names (`dataset.name`, `detect2d.detector`) are applied first, so the chosen
    adapter's and detector's own keys are the ones that exist for the other overrides.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    ov = parse_overrides(overrides)
    cfg = copy.deepcopy(RUN_DEFAULTS)
    for stage in _stages():
        plugin = None
        if stage.plugin_key:
            plugin = ov.pop(f"{stage.name}.{stage.plugin_key}", PLUGINS[preset][stage.name])
        cfg[stage.name] = stage.defaults(preset, plugin)
    for k, v in ov.items():
        set_dotted(cfg, k, v)
    cfg["preset"] = preset
    for stage in _stages():  # keys that follow other sections (e.g. the crop size, the input size)
        if stage.derive is not None:
            stage.derive(cfg, set(ov))
    validate(cfg)
    return cfg
