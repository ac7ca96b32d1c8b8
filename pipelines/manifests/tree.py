"""Write the rendered tree to disk, or compare it with what is there (``--check``).

The renderer owns ``base/``, ``components/`` and the rendered ``overlays/<env>/`` folders:
writing replaces their YAML files (removing stale ones) and leaves everything else alone;
overlays of environments not rendered this time are kept. Files are written atomically
(temp + rename).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["diff_tree", "managed_files", "write_tree"]

_OWNED = ("base", "components")


def _owned_roots(files: Mapping[str, str]) -> set[str]:
    """The folders the rendered files own: base/, components/ and each overlays/<env>/."""
    roots = set(_OWNED)
    for path in files:
        parts = path.split("/")
        if parts[0] == "overlays" and len(parts) > 2:
            roots.add(f"overlays/{parts[1]}")
    return roots


def managed_files(root: Path, files: Mapping[str, str]) -> dict[str, str]:
    """The YAML files now on disk in the folders that ``files`` owns: path -> text."""
    found = {}
    for owned in sorted(_owned_roots(files)):
        folder = root / owned
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.yaml")):
            found[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return found


def write_tree(root: Path, files: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Write ``files`` under ``root`` and remove stale YAML in their folders.

    Returns:
        (paths written or changed, paths removed), relative to ``root``.
    """
    current = managed_files(root, files)
    changed = []
    for rel, text in files.items():
        if current.get(rel) == text:
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        changed.append(rel)
    removed = sorted(set(current) - set(files))
    for rel in removed:
        (root / rel).unlink()
    return changed, removed


def diff_tree(root: Path, files: Mapping[str, str]) -> str:
    """A unified diff from the tree on disk to the rendered one ('' when they match)."""
    current = managed_files(root, files)
    chunks = []
    for rel in sorted(set(current) | set(files)):
        old, new = current.get(rel), files.get(rel)
        if old == new:
            continue
        chunks.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=f"a/{rel}" if old is not None else "/dev/null",
                tofile=f"b/{rel}" if new is not None else "/dev/null",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in chunks)
