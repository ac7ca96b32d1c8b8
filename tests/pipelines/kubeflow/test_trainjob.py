"""Multi-node training: the built TrainJob/PyTorchJob against the upstream CRDs, and the
watcher against a local Kubernetes API server."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.names import DISTRIBUTED_ENV
from pipelines.builder import build_dag
from pipelines.config.compose import compose_config
from pipelines.dag import Resources, Toleration
from pipelines.errors import ConfigError
from pipelines.k8s import KUEUE_QUEUE_LABEL
from pipelines.kubeflow.compiler import compile_pipeline
from pipelines.kubeflow.trainjob import stage as staging
from pipelines.kubeflow.trainjob.build import (
    TRAIN_ENTRY,
    TrainingJobSpec,
    TrainJobError,
    build_pytorchjob,
    build_training_job,
    build_trainjob,
    job_name,
)
from pipelines.kubeflow.trainjob.stage import run_distributed
from pipelines.kubeflow.trainjob.watch import run_trainjob
from tests.pipelines.kubeflow.k8s_fake_server import FakeKubernetes, condition
from tests.pipelines.manifests.crds import crd_errors

GPU = Resources(
    cpu=8.0,
    memory="32Gi",
    gpu=2,
    accelerator="nvidia.com/gpu",
    node_selector=(("cloud.google.com/gke-accelerator", "nvidia-l4"),),
    tolerations=(Toleration("nvidia.com/gpu", "Exists", None, "NoSchedule"),),
)
COMMON: dict[str, Any] = {
    "name": "churn-train-0123456789",
    "namespace": "team-ml",
    "image": "ghcr.io/kfbatch/kfbatch:0.1.0",
    "command": ["torchrun"],
    "args": ["-m", "components.train"],
    "nodes": 3,
    "procs_per_node": 2,
    "resources": GPU,
    "env": {"KFBATCH_RUN_ID": "run-1"},
    "volumes": [("checkpoints", "/checkpoints")],
    "queue": "team-ml",
    "service_account": "kfbatch",
    "timeout_s": 3600.5,
}


def test_trainjob_matches_the_upstream_crd_and_carries_the_placement() -> None:
    job = build_trainjob(TrainingJobSpec(**COMMON), runtime="torch-distributed")
    assert crd_errors(job) == []
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 2)
    assert trainer["resourcesPerNode"]["limits"] == {
        "cpu": "8",
        "memory": "32Gi",
        "nvidia.com/gpu": "2",
    }
    assert trainer["resourcesPerNode"]["requests"] == trainer["resourcesPerNode"]["limits"]
    assert spec["activeDeadlineSeconds"] == 3601
    assert job["metadata"]["labels"] == {KUEUE_QUEUE_LABEL: "team-ml"}
    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node"  # the replicated job of torch-distributed
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"mountPath": "/checkpoints", "name": "pvc-0"} in container["volumeMounts"]


def test_the_crd_check_catches_what_the_api_server_would_refuse() -> None:
    job = build_trainjob(TrainingJobSpec(**COMMON))
    job["spec"]["trainer"]["numNodez"] = 3
    job["spec"]["trainer"]["numProcPerNode"] = 0
    job["metadata"]["name"] = "9-starts-with-a-digit"
    errors = "\n".join(crd_errors(job))
    assert "'numNodez' was unexpected" in errors
    assert "numProcPerNode: must be >= 1" in errors
    assert "RFC 1035" in errors


def test_pytorchjob_matches_the_upstream_crd_with_a_master_and_workers() -> None:
    job = build_pytorchjob(TrainingJobSpec(**COMMON))
    assert crd_errors(job) == []
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "2"
    (container,) = replicas["Worker"]["template"]["spec"]["containers"]
    assert container["name"] == "pytorch"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3601


@pytest.mark.parametrize("api", ["trainjob", "pytorchjob"])
def test_the_job_of_a_composed_config(api: str) -> None:
    composed = compose_config(
        [
            "trainer.nodes=2",
            "trainer.procs_per_node=4",
            f"kubeflow.training_api={api}",
            "kubeflow.checkpoint_pvc=ckpt",
            "runtime.queue=batch",
            "resources=gpu",
        ]
    )
    step = build_dag(composed.config).step("train")
    job = build_training_job(composed.config, step, name="churn-demo-train", namespace="ml")
    assert crd_errors(job) == []
    assert job["kind"] == {"trainjob": "TrainJob", "pytorchjob": "PyTorchJob"}[api]
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "batch"
    text = json.dumps(job)
    assert '"claimName": "ckpt"' in text
    if api == "pytorchjob":
        container = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][
            0
        ]
        assert container["command"] == ["torchrun"]
        # torchrun finds the master through the operator's MASTER_ADDR, expanded by the kubelet
        assert container["args"][:4] == [
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
            *TRAIN_ENTRY[1:],
        ]
    else:
        assert job["spec"]["trainer"]["command"] == ["torchrun"]
        assert job["spec"]["trainer"]["args"] == list(TRAIN_ENTRY[1:])


def test_job_names_are_rfc1035_stable_per_run_and_short() -> None:
    name = job_name("churn-demo", "train", "run-42")
    assert name == job_name("churn-demo", "train", "run-42")
    assert name != job_name("churn-demo", "train", "run-43")
    assert name.startswith("churn-demo-train-")
    long = job_name("x" * 70, "train", "r")
    assert len(long) <= 63 and long[0].isalpha()
    assert job_name("9lives", "train", "r").startswith("job-9lives-train-")
    with pytest.raises(TrainJobError, match="RFC 1035"):
        build_trainjob(TrainingJobSpec(**{**COMMON, "name": "Bad_Name"}))


# --------------------------------------------------------------------------- the watcher


def _job(name: str = "churn-train-0123456789") -> dict[str, Any]:
    return build_trainjob(TrainingJobSpec(**{**COMMON, "name": name}))


def test_a_job_that_completes_is_followed_logged_and_deleted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = [
        [],
        [condition("Created", reason="JobSetCreated", message="jobset created")],
        [
            condition("Created", reason="JobSetCreated", message="jobset created"),
            condition("Complete", reason="JobSetCompleted", message="all nodes finished"),
        ],
    ]
    lines: list[str] = []
    with FakeKubernetes(progress) as fake, caplog.at_level(logging.INFO, "kfbatch.trainjob"):
        final = run_trainjob(
            _job(), "team-ml", 30, api=fake.api(), poll_s=0, on_status=lines.append
        )
        assert fake.objects == {}  # deleted after success
    path = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-ml/trainjobs"
    assert fake.calls() == [
        ("GET", f"{path}/churn-train-0123456789"),  # looked up first: none yet
        ("POST", path),
        ("GET", f"{path}/churn-train-0123456789"),
        ("GET", f"{path}/churn-train-0123456789"),
        ("GET", f"{path}/churn-train-0123456789"),
        ("DELETE", f"{path}/churn-train-0123456789"),
    ]
    posted = fake.requests[1].body
    assert posted["metadata"]["namespace"] == "team-ml"
    assert "kfbatch.io/spec-digest" in posted["metadata"]["annotations"]
    assert final["status"]["conditions"][-1]["type"] == "Complete"
    ref = "TrainJob team-ml/churn-train-0123456789"
    assert lines == [
        f"{ref}: created",
        f"{ref}: Created=True JobSetCreated: jobset created",
        f"{ref}: Complete=True JobSetCompleted: all nodes finished",
        f"{ref}: succeeded",
    ]
    assert f"{ref}: Complete=True JobSetCompleted" in caplog.text


def test_a_failed_job_fails_with_its_reason_and_is_kept() -> None:
    failed = condition("Failed", reason="JobSetFailed", message="node-0 exited with code 1")
    with FakeKubernetes([[], [failed]]) as fake:
        with pytest.raises(TrainJobError) as error:
            run_trainjob(_job(), "team-ml", 30, api=fake.api(), poll_s=0)
        assert len(fake.objects) == 1  # kept for kubectl describe and the pods' logs
    assert str(error.value) == (
        "TrainJob team-ml/churn-train-0123456789 failed: JobSetFailed: node-0 exited with "
        "code 1 (kept for inspection)"
    )


def test_a_job_past_its_timeout_is_deleted() -> None:
    running = [condition("Created", reason="JobSetCreated")]
    with FakeKubernetes([running]) as fake:
        with pytest.raises(TrainJobError, match=r"did not finish within 0.2 s; deleted it"):
            run_trainjob(_job(), "team-ml", 0.2, api=fake.api(), poll_s=0.02)
        assert fake.objects == {}
        assert fake.calls()[-1][0] == "DELETE"


def test_a_pytorchjob_succeeds_on_its_own_condition() -> None:
    done = [condition("Running"), condition("Succeeded", reason="PyTorchJobSucceeded")]
    with FakeKubernetes([done]) as fake:
        job = build_pytorchjob(TrainingJobSpec(**COMMON))
        run_trainjob(job, "team-ml", 30, api=fake.api(), poll_s=0)
    assert fake.calls()[1] == ("POST", "/apis/kubeflow.org/v1/namespaces/team-ml/pytorchjobs")


def test_a_retried_task_follows_its_identical_job_and_replaces_a_failed_one() -> None:
    done = [condition("Complete", reason="JobSetCompleted")]
    with FakeKubernetes([done]) as fake:
        first = run_trainjob(_job(), "team-ml", 30, api=fake.api(), poll_s=0)
        # The same job again, already there and complete: followed, not recreated.
        fake.put(dict(first, status={"conditions": done}), "trainjobs")
        fake.requests.clear()
        run_trainjob(_job(), "team-ml", 30, api=fake.api(), poll_s=0)
        assert [m for m, _ in fake.calls()] == ["GET", "DELETE"]
        # A failed job of that name: deleted and created again.
        failed = dict(first, status={"conditions": [condition("Failed", reason="X")]})
        fake.put(failed, "trainjobs")
        fake.requests.clear()
        run_trainjob(_job(), "team-ml", 30, api=fake.api(), poll_s=0)
        assert [m for m, _ in fake.calls()][:4] == ["GET", "DELETE", "GET", "POST"]


def test_an_api_refusal_is_one_clear_line() -> None:
    with FakeKubernetes() as fake:
        api = fake.api()

        def refuse(*args: Any, **kwargs: Any) -> Any:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=403, reason="Forbidden")

        api.create_namespaced_custom_object = refuse
        with pytest.raises(
            TrainJobError,
            match=r"TrainJob team-ml/\S+: the Kubernetes API answered 403 Forbidden; the pod's"
            r" service account needs create, get and delete on trainjobs.trainer.kubeflow.org",
        ):
            run_trainjob(_job(), "team-ml", 30, api=api, poll_s=0)


def test_a_cancelled_task_deletes_its_job(caplog: pytest.LogCaptureFixture) -> None:
    """Kubernetes stops a cancelled run's pod with SIGTERM: the job must not outlive it."""
    before = signal.getsignal(signal.SIGTERM)
    with FakeKubernetes([[condition("Created")]]) as fake:
        with pytest.raises(SystemExit), caplog.at_level(logging.INFO, "kfbatch.trainjob"):
            run_trainjob(
                _job(),
                "team-ml",
                30,
                api=fake.api(),
                poll_s=1,
                sleep=lambda _: os.kill(os.getpid(), signal.SIGTERM),
            )
        assert fake.objects == {}
        assert fake.calls()[-1][0] == "DELETE"
    assert "interrupted; deleting it" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_missing_crd_is_named() -> None:
    with FakeKubernetes() as fake:
        api = fake.api()

        def not_installed(*args: Any, **kwargs: Any) -> Any:
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=404, reason="Not Found")

        api.create_namespaced_custom_object = not_installed
        with pytest.raises(TrainJobError) as error:
            run_trainjob(_job(), "team-ml", 30, api=api, poll_s=0)
    assert str(error.value).endswith(
        "answered 404 Not Found; is TrainJob (trainer.kubeflow.org/v1alpha1) installed on this"
        " cluster?"
    )


# --------------------------------------------------------------------------- in the KFP task


def _composed(tmp_path: Path, *extra: str) -> Any:
    return compose_config(
        [
            "trainer.nodes=2",
            "kubeflow.checkpoint_pvc=ckpt",
            f"kubeflow.checkpoint_mount={tmp_path / 'mnt'}",
            *extra,
        ]
    )


def test_multi_node_training_needs_a_shared_checkpoint_pvc() -> None:
    with pytest.raises(ConfigError, match=r"kubeflow.checkpoint_pvc: expected a ReadWriteMany"):
        compile_pipeline(compose_config(["trainer.nodes=2"]))


def test_the_compiled_training_task_carries_its_job(tmp_path: Path) -> None:
    text = compile_pipeline(_composed(tmp_path))
    spec = next(iter(yaml.safe_load_all(text)))
    env = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["env"]
    (setting,) = [e["value"] for e in env if e["name"] == DISTRIBUTED_ENV]
    decoded = json.loads(setting)
    assert decoded["manifest"]["spec"]["trainer"]["numNodes"] == 2
    assert crd_errors(decoded["manifest"]) == []
    others = spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"].get("env", [])
    assert DISTRIBUTED_ENV not in {e["name"] for e in others}


def test_cv_folds_and_tuning_trials_do_not_launch_jobs(tmp_path: Path) -> None:
    text = compile_pipeline(_composed(tmp_path, "cv.enabled=true", "tune.enabled=true"))
    executors = next(iter(yaml.safe_load_all(text)))["deploymentSpec"]["executors"]
    launching = sorted(
        name
        for name, executor in executors.items()
        if DISTRIBUTED_ENV in {e["name"] for e in executor["container"].get("env", [])}
    )
    assert launching == ["exec-train"]
    assert DISTRIBUTED_ENV not in compile_pipeline(compose_config([]))


def test_run_distributed_stages_inputs_runs_the_job_and_returns_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    composed = _composed(tmp_path)
    step = build_dag(composed.config).step("train")
    settings = staging.distributed_settings(composed.config, step)
    dataset = tmp_path / "task" / "dataset"
    dataset.mkdir(parents=True)
    (dataset / "train.parquet").write_text("rows")
    model_out = tmp_path / "task" / "model"
    seen: dict[str, Any] = {}

    def training_pods(job: dict[str, Any]) -> None:
        """Play rank 0: read the arguments, check the staged input, write the outputs."""
        args = job["spec"]["trainer"]["args"]
        values = dict(zip(args[2::2], args[3::2], strict=True))
        seen.update(job=job, values=values)
        inputs, outputs = json.loads(values["--inputs"]), json.loads(values["--outputs"])
        assert Path(inputs["dataset"], "train.parquet").read_text() == "rows"
        Path(outputs["model"]).mkdir(parents=True)
        Path(outputs["model"], "weights.pt").write_text("weights")
        Path(values["--metrics"]).write_text(json.dumps({"val_roc_auc": 0.9}))

    monkeypatch.setattr(staging, "_pod_namespace", lambda: "team-ml")
    with FakeKubernetes([[condition("Complete")]], on_create=training_pods) as fake:
        results = run_distributed(
            settings,
            component="components.train:run",
            params={"epochs": 1},
            inputs={"dataset": str(dataset)},
            outputs={"model": str(model_out)},
            run_id="run-7",
            api=fake.api(),
            poll_s=0,
        )
    assert results == {"val_roc_auc": 0.9}
    assert (model_out / "weights.pt").read_text() == "weights"
    job, values = seen["job"], seen["values"]
    assert job["metadata"]["name"] == job_name("churn-demo", "train", "run-7")
    assert job["metadata"]["namespace"] == "team-ml"
    assert job["spec"]["trainer"]["args"][:2] == list(TRAIN_ENTRY[1:])
    assert values["--component"] == "components.train:run"
    assert json.loads(values["--params"]) == {"epochs": 1}
    env = {e["name"]: e["value"] for e in job["spec"]["trainer"]["env"]}
    stage = tmp_path / "mnt" / "kfbatch-jobs" / job["metadata"]["name"]
    assert env["KFBATCH_CHECKPOINT_DIR"] == os.fspath(stage / "checkpoints")
    assert env["KFBATCH_RUN_ID"] == "run-7"
    # the inputs' copies are gone; the outputs and the success marker stay for a retry
    assert sorted(p.name for p in stage.iterdir()) == ["metrics.json", "outputs", "succeeded"]


def test_the_launcher_trains_through_a_job_when_the_compiler_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KFP task's path end to end: env from the compiler, kubeconfig, fake cluster."""
    from kfp import dsl

    from pipelines.kubeflow.launch import launch

    composed = _composed(tmp_path)
    settings = staging.distributed_settings(
        composed.config, build_dag(composed.config).step("train")
    )
    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    os.makedirs(dataset.path)
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))

    def training_pods(job: dict[str, Any]) -> None:
        args = job["spec"]["trainer"]["args"]
        values = dict(zip(args[2::2], args[3::2], strict=True))
        Path(json.loads(values["--outputs"])["model"]).mkdir(parents=True)
        Path(json.loads(values["--outputs"])["model"], "weights.pt").write_text("w")
        Path(values["--metrics"]).write_text(json.dumps({"val_roc_auc": 0.75}))

    with FakeKubernetes([[condition("Complete")]], on_create=training_pods) as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "clusters": [{"cluster": {"server": fake.url}, "name": "fake"}],
                    "contexts": [{"context": {"cluster": "fake", "user": "u"}, "name": "fake"}],
                    "current-context": "fake",
                    "kind": "Config",
                    "users": [{"name": "u", "user": {"token": "t"}}],
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv(DISTRIBUTED_ENV, settings)
        returned = launch(
            "components.train:run",
            json.dumps({"epochs": 1}),
            inputs={"dataset": dataset},
            outputs={"model": model},
            metrics=metrics,
            run_id="run-9",
        )
    assert returned == {"val_roc_auc": 0.75}
    assert metrics.metadata == {"val_roc_auc": 0.75}
    assert Path(model.path, "weights.pt").read_text() == "w"
    assert fake.requests[0].method == "GET"  # looked up first: a retry adopts its job
    posted = next(r for r in fake.requests if r.method == "POST")
    assert posted.path == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow/trainjobs"
    assert posted.body["spec"]["trainer"]["numNodes"] == 2


def _run_train(settings: str, task: Path, api: Any, **kwargs: Any) -> dict[str, Any]:
    return run_distributed(
        settings,
        component="components.train:run",
        params={"epochs": 1},
        inputs={"dataset": str(task / "dataset")},
        outputs={"model": str(task / "model")},
        run_id="run-7",
        api=api,
        poll_s=0,
        **kwargs,
    )


def _rank_zero(job: dict[str, Any]) -> None:
    """Play the training pods: write the model and the metrics where the job says."""
    args = job["spec"]["trainer"]["args"]
    values = dict(zip(args[2::2], args[3::2], strict=True))
    model = Path(json.loads(values["--outputs"])["model"])
    model.mkdir(parents=True, exist_ok=True)
    (model / "weights.pt").write_text(
        Path(json.loads(values["--inputs"])["dataset"], "rows").read_text()
    )
    Path(values["--metrics"]).write_text(json.dumps({"val_roc_auc": 0.9}))


@pytest.fixture
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """The training task's settings and a task folder holding its dataset input."""
    monkeypatch.setattr(staging, "_pod_namespace", lambda: "team-ml")
    composed = _composed(tmp_path)
    settings = staging.distributed_settings(
        composed.config, build_dag(composed.config).step("train")
    )
    (tmp_path / "task" / "dataset").mkdir(parents=True)
    (tmp_path / "task" / "dataset" / "rows").write_text("v1")
    return settings, tmp_path / "task"


def test_a_retry_after_the_job_succeeded_collects_its_outputs_and_creates_nothing(
    launcher: tuple[str, Path], tmp_path: Path
) -> None:
    settings, task = launcher
    with FakeKubernetes([[condition("Complete")]], on_create=_rank_zero) as fake:
        assert _run_train(settings, task, fake.api()) == {"val_roc_auc": 0.9}
    # The launcher pod dies after the job succeeded (and was deleted); KFP retries the task
    # with fresh artifact folders.
    shutil.rmtree(task / "model")
    with FakeKubernetes([[condition("Complete")]], on_create=_rank_zero) as retry:
        assert _run_train(settings, task, retry.api()) == {"val_roc_auc": 0.9}
        assert retry.calls() == []  # nothing looked up, created or re-run
    assert (task / "model" / "weights.pt").read_text() == "v1"


def test_a_retry_while_the_job_runs_follows_it_and_leaves_its_staged_data_alone(
    launcher: tuple[str, Path], tmp_path: Path
) -> None:
    settings, task = launcher
    # Attempt 1 creates the job, then its pod dies while the job runs (here: a timeout
    # stands in for the dead launcher; the POST body is what the cluster holds).
    with FakeKubernetes([[]]) as first:
        with pytest.raises(TrainJobError, match="did not finish"):
            _run_train(settings, task, first.api(), timeout_s=0.01)
        (created,) = [r.body for r in first.requests if r.method == "POST"]
    stage = tmp_path / "mnt" / "kfbatch-jobs" / created["metadata"]["name"]
    assert (stage / "inputs" / "dataset" / "rows").read_text() == "v1"
    (task / "dataset" / "rows").write_text("v2")  # a re-copy would show
    running = {**created, "metadata": {**created["metadata"], "namespace": "team-ml"}}
    with FakeKubernetes([[], [condition("Complete")]]) as retry:
        retry.put(running, "trainjobs", progressing=True)
        _rank_zero(running)  # the live ranks finish their work
        assert _run_train(settings, task, retry.api()) == {"val_roc_auc": 0.9}
        assert "POST" not in {method for method, _ in retry.calls()}
    assert (task / "model" / "weights.pt").read_text() == "v1"  # the job's data, untouched


def test_a_field_the_clusters_crd_lacks_is_refused_naming_the_release(
    launcher: tuple[str, Path],
) -> None:
    settings, task = launcher
    old_crd = FakeKubernetes([[condition("Complete")]], unknown_fields=["spec.runtimePatches"])
    with old_crd as old, pytest.raises(TrainJobError) as error:
        _run_train(settings, task, old.api())
    message = str(error.value)
    assert "strict decoding error" in message
    assert "has no field spec.runtimePatches: kfbatch needs Kubeflow Trainer v2.3.0" in message
