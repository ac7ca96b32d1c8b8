"""Evaluate a trained model on one labelled split of an etl dataset, and gate on the result.

Metrics follow the model's task: binary (accuracy, precision, recall, F1, ROC AUC, log loss,
confusion matrix, ROC curve), multiclass (accuracy, macro/weighted precision, recall and F1,
one-vs-rest ROC AUC, log loss, confusion matrix) and regression (MAE, RMSE, R²), all with
scikit-learn. :func:`gate` reads them and stops the pipeline when the model is not good enough.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from typing import Any

import numpy as np
import torch
from sklearn import metrics as skm

from components.data.labels import Target
from components.errors import DataError, ParamError, PermanentError
from components.io.files import atomic_path, iter_batches, read_json, split_parts, write_json
from components.model_artifact import load_model, scores_from_logits
from components.names import GATE_FILE, METRICS_FILE, MODEL_META_FILE
from components.params import EvaluateParams, GateParams

__all__ = ["GateClosed", "gate", "roc_curve", "run"]

log = logging.getLogger(__name__)

READ_BATCH_ROWS = 65_536
ROC_POINTS = 200  # enough for a smooth curve in the Kubeflow UI, small in metrics.json


class GateClosed(PermanentError):
    """The model missed the evaluation gate: inference must not run."""


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Score ``params["split"]`` with the model and write ``metrics/metrics.json``.

    Args:
        inputs: ``dataset`` (etl output) and ``model`` (train output) directories.
        params: :class:`~components.params.EvaluateParams`: the ``split`` to score and the
            binary decision ``threshold``.
        outputs: ``metrics``: directory to create.

    Returns:
        The task's scalar metrics and the row count (binary: also the confusion cells
        tn, fp, fn, tp and the positive rates).
    """
    typed = EvaluateParams.parse(params)
    split, threshold = typed.split, typed.threshold
    dataset_dir = str(inputs["dataset"])
    model, spec, meta = load_model(str(inputs["model"]))
    target = Target(meta["task"], str(meta.get("target") or spec.target), tuple(meta["classes"]))
    columns = [*spec.input_columns, target.column]
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in split_parts(dataset_dir, split):
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            with torch.inference_mode():
                logits = model(torch.from_numpy(spec.transform(batch)))
            scores.append(scores_from_logits(target.task, logits.double()).numpy())
            labels.append(target.encode(batch))
    if not labels or sum(len(y) for y in labels) == 0:
        raise DataError(
            f"the {split} split of {dataset_dir} has no rows; add data or raise its split fraction"
        )
    y_true, y_score = np.concatenate(labels), np.concatenate(scores)
    if target.task == "binary":
        flat, details = _binary(y_true.astype(np.int64), y_score, threshold, split)
    elif target.task == "multiclass":
        flat, details = _multiclass(y_true, y_score, len(target.classes))
    else:
        flat, details = _regression(y_true.astype(np.float64), y_score)
    flat["rows"] = len(y_true)
    out_dir = outputs["metrics"]
    os.makedirs(out_dir, exist_ok=True)
    write_json(
        os.path.join(out_dir, METRICS_FILE),
        {
            "split": split,
            "task": target.task,
            "classes": list(target.classes),
            "threshold": threshold,
            "model_version": meta["version"],
            **flat,
            **details,
        },
    )
    log.info(
        "%s split (%d rows): %s",
        split,
        flat["rows"],
        ", ".join(f"{k} {v:.4f}" for k, v in flat.items() if isinstance(v, float)),
    )
    return flat


def _binary(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float, split: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    classes = np.unique(y_true)
    if len(classes) < 2:
        raise DataError(
            f"the {split} split has only label {classes.tolist()}, so ROC AUC is undefined; "
            "use more rows or a larger split fraction"
        )
    y_pred = (y_score >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()
    flat = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, y_score)),
        "log_loss": float(skm.log_loss(y_true, y_score, labels=[0, 1])),
        "positive_rate": float(y_true.mean()),
        "predicted_positive_rate": float(y_pred.mean()),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }
    details = {"confusion_matrix": [[tn, fp], [fn, tp]], "roc_curve": roc_curve(y_true, y_score)}
    return flat, details


def _multiclass(
    y_true: np.ndarray, y_score: np.ndarray, k: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    y_true = y_true.astype(np.int64)
    y_pred = y_score.argmax(axis=1)
    labels = list(range(k))
    flat: dict[str, Any] = {"accuracy": float(skm.accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        flat[f"precision_{average}"] = float(
            skm.precision_score(y_true, y_pred, labels=labels, average=average, zero_division=0)
        )
        flat[f"recall_{average}"] = float(
            skm.recall_score(y_true, y_pred, labels=labels, average=average, zero_division=0)
        )
        flat[f"f1_{average}"] = float(
            skm.f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0)
        )
    flat["f1"] = flat["f1_macro"]
    if len(np.unique(y_true)) == k:  # one-vs-rest AUC needs every class present
        flat["roc_auc"] = float(
            skm.roc_auc_score(y_true, y_score, multi_class="ovr", average="macro", labels=labels)
        )
    flat["log_loss"] = float(skm.log_loss(y_true, np.clip(y_score, 1e-15, 1.0), labels=labels))
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return flat, {"confusion_matrix": matrix}


def _regression(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    flat = {
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else 0.0,
    }
    return flat, {}


def gate(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Pass when the evaluation's ``metric`` is within [``min``, ``max``]; else stop.

    Args:
        inputs: ``evaluation``: the evaluate step's output directory; ``model``: the
            evaluated model, passed on to inference only when the gate is open.
        params: ``metric`` (a name in ``metrics.json``), ``min`` and/or ``max``, and
            ``raise_when_closed`` (default true: a closed gate fails the step so that the
            local runner runs nothing after it; the KFP task sets it false and branches
            on the ``passed`` output with ``dsl.If``).
        outputs: ``model``: the model (with ``gate.json``), written only when open.

    Raises:
        ParamError: the metric is not in the evaluation.
        GateClosed: the gate is closed and ``raise_when_closed``.
    """
    evaluation = read_json(
        os.path.join(str(inputs["evaluation"]), METRICS_FILE), what="the evaluate step"
    )
    typed = GateParams.parse(params)
    metric = typed.metric
    value = evaluation.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        known = sorted(
            k for k, v in evaluation.items() if isinstance(v, float) and not isinstance(v, bool)
        )
        raise ParamError(
            f"evaluate.gate.metric {metric!r} is not a metric of this evaluation; expected one "
            f"of {known}"
        )
    low, high = typed.min, typed.max
    reasons = []
    if low is not None and value < float(low):
        reasons.append(f"below the minimum {low}")
    if high is not None and value > float(high):
        reasons.append(f"above the maximum {high}")
    passed = not reasons
    decision = {"metric": metric, "value": value, "min": low, "max": high, "passed": passed}
    if passed:
        _copy_model(str(inputs["model"]), outputs["model"])
        write_json(os.path.join(outputs["model"], GATE_FILE), decision)
        log.info("gate open: %s = %.4f", metric, value)
    else:
        message = (
            f"evaluation gate closed: test {metric} = {value:.4f} is {' and '.join(reasons)}; "
            "inference does not run. Improve the model or change evaluate.gate"
        )
        log.error("%s", message)
        if typed.raise_when_closed:
            raise GateClosed(message)
    return {"passed": int(passed), metric: float(value)}


def _copy_model(source: str, target: str) -> None:
    """Copy the model artifact, its metadata file last (it marks the copy complete)."""
    os.makedirs(target, exist_ok=True)
    names = sorted(os.listdir(source), key=lambda n: n == MODEL_META_FILE)
    for name in names:
        with atomic_path(os.path.join(target, name)) as tmp:
            shutil.copyfile(os.path.join(source, name), tmp)


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
