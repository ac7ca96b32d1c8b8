"""Typed schema of the kfbatch config tree, registered in Hydra's ConfigStore.

The root dataclass :class:`Config` is the first entry of ``configs/config.yaml``'s defaults
list, so every group file and every override is merged into typed nodes: OmegaConf rejects
wrong types while composing, and :mod:`pipelines.config.validate` checks the rest (unknown
keys added with ``+``, ranges, choices, cross-field rules) from the ``metadata`` of each field.

Field metadata keys: ``ge``/``gt``/``le`` (numeric bounds), ``choices`` (allowed values),
``pattern`` (regular expression for strings) and ``expected`` (how to describe a valid
value in an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = [
    "STAGES",
    "BatchMapConfig",
    "CheckpointConfig",
    "Config",
    "CsvConfig",
    "CvConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "EtlConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "GateConfig",
    "InferenceConfig",
    "KubeflowConfig",
    "ManifestEnv",
    "ManifestsConfig",
    "PublishConfig",
    "PvcMount",
    "QualityConfig",
    "ResourceSpec",
    "ResourcesConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "SplitConfig",
    "StepResources",
    "Toleration",
    "TrainerConfig",
    "TuneConfig",
    "register_schema",
]

#: Stages in pipeline order; ``stages`` in the config selects a subset.
STAGES = ("etl", "batch_map", "train", "evaluate", "infer")
#: The stages a config runs unless it says otherwise.
DEFAULT_STAGES = ("etl", "train", "evaluate", "infer")

#: Kubernetes resource quantity for memory (binary or decimal SI suffix), e.g. 512Mi, 4Gi, 2G.
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
#: DNS-1123 label: the pipeline name becomes Kubernetes and KFP resource names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def knob(default: Any = MISSING, **rules: Any) -> Any:
    """A dataclass field with a default and validation rules kept in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass
class SplitConfig:
    """Fractions of rows per split, assigned by a stable hash of the id column.

    ``stratify`` (classification only) cuts each target class's hashes at the fractions
    separately, so every class gets its share of each split exactly (up to one hash bin).
    """

    train: float = knob(0.7, ge=0.0, le=1.0)
    validation: float = knob(0.15, ge=0.0, le=1.0)
    test: float = knob(0.15, ge=0.0, le=1.0)
    stratify: bool = False


@dataclass
class CsvConfig:
    """CSV parsing options."""

    delimiter: str = knob(",", pattern=r"^.$", expected="a single character")
    quote_char: str | None = knob(
        '"', pattern=r"^.$", expected="a single character, or null to turn quoting off"
    )
    header: bool = True
    column_names: list[str] | None = None
    skip_rows: int = knob(0, ge=0)
    null_values: list[str] | None = None


@dataclass
class DataConfig:
    """Where the raw data comes from and which columns play which role."""

    kind: str = knob("csv", choices=("csv", "synthetic", "sklearn", "signals"))
    uri: str | None = knob(
        None, expected="a file, directory or glob pattern, or an s3://, gs:// or file:// URI"
    )
    format: str = knob("auto", choices=("auto", "csv", "jsonl", "parquet"))
    columns: dict[str, str] = knob({})
    storage_options: dict[str, Any] = knob({})
    rows: int = knob(100_000, ge=1)
    dataset: str = knob("breast_cancer", choices=("breast_cancer",))
    id_column: str | None = None
    target: str = MISSING
    split: SplitConfig = field(default_factory=SplitConfig)
    csv: CsvConfig = field(default_factory=CsvConfig)
    batch_rows: int = knob(32_768, ge=1024)
    sample_rows: int | None = knob(None, ge=1, expected="a row count >= 1, or null for all rows")
    task: str = knob("binary", choices=("binary", "multiclass", "regression"))


@dataclass
class FeaturesConfig:
    """Column roles (``null`` = inferred from the data types) and encoding limits."""

    numeric: list[str] | None = None
    categorical: list[str] | None = None
    timestamp: list[str] | None = None
    drop: list[str] = knob([])
    max_categories: int = knob(20, ge=1)
    encoding: str = knob("onehot", choices=("onehot", "index"))
    scaling: str = knob("standard", choices=("standard", "minmax", "none"))
    select: list[str] | None = None
    rename: dict[str, str] = knob({})
    derive: dict[str, str] = knob({})
    timestamp_parts: dict[str, list[str]] = knob({})
    fill: dict[str, Any] = knob({})
    clip: dict[str, list[Any]] = knob({})
    drop_nulls: list[str] = knob([])
    transforms: list[dict[str, Any]] = knob([])


@dataclass
class EtlConfig:
    """How strict ETL is about unreadable rows."""

    max_reject_fraction: float = knob(
        0.0, ge=0.0, le=1.0, expected="a fraction of input rows in [0, 1]"
    )


@dataclass
class QualityConfig:
    """Data-quality checks (see components/quality.py) and the drift reference."""

    checks: list[dict[str, Any]] = knob([])
    reference: str | None = knob(
        None, expected="a feature_spec directory (from an earlier etl run) for drift checks"
    )


@dataclass
class BatchMapConfig:
    """A user function applied to every etl scoring shard in parallel, then merged.

    ``function`` holds ``_target_`` (the import path of ``f(batch, **kwargs) -> batch``) and
    its keyword arguments.
    """

    function: dict[str, Any] = knob({})
    columns: list[str] | None = None
    parallelism: int = knob(2, ge=1)
    batch_rows: int = knob(8192, ge=1)


@dataclass
class CheckpointConfig:
    """Where and how often training writes its resumable state."""

    dir: str | None = knob(None, expected="a directory path (null: no checkpoints)")
    every_n_steps: int = knob(500, ge=0, expected="optimizer steps >= 0 (0 = epoch ends only)")
    keep: int = knob(3, ge=1)


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation ``metric`` has not improved for ``patience`` epochs."""

    metric: str | None = knob(None, expected="a validation metric such as val_loss, or null")
    mode: str = knob("min", choices=("min", "max"))
    patience: int = knob(3, ge=1)
    min_delta: float = knob(0.0, ge=0.0)


@dataclass
class TrainerConfig:
    """Optimisation, distribution and checkpoint settings of the training step."""

    epochs: int = knob(5, ge=1)
    batch_size: int = knob(512, ge=1)
    lr: float = knob(1e-3, gt=0.0)
    weight_decay: float = knob(0.0, ge=0.0)
    optimizer: str = knob("adamw", choices=("adam", "adamw", "sgd"))
    momentum: float = knob(0.9, ge=0.0, le=1.0)
    schedule: str = knob("constant", choices=("constant", "cosine", "linear", "step"))
    warmup_steps: int = knob(0, ge=0)
    step_size_epochs: int = knob(1, ge=1)
    gamma: float = knob(0.5, gt=0.0, le=1.0)
    grad_clip: float = knob(0.0, ge=0.0, expected="a max gradient norm >= 0 (0 = off)")
    accumulate: int = knob(1, ge=1)
    precision: str = knob("fp32", choices=("fp32", "bf16", "fp16"))
    device: str = knob("auto", choices=("auto", "cpu", "cuda"))
    strategy: str = knob("ddp", choices=("ddp", "fsdp"))
    nodes: int = knob(1, ge=1)
    procs_per_node: int = knob(1, ge=1)
    shuffle_buffer_rows: int = knob(262_144, ge=1)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class CvConfig:
    """K-fold cross-validation of the train split, one training step per fold."""

    enabled: bool = False
    folds: int = knob(5, ge=2)
    stratify: bool = True
    group_column: str | None = None
    parallelism: int = knob(2, ge=1)


@dataclass
class TuneConfig:
    """Hyperparameter search settings; ``space`` uses Hydra's sweep grammar per key."""

    enabled: bool = False
    search: str = knob("random", choices=("random", "grid"))
    n_trials: int = knob(8, ge=1)
    parallelism: int = knob(2, ge=1)
    objective: str = "val_roc_auc"
    direction: str = knob("maximize", choices=("maximize", "minimize"))
    cv: bool = False
    seed: int | None = knob(None, ge=0, expected="a seed >= 0, or null for the top-level seed")
    space: dict[str, str] = knob({})


@dataclass
class GateConfig:
    """Stop before inference unless the test ``metric`` is at least ``min`` / at most ``max``."""

    metric: str | None = knob(None, expected="a test metric such as roc_auc, or null (no gate)")
    min: float | None = None
    max: float | None = None


@dataclass
class EvaluateConfig:
    """Test-split evaluation and the optional quality gate in front of inference."""

    split: str = knob("test", choices=("test", "validation"))
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class InferenceConfig:
    """Sharded batch scoring: ``shards`` fan-out branches, ``parallelism`` at a time.

    ``model_uri``/``data_uri`` score data with an existing model artifact without the
    etl/train stages (``stages=[infer]``); ``batch_size`` is rows or ``auto``.
    """

    shards: int = knob(4, ge=1, le=1024)
    parallelism: int = knob(2, ge=1)
    batch_size: Any = knob(4096, expected="a row count >= 1, or auto")
    memory_cap_mb: int = knob(256, ge=1)
    threshold: float = knob(0.5, ge=0.0, le=1.0)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"))
    optimize: list[str] = knob([])
    tolerance: float = knob(0.01, ge=0.0)
    model_uri: str | None = knob(
        None, expected="a model artifact directory (a train output), a path or s3://, gs:// URI"
    )
    data_uri: str | None = knob(
        None,
        expected="an etl scoring set, or a CSV, JSON Lines or Parquet file, directory or glob "
        "to score, a path or s3://, gs://, file:// URI",
    )


@dataclass
class PublishConfig:
    """Where verified predictions go: a versioned dataset and a lookup store."""

    destination: str | None = knob(
        None, expected="a folder for versioned predictions datasets, or null"
    )
    partition_by: str = knob("run_date", choices=("run_date", "run_id"))
    retention: int = knob(3, ge=1)
    store_url: str | None = knob(None, expected="a SQLAlchemy URL such as sqlite:///p.db, or null")


@dataclass
class Toleration:
    """A Kubernetes toleration for the step's pods."""

    key: str = MISSING
    operator: str = knob("Equal", choices=("Equal", "Exists"))
    value: str | None = None
    effect: str | None = knob(None, choices=(None, "NoSchedule", "PreferNoSchedule", "NoExecute"))


@dataclass
class ResourceSpec:
    """What a step requests; unset fields (``null``) inherit from ``resources.default``."""

    cpu: float | None = knob(None, gt=0.0, expected="a CPU count > 0 such as 0.5 or 2")
    memory: str | None = knob(
        None, pattern=MEMORY_PATTERN, expected="a Kubernetes quantity such as 512Mi or 4Gi"
    )
    gpu: int | None = knob(None, ge=0)
    accelerator: str | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None


@dataclass
class StepResources:
    """Overrides per DAG step (a fan-out step's values apply to each of its branches)."""

    datagen: ResourceSpec = field(default_factory=ResourceSpec)
    etl: ResourceSpec = field(default_factory=ResourceSpec)
    batch_map: ResourceSpec = field(default_factory=ResourceSpec)
    batch_map_merge: ResourceSpec = field(default_factory=ResourceSpec)
    train: ResourceSpec = field(default_factory=ResourceSpec)
    cv_train: ResourceSpec = field(default_factory=ResourceSpec)
    cv_aggregate: ResourceSpec = field(default_factory=ResourceSpec)
    tune_trial: ResourceSpec = field(default_factory=ResourceSpec)
    tune_select: ResourceSpec = field(default_factory=ResourceSpec)
    evaluate: ResourceSpec = field(default_factory=ResourceSpec)
    gate: ResourceSpec = field(default_factory=ResourceSpec)
    infer: ResourceSpec = field(default_factory=ResourceSpec)
    publish: ResourceSpec = field(default_factory=ResourceSpec)


@dataclass
class ResourcesConfig:
    """Per-step resources: ``default`` for every step, ``steps.<name>`` to override."""

    default: ResourceSpec = field(
        default_factory=lambda: ResourceSpec(cpu=1.0, memory="2Gi", gpu=0)
    )
    steps: StepResources = field(default_factory=StepResources)


@dataclass
class RuntimeConfig:
    """How and where the local runner executes the DAG."""

    runs_dir: str = "runs"
    cache_dir: str = "${runtime.runs_dir}/.cache"
    cache: bool = True
    retries: int = knob(1, ge=0, le=20)
    retry_backoff_s: float = knob(1.0, ge=0.0)
    step_timeout_s: float = knob(0.0, ge=0.0, expected="seconds >= 0 (0 = no limit)")
    cpus: float = knob(0.0, ge=0.0, expected="a CPU count >= 0 (0 = all cores)")
    max_parallel: int = knob(0, ge=0, expected="a step count >= 0 (0 = from CPU requests)")
    queue: str | None = knob(
        None, pattern=NAME_PATTERN, expected="a Kueue LocalQueue name (a DNS-1123 label)"
    )


@dataclass
class PvcMount:
    """A PersistentVolumeClaim mounted into a step's pods."""

    claim: str = MISSING
    mount_path: str = knob(MISSING, pattern=r"^/.*", expected="an absolute path such as /data")


@dataclass
class KubeflowConfig:
    """Where and how the pipeline runs on Kubeflow Pipelines (compile, submit, schedule)."""

    host: str | None = knob(
        None, expected="the KFP API URL, e.g. https://kubeflow.example.com/pipeline"
    )
    namespace: str = knob("kubeflow", pattern=NAME_PATTERN, expected="a Kubernetes namespace")
    experiment: str = "${name}"
    image: str = knob(
        "ghcr.io/kfbatch/kfbatch:0.1.0",
        # [registry[:port]/]path[:tag][@sha256:digest]: a port is not a tag.
        pattern=r"^([^\s/@]+/)*[^\s:/@]+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$",
        expected="a container image reference with a tag or digest",
    )
    token_env: str = knob("KFP_TOKEN", expected="the name of an environment variable")
    in_cluster: bool = False
    service_account: str | None = None
    pipeline_root: str | None = None
    caching: bool = True
    training_api: str = knob("trainjob", choices=("trainjob", "pytorchjob"))
    training_runtime: str = "torch-distributed"
    checkpoint_pvc: str | None = knob(None, pattern=NAME_PATTERN, expected="a PVC name")
    checkpoint_mount: str = knob("/checkpoints", pattern=r"^/.*", expected="an absolute path")
    volumes: list[PvcMount] = knob([])
    secrets: dict[str, str] = knob({})


@dataclass
class ScheduleConfig:
    """When the pipeline runs on a cluster (standard 5-field cron, or null for never)."""

    cron: str | None = None  # checked by pipelines.config.cron (KFP needs 6 fields on the wire)
    timezone: str = "UTC"


@dataclass
class ManifestEnv:
    """One deployment environment of ``kfbatch manifests``: what its overlay patches."""

    namespace: str = knob(MISSING, pattern=NAME_PATTERN, expected="a Kubernetes namespace")
    # kfp: Pipeline, PipelineVersion and a submit CronJob; standalone (clusters without
    # Kubeflow Pipelines): a TrainJob or PyTorchJob and an Indexed inference Job.
    target: str = knob("kfp", choices=("kfp", "standalone"))
    image_tag: str | None = knob(
        None,
        pattern=r"^([\w][\w.-]{0,127}|sha256:[0-9a-f]{64})$",
        expected="an image tag such as 0.1.0 or a digest sha256:<64 hex>",
    )
    cron: str | None = None  # standard 5-field cron; null keeps schedule.cron
    storage_class: str | None = None
    queue: str | None = knob(None, pattern=NAME_PATTERN, expected="a Kueue LocalQueue name")
    resources: StepResources = field(default_factory=StepResources)


@dataclass
class ManifestsConfig:
    """The GitOps tree: where it is written, its volumes, and the environments' overlays."""

    dir: str = "manifests"
    data_size: str = knob("10Gi", pattern=MEMORY_PATTERN, expected="a storage quantity")
    checkpoint_size: str = knob("20Gi", pattern=MEMORY_PATTERN, expected="a storage quantity")
    access_mode: str = knob("ReadWriteMany", choices=("ReadWriteOnce", "ReadWriteMany"))
    submitter: ResourceSpec = field(
        default_factory=lambda: ResourceSpec(cpu=0.25, memory="512Mi", gpu=0)
    )
    envs: dict[str, ManifestEnv] = knob({})


@dataclass
class Config:
    """The root of the composed config: one field per group plus top-level knobs."""

    name: str = knob(MISSING, pattern=NAME_PATTERN, expected="a lowercase DNS-1123 label")
    seed: int = knob(42, ge=0)
    run_date: str | None = knob(
        None,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        expected="a date YYYY-MM-DD, or null for the day the run starts (UTC)",
    )
    stages: list[str] = knob(list(DEFAULT_STAGES))
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    etl: EtlConfig = field(default_factory=EtlConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    batch_map: BatchMapConfig = field(default_factory=BatchMapConfig)
    model: dict[str, Any] = knob({})
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cv: CvConfig = field(default_factory=CvConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    manifests: ManifestsConfig = field(default_factory=ManifestsConfig)


def register_schema() -> None:
    """Store the root schema as ``kfbatch_schema`` (named first in ``config.yaml``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="kfbatch_schema", node=Config)
