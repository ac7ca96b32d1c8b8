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
  ``FanOut.param``; a step whose params hold the run id placeholder takes ``run_id``, and
  one whose params hold the run date placeholder takes ``run_date``.

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

#: Rule added for the evaluation gate: a step that gates what follows returns a ``bool``
#: output parameter; the compiler puts every step downstream of it under ``dsl.If``.

__all__ = [
    "CHECKPOINTING",
    "DECLARATIONS",
    "GATES",
    "batch_map",
    "batch_map_merge",
    "cv_aggregate",
    "datagen",
    "etl",
    "etl_uri",
    "evaluate",
    "gate",
    "infer",
    "infer_model_uri",
    "infer_uri",
    "publish",
    "publish_uri",
    "train",
    "train_tuned",
    "train_variant",
    "tune_select",
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
    from pipelines.kubeflow.launch import launch, publish_quality

    outputs = {
        "dataset": dataset,
        "feature_spec": feature_spec,
        "scoring": scoring,
        "rejects": rejects,
        "quality": quality,
    }
    inputs = {"source": source}
    launch(component, params, inputs=inputs, outputs=outputs, metrics=metrics)
    publish_quality(quality_report, quality.path)


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
    from pipelines.kubeflow.launch import launch, publish_quality

    outputs = {
        "dataset": dataset,
        "feature_spec": feature_spec,
        "scoring": scoring,
        "rejects": rejects,
        "quality": quality,
    }
    inputs = {"source": source_uri}
    launch(component, params, inputs=inputs, outputs=outputs, metrics=metrics)
    publish_quality(quality_report, quality.path)


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


def train_variant(
    component: str,
    params: str,
    variant: dict,
    dataset: Input[Dataset],
    feature_spec: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train one cross-validation fold or tuning trial (the fan-out item ``variant``)."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"dataset": dataset, "feature_spec": feature_spec},
        outputs={"model": model},
        metrics=metrics,
        overrides={"variant": variant},
    )


def train_tuned(
    component: str,
    params: str,
    dataset: Input[Dataset],
    feature_spec: Input[Artifact],
    best: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train the final model with the best tuning trial's hyperparameters."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"dataset": dataset, "feature_spec": feature_spec, "best": best},
        outputs={"model": model},
        metrics=metrics,
    )


def cv_aggregate(
    component: str,
    params: str,
    models: Input[list[Model]],
    report: Output[Artifact],
    metrics: Output[Metrics],
):
    """Mean and standard deviation of every fold's validation metrics, and a plot."""
    from pipelines.kubeflow.launch import launch

    launch(
        component, params, inputs={"models": models}, outputs={"report": report}, metrics=metrics
    )


def tune_select(
    component: str,
    params: str,
    models: Input[list[Model]],
    best: Output[Artifact],
    metrics: Output[Metrics],
):
    """Rank the tuning trials by the objective; write the results table and the best trial."""
    from pipelines.kubeflow.launch import launch

    launch(component, params, inputs={"models": models}, outputs={"best": best}, metrics=metrics)


def gate(
    component: str,
    params: str,
    evaluation: Input[Metrics],
    model: Input[Model],
    model_out: Output[Model],
    metrics: Output[Metrics],
) -> bool:
    """Whether the evaluated model may go on to inference (the compiler branches on it)."""
    from pipelines.kubeflow.launch import launch

    results = launch(
        component,
        params,
        inputs={"evaluation": evaluation, "model": model},
        outputs={"model": model_out},
        metrics=metrics,
        overrides={"raise_when_closed": False},
    )
    return bool(results["passed"])


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


def infer_model_uri(
    component: str,
    params: str,
    shard: int,
    run_id: str,
    scoring: Input[Dataset],
    model_uri: str,
    predictions: Output[Dataset],
    metrics: Output[Metrics],
):
    """Score one shard of the scoring set with an existing model artifact."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"scoring": scoring, "model": model_uri},
        outputs={"predictions": predictions},
        metrics=metrics,
        overrides={"shard": shard},
        run_id=run_id,
    )


def infer_uri(
    component: str,
    params: str,
    shard: int,
    run_id: str,
    scoring_uri: str,
    model_uri: str,
    predictions: Output[Dataset],
    metrics: Output[Metrics],
):
    """Score one shard of external data with an existing model artifact (scoring only)."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"scoring": scoring_uri, "model": model_uri},
        outputs={"predictions": predictions},
        metrics=metrics,
        overrides={"shard": shard},
        run_id=run_id,
    )


def publish(
    component: str,
    params: str,
    run_id: str,
    run_date: str,
    predictions: Input[list[Dataset]],
    scoring: Input[Dataset],
    predictions_out: Output[Dataset],
    metrics: Output[Metrics],
):
    """Check one prediction per scoring row; publish the dataset and the lookup store."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"predictions": predictions, "scoring": scoring},
        outputs={"predictions": predictions_out},
        metrics=metrics,
        run_id=run_id,
        run_date=run_date,
    )


def publish_uri(
    component: str,
    params: str,
    run_id: str,
    run_date: str,
    predictions: Input[list[Dataset]],
    scoring_uri: str,
    predictions_out: Output[Dataset],
    metrics: Output[Metrics],
):
    """Check one prediction per row of external data; publish dataset and lookup store."""
    from pipelines.kubeflow.launch import launch

    launch(
        component,
        params,
        inputs={"predictions": predictions, "scoring": scoring_uri},
        outputs={"predictions": predictions_out},
        metrics=metrics,
        run_id=run_id,
        run_date=run_date,
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
    "components.train:run": (train, train_variant, train_tuned),
    "components.cv:run": (cv_aggregate,),
    "components.tune:run": (tune_select,),
    "components.evaluate:run": (evaluate,),
    "components.evaluate:gate": (gate,),
    "components.infer:run": (infer, infer_model_uri, infer_uri),
    "components.publish:run": (publish, publish_uri),
}

#: Components whose ``bool`` result gates the steps downstream of them (``dsl.If``).
GATES = frozenset({"components.evaluate:gate"})

#: Components that keep checkpoints: their tasks mount ``kubeflow.checkpoint_pvc``.
CHECKPOINTING = frozenset({"components.train:run"})
