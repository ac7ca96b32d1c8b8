"""``components/kfp/``: the pipeline as kfp's ``Pipeline`` and ``PipelineVersion`` resources,
and a CronJob that submits one run per ``schedule.cron`` tick with ``kfbatch submit``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import yaml

from pipelines import k8s
from pipelines.dag import Resources
from pipelines.manifests.deployment import CONFIG_FILE, CONFIG_MOUNT, MANAGED_BY, Deployment

__all__ = ["KFP_TOKEN_DIR", "cron_job", "executors", "pipeline", "submit_args"]

#: Where kfp's client looks for a token projected for the KFP API (KF_PIPELINES_SA_TOKEN_PATH).
KFP_TOKEN_DIR = "/var/run/secrets/kubeflow/pipelines"
#: A valid schedule for a CronJob that is suspended because no cron is configured.
_SUSPENDED_CRON = "0 0 1 1 *"


def pipeline(d: Deployment) -> list[dict[str, Any]]:
    """kfp's ``Pipeline`` and ``PipelineVersion`` resources of the compiled pipeline.

    The version is named ``<pipeline>-<12 hex>`` of the compiled YAML, as ``kfbatch
    submit`` names it.
    """
    from kfp.compiler import KubernetesManifestOptions

    from pipelines.kubeflow.compiler import compile_pipeline

    digest = hashlib.sha256(compile_pipeline(d.composed).encode()).hexdigest()[:12]
    text = compile_pipeline(
        d.composed,
        kubernetes_manifest=KubernetesManifestOptions(
            pipeline_name=d.name,
            pipeline_display_name=d.name,
            pipeline_version_name=f"{d.name}-{digest}",
            namespace=d.namespace,
            include_pipeline_manifest=True,
        ),
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def executors(resources: Sequence[dict[str, Any]]) -> list[str]:
    """The executor names of the ``PipelineVersion`` among :func:`pipeline`'s resources."""
    version = next(r for r in resources if r["kind"] == "PipelineVersion")
    return list(version["spec"]["pipelineSpec"]["deploymentSpec"]["executors"])


def cron_job(d: Deployment) -> dict[str, Any]:
    """Submits one KFP run per ``schedule.cron`` tick with ``kfbatch submit``."""
    cron = d.config.schedule.cron
    submitter = d.config.manifests.submitter
    container = d.container(
        "submit",
        command=["kfbatch"],
        args=submit_args(),
        env={},
        resources=Resources(
            cpu=float(submitter.cpu or 0.25), memory=str(submitter.memory or "512Mi")
        ),
        mounts=[
            k8s.volume_mount("config", CONFIG_MOUNT, read_only=True),
            k8s.scratch_mount(),
            k8s.volume_mount("kfp-token", KFP_TOKEN_DIR, read_only=True),
        ],
    )
    token = {"audience": "pipelines.kubeflow.org", "expirationSeconds": 7200, "path": "token"}
    volumes = [
        {"configMap": {"name": f"{d.name}-config"}, "name": "config"},
        k8s.scratch_volume(),
        {"name": "kfp-token", "projected": {"sources": [{"serviceAccountToken": token}]}},
    ]
    # No Kubernetes API token: kfbatch submit authenticates to the KFP API with a token
    # projected for KFP's audience only (what KFP's multi-user mode checks).
    pod = k8s.pod_spec(
        [container],
        volumes,
        service_account=d.service_account,
        restart_policy="Never",
        automount_token=False,
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": d.meta(f"{d.name}-submit"),
        "spec": {
            "concurrencyPolicy": "Forbid",
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "activeDeadlineSeconds": 1800,
                    "backoffLimit": 2,
                    "template": {"metadata": {"labels": {**MANAGED_BY}}, "spec": pod},
                    "ttlSecondsAfterFinished": 86400,
                }
            },
            "schedule": cron or _SUSPENDED_CRON,
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "suspend": cron is None,
            "timeZone": d.config.schedule.timezone,
        },
    }


def submit_args() -> list[str]:
    """The CronJob's ``kfbatch`` arguments: submit from the mounted ConfigMap."""
    return [
        "submit",
        "--config-dir",
        CONFIG_MOUNT,
        "--config-name",
        CONFIG_FILE.removesuffix(".yaml"),
        "kubeflow.in_cluster=true",
    ]
