"""The compiled KFP pipeline: shape from the DAG, pod settings from config, by reading the YAML."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from kfp.components import load_component_from_text

from pipelines.config.compose import compose_config
from pipelines.dag import RUN_DATE, RUN_ID, Ref
from pipelines.errors import KfbatchError
from pipelines.kubeflow import tasks
from pipelines.kubeflow.compiler import compile_pipeline, write_pipeline
from pipelines.kubeflow.launch import RUN_DATE_TOKEN, RUN_ID_TOKEN

from .helpers import GPU_CLUSTER, Compiled, compile_config

STEPS = ("datagen", "etl", "train", "evaluate", "infer", "publish")


@pytest.fixture(scope="module")
def gpu() -> Compiled:
    return compile_config(*GPU_CLUSTER)


def test_kfp_loads_the_yaml_as_it_was_written(gpu: Compiled) -> None:
    loaded = load_component_from_text(gpu.text)
    assert loaded.name == "churn-demo"
    assert json_format.MessageToDict(loaded.pipeline_spec) == gpu.spec
    assert json_format.MessageToDict(loaded.platform_spec) == {"platforms": gpu.platform}
    assert set(loaded.component_spec.outputs) == {
        "etl_quality",
        "etl_rejects",
        "evaluate_metrics",
        "publish_predictions",
    }


def test_every_step_is_a_task_running_the_project_image(gpu: Compiled) -> None:
    for step in STEPS:
        task, container = gpu.task(step), gpu.executor(step)
        assert task["taskInfo"]["name"] == step
        assert container["image"] == "ghcr.io/kfbatch/kfbatch:0.1.0"
        assert {"name": "KFBATCH_STEP", "value": step} in container["env"]
        # A lightweight component without a pip step: the image has kfp and kfbatch.
        assert container["command"][:2] == ["sh", "-ec"]
        assert "python3 -m kfp.dsl.executor_main" in container["command"][2]
        assert "pip install" not in " ".join(container["command"])
        assert "from pipelines.kubeflow.launch import launch" in container["command"][3]


def test_tasks_call_the_dag_components_with_the_dag_params(gpu: Compiled) -> None:
    for step in gpu.dag.steps:
        parameters = gpu.task(step.name)["inputs"]["parameters"]
        assert parameters["component"]["runtimeValue"]["constant"] == step.component
        params = parameters["params"]["runtimeValue"]["constant"]
        restored = params.replace(RUN_ID_TOKEN, RUN_ID).replace(RUN_DATE_TOKEN, RUN_DATE)
        assert json.loads(restored) == json.loads(json.dumps(step.params))


def test_task_inputs_are_the_dag_edges(gpu: Compiled) -> None:
    for step in gpu.dag.steps:
        artifacts = gpu.task(step.name)["inputs"].get("artifacts", {})
        assert set(artifacts) == set(step.inputs)
        for name, source in step.inputs.items():
            assert isinstance(source, Ref)
            if step.name == "infer":  # inside the loop: handed in by the ParallelFor
                assert artifacts[name] == {
                    "componentInputArtifact": f"pipelinechannel--{source.step}-{source.output}"
                }
            elif gpu.dag.step(source.step).fan_out:  # dsl.Collected from the loop
                selector = artifacts[name]["taskOutputArtifact"]
                assert selector["producerTask"].startswith("for-loop-")
                assert selector["outputArtifactKey"] == f"pipelinechannel--infer-{source.output}"
            else:
                assert artifacts[name]["taskOutputArtifact"] == {
                    "outputArtifactKey": source.output,
                    "producerTask": source.step,
                }


def test_fan_out_is_a_parallel_for_with_the_dag_parallelism(gpu: Compiled) -> None:
    loops = [t for name, t in gpu.spec["root"]["dag"]["tasks"].items() if name.startswith("for-")]
    assert len(loops) == 1
    loop = loops[0]
    assert loop["taskInfo"]["name"] == "infer x4"
    assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2, 3]
    infer = gpu.task("infer")
    item = loop["parameterIterator"]["itemInput"]
    assert infer["inputs"]["parameters"]["shard"] == {"componentInputParameter": item}
    publish = gpu.spec["components"]["comp-publish"]["inputDefinitions"]["artifacts"]
    assert publish["predictions"]["isArtifactList"] is True


def test_run_id_placeholder_becomes_the_kfp_job_id(gpu: Compiled) -> None:
    infer = gpu.task("infer")["inputs"]["parameters"]
    assert infer["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert RUN_ID_TOKEN in infer["params"]["runtimeValue"]["constant"]
    # Argo would try to resolve any other {{...}} as one of its own variables.
    assert "{{kfbatch" not in gpu.text
    assert gpu.task("publish")["inputs"]["parameters"]["run_id"] == infer["run_id"]
    for step in ("datagen", "etl", "train", "evaluate"):
        assert "run_id" not in gpu.task(step)["inputs"]["parameters"]


def test_requests_limits_and_accelerators_come_from_resources(gpu: Compiled) -> None:
    train = gpu.executor("train")["resources"]
    assert train["resourceCpuRequest"] == train["resourceCpuLimit"] == "8"
    assert train["resourceMemoryRequest"] == train["resourceMemoryLimit"] == "32Gi"
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "1"
    infer = gpu.executor("infer")["resources"]
    assert infer["resourceCpuRequest"] == infer["resourceCpuLimit"] == "2"
    assert infer["resourceMemoryRequest"] == infer["resourceMemoryLimit"] == "4Gi"
    for step in ("datagen", "etl", "evaluate", "infer", "publish"):
        resources = gpu.executor(step)["resources"]
        assert "accelerator" not in resources
        if step != "infer":
            assert resources["resourceCpuLimit"] == "1"
            assert resources["resourceMemoryLimit"] == "2Gi"


def test_node_selector_and_tolerations_only_where_configured(gpu: Compiled) -> None:
    train = gpu.k8s("train")
    assert train["nodeSelector"] == {
        "labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    }
    assert train["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    for step in ("datagen", "etl", "evaluate", "infer", "publish"):
        assert "nodeSelector" not in gpu.k8s(step)
        assert "tolerations" not in gpu.k8s(step)


def test_checkpoint_pvc_on_training_and_volumes_on_every_task(gpu: Compiled) -> None:
    for step in STEPS:
        mounts = {m["constant"]: m["mountPath"] for m in gpu.k8s(step)["pvcMount"]}
        expected = {"shared-data": "/data"}
        if step == "train":
            expected["train-checkpoints"] = "/checkpoints"
        assert mounts == expected
    train_env = gpu.executor("train")["env"]
    assert {"name": "KFBATCH_CHECKPOINT_DIR", "value": "/checkpoints"} in train_env


def test_secrets_are_env_vars_by_reference(gpu: Compiled) -> None:
    for step in STEPS:
        secrets = {
            s["secretName"]: {k["envVar"]: k["secretKey"] for k in s["keyToEnv"]}
            for s in gpu.k8s(step)["secretAsEnv"]
        }
        assert secrets == {
            "db": {"DB_PASSWORD": "password"},
            "s3-creds": {"AWS_ACCESS_KEY_ID": "access_key", "AWS_SECRET_ACCESS_KEY": "secret_key"},
        }
        env_names = {e["name"] for e in gpu.executor(step)["env"]}
        assert not env_names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD"}


def test_retries_with_exponential_backoff_and_caching(gpu: Compiled) -> None:
    for step in STEPS:
        task = gpu.task(step)
        assert task["retryPolicy"] == {
            "backoffDuration": "1s",
            "backoffFactor": 2.0,
            "backoffMaxDuration": "3600s",
            "maxRetryCount": 1,
        }
        assert task["cachingOptions"] == {"enableCache": True}


def test_no_retries_no_caching_timeouts_and_fractional_quantities() -> None:
    compiled = compile_config(
        "runtime.retries=0",
        "kubeflow.caching=false",
        "runtime.step_timeout_s=90.5",
        "resources.default.cpu=0.5",
        "resources.default.memory=1.5Gi",
        "resources.steps.train.memory=512k",
    )
    for step in STEPS:
        task = compiled.task(step)
        assert "retryPolicy" not in task
        assert task["cachingOptions"] == {}  # enableCache: false is protobuf's default
        assert compiled.k8s(step)["activeDeadlineSeconds"] == "91"
    etl = compiled.executor("etl")["resources"]
    assert etl["resourceCpuRequest"] == "500m"
    assert etl["resourceMemoryRequest"] == str(3 * 2**29)  # kfp refuses "1.5Gi"
    assert compiled.executor("train")["resources"]["resourceMemoryLimit"] == "512000"


def test_external_data_is_a_pipeline_parameter() -> None:
    compiled = compile_config(
        "data=csv", "data.uri=s3://bucket/churn.csv", "data.id_column=id", "data.target=y"
    )
    assert compiled.spec["root"]["inputDefinitions"]["parameters"] == {
        "data_uri": {
            "defaultValue": "s3://bucket/churn.csv",
            "isOptional": True,
            "parameterType": "STRING",
        },
        "run_date": {"defaultValue": "", "isOptional": True, "parameterType": "STRING"},
    }
    etl = compiled.task("etl")
    assert etl["inputs"]["parameters"]["source_uri"] == {"componentInputParameter": "data_uri"}
    assert "artifacts" not in etl["inputs"]
    assert "datagen" not in compiled.spec["root"]["dag"]["tasks"]


def test_scoring_only_pipeline_takes_model_and_data_as_parameters() -> None:
    compiled = compile_config(
        "stages=[infer]", "inference.model_uri=/mnt/m/model", "inference.data_uri=/mnt/d/new"
    )
    parameters = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert {name: p["defaultValue"] for name, p in parameters.items()} == {
        "infer_model_uri": "/mnt/m/model",
        "infer_scoring_uri": "/mnt/d/new",  # one parameter for infer and publish
        "run_date": "",
    }
    infer = compiled.task("infer")["inputs"]["parameters"]
    # inside the fan-out's loop, kfp passes pipeline parameters through as channels
    assert infer["model_uri"] == {"componentInputParameter": "pipelinechannel--infer_model_uri"}
    assert infer["scoring_uri"] == {"componentInputParameter": "pipelinechannel--infer_scoring_uri"}
    publish = compiled.task("publish")["inputs"]["parameters"]
    assert publish["scoring_uri"] == {"componentInputParameter": "infer_scoring_uri"}


def test_scoring_only_pipeline_reads_object_stores_with_the_etl_source_options() -> None:
    compiled = compile_config(
        "stages=[infer]",
        "inference.model_uri=s3://models/churn",
        "inference.data_uri=s3://lake/day/*.csv",
        "data.csv.delimiter='|'",
        "etl.max_reject_fraction=0.01",
    )
    parameters = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["infer_scoring_uri"]["defaultValue"] == "s3://lake/day/*.csv"
    for name in ("infer", "publish"):
        task = compiled.task(name)
        params = json.loads(task["inputs"]["parameters"]["params"]["runtimeValue"]["constant"])
        assert params["source"]["csv"]["delimiter"] == "|"
        assert params["source"]["format"] == "auto"
        assert task["cachingOptions"] == {}  # the objects behind the URI may change
    infer = json.loads(
        compiled.task("infer")["inputs"]["parameters"]["params"]["runtimeValue"]["constant"]
    )
    assert infer["max_reject_fraction"] == 0.01


def test_an_outside_model_alone_is_not_called_data() -> None:
    compiled = compile_config("stages=[etl,infer]", "inference.model_uri=/mnt/m/model")
    parameters = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == {"infer_model_uri", "run_date"}


def test_run_date_is_a_pipeline_parameter_defaulting_to_the_config() -> None:
    compiled = compile_config("run_date=2026-03-01")
    parameters = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["run_date"]["defaultValue"] == "2026-03-01"
    publish = compiled.task("publish")["inputs"]["parameters"]
    assert publish["run_date"] == {"componentInputParameter": "run_date"}
    assert '"run_date":"@kfbatch.run_date@"' in publish["params"]["runtimeValue"]["constant"]
    assert "run_date" not in compiled.task("train")["inputs"]["parameters"]


def test_tasks_reading_an_outside_uri_are_never_cached() -> None:
    compiled = compile_config(
        "data=csv", "data.uri=/mnt/churn.csv", "data.id_column=id", "data.target=y"
    )
    assert compiled.task("etl")["cachingOptions"] == {}  # the file behind the URI may change
    assert compiled.task("train")["cachingOptions"] == {"enableCache": True}


def test_pipeline_root_from_config() -> None:
    compiled = compile_config("kubeflow.pipeline_root=s3://bucket/kfbatch")
    assert compiled.spec["defaultPipelineRoot"] == "s3://bucket/kfbatch"


def test_partial_stages_compile_with_their_final_outputs() -> None:
    compiled = compile_config("stages=[etl]")
    assert set(compiled.spec["root"]["dag"]["tasks"]) == {"datagen", "etl"}
    assert set(compiled.spec["root"]["outputDefinitions"]["artifacts"]) == {
        "etl_dataset",
        "etl_feature_spec",
        "etl_quality",
        "etl_rejects",
        "etl_scoring",
    }


def test_a_component_without_declaration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(tasks.DECLARATIONS, "components.publish:run")
    with pytest.raises(KfbatchError, match=r"step 'publish' runs 'components.publish:run'.*tasks"):
        compile_pipeline(compose_config([]))


def test_a_declaration_that_does_not_match_the_step_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(tasks.DECLARATIONS, "components.train:run", (tasks.evaluate,))
    with pytest.raises(KfbatchError, match=r"no KFP declaration .* matches step 'train'"):
        compile_pipeline(compose_config([]))


def test_write_pipeline_writes_the_compiled_text(tmp_path: Path) -> None:
    composed = compose_config(["experiment=breast_cancer"])
    path = write_pipeline(composed, tmp_path / "out" / "pipeline.yaml")
    assert path.read_text() == compile_pipeline(composed)
    assert [p.name for p in path.parent.iterdir()] == ["pipeline.yaml"]


_COMPILE_DIGEST = (
    "import hashlib, sys\n"
    "from pipelines.config.compose import compose_config\n"
    "from pipelines.kubeflow.compiler import compile_pipeline\n"
    "text = compile_pipeline(compose_config(sys.argv[1:]))\n"
    "print(hashlib.sha256(text.encode()).hexdigest())\n"
)


def test_same_config_same_bytes_across_processes(gpu: Compiled) -> None:
    digests = {
        subprocess.run(
            [sys.executable, "-c", _COMPILE_DIGEST, *GPU_CLUSTER],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert digests == {hashlib.sha256(gpu.text.encode()).hexdigest()}


def test_publishing_inside_the_pod_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    compile_config()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("publish.destination=runs/published/") for m in warned)
    assert any(m.startswith("publish.store_url=sqlite:///runs/") for m in warned)
    caplog.clear()
    compile_config("publish.destination=/mnt/published", "publish.store_url=null")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
