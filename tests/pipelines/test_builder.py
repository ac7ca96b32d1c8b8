"""The builder's contract with the components: every node's params parse strictly, and the
params blocks that mirror a config group hold exactly its knobs."""

from __future__ import annotations

import dataclasses

import pytest

from components.params import (
    CheckpointParams,
    CsvParams,
    EarlyStoppingParams,
    FeaturesParams,
    FoldParams,
    QualityParams,
    SplitParams,
    TrainerParams,
    params_for,
)
from pipelines.builder import build_dag
from pipelines.config.compose import compose_config, packaged_config_dir
from pipelines.config.schema import (
    CheckpointConfig,
    CsvConfig,
    CvConfig,
    EarlyStoppingConfig,
    FeaturesConfig,
    QualityConfig,
    SplitConfig,
    TrainerConfig,
)
from pipelines.dag import Dag


def _dag(*overrides: str) -> Dag:
    return build_dag(compose_config(list(overrides)).config)


#: Extra overrides an option needs to compose (``data=csv`` has no data of its own).
_NEEDS = {("data", "csv"): ("data.uri=/data/x.csv", "data.id_column=id", "data.target=y")}
#: Everything on at once: every step kind, fan-outs of folds and trials, the gate.
_EVERYTHING = (
    "stages=[etl,batch_map,train,evaluate,infer]",
    "+batch_map.function._target_=components.examples.signals.welch_psd",
    "cv.enabled=true",
    "tune.enabled=true",
    "tune.cv=true",
    "tune.n_trials=2",
    "evaluate=gated",
)


def _option_overrides() -> list[tuple[str, ...]]:
    """One override list per packaged experiment and group option, plus everything at once."""
    root = packaged_config_dir()
    cases: list[tuple[str, ...]] = [(), _EVERYTHING]
    for group in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for option in sorted(group.glob("*.yaml")):
            key = f"{group.name}={option.stem}"
            cases.append((key, *_NEEDS.get((group.name, option.stem), ())))
    return cases


@pytest.mark.parametrize("overrides", _option_overrides(), ids=lambda o: " ".join(o) or "demo")
def test_every_node_params_parse_strictly(overrides: tuple[str, ...]) -> None:
    dag = _dag(*overrides)
    for node in dag.nodes():
        typed = params_for(node.step.component).parse(node.params)
        assert typed.to_dict() == node.params, node.name


@pytest.mark.parametrize(
    ("block", "group", "extra", "config_only"),
    [
        (SplitParams, SplitConfig, (), ()),
        (CsvParams, CsvConfig, (), ()),
        (FeaturesParams, FeaturesConfig, (), ()),
        (QualityParams, QualityConfig, (), ()),
        (TrainerParams, TrainerConfig, ("seed", "threads"), ()),
        (EarlyStoppingParams, EarlyStoppingConfig, (), ()),
        (CheckpointParams, CheckpointConfig, (), ()),
        (FoldParams, CvConfig, ("seed",), ("enabled", "parallelism")),
    ],
)
def test_params_blocks_mirror_their_config_groups(
    block: type, group: type, extra: tuple[str, ...], config_only: tuple[str, ...]
) -> None:
    """A knob added to a group reaches its step: the DAG copies such blocks field by field."""
    params = {f.name for f in dataclasses.fields(block)} - set(extra)
    config = {f.name for f in dataclasses.fields(group)} - set(config_only)
    assert params == config
