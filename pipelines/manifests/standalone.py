"""``components/standalone/``: the pipeline's jobs for a cluster without Kubeflow Pipelines.

A TrainJob (or PyTorchJob) trains from the prepared data on the data PVC, and an Indexed
Job scores one shard per index (:mod:`pipelines.manifests.job`) once the model and the
scoring data are complete. Both are built from the same DAG steps as the KFP tasks.
"""

from __future__ import annotations

import json
from typing import Any

from components.names import CHECKPOINT_DIR_ENV, MANIFEST_FILE, MODEL_META_FILE, RUN_ID_ENV
from pipelines import k8s
from pipelines.dag import Ref, Resources, Step, Uri
from pipelines.errors import ConfigError
from pipelines.kubeflow.trainjob.build import build_training_job, train_command
from pipelines.manifests.deployment import MANAGED_BY, Deployment

__all__ = ["inference_jobs", "training_jobs"]

#: The file each input of the inference step is complete with (written last by its step),
#: which the Indexed Job's pods wait for, so the Job may be applied with the TrainJob.
_READY = {"model": MODEL_META_FILE, "scoring": MANIFEST_FILE}
#: Steps whose outputs the standalone jobs find on the data PVC: etl's are prepared there
#: beforehand, train's are written by the training job. A gated model is read as the
#: trained one (standalone jobs have no evaluation gate).
_STANDALONE_SOURCES = {"datagen": "datagen", "etl": "etl", "train": "train", "gate": "train"}
_WAIT_SCRIPT = 'for f in "$@"; do until [ -f "$f" ]; do echo "waiting for $f"; sleep 30; done; done'


def training_jobs(d: Deployment) -> list[dict[str, Any]]:
    """The training job of the ``train`` step (none without one)."""
    step = d.step("train")
    if step is None:
        return []
    inputs = _inputs(d, step)
    outputs = {name: _path(d, step.name, name) for name in step.outputs}
    stage = f"{d.config.kubeflow.checkpoint_mount}/{d.name}"
    job = build_training_job(
        d.config,
        step,
        name=f"{d.name}-train",
        namespace=d.namespace,
        args=train_command(
            step.component,
            inputs=inputs,
            params=step.params,
            outputs=outputs,
            metrics=f"{stage}/metrics.json",
        ),
        env={CHECKPOINT_DIR_ENV: f"{stage}/checkpoints", RUN_ID_ENV: d.name},
        labels=MANAGED_BY,
    )
    return [job]


def inference_jobs(d: Deployment) -> list[dict[str, Any]]:
    """The Indexed Job of the fanned-out ``infer`` step (none without one)."""
    step = d.step("infer")
    if step is None or step.fan_out is None:
        return []
    inputs = _inputs(d, step)
    outputs = {name: f"{_path(d, step.name, name)}/shard-{{index}}" for name in step.outputs}
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
        d.name,
    ]
    container = d.container(
        "infer",
        command=["python"],
        args=args,
        env={},
        resources=step.resources,
        mounts=[
            k8s.volume_mount("data", d.data_mount),
            k8s.scratch_mount(),
        ],
    )
    ready = (
        f"{inputs[k]}/{m}"
        for k, m in _READY.items()
        if isinstance(step.inputs.get(k), Ref)  # outside data is there already
    )
    wait = d.container(
        "wait-for-inputs",
        command=["sh", "-c"],
        args=[_WAIT_SCRIPT, "wait-for", *ready],
        resources=Resources(cpu=0.05, memory="64Mi"),
        mounts=[k8s.volume_mount("data", d.data_mount, read_only=True)],
    )
    pod = k8s.pod_spec(
        [container],
        [k8s.pvc_volume("data", d.data_pvc), k8s.scratch_volume()],
        resources=step.resources,
        service_account=d.service_account,
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
    metadata = d.meta(f"{d.name}-infer", labels=MANAGED_BY, queue=d.config.runtime.queue)
    return [{"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}]


def _path(d: Deployment, step: str, output: str) -> str:
    """Where a step's output lives on the data PVC in standalone mode."""
    return f"{d.data_mount}/{d.name}/{step}/{output}"


def _inputs(d: Deployment, step: Step) -> dict[str, str]:
    """Where a standalone job reads each input: outside URIs as given, step outputs on the
    data PVC.

    Raises:
        ConfigError: A standalone environment is configured and the step reads an output
            no standalone job produces (tuning's choice, for one).
    """
    envs = d.config.manifests.envs
    standalone = any(env.target == "standalone" for env in envs.values())
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
                sorted(envs),
            )
        inputs[name] = _path(d, producer or source.step, source.output)
    return inputs
