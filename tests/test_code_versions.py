"""A stage's code identity: a change of the code a stage runs (its module, its plug-ins and
every project module they import; docstrings and comments do not count) must come with a new
`version` in its record, or outputs built by the old code would be reused. The recorded
identities live in pipeline/orchestration/code_record.json."""
from __future__ import annotations

import json

import pytest

from pipeline.orchestration import identity
from pipeline.orchestration.stages import STAGES


def test_every_stage_code_change_comes_with_a_new_version():
    rec = json.loads(identity.RECORD.read_text())
    if rec["python"] != identity.python_minor():
        pytest.skip(f"the record was made on Python {rec['python']}; syntax trees differ across versions")
    now = identity.current_record()["stages"]
    assert set(rec["stages"]) == set(now), "stages were added or removed: re-record"
    problems = []
    for name, cur in now.items():
        old = rec["stages"][name]
        if cur["code"] != old["code"] and cur["version"] == old["version"]:
            changed = sorted(set(cur["modules"]) ^ set(old["modules"])) or cur["modules"]
            problems.append(f"{name}: its code changed (modules {changed[:6]}...) but version is still "
                            f"{cur['version']}: bump it in its record if its outputs change, then record")
        elif cur != old:
            problems.append(f"{name}: version or modules changed without a new record")
    assert not problems, "\n".join(problems) + "\nrecord with: python -m pipeline.orchestration record-code"


def test_the_identity_ignores_documentation_but_not_code(tmp_path, monkeypatch):
    """Closed check on a throw-away package: a docstring or comment edit keeps the identity, a
    changed constant in an imported module changes it."""
    pkg = tmp_path / "pipeline_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text('"""doc"""\nfrom . import b\n\ndef f():\n    """doc"""\n    return b.K  # why\n')
    (pkg / "b.py").write_text("K = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(identity, "PROJECT_PACKAGES", ("pipeline_probe",))
    mods = identity.module_closure(["pipeline_probe.a"])
    assert mods == ["pipeline_probe", "pipeline_probe.a", "pipeline_probe.b"]
    first = identity.code_identity(mods)
    (pkg / "a.py").write_text('"""other doc"""\nfrom . import b\n\ndef f():\n    """x"""\n    return b.K  # other\n')
    assert identity.code_identity(mods) == first
    (pkg / "b.py").write_text("K = 2\n")
    assert identity.code_identity(mods) != first


def test_stage_records_are_consistent():
    keys = [o.key for s in STAGES for o in s.outputs]
    assert len(keys) == len(set(keys))
    seen = set()
    for s in STAGES:
        for o in s.outputs:
            assert set(o.inputs) <= seen, f"{o.key} reads an output of a later stage"
        seen |= {o.key for o in s.outputs}
