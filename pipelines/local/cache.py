"""The step cache: content-addressed outputs keyed by (component version, params, inputs).

A step's key is the sha256 of its component's source digest, its params (run-id placeholder
unsubstituted) and the digests of its inputs. Outputs are produced in a temporary directory
and committed by one ``rename`` to ``<cache_dir>/<key>/``, together with ``entry.json``
(output digests and metrics): a directory with that name is always complete, so a run killed
at any moment never leaves a half-written entry that a later run could mistake for a result.
Input digests are the content digests of upstream outputs, so an upstream step that re-runs
and produces identical bytes does not invalidate what follows.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import KfbatchError
from pipelines.sources import source_closure

__all__ = [
    "CacheEntry",
    "StepCache",
    "component_version",
    "digest_path",
    "external_digest",
    "process_alive",
    "step_key",
]

_CHUNK = 1 << 20
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class CacheEntry:
    """A committed step result: ``<path>/outputs/<name>`` holds each output."""

    key: str
    path: Path
    outputs: dict[str, str]
    metrics: dict[str, Any]


class StepCache:
    """The cache directory: look up, stage and commit step results."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> CacheEntry | None:
        """The committed entry for ``key``, if there is one."""
        path = self.root / key
        try:
            meta = json.loads((path / "entry.json").read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None
        return CacheEntry(key, path, meta["outputs"], meta["metrics"])

    def stage(self, key: str, attempt: int) -> Path:
        """A fresh temporary directory for one attempt; outputs go to ``<it>/outputs/<name>``."""
        path = self.root / f"{_TMP}{key[:16]}-{attempt}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (path / "outputs").mkdir(parents=True)
        return path

    def commit(
        self, key: str, staged: Path, outputs: tuple[str, ...], metrics: Mapping[str, Any]
    ) -> CacheEntry:
        """Digest the staged outputs and move them into place as one entry.

        An existing entry with the same output digests is kept (another run may be reading
        it) and the staged copy dropped; one with different digests is replaced.
        """
        missing = [name for name in outputs if not (staged / "outputs" / name).exists()]
        if missing:
            raise KfbatchError(f"the step did not write its declared outputs {missing}")
        digests = {name: digest_path(staged / "outputs" / name) for name in outputs}
        existing = self.get(key)
        if existing is not None and existing.outputs == digests:
            self.discard(staged)
            return existing
        meta = {"key": key, "outputs": digests, "metrics": dict(metrics)}
        (staged / "entry.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        final = self.root / key
        if final.exists():
            retired = self.root / f"{_OLD}{key[:16]}-0-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            final.rename(retired)
            shutil.rmtree(retired, ignore_errors=True)
        staged.rename(final)
        return CacheEntry(key, final, digests, meta["metrics"])

    def discard(self, staged: Path) -> None:
        """Remove an attempt's temporary directory."""
        shutil.rmtree(staged, ignore_errors=True)

    def remove_abandoned(self) -> list[Path]:
        """Delete temporary directories left by runner processes that no longer exist."""
        removed = []
        for path in self.root.iterdir():
            if not path.name.startswith((_TMP, _OLD)):
                continue
            try:
                pid = int(path.name.split("-")[-2])
            except (IndexError, ValueError):
                continue
            if not process_alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed


_TMP, _OLD = ".tmp-", ".old-"


def process_alive(pid: int | None) -> bool:
    """Whether a process with id ``pid`` exists (on this machine)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def step_key(
    component: str, params: Mapping[str, Any], inputs: Mapping[str, str | list[str]]
) -> str:
    """The cache key of a step given its component, params and input digests."""
    payload = {
        "component": component,
        "version": component_version(component),
        "params": params,
        "inputs": inputs,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.cache
def component_version(component: str) -> str:
    """Digest of the source of ``component``'s module and what it imports from its package.

    A change to that code gives new keys, so stale results are never reused, while a change
    to an unrelated module of the same package (another component) keeps them. Imports are
    read from the source with :mod:`ast`: nothing is imported (the module may import torch).
    """
    digest = hashlib.sha256()
    for file in source_closure(component.partition(":")[0]):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def digest_path(path: str | Path) -> str:
    """sha256 over a file's bytes, or over a directory's relative paths and file bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def external_digest(
    uri: str, memo_file: Path, storage_options: Mapping[str, Any] | None = None
) -> str:
    """Digest of data outside the pipeline, memoised by (path, size, mtime) for local files.

    ``uri`` is a file, a folder or a glob pattern, local or behind a URI. Object-store URIs
    are identified by their files' sizes and modification times as the store reports them
    (reached with the ``storage_options`` the step reads them with): reading every byte of
    a bucket to decide about caching would cost more than the step.
    """
    if "://" in uri and not uri.startswith("file://"):
        import pyarrow.fs as pafs

        from components.data.sources import filesystem

        fs, path = filesystem(uri, dict(storage_options or {}))
        pattern = path if _GLOB.search(path) else None
        if pattern is not None:
            path = _glob_base(pattern)
        info = fs.get_file_info(path)
        infos = (
            fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if info.type == pafs.FileType.Directory
            else [info]
        )
        parts = sorted(
            (i.path, i.size, str(i.mtime))
            for i in infos
            if pattern is None or (i.is_file and fnmatch.fnmatchcase(i.path, pattern))
        )
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    given = uri.removeprefix("file://")
    if _GLOB.search(given):
        local = Path(given).absolute()
        files = sorted(Path(p).resolve() for p in glob.glob(str(local), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise KfbatchError(f"input {uri!r} matches no files; check the pattern")
    else:
        local = Path(given).resolve()
        if not local.exists():
            raise KfbatchError(f"input {uri!r} does not exist; check data.uri")
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    stamp = json.dumps([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])
    try:
        memo = json.loads(memo_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        memo = {}
    if memo.get(str(local), {}).get("stamp") != stamp:
        digest = digest_path(local) if local.exists() else _digest_files(files)
        memo[str(local)] = {"stamp": stamp, "digest": digest}
        tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    return memo[str(local)]["digest"]


def _glob_base(pattern: str) -> str:
    """The folder above the first path segment of ``pattern`` that holds a wildcard."""
    parts = pattern.split("/")
    first = next(i for i, part in enumerate(parts) if _GLOB.search(part))
    return "/".join(parts[:first]) or ("/" if pattern.startswith("/") else ".")


def _digest_files(files: list[Path]) -> str:
    """sha256 over each file's path and bytes (the files a glob pattern matched)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
