"""Helpers for component tests: the shared pipeline's folders and tiny CSV files (params come
from :mod:`tests.support.params`, composed like a real run's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pipeline:
    """Directories of one small datagen -> etl -> train run, and the metrics of each step."""

    raw: Path
    dataset: Path
    feature_spec: Path
    scoring: Path
    model: Path
    etl_metrics: dict[str, Any]
    train_metrics: dict[str, Any]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """Write a small CSV file from a header and row lines; return its path."""
    path.write_text("\n".join([header, *rows]) + "\n")
    return path
