"""Aggregate a cross-validation: every fold's validation metrics, their mean and spread."""

from __future__ import annotations

import logging
import os
import statistics
from typing import Any

from components.errors import DataError
from components.evaluation.plots import bar_chart
from components.io.files import read_json, write_json
from components.names import CV_FILE, MODEL_META_FILE
from components.params import CvAggregateParams

__all__ = ["CV_PLOT", "run"]

log = logging.getLogger(__name__)

CV_PLOT = "cv.png"


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int]:
    """Read each fold's model metrics; write ``cv.json`` (per fold, mean, std) and ``cv.png``.

    Args:
        inputs: ``models``: the fold models (a list, one per fan-out branch).
        params: ``folds``: the expected number of folds.
        outputs: ``report``: directory to create.

    Returns:
        ``<metric>_mean`` and ``<metric>_std`` for every validation metric, and ``folds``.
    """
    models = inputs["models"]
    models = [models] if isinstance(models, str) else list(models)
    folds = []
    for directory in models:
        meta = read_json(os.path.join(directory, MODEL_META_FILE), what="a cv_train branch")
        fold = (meta.get("variant") or {}).get("fold")
        if fold is None:
            raise DataError(f"{directory} is not a cross-validation fold model (no variant.fold)")
        folds.append({"fold": int(fold), **_scalars(meta["metrics"])})
    folds.sort(key=lambda f: f["fold"])
    expected = CvAggregateParams.parse(params).folds
    if [f["fold"] for f in folds] != list(range(expected)):
        raise DataError(
            f"expected the models of folds 0..{expected - 1}, got folds "
            f"{[f['fold'] for f in folds]}; pass every cv_train branch's model"
        )
    names = [k for k in folds[0] if k.startswith("val_")]
    summary = {
        name: {
            "mean": statistics.fmean(f[name] for f in folds),
            "std": statistics.stdev([f[name] for f in folds]) if len(folds) > 1 else 0.0,
        }
        for name in names
    }
    out = outputs["report"]
    os.makedirs(out, exist_ok=True)
    bar_chart(
        os.path.join(out, CV_PLOT),
        {name: [f[name] for f in folds] for name in names},
        labels=[str(f["fold"]) for f in folds],
        title=f"{len(folds)}-fold cross-validation (dashed: mean)",
    )
    write_json(os.path.join(out, CV_FILE), {"folds": folds, "summary": summary})
    for name, stats in summary.items():
        log.info("cv %s: %.4f +- %.4f", name, stats["mean"], stats["std"])
    flat: dict[str, float | int] = {"folds": len(folds)}
    for name, stats in summary.items():
        flat[f"{name}_mean"], flat[f"{name}_std"] = stats["mean"], stats["std"]
    return flat


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
