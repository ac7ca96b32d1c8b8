"""Past local runs: list, show, compare, and clean up runs and the cache entries they use.

Everything is read from the run folders the runner writes (``manifest.json``, ``config.yaml``),
so it works for runs of any kfbatch version that wrote them, and for runs still in progress.
"""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from components.names import RUN_MANIFEST_FILE
from pipelines.errors import KfbatchError
from pipelines.local.cache import process_alive

__all__ = ["CleanResult", "RunSummary", "clean_runs", "compare_runs", "list_runs", "load_run"]

#: The metric shown in listings, looked up in this order among the run's step metrics.
KEY_METRICS = ("evaluate.roc_auc", "evaluate.accuracy", "train.val_roc_auc")


@dataclass(frozen=True)
class RunSummary:
    """One line of ``kfbatch runs list``."""

    run_id: str
    name: str
    status: str
    started_at: str
    seconds: float | None
    key_metric: tuple[str, float] | None
    path: Path


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Every run in ``runs_dir``, newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    summaries = []
    for manifest_path in root.glob("*/manifest.json"):
        if manifest_path.parent.is_symlink():
            continue  # runs/latest
        manifest = _read(manifest_path)
        summaries.append(_summary(manifest, manifest_path.parent))
    return sorted(summaries, key=lambda s: (s.started_at, s.run_id), reverse=True)


def load_run(runs_dir: str | Path, run_id: str) -> dict[str, Any]:
    """The manifest of run ``run_id`` with ``status`` made truthful (see :func:`_status`)."""
    path = Path(runs_dir) / run_id / RUN_MANIFEST_FILE
    if not path.is_file():
        known = ", ".join(s.run_id for s in list_runs(runs_dir)[:5]) or "none"
        raise KfbatchError(f"no run {run_id!r} in {runs_dir} (newest: {known})")
    manifest = _read(path)
    manifest["status"] = _status(manifest)
    return manifest


def compare_runs(runs_dir: str | Path, first: str, second: str) -> tuple[str, list[tuple]]:
    """Unified diff of the two runs' configs, and (metric, first, second, delta) rows."""
    a, b = load_run(runs_dir, first), load_run(runs_dir, second)
    configs = [
        (Path(runs_dir) / r / "config.yaml").read_text().splitlines() for r in (first, second)
    ]
    diff = "\n".join(
        difflib.unified_diff(*configs, fromfile=first, tofile=second, lineterm="", n=1)
    )
    metrics_a, metrics_b = _metrics(a), _metrics(b)
    rows = []
    for key in sorted(set(metrics_a) | set(metrics_b)):
        va, vb = metrics_a.get(key), metrics_b.get(key)
        delta = vb - va if va is not None and vb is not None else None
        rows.append((key, va, vb, delta))
    return diff, rows


@dataclass(frozen=True)
class CleanResult:
    """What ``clean_runs`` removed and kept."""

    removed_runs: list[str]
    kept_running: list[str]
    removed_entries: int
    freed_bytes: int


def clean_runs(
    runs_dir: str | Path, cache_dir: str | Path, keep: int, *, dry_run: bool = False
) -> CleanResult:
    """Remove all but the newest ``keep`` runs, then the cache entries no kept run uses.

    A run whose runner is still alive is never removed. While any run is in progress no
    cache entry is removed either: a running run may be about to reuse one that its
    manifest does not list yet.
    """
    if keep < 0:
        raise KfbatchError(f"--keep {keep}: expected a number of runs >= 0")
    runs = list_runs(runs_dir)
    kept = runs[:keep]
    running = [r for r in runs[keep:] if r.status == "running"]
    doomed = [r for r in runs[keep:] if r.status != "running"]
    if not dry_run:
        for run in doomed:
            shutil.rmtree(run.path)
        latest = Path(runs_dir) / "latest"
        if latest.is_symlink() and not latest.exists():
            latest.unlink()
    entries = [] if any(r.status == "running" for r in runs) else _unused_entries(cache_dir, kept)
    freed = 0
    for entry in entries:
        freed += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        if not dry_run:
            shutil.rmtree(entry)
    return CleanResult([r.run_id for r in doomed], [r.run_id for r in running], len(entries), freed)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise KfbatchError(
            f"{path} is not valid JSON ({error}); the run folder is damaged"
        ) from None


def _status(manifest: dict[str, Any]) -> str:
    """``running`` only while the runner process lives; a run whose runner died is ``killed``."""
    status = manifest.get("status", "unknown")
    if status == "running" and not process_alive(manifest.get("pid")):
        return "killed"
    return status


def _summary(manifest: dict[str, Any], path: Path) -> RunSummary:
    started, ended = manifest.get("started_at"), manifest.get("ended_at")
    seconds = None
    if started and ended:
        seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    metrics = _metrics(manifest)
    key = next(((k, metrics[k]) for k in KEY_METRICS if k in metrics), None)
    return RunSummary(
        run_id=manifest.get("run_id", path.name),
        name=manifest.get("name", "") + (" (smoke)" if manifest.get("smoke") else ""),
        status=_status(manifest),
        started_at=started or "",
        seconds=seconds,
        key_metric=key,
        path=path,
    )


def _metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """``node.metric`` -> value for every numeric metric of every node."""
    flat = {}
    for node, record in manifest.get("nodes", {}).items():
        for name, value in (record.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{node}.{name}"] = value
    return flat


def _unused_entries(cache_dir: str | Path, kept: list[RunSummary]) -> list[Path]:
    root = Path(cache_dir)
    if not root.is_dir():
        return []
    used = {
        record["cache_key"]
        for run in kept
        for record in _read(run.path / RUN_MANIFEST_FILE).get("nodes", {}).values()
        if record.get("cache_key")
    }
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in used
    )
