"""Build the DAG from a validated config: the one place where the pipeline's shape is decided.

One method per stage (:class:`_Builder`) decides that stage's steps, their params (the typed
contracts of :mod:`components.params`), inputs, outputs, resources and fan-outs; nothing else
in kfbatch decides which steps exist or how they connect.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from components.params import (
    BatchMapMergeParams,
    BatchMapParams,
    CvAggregateParams,
    DatagenParams,
    EtlParams,
    EvaluateParams,
    GateParams,
    InferParams,
    Params,
    PublishParams,
    SourceParams,
    TrainParams,
    TuneSelectParams,
)
from pipelines.config.schema import Config, ResourceSpec
from pipelines.dag import RUN_DATE, RUN_ID, Dag, FanOut, Ref, Resources, Step, Toleration, Uri
from pipelines.tuning import trials

__all__ = ["build_dag", "mirror"]


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

    def _add(self, name: str, component: str, params: Params, **kwargs: Any) -> None:
        runtime = self.config.runtime
        self.steps.append(
            Step(
                name=name,
                component=component,
                params=params.to_dict(),
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
        config, data = self.config, self.config.data
        if data.kind == "csv":
            source: Ref | Uri = Uri(str(data.uri))
        else:
            self._add(
                "datagen",
                "components.datagen:run",
                DatagenParams(
                    kind=data.kind, rows=data.rows, seed=config.seed, dataset=data.dataset
                ),
                inputs={},
                outputs=("raw",),
                description=f"generate the {data.kind} demo dataset as CSV",
            )
            source = Ref("datagen", "raw")
        options = self._source_params()
        self._add(
            "etl",
            "components.etl:run",
            EtlParams(
                # generated demo data is CSV whatever data.format says
                source=options if data.kind == "csv" else options.replace(format="auto"),
                id_column=data.id_column,
                target=data.target,
                task=data.task,
                classes=_copy(data.classes),
                split=mirror(EtlParams, "split", data.split),
                shards=config.etl.scoring_shards,
                seed=config.seed,
                features=mirror(EtlParams, "features", config.features),
                sample_rows=data.sample_rows,
                max_reject_fraction=config.etl.max_reject_fraction,
                quality=mirror(EtlParams, "quality", config.quality),
            ),
            inputs={"source": source},
            outputs=("dataset", "feature_spec", "scoring", "rejects", "quality"),
            description="extract, check quality, quarantine bad rows, split; fit features",
        )

    def add_batch_map(self) -> None:
        batch_map = self.config.batch_map
        shards = self.config.etl.scoring_shards
        self._add(
            "batch_map",
            "components.batch_map:run",
            BatchMapParams(
                function=dict(batch_map.function),
                columns=list(batch_map.columns) if batch_map.columns is not None else None,
                batch_rows=batch_map.batch_rows,
                shard=None,
            ),
            inputs={"scoring": Ref("etl", "scoring")},
            outputs=("mapped",),
            fan_out=FanOut("shard", tuple(range(shards)), batch_map.parallelism),
            description="apply the batch_map function to one scoring shard",
        )
        self._add(
            "batch_map_merge",
            "components.batch_map:merge",
            BatchMapMergeParams(),
            inputs={"mapped": Ref("batch_map", "mapped")},
            outputs=("dataset",),
            description="collect every shard's batch_map output into one dataset",
        )

    def _train_params(self, step_name: str, *, folds: bool = False) -> TrainParams:
        """Params of a training step (train, or a CV fold / tuning trial branch)."""
        config = self.config
        return TrainParams(
            model=dict(config.model),
            trainer=mirror(
                TrainParams,
                "trainer",
                config.trainer,
                seed=config.seed,
                threads=self._resources(step_name).threads,
            ),
            target=config.data.target,
            task=config.data.task,
            classes=_copy(config.data.classes),
            cv=mirror(TrainParams, "cv", config.cv, seed=config.seed) if folds else None,
            variant=None,
        )

    def _etl_inputs(self) -> dict[str, Ref | Uri]:
        return {"dataset": Ref("etl", "dataset"), "feature_spec": Ref("etl", "feature_spec")}

    def add_cv(self) -> None:
        cv = self.config.cv
        self._add(
            "cv_train",
            "components.train:run",
            self._train_params("cv_train", folds=True),
            inputs=self._etl_inputs(),
            outputs=("model",),
            fan_out=FanOut("variant", tuple({"fold": k} for k in range(cv.folds)), cv.parallelism),
            description=f"train on {cv.folds - 1} of {cv.folds} folds of the train split, "
            "validate on the held-out one",
        )
        self._add(
            "cv_aggregate",
            "components.cv:run",
            CvAggregateParams(folds=cv.folds),
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
        self._add(
            "tune_trial",
            "components.train:run",
            self._train_params("tune_trial", folds=tune.cv),
            inputs=self._etl_inputs(),
            outputs=("model",),
            fan_out=FanOut("variant", items, tune.parallelism),
            description=f"one of {len(drawn)} {tune.search} search trials"
            + (f" x {self.config.cv.folds} folds" if tune.cv else ""),
        )
        self._add(
            "tune_select",
            "components.tune:run",
            TuneSelectParams(objective=tune.objective, direction=tune.direction),
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
            self._train_params("train"),
            inputs=inputs,
            outputs=("model",),
            description="train the model on the train split, early metrics on validation"
            + (" (with the best trial's hyperparameters)" if "best" in inputs else ""),
        )

    def add_evaluate(self) -> None:
        self._add(
            "evaluate",
            "components.evaluate:run",
            EvaluateParams(
                split=self.config.evaluate.split, threshold=self.config.inference.threshold
            ),
            inputs={"dataset": Ref("etl", "dataset"), "model": Ref("train", "model")},
            outputs=("metrics",),
            description="test-split metrics of the trained model",
        )

    def add_gate(self) -> None:
        gate = self.config.evaluate.gate
        self._add(
            "gate",
            "components.evaluate:gate",
            GateParams(metric=str(gate.metric), min=gate.min, max=gate.max, raise_when_closed=True),
            inputs={"evaluation": Ref("evaluate", "metrics"), "model": Ref("train", "model")},
            outputs=("model",),
            description=f"stop before inference unless test {gate.metric} is good enough",
        )
        self.served_model = Ref("gate", "model")

    def _source_params(self) -> SourceParams:
        """How data outside the pipeline is read: the ``data`` group's source options."""
        data = self.config.data
        return SourceParams(
            format=data.format,
            columns=dict(data.columns),
            storage_options=dict(data.storage_options),
            csv=mirror(SourceParams, "csv", data.csv),
            batch_rows=data.batch_rows,
        )

    def add_infer(self) -> None:
        """The scoring fan-out and its publish step.

        The model and the data to score come from this pipeline's train and etl steps, or,
        for a scoring-only run, from ``inference.model_uri`` / ``inference.data_uri``. Over an
        etl scoring set the fan-out is one branch per etl scoring shard (the config
        validation holds ``inference.shards`` equal to ``etl.scoring_shards`` then).
        """
        config, stages = self.config, set(self.config.stages)
        inference, publish = config.inference, config.publish
        model: Ref | Uri = self.served_model if "train" in stages else Uri(str(inference.model_uri))
        scoring: Ref | Uri = (
            Ref("etl", "scoring") if "etl" in stages else Uri(str(inference.data_uri))
        )
        outside = isinstance(scoring, Uri)
        # outside data is read as the etl step reads its source; an outside model is fetched
        # with the same storage options
        source = self._source_params() if outside else None
        storage = dict(config.data.storage_options) if outside or isinstance(model, Uri) else {}
        self._add(
            "infer",
            "components.infer:run",
            InferParams(
                shards=inference.shards,
                shard=None,
                id_column=config.data.id_column,
                source=source,
                storage_options=storage,
                max_reject_fraction=config.etl.max_reject_fraction if outside else 0.0,
                batch_size=inference.batch_size,
                memory_cap_mb=inference.memory_cap_mb,
                threshold=inference.threshold,
                device=inference.device,
                optimize=list(inference.optimize),
                tolerance=inference.tolerance,
                threads=self._resources("infer").threads,
                run_id=RUN_ID,
            ),
            inputs={"scoring": scoring, "model": model},
            outputs=("predictions",),
            fan_out=FanOut("shard", tuple(range(inference.shards)), inference.parallelism),
            description="score one shard of the scoring set",
        )
        self._add(
            "publish",
            "components.publish:run",
            PublishParams(
                shards=inference.shards,
                id_column=config.data.id_column,
                source=source,
                destination=publish.destination,
                partition_by=publish.partition_by,
                retention=publish.retention,
                store_url=publish.store_url,
                run_id=RUN_ID,
                run_date=RUN_DATE,
            ),
            inputs={"predictions": Ref("infer", "predictions"), "scoring": scoring},
            outputs=("predictions",),
            description="check one prediction per row; publish the dataset and lookup store",
        )


def mirror(owner: type[Params], name: str, node: Any, **extra: Any) -> Any:
    """The params block ``owner.<name>`` built from the config node of the same shape.

    Field by field under the same names (nested blocks recursively), plus ``extra`` for the
    fields the config group does not hold (e.g. the run's seed): a knob added to a config
    group and its params block reaches the component without a line of copying here.
    """
    hint = typing.get_type_hints(owner)[name]
    cls = next(a for a in (typing.get_args(hint) or (hint,)) if a is not type(None))
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in extra:
            values[f.name] = extra[f.name]
        elif dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
            values[f.name] = mirror(cls, f.name, getattr(node, f.name))
        else:
            values[f.name] = _copy(getattr(node, f.name))
    return cls(**values)


def _copy(value: Any) -> Any:
    """A plain copy of a config value (lists and dicts of plain values)."""
    if isinstance(value, Mapping):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _copy(dataclasses.asdict(value))
    return value
