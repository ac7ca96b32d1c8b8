"""``base/``: what every environment deploys, whichever its target.

The namespace, the service account, a Role with only what the pods need, the data and
checkpoint PVCs, the composed config as a ConfigMap, and the kustomize configuration that
lets its image transformer rewrite the custom resources' image fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from pipelines.kubeflow.trainjob.build import TRAINING_APIS
from pipelines.manifests.deployment import CONFIG_FILE, CONFIG_MOUNT, Deployment

__all__ = ["config_map", "image_fields", "namespace", "pvcs", "rbac", "service_account"]


def namespace(d: Deployment) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": d.namespace}}


def service_account(d: Deployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        # The pipeline's pods get a Kubernetes API token only when the training task
        # must create a TrainJob (trainer.nodes > 1); the pods rendered here opt out.
        "automountServiceAccountToken": d.config.trainer.nodes > 1,
        "kind": "ServiceAccount",
        "metadata": d.meta(d.service_account),
    }


def rbac(d: Deployment) -> list[dict[str, Any]]:
    """The training launcher creates, reads and deletes its training jobs; nothing else.

    Submitting a run goes through the KFP API, which (in multi-user mode) authorizes the
    caller against ``pipelines.kubeflow.org`` resources: the CronJob needs to create and
    read pipelines, versions, experiments and runs.
    """
    job = TRAINING_APIS[d.config.kubeflow.training_api]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": d.meta(d.name),
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
        "metadata": d.meta(d.name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": d.name},
        "subjects": [
            {"kind": "ServiceAccount", "name": d.service_account, "namespace": d.namespace}
        ],
    }
    return [role, binding]


def pvcs(d: Deployment) -> list[dict[str, Any]]:
    m = d.config.manifests

    def pvc(name: str, size: str, purpose: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": d.meta(name, annotations={"kfbatch.io/purpose": purpose}),
            "spec": {
                "accessModes": [m.access_mode],
                "resources": {"requests": {"storage": size}},
            },
        }

    return [
        pvc(d.checkpoint_pvc, m.checkpoint_size, "training checkpoints and job staging"),
        pvc(d.data_pvc, m.data_size, "input data, prepared datasets and predictions"),
    ]


def config_map(d: Deployment) -> dict[str, Any]:
    header = (
        f"# The composed config of {d.name}, rendered by `kfbatch manifests`.\n"
        f"#   kfbatch submit --config-dir {CONFIG_MOUNT} --config-name "
        f"{CONFIG_FILE.removesuffix('.yaml')}\n"
        "defaults:\n  - kfbatch_schema\n  - _self_\n"
    )
    # The deployment's own settings (manifests.*) stay out: a change to one environment
    # must not change what every environment runs.
    pipeline = {k: v for k, v in d.composed.container.items() if k != "manifests"}
    body = yaml.safe_dump(pipeline, sort_keys=True, default_flow_style=False)
    return {
        "apiVersion": "v1",
        "data": {CONFIG_FILE: header + body},
        "kind": "ConfigMap",
        "metadata": d.meta(f"{d.name}-config"),
    }


def image_fields(executors: Sequence[str]) -> dict[str, Any]:
    """kustomize transformer config: the image fields of the custom resources.

    Args:
        executors: The PipelineVersion's executor names
            (:func:`~pipelines.manifests.kfp_component.executors`).
    """
    fields = [
        {"kind": "TrainJob", "path": "spec/trainer/image"},
        *(
            {
                "kind": "PipelineVersion",
                "path": f"spec/pipelineSpec/deploymentSpec/executors/{name}/container/image",
            }
            for name in sorted(executors)
        ),
    ]
    return {"images": fields}
