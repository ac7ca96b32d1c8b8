"""Checks of a composed config that OmegaConf's typing cannot express.

OmegaConf rejects wrong types while Hydra composes. This module adds the rest: keys that
slipped in through ``+key=value`` overrides, numeric ranges, choices and patterns declared in
the schema's field metadata, and rules that span several fields (split fractions, stage
dependencies, required data location). Every failure is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from components.names import OPTIMIZATIONS, TEST_METRICS, VALIDATION_METRICS
from pipelines.config.checks import CHECKS
from pipelines.config.cron import to_kfp_cron
from pipelines.config.schema import STAGES, Config
from pipelines.errors import ConfigError, KfbatchError
from pipelines.sources import parameters

__all__ = ["schema_at", "unknown_key_error", "validate"]

#: (split, the stage that reads it, what for): such a split must not be empty.
SPLIT_USERS = (
    ("train", "etl", "rows to fit features on"),
    ("validation", "train", "validation rows"),
    ("test", "evaluate", "test rows"),
)

#: Which stages each stage needs to have run in the same pipeline (infer's inputs may
#: instead come from outside: see :func:`_check_inference`).
STAGE_NEEDS = {"batch_map": ("etl",), "train": ("etl",), "evaluate": ("train",)}

#: (stage, inference key that replaces its output, what that output is) for scoring-only runs.
INFER_SOURCES = (
    ("train", "model_uri", "the model artifact to score with"),
    ("etl", "data_uri", "the data to score"),
)


def validate(container: Mapping[str, Any]) -> None:
    """Check a resolved config container against :class:`Config` and its cross-field rules.

    Raises:
        ConfigError: for the first problem found, in schema order.
    """
    _check_node(Config, container, "")
    _check_stages(container["stages"])
    _check_data(container["data"], container["stages"])
    _check_inference(container["inference"], container["stages"])
    _check_shards(container)
    if "etl" in container["stages"]:
        _check_etl_declarations(container)
    if "batch_map" in container["stages"]:
        _check_batch_map(container["batch_map"])
    _check_model(container["model"])
    _check_resources(container["resources"])
    _check_training(container)
    _check_secrets(container["kubeflow"]["secrets"])
    if container["schedule"]["cron"]:
        to_kfp_cron(container["schedule"]["cron"])
    _check_envs(container["manifests"]["envs"])


def _check_envs(envs: Mapping[str, Any]) -> None:
    """Each GitOps environment has its own namespace and a valid cron."""
    seen: dict[str, str] = {}
    for env, spec in envs.items():
        if spec["namespace"] in seen:
            raise ConfigError(
                f"manifests.envs.{env}.namespace",
                f"a namespace of its own (environment {seen[spec['namespace']]!r} uses it)",
                spec["namespace"],
            )
        seen[spec["namespace"]] = env
        if spec["cron"]:
            try:
                to_kfp_cron(spec["cron"])
            except ConfigError as error:
                raise ConfigError(
                    f"manifests.envs.{env}.cron", error.expected, error.given
                ) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass inside ``X``, ``X | None`` or ``None | X``, if any."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _check_node(cls: type, node: Any, path: str) -> None:
    if not isinstance(node, Mapping):
        raise ConfigError(path, f"a mapping of {cls.__name__} fields", node)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in node:
        if key not in fields:
            raise unknown_key_error(cls, path, str(key))
    for name, f in fields.items():
        _check_field(f, _hints(cls)[name], node.get(name), f"{path}{name}")


def unknown_key_error(cls: type, path: str, key: str) -> ConfigError:
    """The error for ``key`` not being a field of ``cls`` (the node at ``path``)."""
    names = [f.name for f in dataclasses.fields(cls)]
    hint = difflib.get_close_matches(key, names, n=1)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    return ConfigError(f"{path}{key}", f"one of the keys {', '.join(names)}{did_you_mean}", key)


def schema_at(dotted: str) -> type | None:
    """The dataclass that types the config node at ``dotted`` (``''`` is the root)."""
    cls: type | None = Config
    parts = [p for p in re.split(r"[.\[\]]", dotted) if p]
    while parts and cls is not None:
        annotation = _hints(cls).get(parts.pop(0))
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            if parts:
                parts.pop(0)
        cls = _dataclass_of(annotation) if annotation is not None else None
    return cls


def _check_field(f: dataclasses.Field, annotation: Any, value: Any, key: str) -> None:
    rules = f.metadata
    expected = rules.get("expected")
    if value is None:
        return
    nested = _dataclass_of(annotation)
    origin = typing.get_origin(annotation)
    if nested is not None:
        _check_node(nested, value, f"{key}.")
    elif origin is dict and (item_cls := _dataclass_of(typing.get_args(annotation)[1])):
        for name, item in value.items():
            _check_node(item_cls, item, f"{key}.{name}.")
    elif item_cls := _list_item_dataclass(annotation):
        for i, item in enumerate(value):
            _check_node(item_cls, item, f"{key}[{i}].")
    if "choices" in rules and value not in rules["choices"]:
        options = ", ".join(repr(c) for c in rules["choices"])
        raise ConfigError(key, expected or f"one of {options}", value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_bounds(rules, value, key, expected)
    if "pattern" in rules and not re.fullmatch(rules["pattern"], str(value)):
        raise ConfigError(key, expected or f"a value matching {rules['pattern']}", value)
    if "check" in rules:
        try:
            CHECKS[rules["check"]](value)
        except ValueError as error:
            raise ConfigError(key, str(error), value) from None


def _list_item_dataclass(annotation: Any) -> type | None:
    """The dataclass of the items of ``list[X]`` or ``list[X] | None``, if any."""
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if typing.get_origin(candidate) is list:
            return _dataclass_of(typing.get_args(candidate)[0])
    return None


def _check_bounds(rules: Mapping[str, Any], value: float, key: str, expected: str | None) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, expected or "a finite number", value)
    if "ge" in rules and value < rules["ge"]:
        raise ConfigError(key, expected or f"a number >= {rules['ge']}", value)
    if "gt" in rules and value <= rules["gt"]:
        raise ConfigError(key, expected or f"a number > {rules['gt']}", value)
    if "le" in rules and value > rules["le"]:
        raise ConfigError(key, expected or f"a number <= {rules['le']}", value)


def _check_stages(stages: list[str]) -> None:
    if not stages:
        raise ConfigError("stages", f"a non-empty list drawn from {list(STAGES)}", stages)
    for stage in stages:
        if stage not in STAGES:
            hint = difflib.get_close_matches(stage, STAGES, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError("stages", f"stages from {list(STAGES)}{did_you_mean}", stage)
    if len(set(stages)) != len(stages):
        raise ConfigError("stages", "each stage at most once", stages)
    for stage in stages:
        missing = [need for need in STAGE_NEEDS.get(stage, ()) if need not in stages]
        if missing:
            raise ConfigError(
                "stages", f"'{stage}' together with {missing} (it consumes their outputs)", stages
            )


def _check_data(data: Mapping[str, Any], stages: list[str]) -> None:
    split = data["split"]
    total = split["train"] + split["validation"] + split["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError("data.split", "train + validation + test = 1", f"sum {total:g}")
    for name, stage, use in SPLIT_USERS:
        if stage in stages and split[name] <= 0:
            expected = f"a fraction > 0 (stage '{stage}' needs {use})"
            raise ConfigError(f"data.split.{name}", expected, split[name])
    if split["stratify"] and data["task"] == "regression":
        raise ConfigError(
            "data.split.stratify",
            "false with data.task=regression (stratification needs class labels; "
            "the hashed split already spreads a numeric target evenly in expectation)",
            True,
        )
    _check_csv(data["csv"])
    _check_classes(data["classes"], data["task"])
    if data["kind"] == "csv" and not data["uri"]:
        raise ConfigError("data.uri", "the CSV file or directory to read when data.kind=csv")
    if data["id_column"] is None and "infer" in stages:
        raise ConfigError(
            "data.id_column", "the column that identifies rows (predictions are keyed by it)", None
        )
    if data["id_column"] is not None and data["id_column"] == data["target"]:
        raise ConfigError("data.id_column", "a column other than data.target", data["id_column"])


def _check_classes(classes: list[str] | None, task: str) -> None:
    """Declared labels fit the task: two for binary, at least two for multiclass, none for
    regression, each once."""
    if classes is None:
        return
    if task == "regression":
        raise ConfigError("data.classes", "null with data.task=regression", list(classes))
    needed = "exactly 2 labels" if task == "binary" else "at least 2 labels"
    if (task == "binary" and len(classes) != 2) or len(classes) < 2:
        raise ConfigError("data.classes", f"{needed} for data.task={task}", list(classes))
    if len(set(classes)) != len(classes) or any(not str(c).strip() for c in classes):
        raise ConfigError("data.classes", "distinct non-empty labels", list(classes))


def _check_csv(csv: Mapping[str, Any]) -> None:
    """CSV options that parse but can never read a file."""
    if csv["quote_char"] is not None and csv["quote_char"] == csv["delimiter"]:
        raise ConfigError(
            "data.csv.quote_char", "a character other than data.csv.delimiter", csv["quote_char"]
        )
    names = csv["column_names"]
    if names is not None:
        if not names or any(not str(n).strip() for n in names):
            raise ConfigError("data.csv.column_names", "a list of non-empty names, or null", names)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError("data.csv.column_names", "each name once", repeated)


def _check_etl_declarations(container: Mapping[str, Any]) -> None:
    """Parse the quality checks and row-level transforms as the etl step will, so that a
    typo fails at composition rather than after the data was generated or read."""
    from components.data.prepare import Prepare
    from components.data.quality import parse_checks
    from components.errors import ParamError

    for key, parse, value in (
        ("quality.checks", parse_checks, list(container["quality"]["checks"] or ())),
        ("features", Prepare.from_dict, dict(container["features"])),
    ):
        try:
            parse(value)
        except ParamError as error:
            raise ConfigError(key, f"what the etl step accepts ({error})") from None
    select, data = container["features"]["select"], container["data"]
    if select is not None:
        needed = [c for c in (data["id_column"], data["target"]) if c and c not in select]
        if needed:
            raise ConfigError(
                "features.select", f"a list that keeps the id and target columns {needed}", select
            )


def _check_inference(inference: Mapping[str, Any], stages: list[str]) -> None:
    batch_size = inference["batch_size"]
    if batch_size != "auto" and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError("inference.batch_size", "a row count >= 1, or auto", batch_size)
    for method in inference["optimize"]:
        if method not in OPTIMIZATIONS:
            raise ConfigError(
                "inference.optimize", f"a list drawn from {list(OPTIMIZATIONS)}", method
            )
    if "infer" not in stages:
        return
    for stage, key, what in INFER_SOURCES:
        if stage in stages and inference[key]:
            expected = f"null when stages include '{stage}' (infer reads that stage's output)"
            raise ConfigError(f"inference.{key}", expected, inference[key])
        if stage not in stages and not inference[key]:
            expected = f"{what} when stages leave out '{stage}' (or add '{stage}' to stages)"
            raise ConfigError(f"inference.{key}", expected, None)


def _check_shards(container: Mapping[str, Any]) -> None:
    """Each infer branch scores one etl scoring shard when infer scores the etl output."""
    stages, shards = container["stages"], container["inference"]["shards"]
    scoring_shards = container["etl"]["scoring_shards"]
    if "etl" in stages and "infer" in stages and shards != scoring_shards:
        raise ConfigError(
            "inference.shards",
            f"equal to etl.scoring_shards ({scoring_shards}) when infer scores the etl scoring "
            "set (one infer branch per shard); set inference.shards, which etl.scoring_shards "
            "follows by default",
            shards,
        )


def _check_batch_map(batch_map: Mapping[str, Any]) -> None:
    target = batch_map["function"].get("_target_")
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", target):
        raise ConfigError(
            "batch_map.function._target_",
            "the import path of a function f(batch, **kwargs) -> batch (a.b.function)",
            target,
        )


def _check_model(model: Mapping[str, Any]) -> None:
    target = model.get("_target_")
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", target):
        raise ConfigError("model._target_", "the import path of a model class (a.b.Class)", target)
    try:
        accepted = parameters(target)
    except KfbatchError:
        raise ConfigError(
            "model._target_", "the path of an importable model class", target
        ) from None
    if accepted is None:  # not knowable from the source; the train step checks when it builds
        return
    settable = [name for name in accepted if name != "input_dim"]  # input_dim comes from data
    for key in model:
        if key != "_target_" and key not in settable:
            hint = difflib.get_close_matches(key, settable, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            expected = f"an argument of {target}: {', '.join(settable)}{did_you_mean}"
            raise ConfigError(f"model.{key}", expected, key)


def _check_training(container: Mapping[str, Any]) -> None:
    """Tuning space and objective, early stopping metric and gate fit the task."""
    from pipelines.tuning import trials

    task = container["data"]["task"]
    known = VALIDATION_METRICS[task]
    stop = container["trainer"]["early_stopping"]["metric"]
    if stop is not None and stop not in known:
        raise ConfigError(
            "trainer.early_stopping.metric", f"a {task} validation metric: {', '.join(known)}", stop
        )
    tune = container["tune"]
    if tune["enabled"]:
        if tune["objective"] not in known:
            raise ConfigError(
                "tune.objective",
                f"a {task} validation metric: {', '.join(known)}",
                tune["objective"],
            )
        trials(tune["space"], search=tune["search"], n_trials=tune["n_trials"], seed=0)
    gate = container["evaluate"]["gate"]
    if gate["metric"] is not None and "evaluate" not in container["stages"]:
        raise ConfigError(
            "evaluate.gate.metric",
            "null when stages leave out 'evaluate' (the gate reads the evaluation: add "
            "'evaluate' to stages, or drop the gate)",
            gate["metric"],
        )
    if gate["metric"] is not None:
        if gate["metric"] not in TEST_METRICS[task]:
            raise ConfigError(
                "evaluate.gate.metric",
                f"a {task} test metric: {', '.join(TEST_METRICS[task])}",
                gate["metric"],
            )
        if gate["min"] is None and gate["max"] is None:
            raise ConfigError("evaluate.gate", "a min and/or a max for the metric", dict(gate))


def _check_resources(resources: Mapping[str, Any]) -> None:
    default = resources["default"]
    for required in ("cpu", "memory"):
        if default.get(required) is None:
            raise ConfigError(f"resources.default.{required}", "a value for every step", None)


def _check_secrets(secrets: Mapping[str, str]) -> None:
    for env, source in secrets.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise ConfigError(f"kubeflow.secrets.{env}", "an environment variable name", env)
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+", source):
            raise ConfigError(f"kubeflow.secrets.{env}", "'<secret name>/<key>'", source)
