"""The DAG's shape, determinism, fan-outs and resources."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pipelines.builder import build_dag
from pipelines.config.compose import compose_config
from pipelines.config.schema import StepResources
from pipelines.dag import RUN_ID, Dag, Ref, Resources, Step, Uri


def _dag(*overrides: str) -> Dag:
    return build_dag(compose_config(list(overrides)).config)


def test_demo_dag_shape() -> None:
    dag = _dag()
    assert [s.name for s in dag.steps] == [
        "datagen",
        "etl",
        "train",
        "evaluate",
        "infer",
        "publish",
    ]
    assert dag.step("etl").inputs == {"source": Ref("datagen", "raw")}
    assert dag.upstream(dag.step("publish")) == ["infer", "etl"]
    infer = dag.step("infer")
    assert infer.fan_out is not None
    assert (infer.fan_out.param, infer.fan_out.items, infer.fan_out.parallelism) == (
        "shard",
        (0, 1, 2, 3),
        2,
    )
    assert infer.params["run_id"] == RUN_ID


def test_fan_out_expands_into_one_node_per_item() -> None:
    dag = _dag("inference.shards=3")
    names = [node.name for node in dag.nodes()]
    assert names[-4:] == ["infer-0", "infer-1", "infer-2", "publish"]
    shards = [node.params["shard"] for node in dag.nodes() if node.step.name == "infer"]
    assert shards == [0, 1, 2]


def test_csv_data_reads_the_uri_and_skips_generation() -> None:
    dag = _dag("data=csv", "data.uri=/data/in.csv", "data.target=y", "data.id_column=id")
    assert "datagen" not in [s.name for s in dag.steps]
    assert dag.step("etl").inputs["source"] == Uri("/data/in.csv")


def test_stages_select_steps() -> None:
    assert [s.name for s in _dag("stages=[etl]").steps] == ["datagen", "etl"]
    assert [s.name for s in _dag("stages=[etl,train]").steps] == ["datagen", "etl", "train"]


def test_resources_merge_step_overrides_over_default() -> None:
    dag = _dag("resources=gpu", "resources.default.memory=3Gi")
    train = dag.step("train").resources
    assert (train.cpu, train.memory, train.gpu, train.accelerator) == (
        8.0,
        "32Gi",
        1,
        "nvidia.com/gpu",
    )
    assert train.node_selector == (("cloud.google.com/gke-accelerator", "nvidia-tesla-t4"),)
    assert train.tolerations[0].effect == "NoSchedule"
    assert dag.step("etl").resources == Resources(cpu=1.0, memory="3Gi")


def test_same_config_same_dag() -> None:
    assert _dag().digest() == _dag().digest()
    assert _dag().to_dict() == _dag().to_dict()
    assert _dag().digest() != _dag("trainer.epochs=9").digest()


def test_dag_json_is_byte_identical_across_processes() -> None:
    command = [sys.executable, "-m", "pipelines.cli", "dag", "--format", "json", "resources=gpu"]
    outputs = {subprocess.run(command, capture_output=True, check=True).stdout for _ in range(2)}
    assert len(outputs) == 1
    assert b'"fan_out"' in outputs.pop()


def test_dag_rejects_reading_an_output_before_it_exists() -> None:
    res = Resources(cpu=1.0, memory="1Gi")
    with pytest.raises(ValueError, match="reads Ref"):
        Dag("bad", (Step("a", "m:f", {}, {"x": Ref("b", "out")}, ("out",), res),))


def test_dag_tree_shows_resources_and_fan_outs(kfbatch) -> None:
    result = kfbatch("dag", "resources=gpu")
    assert result.code == 0
    assert "train  [components.train:run]  cpu=8 memory=32Gi gpu=1 (nvidia.com/gpu)" in result.out
    assert "fan-out: shard in [0, 1, 2, 3], 2 at a time" in result.out
    assert "predictions <- infer.predictions (collected)" in result.out
    assert "tolerations=nvidia.com/gpu" in result.out


def test_every_step_has_a_resources_entry() -> None:
    steps = {f.name for f in dataclasses.fields(StepResources)}
    everything = _dag("cv.enabled=true", "tune.enabled=true", "evaluate=gated")
    signals = _dag("experiment=signals")
    assert {step.name for step in (*everything.steps, *signals.steps)} == steps


def test_scoring_only_run_reads_the_model_and_data_from_outside() -> None:
    dag = _dag("stages=[infer]", "inference.model_uri=/models/m1", "inference.data_uri=/data/new")
    assert [s.name for s in dag.steps] == ["infer", "publish"]
    infer = dag.step("infer")
    assert infer.inputs == {"scoring": Uri("/data/new"), "model": Uri("/models/m1")}
    assert dag.step("publish").inputs["scoring"] == Uri("/data/new")
    assert infer.params["shards"] == 4 and infer.params["id_column"] == "customer_id"


def test_scoring_with_a_given_model_after_etl() -> None:
    dag = _dag("stages=[etl,infer]", "inference.model_uri=/models/m1")
    assert [s.name for s in dag.steps] == ["datagen", "etl", "infer", "publish"]
    assert dag.step("infer").inputs == {
        "scoring": Ref("etl", "scoring"),
        "model": Uri("/models/m1"),
    }


def test_etl_params_carry_data_options_transforms_and_checks() -> None:
    dag = _dag(
        "data=csv",
        "data.uri=s3://bucket/raw/*.jsonl",
        "data.id_column=id",
        "data.target=y",
        "+data.storage_options={endpoint_override: 'http://127.0.0.1:9000', scheme: http}",
        "+features.clip.amount=[0,100]",
        "quality=demo",
        "etl.max_reject_fraction=0.01",
    )
    etl = dag.step("etl")
    assert etl.inputs == {"source": Uri("s3://bucket/raw/*.jsonl")}
    assert etl.params["source"]["storage_options"] == {
        "endpoint_override": "http://127.0.0.1:9000",
        "scheme": "http",
    }
    assert etl.params["features"]["clip"] == {"amount": [0, 100]}
    assert etl.params["max_reject_fraction"] == 0.01
    assert {"check": "unique", "column": "customer_id"} in etl.params["quality"]["checks"]
    assert etl.outputs == ("dataset", "feature_spec", "scoring", "rejects", "quality")


def test_batch_map_fans_out_over_the_scoring_shards() -> None:
    dag = _dag("experiment=signals", "etl.scoring_shards=3")
    assert dag.step("etl").params["shards"] == 3
    step = dag.step("batch_map")
    assert step.fan_out is not None and step.fan_out.items == (0, 1, 2)
    assert step.inputs == {"scoring": Ref("etl", "scoring")}
    assert dag.step("batch_map_merge").inputs == {"mapped": Ref("batch_map", "mapped")}
    assert step.params["function"]["_target_"] == "components.examples.signals.welch_psd"


def test_etl_scoring_shards_follow_inference_shards_unless_set() -> None:
    dag = _dag("inference.shards=6")
    assert dag.step("etl").params["shards"] == 6
    assert dag.step("infer").fan_out.items == tuple(range(6))
    prepare_only = _dag("stages=[etl]", "etl.scoring_shards=2")
    assert prepare_only.step("etl").params["shards"] == 2
