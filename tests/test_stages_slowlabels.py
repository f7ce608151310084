"""The real labeller (pipeline.geometry.labels) slowed down per chunk, so a test can kill -9 a run
in the middle of labelling (no tests in this file)."""
import os
import time

from pipeline.geometry.labels import DEFAULTS, FAILURES, calibrate, make_labels  # noqa: F401
from pipeline.geometry.labels import label_chunk as _label_chunk


def label_chunk(kp2d, cams, cfg=None, progress=False):
    time.sleep(float(os.environ.get("STANDIN_DELAY_S", "0.05")))
    return _label_chunk(kp2d, cams, cfg, progress)


CALLS: list = []  # frames per label_chunk call, in this process (the corrupt-chunk test counts them)
_plain_label_chunk = label_chunk


def label_chunk(kp2d, cams, cfg=None, progress=False):  # noqa: F811
    CALLS.append(int(kp2d.shape[0]))
    return _plain_label_chunk(kp2d, cams, cfg, progress)
