"""Helpers for component tests: default params and tiny CSV files."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ETL_PARAMS: dict[str, Any] = {
    "format": "csv",
    "id_column": "customer_id",
    "target": "churned",
    "split": {"train": 0.7, "validation": 0.15, "test": 0.15},
    "shards": 3,
    "seed": 7,
    "features": {
        "numeric": None,
        "categorical": None,
        "timestamp": None,
        "drop": [],
        "max_categories": 20,
    },
    "csv": {"delimiter": ","},
    "batch_rows": 1000,
}

TRAIN_PARAMS: dict[str, Any] = {
    "model": {"_target_": "components.models.MLP", "hidden": [32, 16], "dropout": 0.1},
    "trainer": {
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.005,
        "weight_decay": 0.0001,
        "optimizer": "adamw",
        "seed": 0,
        "threads": 1,
    },
    "target": "churned",
}


def etl_params(**overrides: Any) -> dict[str, Any]:
    """A deep copy of the test etl params with top-level keys replaced."""
    return copy.deepcopy(ETL_PARAMS) | overrides


def train_params(**trainer: Any) -> dict[str, Any]:
    """A deep copy of the test train params with ``trainer`` keys replaced."""
    params = copy.deepcopy(TRAIN_PARAMS)
    params["trainer"].update(trainer)
    return params


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
