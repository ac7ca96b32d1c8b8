"""Kubernetes pod pieces shared by the KFP compiler, the training-job builders and the
GitOps manifests: quantities, resource requirements, security contexts, node placement,
volumes, containers, pod specs and object metadata.

Pure functions over :class:`pipelines.dag.Resources` returning plain dicts with Kubernetes'
field names (no kfp or kubernetes import), so that every pod kfbatch describes, whichever
builder writes it, asks for its resources, runs as its user and lands on its nodes alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.config.schema import ResourceSpec
from pipelines.dag import Resources, memory_bytes

__all__ = [
    "DEFAULT_ACCELERATOR",
    "KUEUE_QUEUE_LABEL",
    "RUN_AS_USER",
    "SCRATCH_MOUNT",
    "container",
    "container_security_context",
    "cpu_quantity",
    "env_vars",
    "gpu_resource",
    "integer_memory",
    "merged_resources",
    "metadata",
    "placement",
    "pod_security_context",
    "pod_spec",
    "pvc_volume",
    "resource_requirements",
    "scratch_mount",
    "scratch_volume",
    "tolerations",
    "volume_mount",
]

#: The GPU resource of a step that asks for GPUs without naming an accelerator.
DEFAULT_ACCELERATOR = "nvidia.com/gpu"
#: Kueue admits a Job or TrainJob into this local queue (``runtime.queue``).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: Where pods get a writable scratch directory (the root filesystem is read-only); also HOME.
SCRATCH_MOUNT = "/tmp"
#: The non-root user and group the pods run as (any uid works with the project image).
RUN_AS_USER = 10001

_INTEGER_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")

# --------------------------------------------------------------------------- quantities


def cpu_quantity(cpu: float) -> str:
    """A CPU count as a Kubernetes quantity: ``2`` or ``500m``."""
    millis = math.ceil(cpu * 1000 - 1e-6)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def integer_memory(memory: str) -> str:
    """A memory quantity as an integer with an optional ``K/Ki...`` suffix (what kfp accepts).

    Decimals (``1.5Gi``) and the lowercase ``k`` that Kubernetes also allows are written as
    a byte count.
    """
    return memory if _INTEGER_MEMORY.match(memory) else str(math.ceil(memory_bytes(memory)))


# --------------------------------------------------------------------------- resources


def gpu_resource(resources: Resources) -> str:
    """The extended resource a step's GPUs are requested as."""
    return resources.accelerator or DEFAULT_ACCELERATOR


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """Requests equal to limits (Guaranteed QoS), GPUs under their accelerator name."""
    amounts = {"cpu": cpu_quantity(resources.cpu), "memory": resources.memory}
    if resources.gpu:
        amounts[gpu_resource(resources)] = str(resources.gpu)
    return {"limits": dict(amounts), "requests": dict(amounts)}


def merged_resources(base: Resources, override: ResourceSpec) -> Resources:
    """``base`` with the CPU, memory, GPUs and accelerator that ``override`` sets."""
    return Resources(
        cpu=float(override.cpu) if override.cpu is not None else base.cpu,
        memory=override.memory or base.memory,
        gpu=int(override.gpu) if override.gpu is not None else base.gpu,
        accelerator=override.accelerator or base.accelerator,
        node_selector=base.node_selector,
        tolerations=base.tolerations,
    )


# --------------------------------------------------------------------------- security


def pod_security_context() -> dict[str, Any]:
    """Non-root pods with the runtime's default seccomp profile."""
    return {
        "fsGroup": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privilege escalation, no capabilities, a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
    }


# --------------------------------------------------------------------------- placement


def tolerations(resources: Resources) -> list[dict[str, str]]:
    """The step's tolerations as Kubernetes writes them (unset fields left out)."""
    out = []
    for t in resources.tolerations:
        item = {"key": t.key, "operator": t.operator}
        if t.value is not None:
            item["value"] = t.value
        if t.effect is not None:
            item["effect"] = t.effect
        out.append(item)
    return out


def placement(resources: Resources) -> dict[str, Any]:
    """The pod spec fields that put a step on its nodes: node selector and tolerations, if set."""
    fields: dict[str, Any] = {}
    if resources.node_selector:
        fields["nodeSelector"] = dict(resources.node_selector)
    if resources.tolerations:
        fields["tolerations"] = tolerations(resources)
    return fields


# --------------------------------------------------------------------------- volumes


def scratch_volume() -> dict[str, Any]:
    """The ``emptyDir`` mounted at :data:`SCRATCH_MOUNT`, named ``scratch``."""
    return {"emptyDir": {}, "name": "scratch"}


def scratch_mount() -> dict[str, Any]:
    """A container's mount of :func:`scratch_volume` at :data:`SCRATCH_MOUNT`."""
    return volume_mount("scratch", SCRATCH_MOUNT)


def pvc_volume(name: str, claim: str) -> dict[str, Any]:
    """A pod volume ``name`` backed by the PersistentVolumeClaim ``claim``."""
    return {"name": name, "persistentVolumeClaim": {"claimName": claim}}


def volume_mount(name: str, path: str, *, read_only: bool = False) -> dict[str, Any]:
    """A container's mount of the pod volume ``name`` at ``path``."""
    mount: dict[str, Any] = {"mountPath": path, "name": name}
    if read_only:
        mount["readOnly"] = True
    return mount


# --------------------------------------------------------------------------- pods


def env_vars(env: Mapping[str, str]) -> list[dict[str, str]]:
    """``env`` as a container's ``env`` list, sorted, with ``HOME`` on the scratch volume."""
    merged = {"HOME": SCRATCH_MOUNT, **env}
    return [{"name": k, "value": str(merged[k])} for k in sorted(merged)]


def container(
    name: str,
    *,
    image: str | None = None,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    resources: Resources | None = None,
    mounts: Sequence[Mapping[str, Any]] = (),
    pull_policy: str | None = None,
) -> dict[str, Any]:
    """A container under :func:`container_security_context`; fields not given are left out.

    ``env`` goes through :func:`env_vars` and ``resources`` through
    :func:`resource_requirements`.
    """
    fields = {
        "args": None if args is None else list(args),
        "command": None if command is None else list(command),
        "env": None if env is None else env_vars(env),
        "image": image,
        "imagePullPolicy": pull_policy,
        "name": name,
        "resources": None if resources is None else resource_requirements(resources),
        "securityContext": container_security_context(),
        "volumeMounts": [dict(m) for m in mounts] or None,
    }
    return {key: value for key, value in fields.items() if value is not None}


def pod_spec(
    containers: Sequence[dict[str, Any]],
    volumes: Sequence[dict[str, Any]],
    *,
    resources: Resources | None = None,
    service_account: str | None = None,
    init_containers: Sequence[dict[str, Any]] = (),
    restart_policy: str | None = None,
    automount_token: bool | None = None,
) -> dict[str, Any]:
    """A pod spec under :func:`pod_security_context`, placed per ``resources`` when given."""
    spec: dict[str, Any] = {
        "containers": list(containers),
        "securityContext": pod_security_context(),
        "volumes": list(volumes),
    }
    if init_containers:
        spec["initContainers"] = list(init_containers)
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    if automount_token is not None:
        spec["automountServiceAccountToken"] = automount_token
    if service_account:
        spec["serviceAccountName"] = service_account
    if resources is not None:
        spec.update(placement(resources))
    return spec


def metadata(
    name: str,
    namespace: str | None,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    queue: str | None = None,
) -> dict[str, Any]:
    """Object metadata; a Kueue ``queue`` becomes the :data:`KUEUE_QUEUE_LABEL` label."""
    all_labels = {**(labels or {}), **({KUEUE_QUEUE_LABEL: queue} if queue else {})}
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if all_labels:
        meta["labels"] = dict(sorted(all_labels.items()))
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
