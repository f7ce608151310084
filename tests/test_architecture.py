"""The layout of docs/architecture.md, checked on the source: which package may import which,
no cycles between packages, no reach into another package's private names, models/ imports
only torch, pipeline/ never imports flows/ or tests/, and no module over 600 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.orchestration.identity import _project_imports

ROOT = Path(__file__).resolve().parents[1]
CORE = {"pipeline.joints", "pipeline.camera", "pipeline.registry", "pipeline.cores", "pipeline"}
# package -> the project packages it may import (besides itself and CORE)
ALLOWED = {
    "pipeline.geometry": set(),
    "pipeline.data": set(),
    "pipeline.training": {"models", "pipeline.data"},
    "pipeline.detectors": {"pipeline.data", "pipeline.training"},
    "pipeline.evaluation": {"pipeline.data", "pipeline.geometry"},
    "pipeline.orchestration": {"pipeline.data", "pipeline.detectors", "pipeline.evaluation", "pipeline.geometry",
                               "pipeline.training", "models"},
    "pipeline.infer": {"pipeline.training", "pipeline.detectors", "pipeline.evaluation", "pipeline.data", "models"},
    "flows": {"pipeline.orchestration", "pipeline.training"},
    "models": set(),
}


def _modules():
    for base in ("pipeline", "models", "flows"):
        for p in sorted((ROOT / base).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), p


def _package(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] != "pipeline" or len(parts) == 1:
        return parts[0]
    name = ".".join(parts[:2])
    return name if name in ALLOWED or (ROOT / "pipeline" / parts[1]).is_dir() else name


def test_packages_import_only_what_the_architecture_allows():
    bad = []
    for mod, path in _modules():
        pkg = _package(mod)
        if pkg in CORE:
            allowed = set()
        else:
            assert pkg in ALLOWED, f"{mod}: package {pkg} is not in docs/architecture.md"
            allowed = ALLOWED[pkg]
        for imp in _project_imports(mod, ast.parse(path.read_text())):
            other = _package(imp)
            if other not in (pkg, *CORE, *allowed):
                bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(bad)


def test_no_private_names_across_modules_and_models_import_only_torch():
    import sys
    std = set(sys.stdlib_module_names) | {"__future__", "torch"}
    bad = []
    for mod, path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                if mod.startswith("models") and not node.level and top not in std | {"models"}:
                    bad.append(f"{mod}: models/ imports {node.module}")
                if node.level or top in ("pipeline", "models"):
                    bad += [f"{mod} imports the private {a.name} of {node.module or '.'}" for a in node.names
                            if a.name.startswith("_") and a.name != "__future__"]
            elif isinstance(node, ast.Import) and mod.startswith("models"):
                bad += [f"{mod}: models/ imports {a.name}" for a in node.names if a.name.split(".")[0] not in std]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id not in ("self", "cls", "np", "torch", "os"):
                bad.append(f"{mod}: {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("base", ["pipeline", "models", "flows"])
def test_no_module_over_600_lines(base):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / base).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
