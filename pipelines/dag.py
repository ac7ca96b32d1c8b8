"""The DAG: the one place where the pipeline's shape is decided.

:func:`build_dag` turns a validated :class:`Config` into steps, their connections, resources
and fan-outs. Backends translate the DAG and never re-decide it: the local runner executes
:meth:`Dag.nodes` (fan-outs expanded into one node per item), a KFP compiler maps a fan-out
step to ``dsl.ParallelFor`` over ``FanOut.items`` and a collected input to ``dsl.Collected``.
The same config always gives the same DAG (:meth:`Dag.digest` is stable across processes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.config.schema import Config, ResourceSpec
from pipelines.tuning import trials

__all__ = [
    "RUN_ID",
    "Dag",
    "FanOut",
    "Node",
    "Ref",
    "Resources",
    "Step",
    "Uri",
    "build_dag",
    "memory_bytes",
]

_MEMORY_UNITS = {
    "": 1,
    **{suffix: 10 ** (3 * (i + 1)) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": 2 ** (10 * (i + 1)) for i, suffix in enumerate("KMGTPE")},
}

#: Placeholder for the run id inside params: backends substitute their run id at execution
#: time (the local run id, or KFP's job id), and it never enters a cache key.
RUN_ID = "{{kfbatch.run_id}}"
#: Placeholder for the run's logical date (``YYYY-MM-DD``): :attr:`Dag.run_date`, else the
#: day the run starts (UTC). Unlike the run id it enters the local cache key once
#: substituted, so a run for a new date publishes again.
RUN_DATE = "{{kfbatch.run_date}}"


@dataclass(frozen=True)
class Ref:
    """An output of another step; for a fan-out step, the list collected from every branch."""

    step: str
    output: str


@dataclass(frozen=True)
class Uri:
    """Data outside the pipeline: a local path or an object-store URI."""

    uri: str


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration."""

    key: str
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None


@dataclass(frozen=True)
class Resources:
    """What one step (one branch of a fan-out) requests."""

    cpu: float
    memory: str
    gpu: int = 0
    accelerator: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()

    @property
    def threads(self) -> int:
        """Compute threads a step should use: its CPU request rounded up."""
        return max(1, math.ceil(self.cpu))


@dataclass(frozen=True)
class FanOut:
    """Run the step once per item, ``parallelism`` at a time, with ``params[param] = item``."""

    param: str
    items: tuple[Any, ...]
    parallelism: int


@dataclass(frozen=True)
class Step:
    """One declared step; a fan-out step stands for one branch per item."""

    name: str
    component: str
    params: Mapping[str, Any]
    inputs: Mapping[str, Ref | Uri]
    outputs: tuple[str, ...]
    resources: Resources
    retries: int = 0
    cache: bool = True
    timeout_s: float = 0.0
    fan_out: FanOut | None = None
    description: str = ""


@dataclass(frozen=True)
class Node:
    """A unit the local runner executes: a step, or one branch of a fan-out step."""

    name: str
    step: Step
    params: Mapping[str, Any]
    index: int | None = None


@dataclass(frozen=True)
class Dag:
    """Steps in topological order (every input refers to an earlier step)."""

    name: str
    steps: tuple[Step, ...]
    #: The run's logical date (``config.run_date``); None means the day the run starts.
    run_date: str | None = None
    _by_name: Mapping[str, Step] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Step] = {}
        for step in self.steps:
            if step.name in by_name:
                raise ValueError(f"duplicate step name {step.name!r}")
            for ref in step.inputs.values():
                if isinstance(ref, Ref) and (
                    ref.step not in by_name or ref.output not in by_name[ref.step].outputs
                ):
                    raise ValueError(f"step {step.name!r} reads {ref} before it is produced")
            by_name[step.name] = step
        object.__setattr__(self, "_by_name", by_name)

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        return self._by_name[name]

    def upstream(self, step: Step) -> list[str]:
        """Names of the steps whose outputs ``step`` reads, in input order, without repeats."""
        names = [ref.step for ref in step.inputs.values() if isinstance(ref, Ref)]
        return list(dict.fromkeys(names))

    def nodes(self) -> Iterator[Node]:
        """Every executable node in topological order, fan-outs expanded per item."""
        for step in self.steps:
            if step.fan_out is None:
                yield Node(step.name, step, dict(step.params))
                continue
            for index, item in enumerate(step.fan_out.items):
                params = {**step.params, step.fan_out.param: item}
                yield Node(f"{step.name}-{index}", step, params, index)

    def node_names(self, step_name: str) -> list[str]:
        """The node names a step expands to (one, or one per fan-out item)."""
        step = self.step(step_name)
        if step.fan_out is None:
            return [step.name]
        return [f"{step.name}-{i}" for i in range(len(step.fan_out.items))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the DAG, stable for the same config."""
        return {
            "name": self.name,
            "run_date": self.run_date,
            "steps": [_plain(step) for step in self.steps],
        }

    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal digests mean identical DAGs."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (Ref, Uri)):
        return {type(value).__name__.lower(): dataclasses.asdict(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def memory_bytes(quantity: str) -> float:
    """Bytes in a Kubernetes memory quantity such as ``512Mi``, ``4Gi``, ``2G`` or ``1.5Gi``."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", quantity)
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"{quantity!r} is not a Kubernetes memory quantity such as 512Mi")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def build_dag(config: Config) -> Dag:
    """Build the pipeline's DAG from a validated config."""
    builder = _Builder(config)
    stages = set(config.stages)
    if "etl" in stages:
        builder.add_etl()
    if "batch_map" in stages:
        builder.add_batch_map()
    if "train" in stages:
        if config.cv.enabled:
            builder.add_cv()
        if config.tune.enabled:
            builder.add_tune()
        builder.add_train()
    if "evaluate" in stages:
        builder.add_evaluate()
        if config.evaluate.gate.metric is not None:
            builder.add_gate()
    if "infer" in stages:
        builder.add_infer()
    return Dag(config.name, tuple(builder.steps), run_date=config.run_date)


class _Builder:
    """Accumulates steps; one method per stage keeps each stage's wiring in one place."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.steps: list[Step] = []
        #: The model inference scores with: the trained one, or the gate's when gated.
        self.served_model = Ref("train", "model")

    def _add(self, name: str, component: str, **kwargs: Any) -> None:
        runtime = self.config.runtime
        self.steps.append(
            Step(
                name=name,
                component=component,
                resources=self._resources(name),
                retries=runtime.retries,
                cache=runtime.cache,
                timeout_s=runtime.step_timeout_s,
                **kwargs,
            )
        )

    def _resources(self, step_name: str) -> Resources:
        spec = self.config.resources.default
        override = getattr(self.config.resources.steps, step_name)
        merged = {
            f.name: getattr(override, f.name)
            if getattr(override, f.name) is not None
            else getattr(spec, f.name)
            for f in dataclasses.fields(ResourceSpec)
        }
        return Resources(
            cpu=float(merged["cpu"]),
            memory=str(merged["memory"]),
            gpu=int(merged["gpu"] or 0),
            accelerator=merged["accelerator"],
            node_selector=tuple(sorted((merged["node_selector"] or {}).items())),
            tolerations=tuple(
                Toleration(t.key, t.operator, t.value, t.effect)
                for t in merged["tolerations"] or ()
            ),
        )

    def add_etl(self) -> None:
        data = self.config.data
        if data.kind == "csv":
            source: Ref | Uri = Uri(str(data.uri))
        else:
            self._add(
                "datagen",
                "components.datagen:run",
                params={
                    "kind": data.kind,
                    "rows": data.rows,
                    "seed": self.config.seed,
                    "dataset": data.dataset,
                },
                inputs={},
                outputs=("raw",),
                description=f"generate the {data.kind} demo dataset as CSV",
            )
            source = Ref("datagen", "raw")
        features = self.config.features
        quality = self.config.quality
        self._add(
            "etl",
            "components.etl:run",
            params={
                "format": data.format if data.kind == "csv" else "auto",
                "columns": dict(data.columns),
                "storage_options": dict(data.storage_options),
                "id_column": data.id_column,
                "target": data.target,
                "split": dataclasses.asdict(data.split),
                "shards": self.config.inference.shards,
                "seed": self.config.seed,
                "features": {
                    "numeric": features.numeric,
                    "categorical": features.categorical,
                    "timestamp": features.timestamp,
                    "drop": list(features.drop),
                    "max_categories": features.max_categories,
                    "encoding": features.encoding,
                    "scaling": features.scaling,
                    "select": features.select,
                    "rename": dict(features.rename),
                    "derive": dict(features.derive),
                    "timestamp_parts": {k: list(v) for k, v in features.timestamp_parts.items()},
                    "fill": dict(features.fill),
                    "clip": {k: list(v) for k, v in features.clip.items()},
                    "drop_nulls": list(features.drop_nulls),
                    "transforms": [dict(t) for t in features.transforms],
                },
                "csv": dataclasses.asdict(data.csv),
                "batch_rows": data.batch_rows,
                "sample_rows": data.sample_rows,
                "max_reject_fraction": self.config.etl.max_reject_fraction,
                "quality": {
                    "checks": [dict(c) for c in quality.checks],
                    "reference": quality.reference,
                },
            },
            inputs={"source": source},
            outputs=("dataset", "feature_spec", "scoring", "rejects", "quality"),
            description="extract, check quality, quarantine bad rows, split; fit features",
        )

    def add_batch_map(self) -> None:
        batch_map = self.config.batch_map
        shards = self.config.inference.shards
        self._add(
            "batch_map",
            "components.batch_map:run",
            params={
                "function": dict(batch_map.function),
                "columns": list(batch_map.columns) if batch_map.columns is not None else None,
                "batch_rows": batch_map.batch_rows,
            },
            inputs={"scoring": Ref("etl", "scoring")},
            outputs=("mapped",),
            fan_out=FanOut("shard", tuple(range(shards)), batch_map.parallelism),
            description="apply the batch_map function to one scoring shard",
        )
        self._add(
            "batch_map_merge",
            "components.batch_map:merge",
            params={},
            inputs={"mapped": Ref("batch_map", "mapped")},
            outputs=("dataset",),
            description="collect every shard's batch_map output into one dataset",
        )

    def _train_params(self, step_name: str) -> dict[str, Any]:
        """Params of a training step (train, or a CV fold / tuning trial branch)."""
        trainer = dataclasses.asdict(self.config.trainer)
        trainer.update(seed=self.config.seed, threads=self._resources(step_name).threads)
        return {
            "model": dict(self.config.model),
            "trainer": trainer,
            "target": self.config.data.target,
            "task": self.config.data.task,
        }

    def _cv_params(self) -> dict[str, Any]:
        cv = self.config.cv
        return {
            "folds": cv.folds,
            "stratify": cv.stratify,
            "group_column": cv.group_column,
            "seed": self.config.seed,
        }

    def _etl_inputs(self) -> dict[str, Ref | Uri]:
        return {"dataset": Ref("etl", "dataset"), "feature_spec": Ref("etl", "feature_spec")}

    def add_cv(self) -> None:
        cv = self.config.cv
        self._add(
            "cv_train",
            "components.train:run",
            params=self._train_params("cv_train") | {"cv": self._cv_params()},
            inputs=self._etl_inputs(),
            outputs=("model",),
            fan_out=FanOut("variant", tuple({"fold": k} for k in range(cv.folds)), cv.parallelism),
            description=f"train on {cv.folds - 1} of {cv.folds} folds of the train split, "
            "validate on the held-out one",
        )
        self._add(
            "cv_aggregate",
            "components.cv:run",
            params={"folds": cv.folds},
            inputs={"models": Ref("cv_train", "model")},
            outputs=("report",),
            description="mean and standard deviation of every fold's validation metrics",
        )

    def add_tune(self) -> None:
        tune = self.config.tune
        drawn = trials(
            tune.space,
            search=tune.search,
            n_trials=tune.n_trials,
            seed=self.config.seed if tune.seed is None else tune.seed,
        )
        folds = range(self.config.cv.folds) if tune.cv else (None,)
        items = tuple(
            {"trial": index, "overrides": overrides} | ({} if fold is None else {"fold": fold})
            for index, overrides in enumerate(drawn)
            for fold in folds
        )
        params = self._train_params("tune_trial")
        if tune.cv:
            params["cv"] = self._cv_params()
        self._add(
            "tune_trial",
            "components.train:run",
            params=params,
            inputs=self._etl_inputs(),
            outputs=("model",),
            fan_out=FanOut("variant", items, tune.parallelism),
            description=f"one of {len(drawn)} {tune.search} search trials"
            + (f" x {self.config.cv.folds} folds" if tune.cv else ""),
        )
        self._add(
            "tune_select",
            "components.tune:run",
            params={"objective": tune.objective, "direction": tune.direction},
            inputs={"models": Ref("tune_trial", "model")},
            outputs=("best",),
            description=f"rank trials by {tune.objective} ({tune.direction}); pick the best",
        )

    def add_train(self) -> None:
        inputs = self._etl_inputs()
        if self.config.tune.enabled:
            inputs["best"] = Ref("tune_select", "best")
        self._add(
            "train",
            "components.train:run",
            params=self._train_params("train"),
            inputs=inputs,
            outputs=("model",),
            description="train the model on the train split, early metrics on validation"
            + (" (with the best trial's hyperparameters)" if "best" in inputs else ""),
        )

    def add_evaluate(self) -> None:
        self._add(
            "evaluate",
            "components.evaluate:run",
            params={
                "split": self.config.evaluate.split,
                "threshold": self.config.inference.threshold,
            },
            inputs={"dataset": Ref("etl", "dataset"), "model": Ref("train", "model")},
            outputs=("metrics",),
            description="test-split metrics of the trained model",
        )

    def add_gate(self) -> None:
        gate = self.config.evaluate.gate
        self._add(
            "gate",
            "components.evaluate:gate",
            params={"metric": gate.metric, "min": gate.min, "max": gate.max},
            inputs={"evaluation": Ref("evaluate", "metrics"), "model": Ref("train", "model")},
            outputs=("model",),
            description=f"stop before inference unless test {gate.metric} is good enough",
        )
        self.served_model = Ref("gate", "model")

    def _source_params(self) -> dict[str, Any]:
        """How scoring reads data from outside the pipeline: the etl step's source options
        and reject threshold, applied to ``inference.data_uri``."""
        data = self.config.data
        return {
            "format": data.format,
            "columns": dict(data.columns),
            "storage_options": dict(data.storage_options),
            "csv": dataclasses.asdict(data.csv),
            "batch_rows": data.batch_rows,
            "max_reject_fraction": self.config.etl.max_reject_fraction,
        }

    def add_infer(self) -> None:
        """The scoring fan-out and its publish step.

        The model and the data to score come from this pipeline's train and etl steps, or,
        for a scoring-only run, from ``inference.model_uri`` / ``inference.data_uri``.
        """
        inference, stages = self.config.inference, set(self.config.stages)
        model: Ref | Uri = self.served_model if "train" in stages else Uri(str(inference.model_uri))
        scoring: Ref | Uri = (
            Ref("etl", "scoring") if "etl" in stages else Uri(str(inference.data_uri))
        )
        source = {"shards": inference.shards, "id_column": self.config.data.id_column}
        # outside data is read as the etl step reads its source; an outside model is fetched
        # with the same storage options
        outside = self._source_params() if isinstance(scoring, Uri) else {}
        if isinstance(model, Uri):
            outside.setdefault("storage_options", dict(self.config.data.storage_options))
        self._add(
            "infer",
            "components.infer:run",
            params={
                **source,
                **outside,
                "batch_size": inference.batch_size,
                "memory_cap_mb": inference.memory_cap_mb,
                "threshold": inference.threshold,
                "device": inference.device,
                "optimize": list(inference.optimize),
                "tolerance": inference.tolerance,
                "threads": self._resources("infer").threads,
                "run_id": RUN_ID,
            },
            inputs={"scoring": scoring, "model": model},
            outputs=("predictions",),
            fan_out=FanOut("shard", tuple(range(inference.shards)), inference.parallelism),
            description="score one shard of the scoring set",
        )
        publish = self.config.publish
        self._add(
            "publish",
            "components.publish:run",
            params={
                **source,
                **(self._source_params() if isinstance(scoring, Uri) else {}),
                "destination": publish.destination,
                "partition_by": publish.partition_by,
                "retention": publish.retention,
                "store_url": publish.store_url,
                "run_id": RUN_ID,
                "run_date": RUN_DATE,
            },
            inputs={"predictions": Ref("infer", "predictions"), "scoring": scoring},
            outputs=("predictions",),
            description="check one prediction per row; publish the dataset and lookup store",
        )
