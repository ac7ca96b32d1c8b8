"""Fixtures for component tests: one small pipeline run that many tests inspect."""

from __future__ import annotations

import pytest

from components import datagen, etl, train
from tests.support.params import etl_params, step_params, train_params

from .helpers import Pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """Synthetic churn data (4,000 rows), split into 3 scoring shards, and a model trained on it."""
    root = tmp_path_factory.mktemp("pipeline")
    datagen.run(
        {},
        step_params("datagen", "data=demo", "data.rows=4000", "seed=3"),
        {"raw": str(root / "raw")},
    )
    etl_metrics = etl.run(
        {"source": str(root / "raw")},
        etl_params(),
        {
            "dataset": str(root / "dataset"),
            "feature_spec": str(root / "feature_spec"),
            "scoring": str(root / "scoring"),
        },
    )
    train_metrics = train.run(
        {"dataset": str(root / "dataset"), "feature_spec": str(root / "feature_spec")},
        train_params(),
        {"model": str(root / "model")},
    )
    return Pipeline(
        raw=root / "raw",
        dataset=root / "dataset",
        feature_spec=root / "feature_spec",
        scoring=root / "scoring",
        model=root / "model",
        etl_metrics=etl_metrics,
        train_metrics=train_metrics,
    )
