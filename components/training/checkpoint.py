"""Atomic, verified training checkpoints: write, keep the newest K, load the newest valid one.

A checkpoint is ``step-<global step>.pt`` (written with ``torch.save`` to a temporary name,
fsynced and renamed) plus ``step-<global step>.json`` holding its sha256, written after it.
A checkpoint counts only when both exist and the digest matches, so a write cut short by a
kill, a truncated copy or a flipped byte is skipped with a warning and the next newest is
used. Loading uses ``torch.load(..., weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import re
from typing import Any

import torch

__all__ = ["CheckpointStore"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"step-(\d+)\.pt$")


class CheckpointStore:
    """The checkpoints of one training run in ``directory``, keeping the newest ``keep``."""

    def __init__(self, directory: str, *, keep: int = 3) -> None:
        self.directory = directory
        self.keep = max(1, keep)

    def save(self, step: int, state: dict[str, Any]) -> str:
        """Write ``state`` as the checkpoint of ``step`` atomically; prune old ones."""
        os.makedirs(self.directory, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        path = os.path.join(self.directory, f"step-{step:010d}.pt")
        _write_durably(path, payload)
        digest = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        _write_durably(_sidecar(path), json.dumps(digest).encode())
        self._prune()
        return path

    def steps(self) -> list[int]:
        """Steps that have a checkpoint file (valid or not), newest first."""
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.directory), "step-*.pt")):
            match = _NAME.search(path)
            if match:
                found.append(int(match.group(1)))
        return sorted(found, reverse=True)

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that verifies and loads; None when there is none."""
        for step in self.steps():
            path = os.path.join(self.directory, f"step-{step:010d}.pt")
            try:
                state = self._load(path)
            except Exception as error:  # any unreadable checkpoint is skipped, never fatal
                log.warning("skipping checkpoint %s: %s", path, " ".join(str(error).split()))
                continue
            log.info("resuming from checkpoint %s", path)
            return state
        return None

    def clear(self) -> None:
        """Delete every checkpoint (after the final model is written)."""
        for path in glob.glob(os.path.join(glob.escape(self.directory), "step-*")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    def _load(self, path: str) -> dict[str, Any]:
        with open(_sidecar(path), encoding="utf-8") as f:
            expected = json.load(f)
        with open(path, "rb") as f:
            payload = f.read()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != expected["sha256"]:
            raise ValueError(
                f"digest {digest[:12]} != recorded {expected['sha256'][:12]} "
                f"({len(payload)} of {expected['bytes']} bytes): truncated or corrupt"
            )
        return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")

    def _prune(self) -> None:
        for step in self.steps()[self.keep :]:
            path = os.path.join(self.directory, f"step-{step:010d}.pt")
            for stale in (_sidecar(path), path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)


def _sidecar(path: str) -> str:
    return path[: -len(".pt")] + ".json"


def _write_durably(path: str, payload: bytes) -> None:
    """Write to ``path.tmp``, fsync, rename: the file is whole or absent, even after a crash."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
