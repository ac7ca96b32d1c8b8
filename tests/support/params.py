"""Step params for tests, built the way a real run builds them: compose, validate, build the DAG.

Component tests never write params by hand: a hand-written dict exercises defaults that no
run uses and silently drifts from the contract (:mod:`components.params`). These helpers
compose the packaged config tree, shrunk for tests (:data:`TEST_OVERRIDES`), with Hydra
overrides on top, and return the params the DAG gives one step (or one fan-out branch).
Composition is cached per set of overrides; each call returns a fresh deep copy.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from pipelines.builder import build_dag
from pipelines.config.compose import compose_config
from pipelines.dag import Dag

__all__ = [
    "TEST_OVERRIDES",
    "additions",
    "etl_params",
    "hydra_value",
    "override",
    "step_params",
    "train_params",
]

#: The packaged config shrunk for tests: a CSV source keyed by ``customer_id`` (the synthetic
#: churn table's columns), three scoring shards, a small model trained briefly on one thread,
#: no checkpoints unless a test asks for them, and nothing published.
TEST_OVERRIDES = (
    "data=csv",
    "data.uri=test-input.csv",
    "data.id_column=customer_id",
    "data.target=churned",
    "data.batch_rows=1024",
    "seed=7",
    "inference.shards=3",
    "model.hidden=[32,16]",
    "model.dropout=0.1",
    "trainer.epochs=2",
    "trainer.batch_size=64",
    "trainer.lr=0.005",
    "trainer.checkpoint.dir=null",
    "resources.default.cpu=1",
    "resources.steps.train.cpu=1",
    "resources.steps.infer.cpu=1",
    "publish.destination=null",
    "publish.store_url=null",
)


@functools.cache
def _dag(overrides: tuple[str, ...]) -> Dag:
    return build_dag(compose_config(overrides).config)


def step_params(step: str, *overrides: str, item: int = 0) -> dict[str, Any]:
    """The params of DAG step ``step`` (branch ``item`` of a fan-out) under ``overrides``.

    ``overrides`` use Hydra's grammar and apply after :data:`TEST_OVERRIDES`, e.g.
    ``step_params("etl", "data.split.stratify=true")``.
    """
    dag = _dag((*TEST_OVERRIDES, *overrides))
    return copy.deepcopy(dict(dag.node(dag.node_names(step)[item]).params))


def etl_params(*overrides: str) -> dict[str, Any]:
    """The etl step's params under ``overrides``."""
    return step_params("etl", *overrides)


def train_params(*overrides: str, **trainer: Any) -> dict[str, Any]:
    """The train step's params under ``overrides``, with ``trainer.<key>=<value>`` for each
    keyword (``train_params(epochs=3, strategy="fsdp")``)."""
    return step_params(
        "train", *overrides, *(override(f"trainer.{k}", v) for k, v in trainer.items())
    )


def override(key: str, value: Any) -> str:
    """A Hydra override setting ``key`` to the Python value ``value``."""
    return f"{key}={hydra_value(value)}"


def additions(key: str, mapping: Mapping[str, Any]) -> list[str]:
    """Hydra overrides adding each item of ``mapping`` to the dict at ``key``.

    Composed configs are struct-locked, so a key the dict lacks needs Hydra's ``+`` (as on the
    command line: ``+data.columns.amount=float64``); ``key={...}`` would be refused.
    """
    return [f"+{key}.{k}={hydra_value(v)}" for k, v in mapping.items()]


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted, so paths and spaces are safe)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"no Hydra override form for {value!r}")
