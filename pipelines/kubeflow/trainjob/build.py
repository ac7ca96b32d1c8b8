"""Pure builders of the training jobs: a Kubeflow Trainer ``TrainJob`` or a ``PyTorchJob``.

:func:`build_trainjob` (``trainer.kubeflow.org/v1alpha1``, a ``runtimeRef`` to a
``ClusterTrainingRuntime`` such as ``torch-distributed``, ``numNodes``, ``numProcPerNode``,
``resourcesPerNode``; node selector, tolerations, volumes and the containers' security
context through ``runtimePatches``) and :func:`build_pytorchjob` (``kubeflow.org/v1``, one
``Master`` and ``nodes - 1`` ``Worker`` replicas) both take a :class:`TrainingJobSpec` and
return plain dicts, validated against the upstream CRD schemas in the tests;
:func:`build_training_job` picks one per ``kubeflow.training_api``. The pod pieces are
:mod:`pipelines.k8s`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines import k8s
from pipelines.config.schema import Config
from pipelines.dag import Resources, Step
from pipelines.errors import KfbatchError

__all__ = [
    "PYTORCHJOB",
    "PYTORCHJOB_RENDEZVOUS",
    "TRAINING_APIS",
    "TRAINJOB",
    "TRAINJOB_CONTAINER",
    "TRAIN_ENTRY",
    "JobKind",
    "TrainJobError",
    "TrainingJobSpec",
    "build_pytorchjob",
    "build_training_job",
    "build_trainjob",
    "check_name",
    "job_kind",
    "job_name",
    "train_command",
]

#: What every training pod runs: torchrun reads the rendezvous (node count, rank, master
#: address) from the ``PET_*`` variables that Kubeflow Trainer's torch plugin sets (for a
#: PyTorchJob see :data:`PYTORCHJOB_RENDEZVOUS`), then starts ``procs_per_node`` ranks of
#: the train component's distributed entry. The one place to point at another entry module.
TRAIN_ENTRY: tuple[str, ...] = ("torchrun", "-m", "components.train")
#: The training operator (PyTorchJob) sets ``PET_NNODES``, ``PET_NPROC_PER_NODE`` and
#: ``PET_NODE_RANK`` but the master's address only as ``MASTER_ADDR``/``MASTER_PORT``, which
#: torchrun does not read: the kubelet substitutes them into these arguments.
PYTORCHJOB_RENDEZVOUS = ("--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)")
#: The replicated job and container of ``torch-distributed`` that runs the trainer.
TRAINJOB_CONTAINER = "node"

_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(KfbatchError):
    """The training job failed, timed out, or could not be created."""


@dataclass(frozen=True)
class JobKind:
    """Where a kind of training job lives in the Kubernetes API and how it reports its end."""

    kind: str
    group: str
    version: str
    plural: str
    succeeded: str  # condition type that means it completed
    failed: str = "Failed"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


TRAINJOB = JobKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "Complete")
PYTORCHJOB = JobKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", "Succeeded")
_KINDS = {kind.kind: kind for kind in (TRAINJOB, PYTORCHJOB)}
#: The job kind of each ``kubeflow.training_api``.
TRAINING_APIS: Mapping[str, JobKind] = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}


def job_kind(manifest: Mapping[str, Any]) -> JobKind:
    """The :class:`JobKind` of a built manifest."""
    try:
        return _KINDS[manifest["kind"]]
    except KeyError:
        raise TrainJobError(
            f"cannot run a {manifest.get('kind')!r}: expected one of {sorted(_KINDS)}"
        ) from None


@dataclass(frozen=True)
class TrainingJobSpec:
    """What a training job runs and where, whichever API (TrainJob, PyTorchJob) runs it.

    Attributes:
        name: The job's name (an RFC 1035 label, at most 63 characters).
        namespace: Its namespace, or None to leave it to kustomize or the caller.
        command: What every node runs (with ``args`` after it).
        nodes: How many nodes (pods) the job spans.
        procs_per_node: Training processes (ranks) per node.
        resources: What each node requests.
        env: Environment variables of every node (``HOME`` is the scratch volume).
        volumes: (PVC name, mount path) pairs mounted on every node.
        queue: A Kueue local queue, set as the ``kueue.x-k8s.io/queue-name`` label.
        timeout_s: The job's ``activeDeadlineSeconds`` when > 0.
    """

    name: str
    namespace: str | None
    image: str
    command: Sequence[str]
    nodes: int
    procs_per_node: int
    resources: Resources
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = None
    volumes: Sequence[tuple[str, str]] = ()
    queue: str | None = None
    service_account: str | None = None
    labels: Mapping[str, str] | None = None
    timeout_s: float = 0.0

    def __post_init__(self) -> None:
        check_name(self.name)

    def metadata(self) -> dict[str, Any]:
        return k8s.metadata(self.name, self.namespace, labels=self.labels, queue=self.queue)

    def mounts(self) -> list[dict[str, Any]]:
        """The node container's mounts: the scratch volume, then each PVC."""
        return [
            k8s.scratch_mount(),
            *(k8s.volume_mount(f"pvc-{i}", path) for i, (_, path) in enumerate(self.volumes)),
        ]

    def pod_spec(self, container: dict[str, Any]) -> dict[str, Any]:
        """A node's pod: ``container``, the volumes, placement and identity."""
        volumes = [
            k8s.scratch_volume(),
            *(k8s.pvc_volume(f"pvc-{i}", claim) for i, (claim, _) in enumerate(self.volumes)),
        ]
        return k8s.pod_spec(
            [container], volumes, resources=self.resources, service_account=self.service_account
        )

    def deadline(self) -> dict[str, int]:
        """``activeDeadlineSeconds`` when the job has a timeout."""
        return {"activeDeadlineSeconds": math.ceil(self.timeout_s)} if self.timeout_s > 0 else {}


def build_trainjob(job: TrainingJobSpec, *, runtime: str = "torch-distributed") -> dict[str, Any]:
    """A Kubeflow Trainer ``TrainJob`` running ``job.command`` on ``job.nodes`` nodes.

    Image, command, node count, processes per node and per-node resources go in
    ``spec.trainer``; what the trainer spec cannot say (node selector, tolerations, volumes,
    service account, security contexts) goes in one ``runtimePatches`` entry for the
    runtime's ``node`` job.

    Args:
        runtime: The ``ClusterTrainingRuntime`` to instantiate.
    """
    pod_spec = job.pod_spec(k8s.container(TRAINJOB_CONTAINER, mounts=job.mounts()))
    node = {"spec": {"template": {"spec": pod_spec}}}
    replicated = {"name": TRAINJOB_CONTAINER, "template": node}
    patch = {"template": {"spec": {"replicatedJobs": [replicated]}}}
    spec: dict[str, Any] = {
        "runtimePatches": [{"manager": "kfbatch.io/launcher", "trainingRuntimeSpec": patch}],
        "runtimeRef": {
            "apiGroup": TRAINJOB.group,
            "kind": "ClusterTrainingRuntime",
            "name": runtime,
        },
        "trainer": {
            "args": list(job.args),
            "command": list(job.command),
            "env": k8s.env_vars(job.env or {}),
            "image": job.image,
            "numNodes": job.nodes,
            "numProcPerNode": job.procs_per_node,
            "resourcesPerNode": k8s.resource_requirements(job.resources),
        },
        **job.deadline(),
    }
    return {
        "apiVersion": TRAINJOB.api_version,
        "kind": TRAINJOB.kind,
        "metadata": job.metadata(),
        "spec": spec,
    }


def build_pytorchjob(job: TrainingJobSpec) -> dict[str, Any]:
    """A training operator ``PyTorchJob``: one ``Master`` and ``nodes - 1`` ``Worker`` pods.

    Failed pods are not restarted by the operator (``backoffLimit: 0``): a retry is the
    pipeline task's.
    """
    container = k8s.container(
        "pytorch",  # the training operator finds the container by this name
        image=job.image,
        command=job.command,
        args=job.args,
        env=job.env or {},
        resources=job.resources,
        mounts=job.mounts(),
    )
    pod_spec = job.pod_spec(container)

    def replica(count: int) -> dict[str, Any]:
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": pod_spec}}

    replicas = {"Master": replica(1)}
    if job.nodes > 1:
        replicas["Worker"] = replica(job.nodes - 1)
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": job.metadata(),
        "spec": {
            "nprocPerNode": str(job.procs_per_node),
            "pytorchReplicaSpecs": replicas,
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None", **job.deadline()},
        },
    }


def build_training_job(
    config: Config,
    step: Step,
    *,
    name: str,
    namespace: str | None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob or PyTorchJob (``kubeflow.training_api``) that runs ``step`` per config."""
    kf = config.kubeflow
    pytorch = kf.training_api == "pytorchjob"
    volumes = [(v.claim, v.mount_path) for v in kf.volumes]
    if kf.checkpoint_pvc:
        volumes.insert(0, (kf.checkpoint_pvc, kf.checkpoint_mount))
    job = TrainingJobSpec(
        name=name,
        namespace=namespace,
        image=kf.image,
        command=TRAIN_ENTRY[:1],
        args=[*(PYTORCHJOB_RENDEZVOUS if pytorch else ()), *TRAIN_ENTRY[1:], *args],
        nodes=config.trainer.nodes,
        procs_per_node=config.trainer.procs_per_node,
        resources=step.resources,
        env=env,
        volumes=volumes,
        queue=config.runtime.queue,
        service_account=kf.service_account,
        labels=labels,
        timeout_s=step.timeout_s,
    )
    return build_pytorchjob(job) if pytorch else build_trainjob(job, runtime=kf.training_runtime)


def train_command(
    component: str,
    *,
    inputs: Mapping[str, str | list[str]],
    params: Mapping[str, Any],
    outputs: Mapping[str, str],
    metrics: str,
) -> list[str]:
    """The arguments after :data:`TRAIN_ENTRY` that tell each rank what to train.

    The entry module receives ``--component module:function`` and the component's
    ``inputs``, ``params`` and ``outputs`` as JSON, and rank 0 writes what the component
    returns as JSON to ``--metrics``.
    """

    def encode(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    return [
        "--component",
        component,
        "--inputs",
        encode(dict(inputs)),
        "--params",
        encode(dict(params)),
        "--outputs",
        encode(dict(outputs)),
        "--metrics",
        metrics,
    ]


def job_name(pipeline: str, step: str, run_id: str) -> str:
    """``<pipeline>-<step>-<10 hex of the run id>``: an RFC 1035 label, stable per run."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]+", "-", f"{pipeline}-{step}".lower()).strip("-")
    if not stem or not stem[0].isalpha():
        stem = f"job-{stem}".rstrip("-")
    return f"{stem[: 63 - 11].rstrip('-')}-{digest}"


def check_name(name: str) -> None:
    """Raise :class:`TrainJobError` unless ``name`` is a valid job name."""
    if len(name) > 63 or not _RFC1035.match(name):
        raise TrainJobError(
            f"training job name {name!r}: expected an RFC 1035 label (a-z, 0-9 and '-', "
            "starting with a letter, at most 63 characters); shorten or rename the pipeline"
        )
