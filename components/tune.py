"""Select the best hyperparameter trial: a results table, a plot and the winning overrides."""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
from collections import defaultdict
from typing import Any

from components.errors import DataError, ParamError
from components.evaluation.plots import bar_chart
from components.io.files import atomic_path, read_json, write_json
from components.names import BEST_FILE, MODEL_META_FILE
from components.params import TuneSelectParams

__all__ = ["RESULTS_CSV", "RESULTS_FILE", "RESULTS_PLOT", "run"]

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
RESULTS_CSV = "results.csv"
RESULTS_PLOT = "results.png"


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int]:
    """Rank the trials by ``objective`` (mean over folds when cross-validated).

    Args:
        inputs: ``models``: every trial branch's model.
        params: ``objective`` (a validation metric the train step returns) and
            ``direction`` (``maximize`` or ``minimize``).
        outputs: ``best``: directory for ``best.json`` (written last), ``results.json``,
            ``results.csv`` and ``results.png``.

    Returns:
        ``best_trial``, ``best_<objective>`` and ``trials``.

    Raises:
        ParamError: the objective is not a metric of the trials.
    """
    typed = TuneSelectParams.parse(params)
    objective, direction = typed.objective, typed.direction
    models = inputs["models"]
    models = [models] if isinstance(models, str) else list(models)
    values: dict[int, list[float]] = defaultdict(list)
    overrides: dict[int, dict[str, Any]] = {}
    for directory in models:
        meta = read_json(os.path.join(directory, MODEL_META_FILE), what="a tune_trial branch")
        variant = meta.get("variant") or {}
        if "trial" not in variant:
            raise DataError(f"{directory} is not a tuning trial model (no variant.trial)")
        metric = meta["metrics"].get(objective)
        if not isinstance(metric, (int, float)):
            known = sorted(k for k, v in meta["metrics"].items() if isinstance(v, float))
            raise ParamError(
                f"tune.objective {objective!r} is not a metric of the trials; expected one "
                f"of {known}"
            )
        values[int(variant["trial"])].append(float(metric))
        overrides[int(variant["trial"])] = variant.get("overrides") or {}
    rows = [
        {
            "trial": trial,
            objective: statistics.fmean(values[trial]),
            f"{objective}_std": statistics.stdev(values[trial]) if len(values[trial]) > 1 else 0.0,
            "folds": len(values[trial]),
            **{f"param:{k}": v for k, v in overrides[trial].items()},
        }
        for trial in sorted(values)
    ]
    sign = -1.0 if direction == "maximize" else 1.0
    best = min(rows, key=lambda r: (sign * r[objective], r["trial"]))  # ties: lowest trial
    for rank, row in enumerate(sorted(rows, key=lambda r: (sign * r[objective], r["trial"])), 1):
        row["rank"] = rank
    out = outputs["best"]
    os.makedirs(out, exist_ok=True)
    write_json(
        os.path.join(out, RESULTS_FILE),
        {"objective": objective, "direction": direction, "trials": rows},
    )
    _write_csv(os.path.join(out, RESULTS_CSV), rows)
    bar_chart(
        os.path.join(out, RESULTS_PLOT),
        {objective: [r[objective] for r in rows]},
        labels=[str(r["trial"]) for r in rows],
        title=f"{len(rows)} trials by {objective} ({direction}; orange: best)",
        highlight=rows.index(best),
    )
    write_json(
        os.path.join(out, BEST_FILE),
        {
            "trial": best["trial"],
            "objective": objective,
            "direction": direction,
            "value": best[objective],
            "overrides": overrides[best["trial"]],
        },
    )
    log.info(
        "best trial %d: %s = %.4f with %s",
        best["trial"],
        objective,
        best[objective],
        json.dumps(overrides[best["trial"]]),
    )
    return {"best_trial": best["trial"], f"best_{objective}": best[objective], "trials": len(rows)}


def _write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
            )
