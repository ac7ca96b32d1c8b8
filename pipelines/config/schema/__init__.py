"""Typed schema of the kfbatch config tree, registered in Hydra's ConfigStore.

The root dataclass :class:`Config` is the first entry of ``configs/config.yaml``'s defaults
list, so every group file and every override is merged into typed nodes: OmegaConf rejects
wrong types while composing, and :mod:`pipelines.config.validate` checks the rest (unknown
keys added with ``+``, ranges, choices, cross-field rules) from the ``metadata`` of each field.

Field metadata keys: ``ge``/``gt``/``le`` (numeric bounds), ``choices`` (allowed values),
``pattern`` (regular expression for strings) and ``expected`` (how to describe a valid
value in an error).

The groups' schemas live in one module per capability (``data``, ``training``, ``inference``,
``platform``); this package assembles the root and is the import path for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from pipelines.config.schema.data import (
    BatchMapConfig,
    CsvConfig,
    DataConfig,
    EtlConfig,
    FeaturesConfig,
    QualityConfig,
    SplitConfig,
)
from pipelines.config.schema.inference import (
    InferenceConfig,
    PublishConfig,
)
from pipelines.config.schema.knobs import DEFAULT_STAGES, MEMORY_PATTERN, NAME_PATTERN, STAGES, knob
from pipelines.config.schema.platform import (
    KubeflowConfig,
    ManifestEnv,
    ManifestsConfig,
    PvcMount,
    ResourcesConfig,
    ResourceSpec,
    RuntimeConfig,
    ScheduleConfig,
    StepResources,
    Toleration,
)
from pipelines.config.schema.training import (
    CheckpointConfig,
    CvConfig,
    EarlyStoppingConfig,
    EvaluateConfig,
    GateConfig,
    TrainerConfig,
    TuneConfig,
)

__all__ = [
    "DEFAULT_STAGES",
    "MEMORY_PATTERN",
    "NAME_PATTERN",
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
    "knob",
    "register_schema",
]


@dataclass
class Config:
    """The root of the composed config: one field per group plus top-level knobs."""

    name: str = knob(MISSING, pattern=NAME_PATTERN, expected="a lowercase DNS-1123 label")
    seed: int = knob(42, ge=0)
    run_date: str | None = knob(
        None,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        check="date",
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
