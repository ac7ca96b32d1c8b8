"""Multi-node training on a cluster: build a Kubeflow Trainer ``TrainJob`` (or a ``PyTorchJob``)
and watch it to the end.

No kfp extension creates a training job from a pipeline task, so this module does, in two
parts that the KFP training task and ``kfbatch manifests`` share:

- **pure builders**: :func:`build_trainjob` (``trainer.kubeflow.org/v1alpha1``, a
  ``runtimeRef`` to a ``ClusterTrainingRuntime`` such as ``torch-distributed``, ``numNodes``,
  ``numProcPerNode``, ``resourcesPerNode``; node selector, tolerations, volumes and the
  containers' security context through ``runtimePatches``) and :func:`build_pytorchjob`
  (``kubeflow.org/v1``, one ``Master`` and ``nodes - 1`` ``Worker`` replicas). Both return
  plain dicts, validated against the upstream CRD schemas in the tests;
- **a watcher**, :func:`run_trainjob`: creates the resource with the kubernetes client's
  ``CustomObjectsApi``, polls it, logs each new condition, returns when it completes and
  raises :class:`TrainJobError` when it fails or runs past its timeout.

Clean-up policy of :func:`run_trainjob`: a job that **succeeded** is deleted (its result is
on the shared volume; its pods would hold nothing but logs); a job that **failed** is kept
so that ``kubectl describe`` and the pods' logs can be read (the next attempt of the task
replaces it); a job that ran past the timeout, or whose task was interrupted, is deleted so
that it stops holding nodes. The job name is derived from the run and the step, so a retried
task (same run id) finds its job: one that already succeeded with the same spec is reused,
one still running is followed, any other is replaced. SIGTERM (how Kubernetes stops the
task's pod when a run is cancelled) counts as an interruption.

Inside a KFP training task (``trainer.nodes > 1``) the compiler sets :data:`DISTRIBUTED_ENV`
to :func:`distributed_settings`; the launcher then calls :func:`run_distributed`, which
stages the task's inputs on the shared checkpoint PVC, runs the job whose pods execute
:func:`train_command`, and copies the outputs back into the task's artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.names import CHECKPOINT_DIR_ENV, METRICS_FILE, RUN_ID_ENV
from pipelines import k8s
from pipelines.config.schema import Config
from pipelines.dag import Resources, Step
from pipelines.errors import KfbatchError

__all__ = [
    "PYTORCHJOB_RENDEZVOUS",
    "TRAINJOB_CONTAINER",
    "TRAIN_ENTRY",
    "JobKind",
    "TrainJobError",
    "TrainingJobSpec",
    "build_pytorchjob",
    "build_training_job",
    "build_trainjob",
    "distributed_settings",
    "job_kind",
    "job_name",
    "run_distributed",
    "run_trainjob",
    "train_command",
]

log = logging.getLogger("kfbatch.trainjob")

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
_DIGEST_ANNOTATION = "kfbatch.io/spec-digest"


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


def job_kind(manifest: Mapping[str, Any]) -> JobKind:
    """The :class:`JobKind` of a built manifest."""
    try:
        return _KINDS[manifest["kind"]]
    except KeyError:
        raise TrainJobError(
            f"cannot run a {manifest.get('kind')!r}: expected one of {sorted(_KINDS)}"
        ) from None


# --------------------------------------------------------------------------- builders


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
        _check_name(self.name)

    def metadata(self) -> dict[str, Any]:
        return k8s.metadata(self.name, self.namespace, labels=self.labels, queue=self.queue)

    def mounts(self) -> list[dict[str, Any]]:
        """The node container's mounts: the scratch volume, then each PVC."""
        return [
            k8s.volume_mount("scratch", k8s.SCRATCH_MOUNT),
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


def _check_name(name: str) -> None:
    if len(name) > 63 or not _RFC1035.match(name):
        raise TrainJobError(
            f"training job name {name!r}: expected an RFC 1035 label (a-z, 0-9 and '-', "
            "starting with a letter, at most 63 characters); shorten or rename the pipeline"
        )


# --------------------------------------------------------------------------- watcher


def run_trainjob(
    manifest: Mapping[str, Any],
    namespace: str,
    timeout: float,
    *,
    api: Any = None,
    poll_s: float = 10.0,
    on_status: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create ``manifest`` (a TrainJob or PyTorchJob) in ``namespace`` and wait for its end.

    Logs (and passes to ``on_status``) each condition the first time it is seen, as
    ``<Type>=<Status> <reason>: <message>``. See the module docstring for what is deleted.

    Args:
        manifest: From :func:`build_trainjob` or :func:`build_pytorchjob`.
        timeout: Seconds to wait for the job to end (> 0).
        api: A ``kubernetes.client.CustomObjectsApi``; by default one with the pod's
            in-cluster credentials, or the local kubeconfig outside a cluster.
        poll_s: Seconds between status reads (the first ones come sooner: 1 s, 2 s, ...).

    Returns:
        The job as last read, with its ``status``.

    Raises:
        TrainJobError: it failed (with the failure's reason and message), ran past
            ``timeout``, or the API refused it.
    """
    from kubernetes.client.exceptions import ApiException

    kind = job_kind(manifest)
    name = manifest["metadata"]["name"]
    body = _with_digest({**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}})
    api = api if api is not None else _default_api()
    ref = f"{kind.kind} {namespace}/{name}"
    say = _reporter(on_status)
    previous = _sigterm_exits()  # a cancelled KFP run stops its pod with SIGTERM
    try:
        job = _create_or_adopt(api, kind, namespace, body, ref, say, sleep)
        deadline = time.monotonic() + timeout
        seen: set[tuple[str, str, str]] = set()
        delay = min(poll_s, 1.0)  # read early, then every poll_s: short jobs end sooner
        while True:
            state = _report_conditions(job, kind, seen, ref, say)
            if state == "succeeded":
                say(f"{ref}: succeeded")
                _delete(api, kind, namespace, name)
                return job
            if state == "failed":
                raise TrainJobError(f"{ref} failed: {_failure(job, kind)} (kept for inspection)")
            if time.monotonic() >= deadline:
                _delete(api, kind, namespace, name)
                raise TrainJobError(f"{ref} did not finish within {timeout:g} s; deleted it")
            sleep(delay)
            delay = min(poll_s, delay * 2)
            job = _get(api, kind, namespace, name)
            if job is None:
                raise TrainJobError(f"{ref} disappeared while running (deleted by someone?)")
    except ApiException as error:
        hint = {
            403: f"; the pod's service account needs create, get and delete on {kind.plural}"
            f".{kind.group} (kfbatch manifests renders that Role)",
            404: f"; is {kind.kind} ({kind.api_version}) installed on this cluster?",
        }.get(error.status, "")
        raise TrainJobError(
            f"{ref}: the Kubernetes API answered {_api_error(error)}{hint}"
        ) from None
    except (KeyboardInterrupt, SystemExit):
        say(f"{ref}: interrupted; deleting it")
        _delete(api, kind, namespace, name)
        raise
    finally:
        _restore_sigterm(previous)


def _sigterm_exits() -> Any:
    """Make SIGTERM raise ``SystemExit`` (so the job is deleted); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def exit_(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, exit_)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _default_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:  # KUBECONFIG as it is now (the client reads it once, at import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as error:
            raise TrainJobError(
                "no Kubernetes credentials to create the training job: not in a cluster and "
                f"no usable kubeconfig ({error}); run the task in-cluster or set KUBECONFIG"
            ) from None
    return client.CustomObjectsApi()


def _reporter(on_status: Callable[[str], None] | None) -> Callable[[str], None]:
    def say(line: str) -> None:
        log.info("%s", line)
        if on_status is not None:
            on_status(line)

    return say


def _with_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest annotated with a digest of its spec, to recognise an identical job."""
    digest = hashlib.sha256(
        json.dumps(manifest["spec"], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    meta = manifest["metadata"]
    annotations = {**meta.get("annotations", {}), _DIGEST_ANNOTATION: digest}
    return {**manifest, "metadata": {**meta, "annotations": annotations}}


def _create_or_adopt(
    api: Any,
    kind: JobKind,
    namespace: str,
    body: dict[str, Any],
    ref: str,
    say: Callable[[str], None],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Create the job; if one of that name exists, reuse, follow or replace it."""
    from kubernetes.client.exceptions import ApiException

    name = body["metadata"]["name"]
    try:
        created = api.create_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, body
        )
        say(f"{ref}: created")
        return created
    except ApiException as error:
        if error.status != 409:
            raise
    existing = _get(api, kind, namespace, name)
    if existing is not None:
        same = (existing["metadata"].get("annotations") or {}).get(_DIGEST_ANNOTATION) == body[
            "metadata"
        ]["annotations"][_DIGEST_ANNOTATION]
        state = _state(existing, kind)
        if same and state != "failed":
            say(f"{ref}: already exists with the same spec ({state}); following it")
            return existing
        say(f"{ref}: replacing an existing job ({state}, same spec: {same})")
        _delete(api, kind, namespace, name)
        for _ in range(60):
            if _get(api, kind, namespace, name) is None:
                break
            sleep(1.0)
        else:
            raise TrainJobError(f"{ref}: the previous job of that name is still being deleted")
    created = api.create_namespaced_custom_object(
        kind.group, kind.version, namespace, kind.plural, body
    )
    say(f"{ref}: created")
    return created


def _get(api: Any, kind: JobKind, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return api.get_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _delete(api: Any, kind: JobKind, namespace: str, name: str) -> None:
    """Delete the job and (in the background) its pods; a job already gone is fine."""
    from kubernetes.client import V1DeleteOptions
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            body=V1DeleteOptions(propagation_policy="Background"),
        )
    except ApiException as error:
        if error.status != 404:
            log.warning("could not delete %s %s/%s: %s", kind.kind, namespace, name, error)


def _conditions(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((job.get("status") or {}).get("conditions") or [])


def _state(job: Mapping[str, Any], kind: JobKind) -> str:
    """``succeeded``, ``failed`` or ``running`` from the job's conditions."""
    true = {c.get("type") for c in _conditions(job) if c.get("status") == "True"}
    if kind.failed in true:
        return "failed"
    if kind.succeeded in true:
        return "succeeded"
    return "running"


def _report_conditions(
    job: Mapping[str, Any],
    kind: JobKind,
    seen: set[tuple[str, str, str]],
    ref: str,
    say: Callable[[str], None],
) -> str:
    for condition in _conditions(job):
        key = (
            str(condition.get("type")),
            str(condition.get("status")),
            str(condition.get("reason", "")),
        )
        if key in seen:
            continue
        seen.add(key)
        message = condition.get("message") or ""
        say(f"{ref}: {key[0]}={key[1]} {key[2]}".rstrip() + (f": {message}" if message else ""))
    return _state(job, kind)


def _failure(job: Mapping[str, Any], kind: JobKind) -> str:
    for condition in _conditions(job):
        if condition.get("type") == kind.failed and condition.get("status") == "True":
            reason = condition.get("reason") or "Failed"
            return f"{reason}: {condition.get('message') or 'no message'}"
    return "no failure condition"


def _api_error(error: Any) -> str:
    try:
        message = json.loads(error.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return f"{error.status} {error.reason}" + (f": {message}" if message else "")


# --------------------------------------------------------------------------- in the KFP task


def distributed_settings(config: Config, step: Step) -> str:
    """What the KFP training task needs to start its job, as the JSON of :data:`DISTRIBUTED_ENV`.

    That is the job built from config (:func:`build_training_job`) without what only the
    running task knows (the job's name, which comes from the run id, and the component's
    arguments, which name the task's files), and where the shared PVC is mounted.

    Raises:
        ConfigError: ``kubeflow.checkpoint_pvc`` is not set (the task and the training
            nodes exchange inputs, checkpoints and the model through it).
    """
    from pipelines.errors import ConfigError

    if not config.kubeflow.checkpoint_pvc:
        raise ConfigError(
            "kubeflow.checkpoint_pvc",
            "a ReadWriteMany PVC shared by the training task and its nodes when trainer.nodes > 1",
            None,
        )
    manifest = build_training_job(
        config,
        step,
        name="to-be-named",
        namespace=None,
        labels={"app.kubernetes.io/managed-by": "kfbatch", "kfbatch.io/pipeline": config.name},
    )
    settings = {
        "manifest": manifest,
        "mount": config.kubeflow.checkpoint_mount,
        "namespace": config.kubeflow.namespace,
        "pipeline": config.name,
        "step": step.name,
        "timeout_s": step.timeout_s,
    }
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def run_distributed(
    settings: str,
    *,
    component: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, str | list[str]],
    outputs: Mapping[str, str],
    run_id: str,
    api: Any = None,
    poll_s: float = 10.0,
    timeout_s: float = 7 * 86_400.0,
) -> dict[str, Any]:
    """Run ``component`` as a multi-node training job from inside the KFP training task.

    Inputs are copied to ``<checkpoint mount>/kfbatch-jobs/<job>/inputs/`` on the shared
    PVC, the job's ranks write ``outputs/`` and ``metrics.json`` there (and their
    checkpoints in ``checkpoints/``, which survive a retried task: same run, same job
    name), and the outputs are copied into this task's artifact paths once the job has
    succeeded; then the staged copies are removed (the checkpoints are kept).

    Args:
        settings: :func:`distributed_settings`' JSON (from :data:`DISTRIBUTED_ENV`).
        timeout_s: Seconds to wait when the step sets no timeout of its own.

    Returns:
        What rank 0 wrote to ``metrics.json`` (empty when it wrote nothing).
    """
    decoded = json.loads(settings)
    name = job_name(decoded["pipeline"], decoded["step"], run_id or "no-run-id")
    stage = os.path.join(decoded["mount"], "kfbatch-jobs", name)
    staged_in = {
        key: _stage(value, os.path.join(stage, "inputs", key)) for key, value in inputs.items()
    }
    staged_out = {key: os.path.join(stage, "outputs", key) for key in outputs}
    metrics_path = os.path.join(stage, METRICS_FILE)
    for path in (*staged_out.values(), metrics_path):
        _remove(path)
    args = train_command(
        component, inputs=staged_in, params=params, outputs=staged_out, metrics=metrics_path
    )
    env = {CHECKPOINT_DIR_ENV: os.path.join(stage, "checkpoints"), RUN_ID_ENV: run_id}
    manifest = _finish(decoded["manifest"], name=name, args=args, env=env)
    namespace = _pod_namespace() or decoded["namespace"]
    run_trainjob(manifest, namespace, decoded["timeout_s"] or timeout_s, api=api, poll_s=poll_s)
    for key, path in staged_out.items():
        _copy(path, outputs[key])
    results: dict[str, Any] = {}
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            results = dict(json.load(f))
    # The copies are in the task's artifacts now; the checkpoints stay for a warm start.
    for folder in ("inputs", "outputs"):
        _remove(os.path.join(stage, folder))
    return results


def _finish(
    manifest: Mapping[str, Any], *, name: str, args: Sequence[str], env: Mapping[str, str]
) -> dict[str, Any]:
    """A copy of a built job with its name, and ``args`` and ``env`` added to its trainer."""
    _check_name(name)
    job = json.loads(json.dumps(manifest))
    job["metadata"]["name"] = name
    if job["kind"] == TRAINJOB.kind:
        containers = [job["spec"]["trainer"]]
    else:
        containers = [
            c
            for replica in job["spec"]["pytorchReplicaSpecs"].values()
            for c in replica["template"]["spec"]["containers"]
        ]
    for container in containers:
        container["args"] = [*container.get("args", []), *args]
        merged = {e["name"]: e["value"] for e in container.get("env", [])} | dict(env)
        container["env"] = [{"name": k, "value": merged[k]} for k in sorted(merged)]
    return job


def _stage(value: str | list[str], target: str) -> str | list[str]:
    """Copy a local input (file, directory, or list of them) to ``target``; URIs pass as-is."""
    if isinstance(value, list):
        return [_stage(v, os.path.join(target, str(i))) for i, v in enumerate(value)]
    if not os.path.exists(value):
        return value  # an object-store URI the ranks read themselves
    _remove(target)
    _copy(value, target)
    return target


def _copy(source: str, target: str) -> None:
    if not os.path.exists(source):
        raise TrainJobError(f"the training job succeeded but wrote no {source!r}")
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    if os.path.isdir(source):
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _pod_namespace(
    path: str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
) -> str | None:
    """This pod's namespace (the KFP profile namespace) when running in a cluster."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
