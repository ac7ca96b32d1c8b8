"""Validation and test metrics per task, computed with scikit-learn from logits and labels."""

from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as skm

from components.errors import DataError
from components.names import VALIDATION_METRICS

__all__ = ["validation", "validation_names"]


def validation_names(task: str) -> list[str]:
    """The validation metric names the train step reports for ``task``."""
    return list(VALIDATION_METRICS[task])


def validation(task: str, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The validation metrics of ``task`` (``names.VALIDATION_METRICS``) from float64 logits."""
    y = labels.numpy()
    if task == "binary":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.double())
        scores = torch.sigmoid(logits[:, 0]).numpy()
        if len(np.unique(y)) < 2:
            raise DataError(
                f"the validation rows hold only label {np.unique(y).tolist()}, so ROC AUC is "
                "undefined; use more rows or a larger validation split"
            )
        return {
            "val_loss": float(loss),
            "val_roc_auc": float(skm.roc_auc_score(y, scores)),
            "val_accuracy": float(((scores >= 0.5) == (y == 1)).mean()),
        }
    if task == "multiclass":
        loss = torch.nn.functional.cross_entropy(logits, labels.long())
        predicted = logits.argmax(dim=1).numpy()
        return {
            "val_loss": float(loss),
            "val_accuracy": float((predicted == y).mean()),
            "val_f1_macro": float(skm.f1_score(y, predicted, average="macro", zero_division=0)),
        }
    predicted = logits[:, 0].numpy()
    error = predicted - y
    return {
        "val_loss": float(np.mean(error**2)),
        "val_rmse": float(np.sqrt(np.mean(error**2))),
        "val_mae": float(np.mean(np.abs(error))),
        "val_r2": float(skm.r2_score(y, predicted)) if len(y) > 1 else 0.0,
    }
