"""What an output was made from: the identity of source files and of a stage's code.

A source file's identity is the sha256 of its content (`sha256:<hex>`); a file over
`FULL_HASH_MAX` bytes (videos, the Human3.6M archives) gets a sampled identity
(`sampled:<hex>`): sha256 over its size and three `SAMPLE`-byte blocks (start, middle,
end). A sampled identity notices truncation, re-encoding, a replaced or appended file, but
not an edit of a byte between the samples: that is the documented price of not reading
gigabytes on every run (docs/cache.md).

A stage's code identity hashes the abstract syntax trees (docstrings dropped, so comments
and documentation do not count) of the modules it runs: its own module and every project
module it imports, transitively. tests/test_code_versions.py compares these with the record
in `code_record.json` and fails when a stage's code changed while its `version` did not.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Iterable

FULL_HASH_MAX = 64 * 2 ** 20
SAMPLE = 4 * 2 ** 20
PROJECT_PACKAGES = ("pipeline", "models")
RECORD = Path(__file__).with_name("code_record.json")

_memo: dict[tuple, str] = {}


def file_identity(path: str | os.PathLike) -> str:
    """Content identity of one file (see the module docstring); ValueError naming a missing file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ValueError(f"source file {p} cannot be read: {e.strerror or e}") from e
    if not p.is_file():
        raise ValueError(f"source {p} is not a file")
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _memo:
        return _memo[key]
    with open(p, "rb") as fh:
        if st.st_size <= FULL_HASH_MAX:
            ident = "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
        else:
            h = hashlib.sha256(str(st.st_size).encode())
            for at in (0, (st.st_size - SAMPLE) // 2, st.st_size - SAMPLE):
                fh.seek(at)
                h.update(fh.read(SAMPLE))
            ident = "sampled:" + h.hexdigest()
    _memo[key] = ident
    return ident


def sources_identity(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """{absolute path: identity} of every source file, sorted by path."""
    out = {str(Path(p).resolve()): "" for p in paths}
    return {p: file_identity(p) for p in sorted(out)}


# ---------------------------------------------------------------------------- code
def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):  # `from .camera import Cameras`: not a module
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _project_imports(name: str, tree: ast.AST) -> set[str]:
    """Project modules a module imports (absolute and relative imports; packages and submodules)."""
    pkg = name if _module_file(name) and _module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] in PROJECT_PACKAGES and _module_file(n) is not None:
                out.add(n)
    return out


def module_closure(roots: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """The project modules `roots` run: themselves and what they import, transitively, minus
    those under `exclude` (prefixes: the orchestration's own machinery)."""
    exclude = tuple(exclude)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or (name not in roots and name.startswith(exclude)):
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen.add(name)
        todo.extend(_project_imports(name, ast.parse(path.read_text(), str(path))))
    return sorted(seen)


def code_identity(modules: Iterable[str]) -> str:
    """sha256 (16 hex) over the docstring-free syntax trees of `modules`."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        path = _module_file(name)
        tree = _strip_docstrings(ast.parse(path.read_text(), str(path)))
        h.update(name.encode() + b"\0" + ast.dump(tree, annotate_fields=False).encode() + b"\0")
    return h.hexdigest()[:16]


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def current_record() -> dict:
    """{"python": "3.x", "stages": {stage: {"version": v, "code": identity, "modules": [...]}}}."""
    from .stages import STAGES
    return {"python": python_minor(),
            "stages": {s.name: {"version": s.version, "code": code_identity(s.code_modules()),
                                "modules": s.code_modules()} for s in STAGES}}


def write_record() -> Path:
    """Record every stage's current version and code identity (after bumping the versions
    of the stages whose outputs change)."""
    RECORD.write_text(json.dumps(current_record(), indent=1, sort_keys=True) + "\n")
    return RECORD
