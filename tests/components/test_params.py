"""The step params contract: strict parsing, one class per step, nothing defaulted."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from components.errors import ParamError
from components.params import (
    STEP_PARAMS,
    EtlParams,
    GateParams,
    InferParams,
    TrainParams,
    fan_out_item,
    params_for,
)
from tests.support.params import etl_params, step_params, train_params


def test_parse_round_trips_the_dag_params() -> None:
    params = etl_params("data.split.stratify=true")
    typed = EtlParams.parse(params)
    assert typed.split.stratify is True
    assert typed.source.csv.delimiter == ","
    assert typed.to_dict() == params


def test_an_unknown_key_is_refused_by_name() -> None:
    params = etl_params()
    params["features"]["max_categorys"] = 5
    with pytest.raises(ParamError, match=r"unknown key etl\.features\.max_categorys"):
        EtlParams.parse(params)


def test_a_missing_key_is_refused_by_name() -> None:
    params = train_params()
    del params["trainer"]["checkpoint"]["keep"]
    with pytest.raises(ParamError, match=r"missing key train\.trainer\.checkpoint\.keep"):
        TrainParams.parse(params)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "5", r"train\.trainer\.epochs: expected int, got '5'"),
        ("epochs", True, r"train\.trainer\.epochs: expected int, got True"),
        ("lr", None, r"train\.trainer\.lr: expected float, got None"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(key: str, value: object, message: str) -> None:
    params = train_params()
    params["trainer"][key] = value
    with pytest.raises(ParamError, match=message):
        TrainParams.parse(params)


def test_ints_are_accepted_where_floats_are_expected() -> None:
    params = train_params(lr=1)
    assert TrainParams.parse(params).trainer.lr == 1.0


def test_union_values_keep_their_own_type() -> None:
    auto = InferParams.parse(step_params("infer", "inference.batch_size=auto"))
    rows = InferParams.parse(step_params("infer", "inference.batch_size=256"))
    assert (auto.batch_size, rows.batch_size) == ("auto", 256)


def test_a_branch_needs_its_fan_out_item() -> None:
    step = InferParams.parse(step_params("infer"))  # branch 0
    assert fan_out_item(step, "shard") == 0
    with pytest.raises(ParamError, match="shard is null; this step runs once per shard"):
        fan_out_item(step.replace(shard=None), "shard")


def _blocks(cls: type) -> set[type]:
    """``cls`` and every params block nested in it."""
    found = {cls}
    for hint in typing.get_type_hints(cls).values():
        for inner in typing.get_args(hint) or (hint,):
            if dataclasses.is_dataclass(inner):
                found |= _blocks(inner)
    return found


def test_no_params_block_has_defaults() -> None:
    """Defaults live in the Hydra schema only; a component cannot run on an invented value."""
    blocks = set().union(*(_blocks(cls) for cls in STEP_PARAMS.values()))
    assert len(blocks) > len(STEP_PARAMS)  # the nested blocks were found too
    for cls in blocks:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING, f"{cls.__name__}.{f.name}"
            assert f.default_factory is dataclasses.MISSING, f"{cls.__name__}.{f.name}"


def test_every_step_component_has_its_params_class() -> None:
    assert params_for("components.evaluate:gate") is GateParams
    with pytest.raises(ParamError, match="is not a kfbatch step"):
        params_for("components.nope:run")
