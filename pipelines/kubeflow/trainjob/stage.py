"""Inside the KFP training task: stage the inputs, run the training job, copy the outputs.

With ``trainer.nodes > 1`` the compiler sets :data:`components.names.DISTRIBUTED_ENV` to
:func:`distributed_settings`; the launcher then calls :func:`run_distributed`, which stages
the task's inputs on the shared checkpoint PVC, runs the job whose pods execute
:func:`~pipelines.kubeflow.trainjob.build.train_command` (watched by
:func:`~pipelines.kubeflow.trainjob.watch.run_trainjob`), and copies the outputs back into
the task's artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from components.names import CHECKPOINT_DIR_ENV, METRICS_FILE, RUN_ID_ENV
from pipelines.config.schema import Config
from pipelines.dag import Step
from pipelines.kubeflow.trainjob.build import (
    TRAINJOB,
    TrainJobError,
    build_training_job,
    check_name,
    job_name,
    train_command,
)
from pipelines.kubeflow.trainjob.watch import job_state, run_trainjob

__all__ = ["distributed_settings", "run_distributed"]

log = logging.getLogger("kfbatch.trainjob")

#: Written on the shared volume once the job has succeeded: a retry collects, never re-runs.
_SUCCEEDED = "succeeded"


def distributed_settings(config: Config, step: Step) -> str:
    """What the KFP training task needs to start its job, as the JSON of ``DISTRIBUTED_ENV``.

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
    checkpoints in ``checkpoints/``), and once the job has succeeded a ``succeeded`` marker
    is written and the outputs are copied into this task's artifact paths; then the staged
    inputs are removed.

    Idempotent under KFP's retries (same run, same job name): a retry finds the marker and
    collects the finished job's outputs without creating anything; one that finds the job
    still running (same spec) follows it and leaves its staged data alone; only without
    either does it stage afresh and create the job.

    Args:
        settings: :func:`distributed_settings`' JSON (from ``DISTRIBUTED_ENV``).
        timeout_s: Seconds to wait when the step sets no timeout of its own.

    Returns:
        What rank 0 wrote to ``metrics.json`` (empty when it wrote nothing).
    """
    decoded = json.loads(settings)
    name = job_name(decoded["pipeline"], decoded["step"], run_id or "no-run-id")
    stage = os.path.join(decoded["mount"], "kfbatch-jobs", name)
    staged_in = {
        key: _staged_path(value, os.path.join(stage, "inputs", key))
        for key, value in inputs.items()
    }
    staged_out = {key: os.path.join(stage, "outputs", key) for key in outputs}
    metrics_path = os.path.join(stage, METRICS_FILE)
    marker = os.path.join(stage, _SUCCEEDED)
    args = train_command(
        component, inputs=staged_in, params=params, outputs=staged_out, metrics=metrics_path
    )
    env = {CHECKPOINT_DIR_ENV: os.path.join(stage, "checkpoints"), RUN_ID_ENV: run_id}
    manifest = _finish(decoded["manifest"], name=name, args=args, env=env)
    namespace = _pod_namespace() or decoded["namespace"]
    if os.path.isfile(marker):
        log.info("%s already succeeded in an earlier attempt; collecting its outputs", name)
    else:
        state = job_state(manifest, namespace, api=api)
        if state in (None, "failed"):  # nothing to follow: stage afresh
            for path in (*staged_out.values(), metrics_path):
                _remove(path)
            for key, value in inputs.items():
                _copy_in(value, staged_in[key])
        else:
            log.info("%s is %s (an earlier attempt's); following it", name, state)

        def succeeded() -> None:
            with open(marker, "w", encoding="utf-8") as f:
                f.write(name + "\n")

        run_trainjob(
            manifest,
            namespace,
            decoded["timeout_s"] or timeout_s,
            api=api,
            poll_s=poll_s,
            on_succeeded=succeeded,
        )
    for key, path in staged_out.items():
        _copy(path, outputs[key])
    results: dict[str, Any] = {}
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            results = dict(json.load(f))
    # The inputs' copies go; the outputs and the marker stay (small) until the run's folder
    # is cleaned, so that a retry after this point still finds them.
    _remove(os.path.join(stage, "inputs"))
    return results


def _finish(
    manifest: Mapping[str, Any], *, name: str, args: Sequence[str], env: Mapping[str, str]
) -> dict[str, Any]:
    """A copy of a built job with its name, and ``args`` and ``env`` added to its trainer."""
    check_name(name)
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


def _staged_path(value: str | list[str], target: str) -> str | list[str]:
    """Where a local input (file, directory, or list of them) is staged; URIs pass as-is."""
    if isinstance(value, list):
        return [_staged_path(v, os.path.join(target, str(i))) for i, v in enumerate(value)]
    return target if os.path.exists(value) else value  # a URI the ranks read themselves


def _copy_in(value: str | list[str], target: str | list[str]) -> None:
    """Copy a local input to its staged path (from :func:`_staged_path`)."""
    if isinstance(value, list):
        for one, there in zip(value, target, strict=True):
            _copy_in(one, there)
        return
    if isinstance(target, str) and target != value:
        _remove(target)
        _copy(value, target)


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
