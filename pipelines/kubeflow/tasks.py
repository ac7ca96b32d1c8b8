"""Thin KFP declarations of kfbatch's component kinds: typed inputs and outputs, no logic.

One function per kind of step, named by the component it runs (:data:`DECLARATIONS`).
Each declares the step's inputs and outputs as typed KFP artifacts, so that the Kubeflow UI
shows datasets, models, metrics and reports, and makes one call into the in-pod launcher
(:func:`pipelines.kubeflow.launch.launch`), which calls the same component function as the
local runner. The compiler turns a declaration into a lightweight component with the project
image as base (``kfp.dsl.component(declaration, base_image=<kubeflow.image>,
install_kfp_package=False)``), renamed after the DAG step.

Rules of the shape, checked by the compiler against each DAG step:

- every step takes ``component`` (the DAG's ``module:function``) and ``params`` (its params
  as JSON), and has a ``metrics`` output (``Metrics``) that receives the numbers the
  component returns;
- an input the DAG reads from another step is an ``Input`` artifact of the same name (an
  ``Input[list[...]]`` when collected from a fan-out); an input the DAG reads from outside
  the pipeline (a :class:`pipelines.dag.Uri`) is a string parameter ``<name>_uri``, set
  from a pipeline parameter;
- every DAG output is an ``Output`` artifact of the same name, or ``<name>_out`` when the
  step also reads an input of that name (KFP keeps inputs and outputs in one namespace);
- a fan-out step takes its fan-out item as a parameter named like the DAG's
  ``FanOut.param``; a step whose params hold the run id placeholder takes ``run_id``.

The function bodies are shipped to the pod as source by kfp, so they import what they use
inside. No ``from __future__ import annotations`` here: kfp reads the annotations as types.
"""

from collections.abc import Callable

from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

__all__ = [
    "CHECKPOINTING",
    "DECLARATIONS",
    "batch_map",
    "batch_map_merge",
    "datagen",
    "etl",
    "etl_uri",
    "evaluate",
    "infer",
    "publish",
    "train",
]


def datagen(component: str, params: str, raw: Output[Dataset], metrics: Output[Metrics]):
    """Generate the demo dataset as CSV."""
    from pipelines.kubeflow.launch import launch

    launch(component, params, inputs={}, outputs={"raw": raw}, metrics=metrics)


def etl(
    component: str,
    params: str,
    source: Input[Dataset],
    dataset: Output[Dataset],
    feature_spec: Output[Artifact],
    scoring: Output[Dataset],
    rejects: Output[Dataset],
    quality: Output[Artifact],
    metrics: Output[Metrics],
    quality_report: Output[Markdown],
):
    """Extract, check quality, quarantine bad rows, split; fit the feature spec."""
    from pipelines.kubeflow.launch import launch, publish_markdown

    outputs = {
        "dataset": dataset,
        "feature_spec": feature_spec,
        "scoring": scoring,
        "rejects": rejects,
        "quality": quality,
    }
    inputs = {"source": source}
    launch(component, params, inputs=inputs, outputs=outputs, metrics=metrics)
    publish_markdown(quality_report, quality.path, "quality.md", "data quality")


def etl_uri(
    component: str,
    params: str,
    source_uri: str,
    dataset: Output[Dataset],
    feature_spec: Output[Artifact],
    scoring: Output[Dataset],
    rejects: Output[Dataset],
    quality: Output[Artifact],
    metrics: Output[Metrics],
    quality_report: Output[Markdown],
):
    """Like ``etl``, reading the source from a URI (a pipeline parameter)."""
    from pipelines.kubeflow.launch import launch, publish_markdown

    outputs = {
        "dataset": dataset,
        "feature_spec": feature_spec,
        "scoring": scoring,
        "rejects": rejects,
        "quality": quality,
    }
    inputs = {"source": source_uri}
    launch(component, params, inputs=inputs, outputs=outputs, metrics=metrics)
    publish_markdown(quality_report, quality.path, "quality.md", "data quality")


def train(
    component: str,
    params: str,
    dataset: Input[Dataset],
    feature_spec: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train the model on the train split; validation metrics along the way."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"dataset": dataset, "feature_spec": feature_spec},
        outputs={"model": model},
        metrics=metrics,
    )


def evaluate(
    component: str,
    params: str,
    dataset: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Evaluate the trained model on a labelled split: metrics, confusion matrix, report."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"dataset": dataset, "model": model},
        outputs={"metrics": metrics},
        metrics=metrics,
        classification=classification,
        report=report,
    )


def infer(
    component: str,
    params: str,
    shard: int,
    run_id: str,
    scoring: Input[Dataset],
    model: Input[Model],
    predictions: Output[Dataset],
    metrics: Output[Metrics],
):
    """Score one shard of the scoring set."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"scoring": scoring, "model": model},
        outputs={"predictions": predictions},
        metrics=metrics,
        overrides={"shard": shard},
        run_id=run_id,
    )


def publish(
    component: str,
    params: str,
    predictions: Input[list[Dataset]],
    scoring: Input[Dataset],
    predictions_out: Output[Dataset],
    metrics: Output[Metrics],
):
    """Collect every shard's predictions; check one prediction per scoring row."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"predictions": predictions, "scoring": scoring},
        outputs={"predictions": predictions_out},
        metrics=metrics,
    )


def batch_map(
    component: str,
    params: str,
    shard: int,
    scoring: Input[Dataset],
    mapped: Output[Dataset],
    metrics: Output[Metrics],
):
    """Apply the batch_map function to one scoring shard."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"scoring": scoring},
        outputs={"mapped": mapped},
        metrics=metrics,
        overrides={"shard": shard},
    )


def batch_map_merge(
    component: str,
    params: str,
    mapped: Input[list[Dataset]],
    dataset: Output[Dataset],
    metrics: Output[Metrics],
):
    """Collect every shard's batch_map output into one dataset."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"mapped": mapped},
        outputs={"dataset": dataset},
        metrics=metrics,
    )


#: The declarations that can run each component, tried in order; the compiler takes the
#: first whose interface matches the DAG step.
DECLARATIONS: dict[str, tuple[Callable[..., None], ...]] = {
    "components.datagen:run": (datagen,),
    "components.etl:run": (etl, etl_uri),
    "components.batch_map:run": (batch_map,),
    "components.batch_map:merge": (batch_map_merge,),
    "components.train:run": (train,),
    "components.evaluate:run": (evaluate,),
    "components.infer:run": (infer,),
    "components.publish:run": (publish,),
}

#: Components that keep checkpoints: their tasks mount ``kubeflow.checkpoint_pvc``.
CHECKPOINTING = frozenset({"components.train:run"})
