"""Render the GitOps tree: a kustomize base, two components and one overlay per environment.

The tree (``manifests.dir``, ``manifests/`` by default)::

    base/                      what every environment deploys
      namespace.yaml           the namespace (renamed per environment by kustomize)
      serviceaccount.yaml      the identity of the pipeline's pods, the CronJob and the jobs
      rbac.yaml                a Role with only what they need, and its RoleBinding
      pvc.yaml                 data and checkpoint PersistentVolumeClaims
      configmap.yaml           the composed config (the CronJob submits from it)
      kustomizeconfig.yaml     tells kustomize's image transformer about the CRDs' image fields
    components/kfp/            Kubeflow Pipelines: Pipeline, PipelineVersion, submit CronJob
    components/standalone/     without KFP: a TrainJob (or PyTorchJob) and an Indexed Job
    overlays/<env>/kustomization.yaml   namespace, image tag, schedule, storage class,
                               resources and Kueue queue of one environment, as patches

What differs between environments is only the overlay's patches, from
``manifests.envs.<env>`` (:class:`pipelines.config.schema.ManifestEnv`). Rendering is
deterministic: YAML with sorted keys, resources in a fixed order, no timestamps.

Resources are built from the same config and the same DAG as the KFP compiler and the
training launcher (:mod:`pipelines.kubeflow.compiler`, :mod:`pipelines.kubeflow.trainjob`):
the PipelineVersion is kfp's own Kubernetes-manifest output of the compiled pipeline.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from components.names import CHECKPOINT_DIR_ENV, MANIFEST_FILE, MODEL_META_FILE, RUN_ID_ENV
from pipelines import k8s
from pipelines.builder import build_dag
from pipelines.config.compose import ComposedConfig
from pipelines.config.schema import Config, ManifestEnv, PvcMount, ResourceSpec
from pipelines.dag import Dag, Ref, Resources, Step, Uri
from pipelines.errors import ConfigError
from pipelines.kubeflow.trainjob.build import TRAINING_APIS, build_training_job, train_command

__all__ = ["CONFIG_FILE", "DATA_MOUNT", "dump_yaml", "render_tree"]

#: The composed config's file name in the ConfigMap (``--config-name kfbatch``).
CONFIG_FILE = "kfbatch.yaml"
#: Where the config ConfigMap is mounted in the CronJob's pod.
CONFIG_MOUNT = "/etc/kfbatch"
#: Where the data PVC is mounted in every pod.
DATA_MOUNT = "/data"
#: Where kfp's client looks for a token projected for the KFP API (KF_PIPELINES_SA_TOKEN_PATH).
KFP_TOKEN_DIR = "/var/run/secrets/kubeflow/pipelines"
#: A valid schedule for a CronJob that is suspended because no cron is configured.
_SUSPENDED_CRON = "0 0 1 1 *"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "kfbatch"}
#: The file each input of the inference step is complete with (written last by its step),
#: which the Indexed Job's pods wait for, so the Job may be applied with the TrainJob.
_READY = {"model": MODEL_META_FILE, "scoring": MANIFEST_FILE}
#: Steps whose outputs the standalone jobs find on the data PVC: etl's are prepared there
#: beforehand, train's are written by the training job. A gated model is read as the
#: trained one (standalone jobs have no evaluation gate).
_STANDALONE_SOURCES = {"datagen": "datagen", "etl": "etl", "train": "train", "gate": "train"}
_WAIT_SCRIPT = 'for f in "$@"; do until [ -f "$f" ]; do echo "waiting for $f"; sleep 30; done; done'


def render_tree(composed: ComposedConfig, envs: Sequence[str] | None = None) -> dict[str, str]:
    """Every file of the tree: relative path -> YAML text.

    Args:
        composed: The composed config (``kfbatch manifests [overrides]``).
        envs: The environments whose overlays to render (default: all of
            ``manifests.envs``).

    Raises:
        ConfigError: an unknown environment, or no environment configured.
    """
    config = composed.config
    known = sorted(config.manifests.envs)
    if not known:
        raise ConfigError("manifests.envs", "at least one environment, e.g. dev: {namespace: ...}")
    for env in envs or ():
        if env not in config.manifests.envs:
            raise ConfigError("--env", f"one of {', '.join(known)} (manifests.envs)", env)
    cluster = _cluster_composed(composed)
    plan = _Plan(cluster)
    files = {
        "base/kustomization.yaml": _kustomization(
            resources=[
                "namespace.yaml",
                "serviceaccount.yaml",
                "rbac.yaml",
                "pvc.yaml",
                "configmap.yaml",
            ],
            extra={"configurations": ["kustomizeconfig.yaml"], "labels": _common_labels(config)},
        ),
        "base/namespace.yaml": dump_yaml([plan.namespace()]),
        "base/serviceaccount.yaml": dump_yaml([plan.service_account()]),
        "base/rbac.yaml": dump_yaml(plan.rbac()),
        "base/pvc.yaml": dump_yaml(plan.pvcs()),
        "base/configmap.yaml": dump_yaml([plan.config_map()]),
        "base/kustomizeconfig.yaml": dump_yaml([plan.image_fields()]),
        "components/kfp/kustomization.yaml": _component(["pipeline.yaml", "cronjob.yaml"]),
        "components/kfp/pipeline.yaml": dump_yaml(plan.pipeline()),
        "components/kfp/cronjob.yaml": dump_yaml([plan.cron_job()]),
        "components/standalone/kustomization.yaml": _component(
            ["training-job.yaml", "inference-job.yaml"]
        ),
        "components/standalone/training-job.yaml": dump_yaml(plan.training_jobs()),
        "components/standalone/inference-job.yaml": dump_yaml(plan.inference_jobs()),
    }
    for env in envs or known:
        files[f"overlays/{env}/kustomization.yaml"] = plan.overlay(env, config.manifests.envs[env])
    return dict(sorted(files.items()))


def dump_yaml(documents: Sequence[Mapping[str, Any]]) -> str:
    """YAML documents with sorted keys, block style and no aliases (same input, same bytes)."""
    return "---\n".join(
        yaml.dump(
            json.loads(json.dumps(doc)),  # plain types only: no tuples, no shared references
            Dumper=_Dumper,
            sort_keys=True,
            default_flow_style=False,
            width=100,
            allow_unicode=True,
        )
        for doc in documents
    )


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def _cluster_composed(composed: ComposedConfig) -> ComposedConfig:
    """The config with what a cluster deployment names filled in where it is unset.

    The checkpoint PVC, the data PVC (mounted at ``/data`` on every task) and the service
    account are the ones this tree creates, so the compiled pipeline and the ConfigMap
    refer to them.
    """
    config = composed.config
    kf = config.kubeflow
    changes: dict[str, Any] = {}
    if not kf.checkpoint_pvc:
        changes["checkpoint_pvc"] = f"{config.name}-checkpoints"
    if not kf.service_account:
        changes["service_account"] = config.name
    if not kf.volumes:
        changes["volumes"] = [PvcMount(claim=f"{config.name}-data", mount_path=DATA_MOUNT)]
    if not changes:
        return composed
    container = copy.deepcopy(composed.container)
    container["kubeflow"].update(
        {
            k: [dataclasses.asdict(v) for v in value] if k == "volumes" else value
            for k, value in changes.items()
        }
    )
    kubeflow = dataclasses.replace(kf, **changes)
    return dataclasses.replace(
        composed, config=dataclasses.replace(config, kubeflow=kubeflow), container=container
    )


def _common_labels(config: Config) -> list[dict[str, Any]]:
    return [
        {
            "includeSelectors": False,
            "pairs": {"app.kubernetes.io/part-of": config.name, **_MANAGED_BY},
        }
    ]


def _kustomization(resources: list[str], extra: Mapping[str, Any] | None = None) -> str:
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        **(extra or {}),
    }
    return dump_yaml([body])


def _component(resources: list[str]) -> str:
    return dump_yaml(
        [
            {
                "apiVersion": "kustomize.config.k8s.io/v1alpha1",
                "kind": "Component",
                "resources": resources,
            }
        ]
    )


class _Plan:
    """Builds each resource from the cluster config; one method per file."""

    def __init__(self, composed: ComposedConfig) -> None:
        self.composed = composed
        self.config: Config = composed.config
        self.dag: Dag = build_dag(self.config)
        kf = self.config.kubeflow
        self.name = self.config.name
        self.namespace_name = kf.namespace
        self.sa = str(kf.service_account)
        self.checkpoint_pvc = str(kf.checkpoint_pvc)
        self.data_pvc = kf.volumes[0].claim if kf.volumes else f"{self.name}-data"
        self.data_mount = kf.volumes[0].mount_path if kf.volumes else DATA_MOUNT

    # ------------------------------------------------------------------ base

    def _meta(self, name: str, **extra: Any) -> dict[str, Any]:
        return k8s.metadata(name, self.namespace_name, **extra)

    def _container(self, name: str, **fields: Any) -> dict[str, Any]:
        """A container of the project image, pulled on every start (see :func:`k8s.container`)."""
        return k8s.container(name, image=self.config.kubeflow.image, pull_policy="Always", **fields)

    def namespace(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace_name}}

    def service_account(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            # The pipeline's pods get a Kubernetes API token only when the training task
            # must create a TrainJob (trainer.nodes > 1); the pods rendered here opt out.
            "automountServiceAccountToken": self.config.trainer.nodes > 1,
            "kind": "ServiceAccount",
            "metadata": self._meta(self.sa),
        }

    def rbac(self) -> list[dict[str, Any]]:
        """The training launcher creates, reads and deletes its training jobs; nothing else.

        Submitting a run goes through the KFP API, which (in multi-user mode) authorizes
        the caller against ``pipelines.kubeflow.org`` resources: the CronJob needs to
        create and read pipelines, versions, experiments and runs.
        """
        job = TRAINING_APIS[self.config.kubeflow.training_api]
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": self._meta(self.name),
            "rules": [
                {
                    "apiGroups": [job.group],
                    "resources": [job.plural],
                    "verbs": ["create", "delete", "get"],
                },
                {
                    "apiGroups": ["pipelines.kubeflow.org"],
                    "resources": ["experiments", "pipelines", "pipelineversions", "runs"],
                    "verbs": ["create", "get", "list"],
                },
            ],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": self._meta(self.name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.name},
            "subjects": [
                {"kind": "ServiceAccount", "name": self.sa, "namespace": self.namespace_name}
            ],
        }
        return [role, binding]

    def pvcs(self) -> list[dict[str, Any]]:
        m = self.config.manifests

        def pvc(name: str, size: str, purpose: str) -> dict[str, Any]:
            return {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": self._meta(name, annotations={"kfbatch.io/purpose": purpose}),
                "spec": {
                    "accessModes": [m.access_mode],
                    "resources": {"requests": {"storage": size}},
                },
            }

        return [
            pvc(self.checkpoint_pvc, m.checkpoint_size, "training checkpoints and job staging"),
            pvc(self.data_pvc, m.data_size, "input data, prepared datasets and predictions"),
        ]

    def config_map(self) -> dict[str, Any]:
        header = (
            f"# The composed config of {self.name}, rendered by `kfbatch manifests`.\n"
            f"#   kfbatch submit --config-dir {CONFIG_MOUNT} --config-name "
            f"{CONFIG_FILE.removesuffix('.yaml')}\n"
            "defaults:\n  - kfbatch_schema\n  - _self_\n"
        )
        # The deployment's own settings (manifests.*) stay out: a change to one environment
        # must not change what every environment runs.
        pipeline = {k: v for k, v in self.composed.container.items() if k != "manifests"}
        body = yaml.safe_dump(pipeline, sort_keys=True, default_flow_style=False)
        return {
            "apiVersion": "v1",
            "data": {CONFIG_FILE: header + body},
            "kind": "ConfigMap",
            "metadata": self._meta(f"{self.name}-config"),
        }

    def image_fields(self) -> dict[str, Any]:
        """kustomize transformer config: the image fields of the custom resources."""
        fields = [
            {"kind": "TrainJob", "path": "spec/trainer/image"},
            *(
                {
                    "kind": "PipelineVersion",
                    "path": f"spec/pipelineSpec/deploymentSpec/executors/{name}/container/image",
                }
                for name in sorted(self._executors())
            ),
        ]
        return {"images": fields}

    # ------------------------------------------------------------------ KFP

    def _compiled(self, **options: Any) -> str:
        from pipelines.kubeflow.compiler import compile_pipeline

        return compile_pipeline(self.composed, **options)

    def version_name(self) -> str:
        """``<pipeline>-<12 hex>`` of the compiled YAML: what ``kfbatch submit`` names it."""
        return f"{self.name}-{hashlib.sha256(self._compiled().encode()).hexdigest()[:12]}"

    @functools.cached_property
    def _pipeline(self) -> tuple[dict[str, Any], ...]:
        from kfp.compiler import KubernetesManifestOptions

        text = self._compiled(
            kubernetes_manifest=KubernetesManifestOptions(
                pipeline_name=self.name,
                pipeline_display_name=self.name,
                pipeline_version_name=self.version_name(),
                namespace=self.namespace_name,
                include_pipeline_manifest=True,
            )
        )
        return tuple(doc for doc in yaml.safe_load_all(text) if doc)

    def pipeline(self) -> list[dict[str, Any]]:
        """kfp's ``Pipeline`` and ``PipelineVersion`` resources of the compiled pipeline."""
        return list(self._pipeline)

    def _executors(self) -> list[str]:
        version = next(d for d in self.pipeline() if d["kind"] == "PipelineVersion")
        return list(version["spec"]["pipelineSpec"]["deploymentSpec"]["executors"])

    def cron_job(self) -> dict[str, Any]:
        """Submits one KFP run per ``schedule.cron`` tick with ``kfbatch submit``."""
        cron = self.config.schedule.cron
        resources = self._spec_resources(self.config.manifests.submitter)
        container = self._container(
            "submit",
            command=["kfbatch"],
            args=self.submit_args(),
            env={},
            resources=resources,
            mounts=[
                k8s.volume_mount("config", CONFIG_MOUNT, read_only=True),
                k8s.volume_mount("scratch", k8s.SCRATCH_MOUNT),
                k8s.volume_mount("kfp-token", KFP_TOKEN_DIR, read_only=True),
            ],
        )
        token = {
            "audience": "pipelines.kubeflow.org",
            "expirationSeconds": 7200,
            "path": "token",
        }
        volumes = [
            {"configMap": {"name": f"{self.name}-config"}, "name": "config"},
            k8s.scratch_volume(),
            {"name": "kfp-token", "projected": {"sources": [{"serviceAccountToken": token}]}},
        ]
        # No Kubernetes API token: kfbatch submit authenticates to the KFP API with a token
        # projected for KFP's audience only (what KFP's multi-user mode checks).
        pod = k8s.pod_spec(
            [container],
            volumes,
            service_account=self.sa,
            restart_policy="Never",
            automount_token=False,
        )
        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": self._meta(f"{self.name}-submit"),
            "spec": {
                "concurrencyPolicy": "Forbid",
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "spec": {
                        "activeDeadlineSeconds": 1800,
                        "backoffLimit": 2,
                        "template": {"metadata": {"labels": {**_MANAGED_BY}}, "spec": pod},
                        "ttlSecondsAfterFinished": 86400,
                    }
                },
                "schedule": cron or _SUSPENDED_CRON,
                "startingDeadlineSeconds": 3600,
                "successfulJobsHistoryLimit": 3,
                "suspend": cron is None,
                "timeZone": self.config.schedule.timezone,
            },
        }

    def submit_args(self) -> list[str]:
        return [
            "submit",
            "--config-dir",
            CONFIG_MOUNT,
            "--config-name",
            CONFIG_FILE.removesuffix(".yaml"),
            "kubeflow.in_cluster=true",
        ]

    # ------------------------------------------------------------------ standalone

    def _step(self, name: str) -> Step | None:
        return next((s for s in self.dag.steps if s.name == name), None)

    def _paths(self, step: str, output: str) -> str:
        """Where a step's output lives on the data PVC in standalone mode."""
        return f"{self.data_mount}/{self.name}/{step}/{output}"

    def _standalone_inputs(self, step: Step) -> dict[str, str]:
        """Where a standalone job reads each input: outside URIs as given, step outputs on
        the data PVC.

        Raises:
            ConfigError: A standalone environment is configured and the step reads an output
                no standalone job produces (tuning's choice, for one).
        """
        standalone = any(env.target == "standalone" for env in self.config.manifests.envs.values())
        inputs: dict[str, str] = {}
        for name, source in step.inputs.items():
            if isinstance(source, Uri):
                inputs[name] = source.uri
                continue
            producer = _STANDALONE_SOURCES.get(source.step)
            if producer is None and standalone:
                raise ConfigError(
                    "manifests.envs",
                    f"no standalone environment when step {step.name!r} reads "
                    f"{source.step}.{source.output}, which no standalone job produces (run "
                    "tuning locally or on Kubeflow, then train with its values)",
                    sorted(self.config.manifests.envs),
                )
            inputs[name] = self._paths(producer or source.step, source.output)
        return inputs

    def training_jobs(self) -> list[dict[str, Any]]:
        step = self._step("train")
        if step is None:
            return []
        inputs = self._standalone_inputs(step)
        outputs = {name: self._paths(step.name, name) for name in step.outputs}
        stage = f"{self.config.kubeflow.checkpoint_mount}/{self.name}"
        job = build_training_job(
            self.config,
            step,
            name=f"{self.name}-train",
            namespace=self.namespace_name,
            args=train_command(
                step.component,
                inputs=inputs,
                params=step.params,
                outputs=outputs,
                metrics=f"{stage}/metrics.json",
            ),
            env={CHECKPOINT_DIR_ENV: f"{stage}/checkpoints", RUN_ID_ENV: self.name},
            labels=_MANAGED_BY,
        )
        return [job]

    def inference_jobs(self) -> list[dict[str, Any]]:
        step = self._step("infer")
        if step is None or step.fan_out is None:
            return []
        inputs = self._standalone_inputs(step)
        outputs = {name: f"{self._paths(step.name, name)}/shard-{{index}}" for name in step.outputs}
        params = {k: v for k, v in step.params.items() if k != step.fan_out.param}
        args = [
            "-m",
            "pipelines.manifests.job",
            "--component",
            step.component,
            "--inputs",
            json.dumps(inputs, sort_keys=True),
            "--params",
            json.dumps(params, sort_keys=True),
            "--outputs",
            json.dumps(outputs, sort_keys=True),
            "--index-param",
            step.fan_out.param,
            "--run-id",
            self.name,
        ]
        container = self._container(
            "infer",
            command=["python"],
            args=args,
            env={},
            resources=step.resources,
            mounts=[
                k8s.volume_mount("data", self.data_mount),
                k8s.volume_mount("scratch", k8s.SCRATCH_MOUNT),
            ],
        )
        ready = (
            f"{inputs[k]}/{m}"
            for k, m in _READY.items()
            if isinstance(step.inputs.get(k), Ref)  # outside data is there already
        )
        wait = self._container(
            "wait-for-inputs",
            command=["sh", "-c"],
            args=[_WAIT_SCRIPT, "wait-for", *ready],
            resources=Resources(cpu=0.05, memory="64Mi"),
            mounts=[k8s.volume_mount("data", self.data_mount, read_only=True)],
        )
        pod = k8s.pod_spec(
            [container],
            [k8s.pvc_volume("data", self.data_pvc), k8s.scratch_volume()],
            resources=step.resources,
            service_account=self.sa,
            init_containers=[wait],
            restart_policy="Never",
            automount_token=False,
        )
        spec: dict[str, Any] = {
            "backoffLimitPerIndex": step.retries,
            "completionMode": "Indexed",
            "completions": len(step.fan_out.items),
            "maxFailedIndexes": 0,
            "parallelism": step.fan_out.parallelism,
            "template": {"spec": pod},
            "ttlSecondsAfterFinished": 7 * 86400,
        }
        if step.timeout_s:
            spec["activeDeadlineSeconds"] = int(step.timeout_s * len(step.fan_out.items))
        return [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": self._meta(
                    f"{self.name}-infer", labels=_MANAGED_BY, queue=self.config.runtime.queue
                ),
                "spec": spec,
            }
        ]

    def _spec_resources(self, spec: ResourceSpec) -> Resources:
        return Resources(cpu=float(spec.cpu or 0.25), memory=str(spec.memory or "512Mi"))

    # ------------------------------------------------------------------ overlays

    def overlay(self, env: str, delta: ManifestEnv) -> str:
        config = self.config
        standalone = delta.target == "standalone"
        patches: list[dict[str, Any]] = []
        for pvc in (self.checkpoint_pvc, self.data_pvc):
            if delta.storage_class:
                patches.append(
                    _json_patch(
                        "PersistentVolumeClaim",
                        pvc,
                        [_op("add", "/spec/storageClassName", delta.storage_class)],
                    )
                )
        if not standalone:
            patches.append(self._cron_patch(delta))
        else:
            patches.extend(self._job_patches(delta))
        body: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "components": ["../../components/standalone" if standalone else "../../components/kfp"],
            "kind": "Kustomization",
            "labels": [{"includeSelectors": False, "pairs": {"kfbatch.io/env": env}}],
            "namespace": delta.namespace,
            "resources": ["../../base"],
        }
        if delta.image_tag:
            repository = _repository(config.kubeflow.image)
            key = "digest" if delta.image_tag.startswith("sha256:") else "newTag"
            body["images"] = [{"name": repository, key: delta.image_tag}]
        if patches:
            body["patches"] = patches
        return dump_yaml([body])

    def _cron_patch(self, delta: ManifestEnv) -> dict[str, Any]:
        """The CronJob's schedule and the overrides its ``kfbatch submit`` applies."""
        overrides = [f"kubeflow.namespace={delta.namespace}"]
        if delta.image_tag:
            repository = _repository(self.config.kubeflow.image)
            sep = "@" if delta.image_tag.startswith("sha256:") else ":"
            overrides.append(f"kubeflow.image={repository}{sep}{delta.image_tag}")
        overrides.extend(_resource_overrides(delta))
        args = "/spec/jobTemplate/spec/template/spec/containers/0/args/-"
        ops = []
        if delta.cron and delta.cron != self.config.schedule.cron:
            ops += [
                _op("replace", "/spec/schedule", delta.cron),
                _op("replace", "/spec/suspend", False),
            ]
        ops += [_op("add", args, o) for o in overrides]
        return _json_patch("CronJob", f"{self.name}-submit", ops)

    def _job_patches(self, delta: ManifestEnv) -> list[dict[str, Any]]:
        """Resources and the Kueue queue of the standalone TrainJob and Indexed Job."""
        patches = []
        queue = delta.queue or self.config.runtime.queue
        label = "/metadata/labels/" + k8s.KUEUE_QUEUE_LABEL.replace("/", "~1")
        train, infer = self._step("train"), self._step("infer")
        if train is not None:
            ops = []
            resources = k8s.merged_resources(train.resources, delta.resources.train)
            if resources != train.resources:
                requirements = k8s.resource_requirements(resources)
                if self.config.kubeflow.training_api == "pytorchjob":
                    for replica in sorted(self.training_jobs()[0]["spec"]["pytorchReplicaSpecs"]):
                        path = f"/spec/pytorchReplicaSpecs/{replica}/template/spec/containers/0"
                        ops.append(_op("replace", f"{path}/resources", requirements))
                else:
                    ops.append(_op("replace", "/spec/trainer/resourcesPerNode", requirements))
            if queue:
                ops.append(_op("add", label, queue))
            kind = TRAINING_APIS[self.config.kubeflow.training_api].kind
            if ops:
                patches.append(_json_patch(kind, f"{self.name}-train", ops))
        if infer is not None:
            ops = []
            resources = k8s.merged_resources(infer.resources, delta.resources.infer)
            if resources != infer.resources:
                ops.append(
                    _op(
                        "replace",
                        "/spec/template/spec/containers/0/resources",
                        k8s.resource_requirements(resources),
                    )
                )
            if queue:
                ops.append(_op("add", label, queue))
            if ops:
                patches.append(_json_patch("Job", f"{self.name}-infer", ops))
        return patches


def _resource_overrides(delta: ManifestEnv) -> list[str]:
    """``resources.steps.<step>.<key>=<value>`` for each resource the environment sets."""
    found = []
    for step in ("train", "infer"):
        spec: ResourceSpec = getattr(delta.resources, step)
        for key in ("cpu", "memory", "gpu", "accelerator"):
            value = getattr(spec, key)
            if value is not None:
                shown = f"{value:g}" if isinstance(value, float) else value
                found.append(f"resources.steps.{step}.{key}={shown}")
    return found


def _repository(image: str) -> str:
    """``registry/repo[:tag][@digest]`` -> ``registry/repo`` (what kustomize ``images`` match)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _op(op: str, path: str, value: Any) -> dict[str, Any]:
    return {"op": op, "path": path, "value": value}


def _json_patch(kind: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A kustomize JSON 6902 patch of one resource, its operations as a YAML list."""
    text = yaml.dump(ops, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=100)
    return {"patch": text, "target": {"kind": kind, "name": name}}
