"""Schema of where and how steps run: ``resources``, ``runtime``, ``kubeflow``, ``schedule``,
``manifests``."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pipelines.config.schema.knobs import MEMORY_PATTERN, NAME_PATTERN, SUBDOMAIN_PATTERN, knob

__all__ = [
    "KubeflowConfig",
    "ManifestEnv",
    "ManifestsConfig",
    "PvcMount",
    "ResourceSpec",
    "ResourcesConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "StepResources",
    "Toleration",
]


@dataclass
class Toleration:
    """A Kubernetes toleration for the step's pods."""

    key: str = knob(MISSING, check="name")
    operator: str = knob("Equal", choices=("Equal", "Exists"))
    value: str | None = None
    effect: str | None = knob(None, choices=(None, "NoSchedule", "PreferNoSchedule", "NoExecute"))


@dataclass
class ResourceSpec:
    """What a step requests; unset fields (``null``) inherit from ``resources.default``."""

    cpu: float | None = knob(None, gt=0.0, expected="a CPU count > 0 such as 0.5 or 2")
    memory: str | None = knob(
        None,
        pattern=MEMORY_PATTERN,
        check="positive_quantity",
        expected="a Kubernetes quantity such as 512Mi or 4Gi",
    )
    gpu: int | None = knob(None, ge=0)
    accelerator: str | None = knob(None, check="name")
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

    runs_dir: str = knob("runs", check="data_location")
    cache_dir: str = knob("${runtime.runs_dir}/.cache", check="data_location")
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

    claim: str = knob(MISSING, pattern=SUBDOMAIN_PATTERN, expected="a PVC name")
    mount_path: str = knob(MISSING, pattern=r"^/.*", expected="an absolute path such as /data")


@dataclass
class KubeflowConfig:
    """Where and how the pipeline runs on Kubeflow Pipelines (compile, submit, schedule)."""

    host: str | None = knob(
        None,
        check="http_url",
        expected="the KFP API URL, e.g. https://kubeflow.example.com/pipeline",
    )
    namespace: str = knob("kubeflow", pattern=NAME_PATTERN, expected="a Kubernetes namespace")
    experiment: str = knob("${name}", check="name")
    image: str = knob(
        "ghcr.io/kfbatch/kfbatch:0.1.0",
        # [registry[:port]/]path[:tag][@sha256:digest]: a port is not a tag.
        pattern=r"^([^\s/@]+/)*[^\s:/@]+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$",
        expected="a container image reference with a tag or digest",
    )
    token_env: str = knob("KFP_TOKEN", check="env_name")
    in_cluster: bool = False
    service_account: str | None = knob(
        None, pattern=SUBDOMAIN_PATTERN, expected="a Kubernetes ServiceAccount name"
    )
    pipeline_root: str | None = knob(None, check="pipeline_root")
    caching: bool = True
    training_api: str = knob("trainjob", choices=("trainjob", "pytorchjob"))
    training_runtime: str = knob(
        "torch-distributed", pattern=SUBDOMAIN_PATTERN, expected="a ClusterTrainingRuntime name"
    )
    checkpoint_pvc: str | None = knob(None, pattern=NAME_PATTERN, expected="a PVC name")
    checkpoint_mount: str = knob("/checkpoints", pattern=r"^/.*", expected="an absolute path")
    volumes: list[PvcMount] = knob([])
    secrets: dict[str, str] = knob({})


@dataclass
class ScheduleConfig:
    """When the pipeline runs on a cluster (standard 5-field cron, or null for never)."""

    cron: str | None = None  # checked by pipelines.config.cron (KFP needs 6 fields on the wire)
    timezone: str = knob("UTC", check="timezone")


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

    dir: str = knob("manifests", check="name")
    data_size: str = knob(
        "10Gi", pattern=MEMORY_PATTERN, check="positive_quantity", expected="a storage quantity"
    )
    checkpoint_size: str = knob(
        "20Gi", pattern=MEMORY_PATTERN, check="positive_quantity", expected="a storage quantity"
    )
    access_mode: str = knob("ReadWriteMany", choices=("ReadWriteOnce", "ReadWriteMany"))
    submitter: ResourceSpec = field(
        default_factory=lambda: ResourceSpec(cpu=0.25, memory="512Mi", gpu=0)
    )
    envs: dict[str, ManifestEnv] = knob({})
