"""Resolved pipeline configuration: a named preset plus dotted overrides.

A configuration is a nested dict with one section per stage (pipeline.stages.STAGES) and two
run sections that never enter a fingerprint: `store` (artifact root, checksum verification)
and `dask` (where labelling runs). Each stage section is composed from its module:

    dataset        {"name": adapter} + the adapter's DEFAULTS            (pipeline/data/<name>.py)
    pretrain2d     the 2D network's PRESETS[preset]                        (pipeline/pretrain2d.py)
    detect2d       {"detector": name, "chunk": frames} + the detector's DEFAULTS
    label          {"chunk": frames} + pipeline.labels.DEFAULTS
    train3d        pipeline.train3d.PRESETS[preset]
    refine         pipeline.refine DEFAULTS (+ PRESETS[preset] when it has them)
    pss_reference  k-means reference settings (pipeline.pss.build_reference)
    evaluate, report

The presets are `cpu` (default: the demo on the embedded studio, minutes on a laptop) and
`paper` (Human3.6M, the paper's network sizes). Overrides are "section.key=value" strings or a
{dotted key: value} mapping; values are parsed as YAML scalars ("2" -> 2, "true" -> True,
"[50, 100]" -> list). An unknown key or a value of the wrong type is a ValueError naming it.
"""
from __future__ import annotations

import copy
import importlib
import logging
from typing import Any, Iterable, Mapping

import yaml

log = logging.getLogger("pipeline")

PRESETS = ("cpu", "paper")
STAGES = ("dataset", "pretrain2d", "detect2d", "label", "train3d", "refine",
          "pss_reference", "evaluate", "report")
RUN_SECTIONS = ("store", "dask")

# Keys the orchestration adds to a stage section; stripped before the section reaches the
# stage's own module (whose functions reject keys they do not know).
ORCH_KEYS = {"dataset": ("name",), "detect2d": ("detector", "chunk"), "label": ("chunk",)}

# Stage modules whose DEFAULTS / PRESETS make up their sections (imported lazily).
STAGE_MODULES = {
    "pretrain2d": "pipeline.pretrain2d",
    "label": "pipeline.labels",
    "train3d": "pipeline.train3d",
    "refine": "pipeline.refine",
}

BASE = {
    "store": {"root": "artifacts", "verify": True},
    # address None: a LocalCluster sized to the machine (n_workers None = one per core),
    # started when at least `min_frames` frames remain to label (below, starting workers costs
    # more than it saves); n_workers 0: no cluster, label chunks computed in this process.
    "dask": {"address": None, "n_workers": None, "threads_per_worker": 1, "min_frames": 20000},
    "dataset": {"name": "studio"},
    "pretrain2d": {},
    "detect2d": {"detector": "gt", "chunk": 256},
    "label": {"chunk": 1024},
    "train3d": {},
    "refine": {},
    "pss_reference": {"ks": [50, 100], "seed": 0, "n_init": 4, "max_poses": 20000},
    # stability_runs: k-means restarts of the paper's PSS stability study (0: skip it)
    "evaluate": {"pck_threshold": 150.0, "label_rows": True, "stability_runs": 5},
    "report": {"n_worst": 6},
}

# What each preset changes beyond its modules' own PRESETS.
# Keys absent from the resolved configuration (another detector's) are skipped.
PRESET_OVERRIDES: dict[str, dict[str, Any]] = {
    # The demo is the product: labels from the project's own frozen 2D network (trained on
    # the training subjects' 2D labels only). Its heatmap confidences are low (median 0.06)
    # and do not track its error, so labelling keeps every joint it places.
    # The paper's "GT 2D" rows (--detector gt) use every joint: the gt detector gives
    # self-occluded joints confidence 0.5 instead of 0, as a real detector still places them.
    "cpu": {"detect2d.detector": "network", "label.min_confidence": 0.0,
            "detect2d.invisible_conf": 0.5},
    "paper": {"dataset.name": "h36m", "detect2d.detector": "network",
              "evaluate.stability_runs": 100},
}


def _module_section(module: str, preset: str) -> dict:
    """DEFAULTS deep-merged with PRESETS[preset] of a stage module ({} if it is not there yet).

    `module` may name its defaults' attribute as "package.module:ATTR" (default DEFAULTS)."""
    module, _, attr = module.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            log.debug("config: %s is not available (%s)", module, e)
            return {}
        raise
    out = copy.deepcopy(dict(getattr(mod, attr or "DEFAULTS", {}) or {}))
    presets = getattr(mod, "PRESETS", None)
    if presets:
        if preset not in presets:
            raise ValueError(f"{module}.PRESETS has no preset {preset!r} (has {sorted(presets)})")
        _deep_update(out, copy.deepcopy(dict(presets[preset])))
    return out


def _plugin_defaults(kind: str, name: str) -> dict:
    if kind == "dataset":
        from .data import adapter_defaults
        try:
            return adapter_defaults(name)
        except ModuleNotFoundError as e:
            raise ValueError(f"dataset adapter {name!r} is registered but its module is missing ({e})") from e
    from .detectors import detector_defaults
    try:
        return detector_defaults(name)
    except ModuleNotFoundError as e:
        raise ValueError(f"detector {name!r} is registered but its module is missing ({e})") from e


def _deep_update(dst: dict, src: Mapping) -> dict:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """["a.b=1", ...] or {"a.b": 1} -> {"a.b": 1}; string values are parsed as YAML scalars."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
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
                         f"{list(RUN_SECTIONS) + list(STAGES)}")
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


def resolve(preset: str = "cpu", overrides: Iterable[str] | Mapping[str, Any] | None = None) -> dict:
    """The full configuration of a run: preset, its modules' defaults, then overrides.

    The plug-in names (`dataset.name`, `detect2d.detector`) are applied first, so the chosen
    adapter's and detector's own keys are the ones that exist for the other overrides.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    soft = dict(PRESET_OVERRIDES[preset])
    ov = parse_overrides(overrides)
    for key in ("dataset.name", "detect2d.detector"):
        if key in soft:  # the preset's plug-in, unless the overrides name another
            ov.setdefault(key, soft.pop(key))
    cfg = copy.deepcopy(BASE)
    for key in ("dataset.name", "detect2d.detector"):
        if key in ov:
            set_dotted(cfg, key, ov.pop(key))
    for stage, module in STAGE_MODULES.items():
        _deep_update(cfg[stage], _module_section(module, preset))
    for stage, key in (("dataset", "name"), ("detect2d", "detector")):
        plugin = _plugin_defaults(stage, cfg[stage][key])
        clash = set(plugin) & set(cfg[stage])
        if clash:
            raise ValueError(f"{stage} plug-in {cfg[stage][key]!r} defines reserved keys {sorted(clash)}")
        _deep_update(cfg[stage], plugin)
    for k, v in soft.items():
        try:
            set_dotted(cfg, k, v)
        except ValueError:
            log.debug("preset %s: %s does not apply to this configuration", preset, k)
    for k, v in ov.items():
        set_dotted(cfg, k, v)
    cfg["preset"] = preset
    return cfg


def stage_params(cfg: Mapping, stage: str) -> dict:
    """A stage's section without the orchestration's own keys: what its module receives."""
    return {k: copy.deepcopy(v) for k, v in cfg[stage].items() if k not in ORCH_KEYS.get(stage, ())}
