"""Evaluate a trained model on one labelled split of an etl dataset."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from sklearn import metrics as skm

from components.errors import DataError
from components.io import iter_batches, split_parts, write_json
from components.model_artifact import load_model, predict_proba
from components.train import roc_auc

__all__ = ["METRICS_FILE", "roc_curve", "run"]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
READ_BATCH_ROWS = 65_536
ROC_POINTS = 200  # enough for a smooth curve in the Kubeflow UI, small in metrics.json


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Score ``params["split"]`` with the model and write ``metrics/metrics.json``.

    Args:
        inputs: ``dataset`` (etl output) and ``model`` (train output) directories.
        params: ``split`` (default "test") and the decision ``threshold`` (default 0.5).
        outputs: ``metrics``: directory to create.

    Returns:
        Accuracy, precision, recall, f1, roc_auc, log_loss, positive rates, the confusion
        matrix cells (tn, fp, fn, tp) and the row count.
    """
    split = params.get("split", "test")
    threshold = float(params.get("threshold", 0.5))
    dataset_dir = str(inputs["dataset"])
    model, spec, meta = load_model(str(inputs["model"]))
    columns = [*spec.input_columns, str(spec.target)]
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in split_parts(dataset_dir, split):
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            scores.append(predict_proba(model, spec, batch))
            labels.append(spec.labels(batch))
    y_true = np.concatenate(labels) if labels else np.empty(0, np.float32)
    if y_true.size == 0:
        raise DataError(
            f"the {split} split of {dataset_dir} has no rows; add data or raise its split fraction"
        )
    y_score = np.concatenate(scores).astype(np.float64)
    y_pred = (y_score >= threshold).astype(np.int64)
    y_true = y_true.astype(np.int64)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()
    flat: dict[str, float | int | str] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": roc_auc(y_true, y_score, split),
        "log_loss": float(skm.log_loss(y_true, y_score, labels=[0, 1])),
        "positive_rate": float(y_true.mean()),
        "predicted_positive_rate": float(y_pred.mean()),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "rows": int(y_true.size),
    }
    out_dir = outputs["metrics"]
    os.makedirs(out_dir, exist_ok=True)
    write_json(
        os.path.join(out_dir, METRICS_FILE),
        {
            "split": split,
            "threshold": threshold,
            "model_version": meta["version"],
            **flat,
            "confusion_matrix": [[tn, fp], [fn, tp]],
            "roc_curve": roc_curve(y_true, y_score),
        },
    )
    log.info(
        "%s split (%d rows): ROC AUC %.4f, accuracy %.4f, f1 %.4f",
        split,
        flat["rows"],
        flat["roc_auc"],
        flat["accuracy"],
        flat["f1"],
    )
    return flat


def roc_curve(y_true: np.ndarray, y_score: np.ndarray, points: int = ROC_POINTS) -> dict:
    """The ROC curve thinned to at most ``points`` points, as JSON-safe lists.

    sklearn starts the thresholds at +inf (a point that predicts nothing positive); JSON has
    no infinity, so that threshold is written as 1.0, the highest score a probability takes.
    """
    fpr, tpr, thresholds = skm.roc_curve(y_true, y_score, drop_intermediate=True)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
    return {
        "fpr": [round(float(v), 6) for v in fpr[keep]],
        "tpr": [round(float(v), 6) for v in tpr[keep]],
        "thresholds": [round(float(min(v, 1.0)), 6) for v in thresholds[keep]],
    }
