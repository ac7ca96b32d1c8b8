"""``kfbatch manifests``: every rendered resource validates, overlays build and differ only
by their patches, the committed tree is current, and ``--check`` notices a config change."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipelines.config.compose import compose_config
from pipelines.manifests import render_tree
from pipelines.manifests.job import main as job_main
from tests.pipelines.manifests.crds import crd_errors, is_custom

REPO = Path(__file__).resolve().parents[3]
#: The Kubernetes version whose JSON schemas core kinds are validated against.
KUBERNETES_VERSION = "1.32.0"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture(scope="module")
def tree() -> dict[str, str]:
    """The demo's rendered tree, in memory."""
    return render_tree(compose_config([]))


@pytest.fixture(scope="module")
def built(tree: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """``kubectl kustomize`` of each overlay: env -> resources."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    root = tmp_path_factory.mktemp("tree")
    for rel, text in tree.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    found = {}
    for overlay in sorted((root / "overlays").iterdir()):
        out = subprocess.run(
            [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, f"kubectl kustomize {overlay.name}: {out.stderr}"
        found[overlay.name] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return found


def _resources(tree: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for rel, text in tree.items():
        for doc in yaml.safe_load_all(text):
            if doc and not str(doc.get("apiVersion", "")).startswith("kustomize.config"):
                if "images" in doc and "kind" not in doc:
                    continue  # kustomizeconfig.yaml, kustomize's own transformer config
                yield rel, doc


def _validate(resource: dict[str, Any]) -> list[str]:
    if is_custom(resource):
        return crd_errors(resource)
    try:
        kubernetes_validate.validate(
            json.loads(json.dumps(resource)), KUBERNETES_VERSION, strict=True
        )
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.path))}: {error.message}"]
    return []


def _name(resource: dict[str, Any]) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


CORE_KINDS = {
    "ConfigMap",
    "CronJob",
    "Job",
    "Namespace",
    "PersistentVolumeClaim",
    "Role",
    "RoleBinding",
    "ServiceAccount",
}


def test_every_file_resource_validates(tree: dict[str, str]) -> None:
    kinds = set()
    for rel, resource in _resources(tree):
        assert _validate(resource) == [], f"{rel}: {_name(resource)}"
        kinds.add(resource["kind"])
    assert kinds == CORE_KINDS | {"Pipeline", "PipelineVersion", "TrainJob"}


def test_a_gpu_multi_node_pytorchjob_variant_validates_too() -> None:
    tree = render_tree(
        compose_config(
            [
                "kubeflow.training_api=pytorchjob",
                "resources=gpu",
                "runtime.queue=team-ml",
                "trainer.nodes=3",
                "schedule=nightly",
                "runtime.step_timeout_s=3600",
            ]
        )
    )
    kinds = set()
    for rel, resource in _resources(tree):
        assert _validate(resource) == [], f"{rel}: {_name(resource)}"
        kinds.add(resource["kind"])
    assert kinds == CORE_KINDS | {"Pipeline", "PipelineVersion", "PyTorchJob"}
    (job,) = yaml.safe_load_all(tree["components/standalone/training-job.yaml"])
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-ml"
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert worker["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (cron,) = yaml.safe_load_all(tree["components/kfp/cronjob.yaml"])
    assert (cron["spec"]["schedule"], cron["spec"]["suspend"]) == ("0 2 * * *", False)
    # The training task creates its PyTorchJob with the service account's API token.
    (account,) = yaml.safe_load_all(tree["base/serviceaccount.yaml"])
    assert account["automountServiceAccountToken"] is True


def test_the_submit_cronjob_gets_a_token_for_the_kfp_api_only(tree: dict[str, str]) -> None:
    from kfp.client import KF_PIPELINES_SA_TOKEN_PATH

    (cron,) = yaml.safe_load_all(tree["components/kfp/cronjob.yaml"])
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kfp-token"]
    assert f"{mount['mountPath']}/{source['serviceAccountToken']['path']}" == (
        KF_PIPELINES_SA_TOKEN_PATH
    )
    (account,) = yaml.safe_load_all(tree["base/serviceaccount.yaml"])
    assert account["automountServiceAccountToken"] is False  # trainer.nodes=1: no API calls


def test_strict_validation_catches_a_typo() -> None:
    """The validators are not vacuous: an unknown field fails, core and custom alike."""
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "x"},
        "spec": {"accessModez": ["ReadWriteOnce"]},
    }
    assert "accessModez" in " ".join(_validate(pvc))


@needs_kubectl
def test_every_overlay_builds_and_validates(built: dict[str, list]) -> None:
    assert sorted(built) == ["batch", "dev", "prod"]
    for env, resources in built.items():
        for resource in resources:
            assert _validate(resource) == [], f"{env}: {_name(resource)}"
            assert resource["metadata"]["labels"]["kfbatch.io/env"] == env


def _pods(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every pod spec (or TrainJob pod patch) inside a resource."""
    spec = resource.get("spec", {})
    kind = resource["kind"]
    if kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Job":
        yield spec["template"]["spec"]
    elif kind == "PyTorchJob":
        for replica in spec["pytorchReplicaSpecs"].values():
            yield replica["template"]["spec"]
    elif kind == "TrainJob":
        for patch in spec["runtimePatches"]:
            for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                yield job["template"]["spec"]["template"]["spec"]


@needs_kubectl
def test_every_container_is_limited_non_root_read_only_and_pinned(
    built: dict[str, list],
) -> None:
    checked = 0
    for env, resources in built.items():
        for resource in resources:
            for pod in _pods(resource):
                where = f"{env}: {_name(resource)}"
                assert pod["securityContext"]["runAsNonRoot"] is True, where
                for container in pod["containers"] + pod.get("initContainers", []):
                    context = container["securityContext"]
                    assert context["allowPrivilegeEscalation"] is False, where
                    assert context["readOnlyRootFilesystem"] is True, where
                    assert context["capabilities"]["drop"] == ["ALL"], where
                    checked += 1
                    if resource["kind"] == "TrainJob":
                        requirements = resource["spec"]["trainer"]["resourcesPerNode"]
                        image = resource["spec"]["trainer"]["image"]
                    else:
                        requirements, image = container["resources"], container["image"]
                    assert set(requirements) == {"limits", "requests"}, where
                    assert {"cpu", "memory"} <= set(requirements["limits"]), where
                    tag = image.rsplit("/", 1)[-1]
                    assert ("@sha256:" in image or ":" in tag) and not tag.endswith(":latest"), (
                        where
                    )
    assert checked >= 4


@needs_kubectl
def test_overlays_differ_by_namespace_image_schedule_storage_resources_and_queue(
    built: dict[str, list],
) -> None:
    def one(env: str, kind: str) -> dict[str, Any]:
        (found,) = [r for r in built[env] if r["kind"] == kind]
        return found

    assert {r["metadata"].get("namespace") for r in built["prod"] if r["kind"] != "Namespace"} == {
        "kfbatch-prod"
    }
    assert one("dev", "Namespace")["metadata"]["name"] == "kfbatch-dev"
    dev, prod = one("dev", "CronJob")["spec"], one("prod", "CronJob")["spec"]
    assert (dev["suspend"], prod["suspend"], prod["schedule"]) == (True, False, "0 2 * * *")
    args = prod["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:6] == [
        "submit",
        "--config-dir",
        "/etc/kfbatch",
        "--config-name",
        "kfbatch",
        "kubeflow.in_cluster=true",
    ]
    assert "kubeflow.namespace=kfbatch-prod" in args
    assert "resources.steps.train.memory=32Gi" in args
    pvcs = [r for r in built["prod"] if r["kind"] == "PersistentVolumeClaim"]
    assert {p["spec"]["storageClassName"] for p in pvcs} == {"standard-rwx"}
    assert all(
        "storageClassName" not in p["spec"]
        for p in built["dev"]
        if p["kind"] == "PersistentVolumeClaim"
    )
    version = one("prod", "PipelineVersion")
    executors = version["spec"]["pipelineSpec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {
        "ghcr.io/kfbatch/kfbatch:0.1.0"
    }
    job, train = one("batch", "Job"), one("batch", "TrainJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-ml"
    assert train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-ml"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "4Gi",
    }
    assert train["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert not [r for r in built["batch"] if r["kind"] in ("CronJob", "PipelineVersion")]
    assert not [r for r in built["prod"] if r["kind"] in ("Job", "TrainJob")]


def test_the_image_tag_of_an_environment_reaches_every_image(tmp_path: Path) -> None:
    tree = render_tree(compose_config(["manifests.envs.prod.image_tag=0.2.0"]), ["prod"])
    overlay = yaml.safe_load(tree["overlays/prod/kustomization.yaml"])
    assert overlay["images"] == [{"name": "ghcr.io/kfbatch/kfbatch", "newTag": "0.2.0"}]
    config = yaml.safe_load(tree["base/kustomizeconfig.yaml"])
    paths = {(f["kind"], f["path"]) for f in config["images"]}
    assert ("TrainJob", "spec/trainer/image") in paths
    assert (
        "PipelineVersion",
        "spec/pipelineSpec/deploymentSpec/executors/exec-train/container/image",
    ) in paths
    assert "kubeflow.image=ghcr.io/kfbatch/kfbatch:0.2.0" in overlay["patches"][-1]["patch"]


def test_rendering_is_deterministic(tree: dict[str, str]) -> None:
    assert render_tree(compose_config([])) == tree


def test_rbac_allows_only_the_training_jobs_and_kfp_submission(tree: dict[str, str]) -> None:
    role = next(d for d in yaml.safe_load_all(tree["base/rbac.yaml"]) if d["kind"] == "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["create", "delete", "get"],
        },
        {
            "apiGroups": ["pipelines.kubeflow.org"],
            "resources": ["experiments", "pipelines", "pipelineversions", "runs"],
            "verbs": ["create", "get", "list"],
        },
    ]
    tree2 = render_tree(compose_config(["kubeflow.training_api=pytorchjob"]))
    role2 = next(d for d in yaml.safe_load_all(tree2["base/rbac.yaml"]) if d["kind"] == "Role")
    assert role2["rules"][0]["resources"] == ["pytorchjobs"]
    assert "PyTorchJob" in tree2["components/standalone/training-job.yaml"]


def test_the_configmap_composes_back_to_the_same_pipeline(
    tree: dict[str, str], tmp_path: Path
) -> None:
    from pipelines.kubeflow.compiler import compile_pipeline

    (config_map,) = yaml.safe_load_all(tree["base/configmap.yaml"])
    (tmp_path / "kfbatch.yaml").write_text(config_map["data"]["kfbatch.yaml"])
    again = compose_config([], config_dir=tmp_path, config_name="kfbatch")
    (pipeline, version) = yaml.safe_load_all(tree["components/kfp/pipeline.yaml"])
    compiled = next(yaml.safe_load_all(compile_pipeline(again)))
    assert compiled == version["spec"]["pipelineSpec"]
    assert pipeline["metadata"]["name"] == version["spec"]["pipelineName"] == "churn-demo"


# --------------------------------------------------------------------------- the CLI


def test_the_committed_tree_is_current(
    kfbatch: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    result = kfbatch("manifests", "--check")
    assert result.code == 0, result.out
    assert result.out.startswith("manifests: up to date (16 files)")


def test_check_fails_with_a_diff_after_a_config_change(
    kfbatch: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    result = kfbatch("manifests", "--check", "manifests.envs.prod.cron=30 4 * * 1-5")
    assert result.code == 1
    assert "-      value: 0 2 * * *\n+      value: 30 4 * * 1-5\n" in result.out
    assert result.out.startswith(
        "--- a/overlays/prod/kustomization.yaml\n+++ b/overlays/prod/kustomization.yaml\n"
    )
    assert "differs from what the config renders" in result.err
    written = kfbatch("manifests", "manifests.envs.prod.cron=30 4 * * 1-5")
    assert "wrote manifests/overlays/prod/kustomization.yaml" in written.out
    assert kfbatch("manifests", "--check", "manifests.envs.prod.cron=30 4 * * 1-5").code == 0


def test_stale_files_are_removed_and_other_envs_kept(
    kfbatch: Callable[..., Any], tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    assert kfbatch("manifests", "--dir", str(root)).code == 0
    (root / "base" / "old.yaml").write_text("kind: Stale\n")
    (root / "README.md").write_text("kept\n")
    result = kfbatch("manifests", "--dir", str(root), "--env", "dev")
    assert f"removed {root}/base/old.yaml" in result.out
    assert (root / "overlays" / "prod" / "kustomization.yaml").is_file()
    assert (root / "README.md").read_text() == "kept\n"


def test_an_unknown_environment_is_a_config_error(kfbatch: Callable[..., Any]) -> None:
    result = kfbatch("manifests", "--check", "--env", "staging")
    assert result.code == 2
    assert result.err.strip() == (
        "kfbatch: config error: --env: expected one of batch, dev, prod (manifests.envs), "
        "got 'staging'"
    )


# --------------------------------------------------------------------------- the job entry


def test_the_indexed_job_entry_gives_each_pod_its_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    out = tmp_path / "out-{index}"
    code = job_main(
        [
            "--component",
            "tests.support.steps:write",
            "--params",
            json.dumps({"text": "run {{kfbatch.run_id}} shard {index}"}),
            "--outputs",
            json.dumps({"out": str(out)}),
            "--index-param",
            "shard",
            "--run-id",
            "nightly",
        ]
    )
    assert code == 0
    assert (tmp_path / "out-3" / "data.txt").read_text() == "run nightly shard 3"


def test_the_job_entry_refuses_to_guess_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert (
        job_main(["--component", "tests.support.steps:write", "--outputs", '{"out": "/x-{index}"}'])
        == 1
    )


@needs_kubectl
def test_an_environment_can_pin_a_digest_of_an_image_on_a_registry_with_a_port(
    tmp_path: Path,
) -> None:
    digest = "sha256:" + "ab" * 32
    tree = render_tree(
        compose_config(
            [
                "kubeflow.image=registry.local:5000/ml/kfbatch:1.0",
                f"manifests.envs.batch.image_tag={digest}",
            ]
        ),
        ["batch"],
    )
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    out = subprocess.run(
        [KUBECTL, "kustomize", str(tmp_path / "overlays" / "batch")],
        capture_output=True,
        text=True,
        check=True,
    )
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    images = {
        r["spec"]["trainer"]["image"]
        if r["kind"] == "TrainJob"
        else r["spec"]["template"]["spec"]["containers"][0]["image"]
        for r in built
        if r["kind"] in ("TrainJob", "Job")
    }
    assert images == {f"registry.local:5000/ml/kfbatch@{digest}"}


def test_inference_pods_wait_for_the_model_and_the_scoring_shards(
    tree: dict[str, str], tmp_path: Path
) -> None:
    """Run the init container's command as the pod would: it returns once the files exist."""
    (job,) = yaml.safe_load_all(tree["components/standalone/inference-job.yaml"])
    (wait,) = job["spec"]["template"]["spec"]["initContainers"]
    paths = wait["args"][2:]
    assert paths == [
        "/data/churn-demo/train/model/model.json",
        "/data/churn-demo/etl/scoring/_manifest.json",
    ]
    local = [str(tmp_path / p.lstrip("/")) for p in paths]
    command = [*wait["command"], *wait["args"][:2], *local]
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(command, capture_output=True, timeout=1.5, check=False)
    for path in local:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("{}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    assert (done.returncode, done.stdout) == (0, "")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "manifests.envs.prod.namespace=kfbatch-dev",
            "manifests.envs.prod.namespace: expected a namespace of its own (environment 'dev'"
            " uses it), got 'kfbatch-dev'",
        ),
        (
            "manifests.envs.prod.cron=0 2 * *",
            "manifests.envs.prod.cron: expected 5 fields (minute hour day-of-month month "
            "day-of-week), found 4, got '0 2 * *'",
        ),
        (
            "manifests.envs.dev.target=argo",
            "manifests.envs.dev.target: expected one of 'kfp', 'standalone', got 'argo'",
        ),
        (
            "manifests.envs.prod.image_tag=latest version",
            "manifests.envs.prod.image_tag: expected an image tag such as 0.1.0 or a digest "
            "sha256:<64 hex>, got 'latest version'",
        ),
    ],
)
def test_environment_settings_are_checked_when_composing(
    kfbatch: Callable[..., Any], override: str, message: str
) -> None:
    result = kfbatch("manifests", "--check", override)
    assert result.code == 2
    assert result.err.strip() == f"kfbatch: config error: {message} (from override '{override}')"


def test_standalone_scoring_only_jobs_read_the_given_model_and_data() -> None:
    tree = render_tree(
        compose_config(
            ["stages=[infer]", "inference.model_uri=/data/m", "inference.data_uri=/data/new"]
        )
    )
    (job,) = yaml.safe_load_all(tree["components/standalone/inference-job.yaml"])
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert json.loads(args[args.index("--inputs") + 1]) == {
        "model": "/data/m",
        "scoring": "/data/new",
    }
    (wait,) = pod["initContainers"]
    assert wait["args"][2:] == []  # outside data is there already: nothing to wait for


def test_a_gated_model_is_the_trained_one_in_standalone_jobs() -> None:
    tree = render_tree(compose_config(["evaluate=gated"]))
    (job,) = yaml.safe_load_all(tree["components/standalone/inference-job.yaml"])
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert json.loads(args[args.index("--inputs") + 1])["model"].endswith("/train/model")


def test_tuning_with_a_standalone_environment_is_a_config_error() -> None:
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=r"reads tune_select.best, which no standalone job"):
        render_tree(compose_config(["tune.enabled=true"]))
    render_tree(compose_config(["tune.enabled=true", "~manifests.envs.batch"]))
