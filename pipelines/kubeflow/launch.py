"""The in-pod launcher: runs one kfbatch component inside a KFP task.

Every task of a compiled pipeline executes a thin declaration from
:mod:`pipelines.kubeflow.tasks`, whose body is one call to :func:`launch`. The launcher
does what the local runner's worker does, against KFP artifacts instead of cache folders:

- maps input artifacts to the component's ``inputs`` dict (an artifact's local ``path``, a
  list of paths for a collected fan-out, or a URI string passed as a pipeline parameter)
  and output artifacts to its ``outputs`` dict (the component creates a directory at each
  artifact's ``path``; KFP uploads it after the task);
- decodes the step's params (canonical JSON written by the compiler), merges the fan-out
  item, and substitutes :data:`RUN_ID_TOKEN` (the compiler's stand-in for
  :data:`pipelines.dag.RUN_ID`) with the KFP run id;
- limits compute threads to the pod's CPU quota and, where the step has a run id, sets
  ``KFBATCH_RUN_ID`` as the local worker does (the compiler sets ``KFBATCH_STEP``);
- calls ``module:function`` (the DAG step's component) — or, when the compiler set
  ``KFBATCH_DISTRIBUTED`` (``trainer.nodes > 1``), runs it as a multi-node Kubeflow Trainer
  job through :func:`pipelines.kubeflow.trainjob.stage.run_distributed` — and turns what it
  returns and writes into what the Kubeflow UI shows: scalar metrics on a ``Metrics``
  artifact, model metadata (version, framework) on ``Model`` artifacts, and for evaluation
  a confusion matrix (and a ROC curve when the evaluation writes one) on
  ``ClassificationMetrics`` and a Markdown
  report carrying the ``display_name`` custom property the UI needs to render it.

It imports nothing heavy itself: the component pulls in torch or pyarrow when it needs them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from kfp.dsl import Artifact, ClassificationMetrics, Markdown, Metrics, Model

from components.names import (
    DISTRIBUTED_ENV,
    METRICS_FILE,
    MODEL_META_FILE,
    QUALITY_MARKDOWN,
    RUN_ID_ENV,
)
from pipelines.execution import limit_threads, load_component, substitute

__all__ = [
    "RUN_DATE_TOKEN",
    "RUN_ID_TOKEN",
    "describe_model",
    "launch",
    "log_evaluation",
    "log_scalars",
    "publish_quality",
    "resolve_params",
]

log = logging.getLogger("kfbatch.launch")

#: What the component's ``inputs`` values may be given as.
InputValue = Artifact | Sequence[Artifact] | str

#: Stands for :data:`pipelines.dag.RUN_ID` in compiled params: Argo, which runs KFP
#: pipelines, would try to resolve the braces of ``{{kfbatch.run_id}}`` as its own variable.
RUN_ID_TOKEN = "@kfbatch.run_id@"
#: Stands for :data:`pipelines.dag.RUN_DATE` in compiled params, for the same reason.
RUN_DATE_TOKEN = "@kfbatch.run_date@"

REPORT_DISPLAY_NAME = "evaluation report"
CLASS_NAMES = ["negative (0)", "positive (1)"]


def launch(
    component: str,
    params: str,
    *,
    inputs: Mapping[str, InputValue],
    outputs: Mapping[str, Artifact],
    metrics: Metrics,
    overrides: Mapping[str, Any] | None = None,
    run_id: str = "",
    run_date: str = "",
    classification: ClassificationMetrics | None = None,
    report: Markdown | None = None,
) -> dict[str, Any]:
    """Run ``component`` on KFP artifacts and record its results for the Kubeflow UI.

    Args:
        component: ``module:function`` of the DAG step, e.g. ``components.etl:run``.
        params: The step's params as JSON (written by the compiler).
        inputs: The component's inputs: artifacts, lists of artifacts (collected from a
            fan-out) or URI strings.
        outputs: Output artifacts by the component's output names; the component creates
            a directory at each ``path``.
        metrics: Receives every finite numeric value the component returns.
        overrides: Params set per task, such as a fan-out branch's item.
        run_id: The KFP run id, substituted for :data:`RUN_ID_TOKEN` in params.
        run_date: The ``run_date`` pipeline parameter, substituted for
            :data:`RUN_DATE_TOKEN`; empty means today (UTC).
        classification: For evaluation: receives the confusion matrix (and ROC curve)
            from ``metrics.json`` in the ``metrics`` output, which the component writes.
        report: For evaluation: receives a Markdown summary of the same file.

    Returns:
        What the component returned.
    """
    _setup_logging()
    resolved = resolve_params(params, overrides=overrides, run_id=run_id, run_date=run_date)
    paths_in = {name: _input_path(value) for name, value in inputs.items()}
    paths_out = {name: artifact.path for name, artifact in outputs.items()}
    if run_id:
        os.environ[RUN_ID_ENV] = run_id
    threads = _cpu_quota()
    log.info("%s: inputs %s, outputs %s, threads %s", component, paths_in, paths_out, threads)
    if distributed := os.environ.get(DISTRIBUTED_ENV):  # trainer.nodes > 1: a TrainJob trains
        from pipelines.kubeflow.trainjob.stage import run_distributed

        results = run_distributed(
            distributed,
            component=component,
            params=resolved,
            inputs=paths_in,
            outputs=paths_out,
            run_id=run_id or os.environ.get(RUN_ID_ENV, ""),
        )
    else:
        function = load_component(component)
        limit_threads(threads)
        results = dict(function(paths_in, resolved, paths_out) or {})
    log_scalars(metrics, results)
    for artifact in outputs.values():
        if isinstance(artifact, Model):
            describe_model(artifact)
    if classification is not None or report is not None:
        log_evaluation(outputs["metrics"].path, classification=classification, report=report)
    log.info("%s: done: %s", component, results)
    return results


def resolve_params(
    params: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    run_id: str = "",
    run_date: str = "",
) -> dict[str, Any]:
    """Decode the step's JSON params, apply per-task overrides, substitute run id and date.

    Raises:
        ValueError: params mention :data:`RUN_ID_TOKEN` but no run id was given.
    """
    resolved = {**json.loads(params), **(overrides or {})}
    if not run_id and RUN_ID_TOKEN in json.dumps(resolved):
        raise ValueError(
            f"the params of this step use the run id placeholder {RUN_ID_TOKEN!r} but the "
            "task was given no run_id; recompile the pipeline with this kfbatch version"
        )
    dated = substitute(resolved, RUN_DATE_TOKEN, run_date or datetime.now(UTC).date().isoformat())
    return substitute(dated, RUN_ID_TOKEN, run_id)


def log_scalars(metrics: Metrics, values: Mapping[str, Any]) -> None:
    """Log the finite numbers of ``values`` (sorted by name) as scalar metrics."""
    for name in sorted(values):
        value = values[name]
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics.log_metric(name, value)


def describe_model(model: Model) -> None:
    """Copy version, framework and training facts from ``model.json`` into the metadata."""
    meta_path = os.path.join(model.path, MODEL_META_FILE)
    if not os.path.isfile(meta_path):
        return
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    model.metadata.update(
        {
            "version": meta.get("version"),
            "framework": "pytorch",
            "framework_version": _version_of("torch"),
            "model": (meta.get("model") or {}).get("_target_"),
            "target": meta.get("target"),
            "input_dim": meta.get("input_dim"),
            "feature_spec_version": meta.get("feature_spec_version"),
        }
    )
    for name, value in sorted((meta.get("metrics") or {}).items()):
        if isinstance(value, (int, float)) and math.isfinite(value):
            model.metadata[name] = value


def log_evaluation(
    metrics_dir: str,
    *,
    classification: ClassificationMetrics | None = None,
    report: Markdown | None = None,
) -> None:
    """Show an evaluation's ``metrics.json`` as UI artifacts.

    The confusion matrix (``[[tn, fp], [fn, tp]]``) goes to ``classification``, as does a
    ROC curve when the file has ``roc_curve: {fpr, tpr, thresholds}``; ``report`` gets a
    Markdown table of every value and the ``display_name`` the UI needs to render it.
    """
    with open(os.path.join(metrics_dir, METRICS_FILE), encoding="utf-8") as f:
        evaluation = json.load(f)
    matrix = evaluation.get("confusion_matrix")
    roc = evaluation.get("roc_curve")
    if classification is not None:
        if matrix is not None:
            classes = evaluation.get("classes") or []
            names = CLASS_NAMES if len(classes) == 2 or not classes else [str(c) for c in classes]
            classification.log_confusion_matrix(names, matrix)
        if roc:
            thresholds = [_finite(t) for t in roc["thresholds"]]
            classification.log_roc_curve(roc["fpr"], roc["tpr"], thresholds)
    if report is not None:
        with open(report.path, "w", encoding="utf-8") as f:
            f.write(_markdown(evaluation))
        report.metadata["display_name"] = REPORT_DISPLAY_NAME


def publish_quality(report: Markdown, quality_dir: str) -> None:
    """Copy the etl step's Markdown quality report (in ``quality_dir``) into ``report``.

    The Kubeflow UI renders a Markdown artifact only with a ``display_name`` property.
    """
    with open(os.path.join(quality_dir, QUALITY_MARKDOWN), encoding="utf-8") as f:
        text = f.read()
    with open(report.path, "w", encoding="utf-8") as f:
        f.write(text)
    report.metadata["display_name"] = "data quality"


def _markdown(evaluation: Mapping[str, Any]) -> str:
    scalars = {
        k: v
        for k, v in evaluation.items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool)
    }
    lines = [
        f"# Evaluation on the {evaluation.get('split', '?')} split",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| {k} | {_fmt(v)} |" for k, v in scalars.items()),
    ]
    matrix = evaluation.get("confusion_matrix")
    if matrix is not None:
        names = [str(c) for c in evaluation.get("classes") or range(len(matrix))]
        lines += [
            "",
            "## Confusion matrix (rows: actual, columns: predicted)",
            "",
            "| | " + " | ".join(f"predicted {n}" for n in names) + " |",
            "| --- " * (len(names) + 1) + "|",
            *(
                f"| actual {n} | " + " | ".join(str(v) for v in row) + " |"
                for n, row in zip(names, matrix, strict=True)
            ),
        ]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _finite(value: float) -> float:
    """sklearn's first ROC threshold is +inf, which JSON metadata cannot hold: clamp it."""
    return min(max(float(value), -1e300), 1e300)


def _input_path(value: InputValue) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, Artifact):
        return value.path
    return [artifact.path for artifact in value]


def _cpu_quota(cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """CPUs the container may use (its cgroup v2 or v1 CPU limit, rounded up), or None."""
    try:
        with open(os.path.join(cgroup_root, "cpu.max"), encoding="ascii") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        try:
            with open(os.path.join(cgroup_root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as f:
                quota = f.read().strip()
            with open(os.path.join(cgroup_root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as f:
                period = f.read().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def _version_of(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _setup_logging() -> None:
    """Log to stderr (the pod's log) unless the process already configured logging."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
