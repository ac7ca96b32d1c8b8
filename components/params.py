"""Every step's parameters, defined once: what the DAG builds and what the component parses.

One frozen dataclass per step (:data:`STEP_PARAMS` maps each ``module:function`` to it). The
DAG (:mod:`pipelines.dag`) builds it from the composed config and ships ``to_dict()`` (JSON on
the wire to a KFP pod, a Kubernetes Job or a local worker); the component calls
:meth:`Params.parse`, which refuses an unknown or a missing key and a value of the wrong type
with a :class:`~components.errors.ParamError` naming it. Nothing here has a default: the Hydra
schema (``pipelines/config/schema.py``) is the one place where defaults and ranges live, so a
component can never run on a value that no config produced.

Standard library only, like :mod:`components.names`: config code, backends and components
import it without pulling in torch or pyarrow.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, Union

from components.errors import ParamError

__all__ = [
    "STEP_PARAMS",
    "BatchMapMergeParams",
    "BatchMapParams",
    "CheckpointParams",
    "CsvParams",
    "CvAggregateParams",
    "DatagenParams",
    "EarlyStoppingParams",
    "EtlParams",
    "EvaluateParams",
    "FeaturesParams",
    "FoldParams",
    "GateParams",
    "InferParams",
    "Params",
    "PublishParams",
    "QualityParams",
    "SourceParams",
    "SplitParams",
    "TrainParams",
    "TrainerParams",
    "TuneSelectParams",
    "fan_out_item",
    "outside_storage_options",
    "params_for",
]

P = TypeVar("P", bound="Params")


@dataclass(frozen=True)
class Params:
    """A block of step params: strict to parse, plain to serialise."""

    #: How errors name this block (a step, or a config group such as ``trainer``).
    WHERE: ClassVar[str] = "params"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Self:
        """Build from plain values (the DAG's ``to_dict()``), refusing anything off-contract.

        Raises:
            ParamError: a key is unknown or missing, or a value has the wrong type.
        """
        return _parse(cls, raw, cls.WHERE)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (nested blocks as dicts)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


# -- shared blocks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvParams(Params):
    """CSV parsing options (``data.csv``)."""

    WHERE = "data.csv"
    delimiter: str
    quote_char: str | None
    header: bool
    column_names: list[str] | None
    skip_rows: int
    null_values: list[str] | None
    encoding: str
    decimal_point: str


@dataclass(frozen=True)
class SourceParams(Params):
    """How data outside the pipeline is found and parsed (the ``data`` group's options).

    The etl step reads its source with these; a scoring-only run reads ``inference.data_uri``
    with the same ones.
    """

    WHERE = "data"
    format: str
    columns: dict[str, str]
    storage_options: dict[str, Any]
    csv: CsvParams
    batch_rows: int


@dataclass(frozen=True)
class SplitParams(Params):
    """Fractions per split (``data.split``), assigned by a stable hash of the id column."""

    WHERE = "data.split"
    train: float
    validation: float
    test: float
    stratify: bool


@dataclass(frozen=True)
class FeaturesParams(Params):
    """Column roles, encodings and row-level transforms (the ``features`` group)."""

    WHERE = "features"
    numeric: list[str] | None
    categorical: list[str] | None
    timestamp: list[str] | None
    drop: list[str]
    max_categories: int
    encoding: str
    scaling: str
    select: list[str] | None
    rename: dict[str, str]
    derive: dict[str, str]
    timestamp_parts: dict[str, list[str]]
    fill: dict[str, Any]
    clip: dict[str, list[Any]]
    drop_nulls: list[str]
    transforms: list[dict[str, Any]]


@dataclass(frozen=True)
class QualityParams(Params):
    """Data-quality checks and the drift reference (the ``quality`` group)."""

    WHERE = "quality"
    checks: list[dict[str, Any]]
    reference: str | None


@dataclass(frozen=True)
class EarlyStoppingParams(Params):
    """``trainer.early_stopping``."""

    WHERE = "trainer.early_stopping"
    metric: str | None
    mode: str
    patience: int
    min_delta: float


@dataclass(frozen=True)
class CheckpointParams(Params):
    """``trainer.checkpoint``."""

    WHERE = "trainer.checkpoint"
    dir: str | None
    every_n_steps: int
    keep: int


@dataclass(frozen=True)
class TrainerParams(Params):
    """The ``trainer`` group, plus the run's ``seed`` and the step's ``threads``."""

    WHERE = "trainer"
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    momentum: float
    schedule: str
    warmup_steps: int
    step_size_epochs: int
    gamma: float
    grad_clip: float
    accumulate: int
    precision: str
    device: str
    strategy: str
    nodes: int
    procs_per_node: int
    shuffle_buffer_rows: int
    early_stopping: EarlyStoppingParams
    checkpoint: CheckpointParams
    seed: int
    #: Compute threads of the whole step (its CPU request rounded up), split over the ranks.
    threads: int

    @property
    def world_size(self) -> int:
        """Ranks in total: nodes x processes per node."""
        return self.nodes * self.procs_per_node


@dataclass(frozen=True)
class FoldParams(Params):
    """How the train split is cut into cross-validation folds (the ``cv`` group)."""

    WHERE = "cv"
    folds: int
    stratify: bool
    group_column: str | None
    seed: int


# -- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatagenParams(Params):
    """``components.datagen:run``: the demo dataset to write."""

    WHERE = "datagen"
    kind: str
    rows: int
    seed: int
    dataset: str


@dataclass(frozen=True)
class EtlParams(Params):
    """``components.etl:run``."""

    WHERE = "etl"
    source: SourceParams
    id_column: str | None
    target: str
    #: What the target predicts, and its declared labels (rows with others are rejected).
    task: str
    classes: list[str] | None
    split: SplitParams
    #: Scoring shards to write (``etl.scoring_shards``).
    shards: int
    seed: int
    features: FeaturesParams
    sample_rows: int | None
    max_reject_fraction: float
    quality: QualityParams


@dataclass(frozen=True)
class BatchMapParams(Params):
    """``components.batch_map:run``: one branch per etl scoring shard."""

    WHERE = "batch_map"
    #: ``_target_`` (the import path of ``f(batch, **kwargs) -> batch``) and its kwargs.
    function: dict[str, Any]
    columns: list[str] | None
    batch_rows: int
    #: The fan-out item: which scoring shard.
    shard: int | None


@dataclass(frozen=True)
class BatchMapMergeParams(Params):
    """``components.batch_map:merge`` takes no params."""

    WHERE = "batch_map_merge"


@dataclass(frozen=True)
class TrainParams(Params):
    """``components.train:run``: the train step, a CV fold or a tuning trial."""

    WHERE = "train"
    #: The model's ``_target_`` config (``components.models.MLP`` and its arguments).
    model: dict[str, Any]
    trainer: TrainerParams
    target: str
    task: str
    #: Declared labels (``data.classes``), in order; null: the labels the train split has.
    classes: list[str] | None
    #: Fold settings when a variant names a fold (CV folds, cross-validated trials).
    cv: FoldParams | None
    #: The fan-out item: ``fold`` and/or ``trial`` + ``overrides``; null for the train step.
    variant: dict[str, Any] | None


@dataclass(frozen=True)
class CvAggregateParams(Params):
    """``components.cv:run``."""

    WHERE = "cv_aggregate"
    folds: int


@dataclass(frozen=True)
class TuneSelectParams(Params):
    """``components.tune:run``."""

    WHERE = "tune_select"
    objective: str
    direction: str


@dataclass(frozen=True)
class EvaluateParams(Params):
    """``components.evaluate:run``."""

    WHERE = "evaluate"
    split: str
    threshold: float


@dataclass(frozen=True)
class GateParams(Params):
    """``components.evaluate:gate``."""

    WHERE = "gate"
    metric: str
    min: float | None
    max: float | None
    #: A closed gate fails the step (the local runner skips what follows); a backend that
    #: branches on the gate's ``passed`` output instead (KFP's ``dsl.If``) sets it false.
    raise_when_closed: bool


@dataclass(frozen=True)
class InferParams(Params):
    """``components.infer:run``: one branch per shard."""

    WHERE = "infer"
    #: The fan-out width: scoring shards of an etl set, or cuts of outside data.
    shards: int
    #: The fan-out item: which shard.
    shard: int | None
    #: Keys predictions of outside data (an etl scoring set records its own).
    id_column: str | None
    #: How outside data is read; null when scoring an etl scoring set.
    source: SourceParams | None
    #: Reaches an outside model (and outside data) on an object store.
    storage_options: dict[str, Any]
    max_reject_fraction: float
    batch_size: int | str
    memory_cap_mb: int
    threshold: float
    device: str
    optimize: list[str]
    tolerance: float
    threads: int
    run_id: str


@dataclass(frozen=True)
class PublishParams(Params):
    """``components.publish:run``."""

    WHERE = "publish"
    shards: int
    id_column: str | None
    source: SourceParams | None
    destination: str | None
    partition_by: str
    retention: int
    store_url: str | None
    run_id: str
    run_date: str


#: The params of every step component, by its DAG name (``module:function``).
STEP_PARAMS: dict[str, type[Params]] = {
    "components.datagen:run": DatagenParams,
    "components.etl:run": EtlParams,
    "components.batch_map:run": BatchMapParams,
    "components.batch_map:merge": BatchMapMergeParams,
    "components.train:run": TrainParams,
    "components.cv:run": CvAggregateParams,
    "components.tune:run": TuneSelectParams,
    "components.evaluate:run": EvaluateParams,
    "components.evaluate:gate": GateParams,
    "components.infer:run": InferParams,
    "components.publish:run": PublishParams,
}


def outside_storage_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """How a step's params reach the object store of its outside inputs (a source, an
    outside model or scoring data): its ``storage_options``, else its ``source``'s."""
    own = params.get("storage_options")
    if own:
        return dict(own)
    source = params.get("source")
    return dict(source.get("storage_options") or {}) if isinstance(source, Mapping) else {}


def params_for(component: str) -> type[Params]:
    """The params class of ``component`` (``module:function``)."""
    try:
        return STEP_PARAMS[component]
    except KeyError:
        raise ParamError(
            f"{component!r} is not a kfbatch step; expected one of {sorted(STEP_PARAMS)}"
        ) from None


def fan_out_item(params: Params, name: str) -> Any:
    """The fan-out item ``name`` of a branch's params (the DAG leaves it null in the step).

    Raises:
        ParamError: the item is null, so this is not a branch.
    """
    value = getattr(params, name)
    if value is None:
        raise ParamError(
            f"{params.WHERE}: {name} is null; this step runs once per {name} (a fan-out "
            f"branch) and needs the {name} it runs for"
        )
    return value


# -- strict parsing ---------------------------------------------------------------------------


def _parse(cls: type[P], raw: Any, where: str) -> P:
    if not isinstance(raw, Mapping):
        raise ParamError(f"{where}: expected a mapping of params, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamError(
            f"{where}: unknown key {where}.{unknown[0]}; expected only {sorted(fields)}"
        )
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ParamError(
            f"{where}: missing key {where}.{missing[0]}; the DAG builds every key of a step's "
            "params from the composed config"
        )
    hints = _hints(cls)
    return cls(**{name: _value(hints[name], raw[name], f"{where}.{name}") for name in fields})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against (and, for nested blocks, built as) the annotation ``hint``."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        alternatives = typing.get_args(hint)
        if value is None and type(None) in alternatives:
            return None
        for alternative in alternatives:
            if alternative is type(None):
                continue
            try:
                return _value(alternative, value, where)
            except ParamError:
                continue
        raise ParamError(f"{where}: expected {_describe(hint)}, got {value!r}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _parse(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ParamError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): _value(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ParamError(f"{where}: expected {hint.__name__}, got {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ParamError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return hint.__name__ if isinstance(hint, type) else str(hint)
