"""Evaluation metrics of the trained model on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components import evaluate
from components.errors import DataError, ParamError
from components.evaluate import roc_curve
from tests.support.params import step_params

from .helpers import Pipeline


def test_metrics_are_in_range_and_consistent(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "model": str(pipeline.model)}
    metrics = evaluate.run(inputs, step_params("evaluate"), {"metrics": str(tmp_path)})
    manifest = json.loads((pipeline.dataset / "_manifest.json").read_text())
    assert metrics["rows"] == manifest["splits"]["test"]
    assert metrics["tn"] + metrics["fp"] + metrics["fn"] + metrics["tp"] == metrics["rows"]
    assert metrics["roc_auc"] > 0.7
    for name in ("accuracy", "precision", "recall", "f1", "positive_rate"):
        assert 0 <= metrics[name] <= 1
    assert 0.15 < metrics["positive_rate"] < 0.4
    assert 0 < metrics["log_loss"] < 0.69
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["confusion_matrix"] == [
        [metrics["tn"], metrics["fp"]],
        [metrics["fn"], metrics["tp"]],
    ]
    assert (
        saved["model_version"] == json.loads((pipeline.model / "model.json").read_text())["version"]
    )
    assert all(isinstance(v, int | float | str) for v in metrics.values())


def test_unknown_split_is_a_param_error(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "model": str(pipeline.model)}
    with pytest.raises(ParamError, match=r"split 'holdout' is unknown; expected one of"):
        evaluate.run(
            inputs, step_params("evaluate") | {"split": "holdout"}, {"metrics": str(tmp_path)}
        )


def test_missing_model_names_the_step_to_run(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "model": str(tmp_path / "nope")}
    with pytest.raises(DataError, match=r"model.json does not exist; expected the output of the"):
        evaluate.run(inputs, step_params("evaluate"), {"metrics": str(tmp_path / "m")})


def test_roc_curve_is_thinned_json_safe_and_monotone() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, 5000)
    y_score = np.clip(y_true * 0.3 + rng.random(5000) * 0.7, 0, 1)
    curve = roc_curve(y_true, y_score, points=50)
    assert len(curve["fpr"]) == len(curve["tpr"]) == len(curve["thresholds"]) <= 50
    assert curve["fpr"][0] == 0.0 and curve["fpr"][-1] == 1.0 and curve["tpr"][-1] == 1.0
    assert curve["thresholds"][0] == 1.0  # sklearn's +inf, made JSON-safe
    assert all(a <= b for a, b in zip(curve["fpr"], curve["fpr"][1:], strict=False))
    json.dumps(curve, allow_nan=False)
