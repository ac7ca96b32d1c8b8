"""Schema of the training and evaluation groups: ``trainer``, ``cv``, ``tune``, ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.config.schema.knobs import knob

__all__ = [
    "CheckpointConfig",
    "CvConfig",
    "EarlyStoppingConfig",
    "EvaluateConfig",
    "GateConfig",
    "TrainerConfig",
    "TuneConfig",
]


@dataclass
class CheckpointConfig:
    """Where and how often training writes its resumable state."""

    dir: str | None = knob(None, check="data_location")
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
    weight_decay: float = knob(1e-4, ge=0.0)
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
    group_column: str | None = knob(None, check="name")
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
