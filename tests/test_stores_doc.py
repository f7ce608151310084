"""docs/stores.md against what the stages write: every array an output holds is in its
stage's table, and every name a table lists is written by some run (toy dataset, with and
without 3D ground truth; the few that only other datasets or modes write are named here)."""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from pipeline import orchestration as orch
from tests.test_stages_standins import toy_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "stores.md"
# written by datasets or modes the toy runs do not use
ELSEWHERE = {"image_ok", "people_count", "labels_cam_mm", "person_index", "people2d"}


def documented() -> dict[str, set[str]]:
    """{stage: names in the first column of its tables} (coordinates under "coordinates")."""
    out: dict[str, set[str]] = {}
    stages: list[str] = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"^## (.+)$", line)
        if m:
            stages = [s.strip().lower() for s in m.group(1).replace("(every group)", "").split(",")]
            continue
        if line.startswith("| `") and stages:
            first = line.split("|")[1]
            for s in stages:
                out.setdefault(s, set()).update(re.findall(r"`([^`]+)`", first))
    return out


def written(art) -> set[str]:
    """The arrays of an output and of its subgroups (train/, tables/). Its root must list
    without zarr's warning about objects it does not know (a file beside the arrays)."""
    import warnings
    g = art.open()
    with warnings.catch_warnings():
        warnings.simplefilter("error" if art.stage not in ("report",) else "ignore")
        names = set(g.array_keys()) | set(g.group_keys())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # checkpoints/ and final.pt inside train/: files, documented
        for sub in g.group_keys():
            names |= {f"{sub}/{k}" for k in g[sub].array_keys()}
    return names - set(g.group_keys())


def undocumented(stage: str, names: set[str], doc: dict) -> set[str]:
    pats = doc.get(stage, set()) | doc["coordinates"]
    return {n for n in names if not any(fnmatch.fnmatch(n, p) for p in pats)}


def check(arts: dict, doc: dict, seen: set) -> list[str]:
    bad = []
    for key, art in arts.items():
        stage = art.stage
        names = written(art)
        seen |= names
        extra = undocumented(stage, names, doc)
        if extra:
            bad.append(f"{stage} ({key}) writes {sorted(extra)}, which docs/stores.md does not list")
    return bad


def test_label_chain_writes_what_the_doc_says(tmp_path):
    doc = documented()
    assert {"dataset", "detect2d", "label", "evaluate", "pss_reference", "train3d", "coordinates"} <= set(doc)
    cfg = toy_config(tmp_path, **{"dataset.size": 32, "train3d.input_size": 32, "pss_reference.ks": [4]})
    st = orch.ArtifactStore(cfg["store"]["root"])
    for s in ("dataset", "detect2d", "label", "pss_reference"):
        orch.run_stage(s, cfg, st, progress=False)
    A = orch.plan(cfg, st)
    seen: set = set()
    bad = check({k: A[k] for k in ("dataset", "detect2d", "label", "pss_reference")}, doc, seen)
    assert not bad, "\n".join(bad)
    for stage in ("dataset", "detect2d", "label"):
        missing = {n for n in doc[stage] if "*" not in n and n not in seen and n not in ELSEWHERE}
        assert not missing, f"docs/stores.md lists {sorted(missing)} under {stage}, which no run writes"
