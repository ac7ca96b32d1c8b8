"""Names shared across layers: one definition each, imported by config, components and backends.

Standard library only, so the torch-free config code, the components and the Kubernetes
backends all import it without pulling anything else in. A name written here is a contract:
an artifact file that one step writes and another step, a backend or the run report reads;
an environment variable that a backend sets and a component reads; a choice that the config
validates and a component acts on.
"""

from __future__ import annotations

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_DIR_ENV",
    "CV_FILE",
    "DAG_FILE",
    "DISTRIBUTED_ENV",
    "FEATURE_SPEC_FILE",
    "GATE_FILE",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "MODEL_META_FILE",
    "MODEL_WEIGHTS_FILE",
    "OPTIMIZATIONS",
    "QUALITY_JSON",
    "QUALITY_MARKDOWN",
    "REJECTS_FILE",
    "REPORT_FILE",
    "RUN_CONFIG_FILE",
    "RUN_ID_ENV",
    "RUN_MANIFEST_FILE",
    "SPLITS",
    "SPLIT_TEST",
    "SPLIT_TRAIN",
    "SPLIT_VALIDATION",
    "STEP_ENV",
    "TASKS",
    "TEST_METRICS",
    "VALIDATION_METRICS",
    "part_file",
    "shard_file",
    "shard_marker_file",
    "shard_rejects_file",
]

# -- choices ----------------------------------------------------------------------------------

#: The dataset splits etl writes, in order; ``data.split`` sets their fractions.
SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_TEST = "train", "validation", "test"
SPLITS = (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_TEST)
#: What a model predicts (``data.task``): the loss, the metrics and the model's outputs.
TASKS = ("binary", "multiclass", "regression")
#: Metrics the evaluate step reports per task (what ``evaluate.gate.metric`` may name).
TEST_METRICS = {
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"),
    "multiclass": ("accuracy", "f1", "f1_macro", "f1_weighted", "roc_auc", "log_loss"),
    "regression": ("mae", "rmse", "r2"),
}
#: Validation metrics the train step reports per task (what tuning and early stopping use).
VALIDATION_METRICS = {
    "binary": ("val_loss", "val_roc_auc", "val_accuracy"),
    "multiclass": ("val_loss", "val_accuracy", "val_f1_macro"),
    "regression": ("val_loss", "val_rmse", "val_mae", "val_r2"),
}
#: What ``inference.optimize`` may list, in the order they are applied.
OPTIMIZATIONS = ("quantize", "torchscript", "compile")

# -- artifact files ---------------------------------------------------------------------------

#: A dataset folder's manifest (parts, rows, digests), written last: its presence commits it.
MANIFEST_FILE = "_manifest.json"
#: The fitted feature spec inside etl's ``feature_spec`` output.
FEATURE_SPEC_FILE = "feature_spec.json"
#: Quarantined rows inside etl's ``rejects`` output.
REJECTS_FILE = "rejects.parquet"
#: The quality report inside etl's ``quality`` output, as data and as Markdown.
QUALITY_JSON = "quality.json"
QUALITY_MARKDOWN = "quality.md"
#: A model artifact: the weights, and the metadata written last (version, task, classes).
MODEL_WEIGHTS_FILE = "model.pt"
MODEL_META_FILE = "model.json"
#: The evaluate step's metrics and the gate's decision.
METRICS_FILE = "metrics.json"
GATE_FILE = "gate.json"
#: Cross-validation's aggregate and tuning's pick.
CV_FILE = "cv.json"
BEST_FILE = "best.json"

# -- a local run's folder ---------------------------------------------------------------------

#: ``runs/<run-id>/``: the run manifest (status, timings, digests), the DAG, the composed
#: config and the HTML report.
RUN_MANIFEST_FILE = "manifest.json"
DAG_FILE = "dag.json"
RUN_CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.html"

# -- environment variables --------------------------------------------------------------------

#: The run's id (local run id or KFP run id), set by every backend for the step's process.
RUN_ID_ENV = "KFBATCH_RUN_ID"
#: The DAG step a process runs, set by every backend (logs, tracing).
STEP_ENV = "KFBATCH_STEP"
#: Overrides ``trainer.checkpoint.dir`` (a backend points it at durable storage).
CHECKPOINT_DIR_ENV = "KFBATCH_CHECKPOINT_DIR"
#: Set on a KFP training task that must run as a multi-node Kubeflow Trainer job.
DISTRIBUTED_ENV = "KFBATCH_DISTRIBUTED"


# -- numbered files ---------------------------------------------------------------------------


def shard_file(shard: int) -> str:
    """Scoring shard ``shard`` of an etl scoring set."""
    return f"shard-{shard:05d}.parquet"


def part_file(index: int) -> str:
    """Part ``index`` of a dataset folder (a split, a shard's predictions, a mapped shard)."""
    return f"part-{index:05d}.parquet"


def shard_marker_file(shard: int) -> str:
    """The commit marker of a scored shard, written after its predictions file."""
    return f"_shard-{shard:05d}.json"


def shard_rejects_file(shard: int) -> str:
    """Rows a scored shard could not read, quarantined beside its predictions."""
    return f"_rejects-{shard:05d}.parquet"
