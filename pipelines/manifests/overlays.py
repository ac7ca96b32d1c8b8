"""``overlays/<env>/``: one environment's namespace, image tag, schedule, storage class,
resources and Kueue queue, as kustomize patches of the base and one component.

What the environment sets comes from ``manifests.envs.<env>``
(:class:`pipelines.config.schema.ManifestEnv`): a ``kfp`` environment patches the submit
CronJob (its schedule, and the overrides its ``kfbatch submit`` applies), a
``standalone`` one the training job and the Indexed Job.
"""

from __future__ import annotations

from typing import Any

from pipelines import k8s
from pipelines.config.schema import ManifestEnv, ResourceSpec
from pipelines.kubeflow.trainjob.build import TRAINING_APIS
from pipelines.manifests.deployment import Deployment
from pipelines.manifests.kustomize import dump_yaml, json_patch, op
from pipelines.manifests.standalone import training_jobs

__all__ = ["overlay"]


def overlay(d: Deployment, env: str, delta: ManifestEnv) -> str:
    """The ``kustomization.yaml`` of environment ``env``."""
    standalone = delta.target == "standalone"
    patches: list[dict[str, Any]] = []
    for pvc in (d.checkpoint_pvc, d.data_pvc):
        if delta.storage_class:
            patches.append(
                json_patch(
                    "PersistentVolumeClaim",
                    pvc,
                    [op("add", "/spec/storageClassName", delta.storage_class)],
                )
            )
    if not standalone:
        patches.append(_cron_patch(d, delta))
    else:
        patches.extend(_job_patches(d, delta))
    body: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "components": ["../../components/standalone" if standalone else "../../components/kfp"],
        "kind": "Kustomization",
        "labels": [{"includeSelectors": False, "pairs": {"kfbatch.io/env": env}}],
        "namespace": delta.namespace,
        "resources": ["../../base"],
    }
    if delta.image_tag:
        repository = _repository(d.config.kubeflow.image)
        key = "digest" if delta.image_tag.startswith("sha256:") else "newTag"
        body["images"] = [{"name": repository, key: delta.image_tag}]
    if patches:
        body["patches"] = patches
    return dump_yaml([body])


def _cron_patch(d: Deployment, delta: ManifestEnv) -> dict[str, Any]:
    """The CronJob's schedule and the overrides its ``kfbatch submit`` applies."""
    overrides = [f"kubeflow.namespace={delta.namespace}"]
    if delta.image_tag:
        repository = _repository(d.config.kubeflow.image)
        sep = "@" if delta.image_tag.startswith("sha256:") else ":"
        overrides.append(f"kubeflow.image={repository}{sep}{delta.image_tag}")
    overrides.extend(_resource_overrides(delta))
    args = "/spec/jobTemplate/spec/template/spec/containers/0/args/-"
    ops = []
    if delta.cron and delta.cron != d.config.schedule.cron:
        ops += [
            op("replace", "/spec/schedule", delta.cron),
            op("replace", "/spec/suspend", False),
        ]
    ops += [op("add", args, o) for o in overrides]
    return json_patch("CronJob", f"{d.name}-submit", ops)


def _job_patches(d: Deployment, delta: ManifestEnv) -> list[dict[str, Any]]:
    """Resources and the Kueue queue of the standalone training job and Indexed Job."""
    queue = delta.queue or d.config.runtime.queue
    label = "/metadata/labels/" + k8s.KUEUE_QUEUE_LABEL.replace("/", "~1")
    jobs = (
        ("train", TRAINING_APIS[d.config.kubeflow.training_api].kind, delta.resources.train),
        ("infer", "Job", delta.resources.infer),
    )
    patches = []
    for name, kind, override in jobs:
        step = d.step(name)
        if step is None:
            continue
        ops = []
        resources = k8s.merged_resources(step.resources, override)
        if resources != step.resources:
            requirements = k8s.resource_requirements(resources)
            ops += [op("replace", path, requirements) for path in _resource_paths(d, name)]
        if queue:
            ops.append(op("add", label, queue))
        if ops:
            patches.append(json_patch(kind, f"{d.name}-{name}", ops))
    return patches


def _resource_paths(d: Deployment, step: str) -> list[str]:
    """Where the standalone job of ``step`` (train or infer) says its containers' resources."""
    if step == "infer":
        return ["/spec/template/spec/containers/0/resources"]
    if d.config.kubeflow.training_api != "pytorchjob":
        return ["/spec/trainer/resourcesPerNode"]
    replicas = training_jobs(d)[0]["spec"]["pytorchReplicaSpecs"]
    return [
        f"/spec/pytorchReplicaSpecs/{replica}/template/spec/containers/0/resources"
        for replica in sorted(replicas)
    ]


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
