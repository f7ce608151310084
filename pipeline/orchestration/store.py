"""The artifact store: fingerprinted, verified, atomic, resumable stage outputs.

Every stage output lives at `<root>/<dataset>/<stage>/<name>-<fingerprint>` and is a zarr v3
group (training stages also keep files such as checkpoints inside the same folder). The
fingerprint hashes the stage's resolved configuration, code version, source files and its
inputs' fingerprints, so a changed setting gives a new location and an old output is never
mistaken for the new one. Path components are checked (`NAME_RE`): no configuration value
can place an output, a lock or a working folder outside the root.

Life of an output (`Artifact`):
  1. `lock()`     : one writer per output (an OS file lock, released by the kernel even on
                    kill -9, so a crashed run never blocks the next one);
  2. `begin()`    : the working group `.<name>-<fingerprint>.partial` beside the final one,
                    created or, after a crash, resumed as it is;
  3. chunked writes (`ChunkedWriter`): a chunk is marked complete in the group's attributes,
                    with a checksum, only after its data is written; a resumed or reused
                    output re-verifies the checksums and recomputes any chunk that fails;
  4. `commit()`   : a manifest of every file's sha256 (and of the group's attributes) and
                    its digest go into the provenance, marked complete, then the working
                    folder is renamed onto the final name (atomic on a local file system).
  5. `check()`    : before reuse, every file is hashed against the manifest; a mismatch in a
                    chunk of a chunked array is repaired chunk by chunk, any other is rebuilt.
                    The provenance also records the digest of each input as it was used:
                    an output whose input has been rebuilt with other content is stale.
The root may be an fsspec URL (e.g. `memory://`, `s3://bucket/x`); there the publication is a
copy and completeness is the `complete` flag written last.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import fsspec
import numpy as np
import zarr

log = logging.getLogger("pipeline")

SCHEMA = 2  # bump when the store layout changes: every fingerprint changes with it

# One path component of an output: dataset, stage and output names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+=,-]{0,63}")
ROOT_META = "zarr.json"  # the group's own metadata: attributes, provenance (verified through attrs_sha)


def canonical_json(obj) -> str:
    """Key-sorted JSON with numpy scalars/arrays turned into Python values (hash input)."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))


def to_jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)  # JSON has no NaN; keep it hashable and readable
    return obj


def fingerprint(stage: str, name: str, config: Mapping, inputs: Mapping[str, str]) -> str:
    """12 hex digits of sha256 over the stage, its name, resolved config and input fingerprints."""
    payload = canonical_json({"schema": SCHEMA, "stage": stage, "name": name,
                              "config": config, "inputs": dict(inputs)})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def check_name(value: str, what: str) -> str:
    """`value` when it is a safe single path component (NAME_RE), else StoreError naming it."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise StoreError(f"{what} {value!r} cannot name an output: use letters, digits, '_', '-', '+', '=' "
                         "or ',' (at most 64, starting with a letter or digit)")
    return value


def file_sha256(fs, path: str) -> str:
    with fs.open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("epipolarpose")
    except Exception:  # not installed: running from a checkout
        return "0+unknown"


def open_group(url: str, mode: str = "r", storage_options: dict | None = None) -> zarr.Group:
    """zarr.open_group, quiet about the non-zarr files (checkpoints, parquet) artifacts keep."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        return zarr.open_group(url, mode=mode, storage_options=storage_options or None)


class StoreError(RuntimeError):
    """An artifact cannot be used (missing input, provenance that does not match)."""


class ArtifactStore:
    """Root of all stage outputs: a local folder (default `artifacts/`) or an fsspec URL."""

    def __init__(self, root: str | os.PathLike = "artifacts", storage_options: dict | None = None):
        root = str(root)
        self.storage_options = dict(storage_options or {})
        self.fs, path = fsspec.core.url_to_fs(root, **self.storage_options)
        self.local = "file" in _protocols(self.fs)
        self.root = str(Path(path).resolve()) if self.local else root.rstrip("/")
        self._base = path.rstrip("/") if not self.local else self.root

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    def url(self, *parts: str) -> str:
        """The URL (or local path) of a path under the root."""
        if self.local:
            return str(Path(self.root, *parts))
        return "/".join([self.root, *parts])

    def fs_path(self, *parts: str) -> str:
        """The same path as the file system object (`self.fs`) names it."""
        return "/".join([self._base, *parts]) if not self.local else str(Path(self.root, *parts))

    def artifact(self, dataset: str, stage: str, name: str, config: Mapping,
                 inputs: Mapping[str, "Artifact"] | None = None) -> "Artifact":
        for value, what in ((dataset, "dataset"), (stage, "stage"), (name, f"{stage} output name")):
            check_name(value, what)
        inputs = dict(inputs or {})
        fp = fingerprint(stage, name, config, {k: a.fingerprint for k, a in inputs.items()})
        return Artifact(self, dataset, stage, name, fp, dict(config), inputs)

    def list(self, dataset: str | None = None, stage: str | None = None) -> list[str]:
        """Locations of the complete outputs under the root (optionally of one dataset/stage)."""
        pattern = self.fs_path(dataset or "*", stage or "*", "*")
        out = []
        for p in sorted(self.fs.glob(pattern)):
            base = p.rstrip("/").rsplit("/", 1)[-1]
            if base.startswith("."):
                continue
            loc = self.url(*p.rstrip("/").rsplit("/", 3)[-3:])
            if read_provenance(loc, self.storage_options).get("complete"):
                out.append(loc)
        return out

    def leftovers(self, dataset: str | None = None) -> list[tuple[str, str, int]]:
        """What interrupted or replaced runs left under the root: (location, kind, bytes) for
        working folders (kind "partial") and moved-aside outputs ("old") that no run is writing
        now, and their lock files ("lock"). Safe to delete; `epipose clean` does."""
        out = []
        for p in sorted(self.fs.glob(self.fs_path(dataset or "*", "*", ".*"))):
            parts = p.rstrip("/").rsplit("/", 3)[-3:]
            ds, stage, base = parts
            if base.endswith(".partial"):
                kind, dirname = "partial", base[1:-len(".partial")]
            elif ".old-" in base:
                kind, dirname = "old", base[1:base.index(".old-")]
            elif base.endswith(".lock"):
                kind, dirname = "lock", base[1:-len(".lock")]
            else:
                continue
            name, _, fp = dirname.rpartition("-")
            if kind != "old" and Artifact(self, ds, stage, name, fp, {}).being_written():
                continue
            if kind == "lock" and (self.fs.exists(self.fs_path(ds, stage, f".{dirname}.partial"))
                                   or self.fs.exists(self.fs_path(ds, stage, dirname))):
                continue  # an output's lock: kept while the output or its working folder is there
            out.append((self.url(ds, stage, base), kind, int(self.fs.du(p))))
        return out

    def remove(self, location: str) -> None:
        """Delete one output or leftover (a folder or a file) under the root."""
        rel = os.path.relpath(location, self.root) if self.local else location[len(self.root) + 1:]
        if rel.startswith("..") or rel.count("/") != 2:
            raise StoreError(f"{location} is not an output under {self.root}")
        ds, stage, base = rel.split("/")
        self.fs.rm(self.fs_path(ds, stage, base), recursive=True)
        if base.startswith(".") and not base.endswith(".partial"):
            return  # a lock or a moved-aside copy: nothing goes with it
        # an output's lock goes with the last of the output and its working folder
        dirname = base[1:-len(".partial")] if base.endswith(".partial") else base
        pair = (self.fs_path(ds, stage, dirname), self.fs_path(ds, stage, f".{dirname}.partial"))
        lock = self.fs_path(ds, stage, f".{dirname}.lock")
        if not any(map(self.fs.exists, pair)) and self.fs.exists(lock):
            self.fs.rm(lock)


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def read_provenance(location: str, storage_options: dict | None = None) -> dict:
    """The `provenance` attribute of an output, {} when it is absent or unreadable."""
    try:
        return dict(open_group(location, "r", storage_options).attrs.get("provenance", {}))
    except Exception:
        return {}


@dataclass
class Artifact:
    """One stage output: where it lives, what produced it, and how to write it safely."""

    store: ArtifactStore
    dataset: str
    stage: str
    name: str
    fingerprint: str
    config: dict
    inputs: dict = field(default_factory=dict)

    # ---- locations -------------------------------------------------------------------
    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.fingerprint}"

    @property
    def location(self) -> str:
        return self.store.url(self.dataset, self.stage, self.dirname)

    @property
    def work_location(self) -> str:
        return self.store.url(self.dataset, self.stage, f".{self.dirname}.partial")

    def _fs(self, which: str) -> str:
        d = self.dirname if which == "final" else f".{self.dirname}.partial"
        return self.store.fs_path(self.dataset, self.stage, d)

    def provenance(self) -> dict:
        return {
            "stage": self.stage, "name": self.name, "dataset": self.dataset,
            "fingerprint": self.fingerprint, "config": to_jsonable(self.config),
            "inputs": {k: {"fingerprint": a.fingerprint, "location": a.location, "digest": a.digest()}
                       for k, a in self.inputs.items()},
            "package_version": _version(), "schema": SCHEMA,
            "host": socket.gethostname(), "created": _now(), "complete": False,
        }

    # ---- state -----------------------------------------------------------------------
    def is_complete(self) -> bool:
        """True when the final output exists, is marked complete and is this very output.

        The fingerprint and the configuration recorded in it are compared with this
        artifact's: a store written by another configuration is never taken for this one.
        """
        prov = read_provenance(self.location, self.store.storage_options)
        return bool(prov.get("complete")) and self._matches(prov)

    def _matches(self, prov: dict) -> bool:
        return (prov.get("fingerprint") == self.fingerprint and prov.get("stage") == self.stage
                and canonical_json(prov.get("config", {})) == canonical_json(self.config))

    def digest(self) -> str | None:
        """The content digest of the complete output (None when it is not complete)."""
        prov = read_provenance(self.location, self.store.storage_options)
        return prov.get("digest") if prov.get("complete") and self._matches(prov) else None

    def check(self) -> "Verdict":
        """Hash every file of the complete output against its manifest, and its inputs' current
        digests against those it was built from (see Verdict)."""
        prov = read_provenance(self.location, self.store.storage_options)
        manifest = prov.get("files")
        if manifest is None:
            return Verdict(False, other=["<no manifest: written before verification existed>"])
        fs, base = self.store.fs, self._fs("final")
        found = {p[len(base) + 1:].replace(os.sep, "/") for p in fs.find(base)} - {ROOT_META}
        bad = sorted(set(manifest) ^ found)
        for rel in sorted(set(manifest) & found):
            try:
                if file_sha256(fs, f"{base}/{rel}") != manifest[rel]:
                    bad.append(rel)
            except OSError:
                bad.append(rel)
        try:
            attrs = dict(open_group(self.location, "r", self.store.storage_options).attrs)
        except Exception:
            attrs = None
        if attrs is None or _attrs_sha(attrs) != prov.get("attrs_sha"):
            bad.append(ROOT_META)
        chunked = set((attrs or {}).get("chunks", {}).get("arrays", []))
        size = int((attrs or {}).get("chunks", {}).get("size", 0) or 0)
        chunks, other = {}, []
        for rel in bad:
            parts = rel.split("/")
            # <array>/c/<i>/0/... : chunk i of a frame-chunked array (ChunkedWriter aligns them)
            if size and len(parts) >= 3 and parts[0] in chunked and parts[1] == "c" and parts[2].isdigit() \
                    and rel in manifest:
                chunks.setdefault(parts[0], set()).add(int(parts[2]))
            else:
                other.append(rel)
        stale = [k for k, a in self.inputs.items()
                 if (prov.get("inputs", {}).get(k) or {}).get("digest") != a.digest()]
        return Verdict(not bad and not stale, chunks={k: sorted(v) for k, v in chunks.items()}, other=other,
                       stale=stale)

    def open(self, mode: str = "r") -> zarr.Group:
        """The complete output's group. Raises StoreError when it is not complete."""
        if not self.is_complete():
            raise StoreError(f"{self.stage} output {self.location} is missing or incomplete; "
                             f"run the {self.stage!r} stage first")
        return open_group(self.location, mode, self.store.storage_options)

    # ---- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for writing this output; waits for a concurrent writer to finish.

        A local root keeps the lock file beside the output; a remote root keeps it in the
        temp folder (runs on one machine are serialised; across machines, the first run to
        publish wins and later ones discard their copy).
        """
        import fcntl
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: another run is writing %s; waiting for it", self.stage, self.dirname)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _lock_path(self) -> Path:
        if self.store.local:
            return Path(self.store.root, self.dataset, self.stage, f".{self.dirname}.lock")
        key = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir(), "epipose-locks", key, f".{self.dirname}.lock")

    def being_written(self) -> bool:
        """True while a run holds this output's lock (it is writing it now)."""
        import fcntl
        path = self._lock_path()
        if not path.exists():
            return False
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    def begin(self, fresh: bool = False) -> zarr.Group:
        """Create (or, after an interruption, reopen) the working group. Call under `lock()`.

        A working group left by a different configuration (same name, impossible unless the
        hash collides or someone edited it) is discarded rather than resumed.
        """
        fs = self.store.fs
        work = self._fs("work")
        if fs.exists(work) and not fresh:
            prov = read_provenance(self.work_location, self.store.storage_options)
            if self._matches(prov):
                log.info("%s: resuming %s", self.stage, self.work_location)
                return open_group(self.work_location, "r+", self.store.storage_options)
            fresh = True
        if fs.exists(work) and fresh:
            fs.rm(work, recursive=True)
        g = open_group(self.work_location, "w", self.store.storage_options)
        g.attrs["provenance"] = self.provenance()
        return g

    def work_dir(self) -> Path:
        """A local folder inside the working output, for files (checkpoints) a stage writes itself.

        For a remote root it is a local cache folder, uploaded by `commit()`.
        """
        if self.store.local:
            p = Path(self.work_location)
        else:
            key = hashlib.sha256(self.work_location.encode()).hexdigest()[:16]
            p = Path(tempfile.gettempdir(), "epipose-work", key)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def local_path(self) -> Path:
        """A local folder holding the complete output (a cached copy for a remote root)."""
        if self.store.local:
            return Path(self.location)
        key = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        p = Path(tempfile.gettempdir(), "epipose-cache", key, self.dirname)
        if not (p / ".complete").exists():
            if p.exists():
                shutil.rmtree(p)
            self.store.fs.get(self._fs("final") + "/", str(p) + "/", recursive=True)
            (p / ".complete").touch()
        return p

    def commit(self, **attrs) -> str:
        """Publish the working output under its final name. Call under `lock()`."""
        fs = self.store.fs
        g = open_group(self.work_location, "r+", self.store.storage_options)
        prov = dict(g.attrs["provenance"])
        prov.update(complete=True, finished=_now(), **to_jsonable(attrs))
        # the inputs as they are now, after the build read them
        prov["inputs"] = {k: {"fingerprint": a.fingerprint, "location": a.location, "digest": a.digest()}
                          for k, a in self.inputs.items()}
        if not self.store.local:
            local = self.work_dir()
            files = [p for p in local.rglob("*") if p.is_file()]
            for p in files:
                fs.put_file(str(p), self._fs("work") + "/" + p.relative_to(local).as_posix())
        work = self._fs("work")
        manifest = {p[len(work) + 1:].replace(os.sep, "/"): file_sha256(fs, p) for p in sorted(fs.find(work))}
        manifest.pop(ROOT_META, None)
        attrs_now = {k: v for k, v in g.attrs.items() if k != "provenance"}
        prov["files"] = manifest
        prov["attrs_sha"] = _attrs_sha({**attrs_now, "provenance": prov})
        # the content alone (not when or where it was built): an identical rebuild keeps it
        prov["digest"] = hashlib.sha256(canonical_json([manifest, attrs_now]).encode()).hexdigest()[:16]
        g.attrs["provenance"] = prov
        final = self._fs("final")
        if fs.exists(final):
            # Replaced on purpose (forced re-run) or stale: move aside, then swap in.
            old = self.store.fs_path(self.dataset, self.stage, f".{self.dirname}.old-{uuid.uuid4().hex[:8]}")
            fs.mv(final, old, recursive=True)
            fs.mv(self._fs("work"), final, recursive=True)
            fs.rm(old, recursive=True)
        else:
            fs.mv(self._fs("work"), final, recursive=True)
        if not self.store.local:
            shutil.rmtree(self.work_dir(), ignore_errors=True)
        return self.location

    def reopen_for_repair(self) -> zarr.Group:
        """Move a complete output back to its working folder, marked incomplete, so that a
        build recomputes what fails its checksums and keeps the rest. Call under `lock()`."""
        fs = self.store.fs
        if fs.exists(self._fs("work")):
            fs.rm(self._fs("work"), recursive=True)
        fs.mv(self._fs("final"), self._fs("work"), recursive=True)
        g = open_group(self.work_location, "r+", self.store.storage_options)
        prov = dict(g.attrs["provenance"])
        prov["complete"] = False
        g.attrs["provenance"] = prov
        return g


@dataclass
class Verdict:
    """The result of `Artifact.check()`: `ok`, or what failed: `chunks` {array: [chunk
    indices]} of frame-chunked arrays (repairable chunk by chunk), `other` files (the output
    must be rebuilt), `stale` inputs (rebuilt since with other content)."""
    ok: bool
    chunks: dict = field(default_factory=dict)
    other: list = field(default_factory=list)
    stale: list = field(default_factory=list)

    def __str__(self) -> str:
        parts = []
        if self.stale:
            parts.append(f"inputs {self.stale} were rebuilt since")
        if self.chunks:
            parts.append("corrupt chunks " + ", ".join(f"{k} {v}" for k, v in self.chunks.items()))
        if self.other:
            parts.append(f"files {self.other[:5]}{' ...' if len(self.other) > 5 else ''} differ from the manifest")
        return "; ".join(parts) or "verified"


def _attrs_sha(attrs: Mapping) -> str:
    """sha256 of a group's attributes, without the manifest fields the provenance adds."""
    a = dict(attrs)
    prov = {k: v for k, v in dict(a.pop("provenance", {}) or {}).items() if k not in ("files", "attrs_sha", "digest")}
    return hashlib.sha256(canonical_json({**a, "provenance": prov}).encode()).hexdigest()[:16]


