"""The stages of the pipeline, in the order data flows through them. Each module declares
its stage once, as a record (pipeline/orchestration/record.py): its section, inputs, code
version, outputs and build.

    dataset -> [pretrain2d] -> detect2d -> label -> train3d (SS, FS) -> refine
            \\-> pss_reference ------------------------------------------> evaluate -> report
"""
from __future__ import annotations

from . import dataset, detect2d, evaluate, label, pretrain2d, pss_reference, refine, report, train3d

STAGES = tuple(m.STAGE for m in (dataset, pretrain2d, detect2d, label, train3d, refine, pss_reference,
                                 evaluate, report))
BY_NAME = {s.name: s for s in STAGES}

__all__ = ["STAGES", "BY_NAME"]
