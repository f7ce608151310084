"""pretrain2d: train the project's 2D detector on the training split's 2D labels (only for
detectors that need it)."""
from __future__ import annotations

from pathlib import Path

from ... import detectors
from ...training import detector2d
from ..config import module_section
from ..context import Context
from ..record import Output, Stage


def _defaults(preset: str, _plugin) -> dict:
    return module_section(detector2d, preset)


def _validate(section) -> None:
    # every preset has the same keys: the section's values are what is checked
    detector2d.resolve_cfg({**section, "preset": "cpu"})


def _sources(section) -> list:
    from ...training.loop import start_files
    return start_files(section)


def build(ctx: Context) -> dict:
    ds = ctx.open("dataset")
    ckpt = Path(detector2d.train({**ctx.params, "preset": ctx.preset}, ds, ctx.work_dir / "train",
                                 progress=ctx.progress))
    return {"result": ctx.relative(ckpt)}


STAGE = Stage(
    name="pretrain2d", version=5, doc=__doc__.strip(), module=__name__,
    outputs=(Output("pretrain2d", "network", inputs=("dataset",),
                    needed=lambda cfg: detectors.needs_network(cfg["detect2d"]["detector"])),),
    build=build, defaults=_defaults, validate=_validate, sources=_sources, result="result")
