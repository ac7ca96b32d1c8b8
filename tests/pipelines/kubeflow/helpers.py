"""Helpers for the Kubeflow tests: compile a config and read the YAML documents back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.builder import build_dag
from pipelines.config.compose import compose_config
from pipelines.dag import Dag
from pipelines.kubeflow.compiler import compile_pipeline

#: The demo with every Kubernetes setting the compiler translates.
GPU_CLUSTER = (
    "resources=gpu",
    "kubeflow.checkpoint_pvc=train-checkpoints",
    "kubeflow.volumes=[{claim: shared-data, mount_path: /data}]",
    "+kubeflow.secrets={AWS_ACCESS_KEY_ID: s3-creds/access_key, AWS_SECRET_ACCESS_KEY: "
    "s3-creds/secret_key, DB_PASSWORD: db/password}",
)


@dataclass(frozen=True)
class Compiled:
    """A compiled pipeline: the text, its two YAML documents and the DAG it came from."""

    text: str
    spec: dict[str, Any]
    platform: dict[str, Any]
    dag: Dag

    def executor(self, step: str) -> dict[str, Any]:
        """The container of a step's executor."""
        return self.spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]

    def k8s(self, step: str) -> dict[str, Any]:
        """The Kubernetes platform config of a step's executor ({} when it has none)."""
        executors = self.platform.get("kubernetes", {}).get("deploymentSpec", {})
        return executors.get("executors", {}).get(f"exec-{step}", {})

    def task(self, step: str) -> dict[str, Any]:
        """A step's task, wherever it sits (the root DAG or a ParallelFor's sub-DAG)."""
        for component in (self.spec["root"], *self.spec["components"].values()):
            tasks = component.get("dag", {}).get("tasks", {})
            if step in tasks:
                return tasks[step]
        raise KeyError(step)


def compile_config(*overrides: str) -> Compiled:
    """Compose ``overrides`` and compile; parse the pipeline and platform documents."""
    composed = compose_config(list(overrides))
    text = compile_pipeline(composed)
    documents = list(yaml.safe_load_all(text))
    platform = documents[1]["platforms"] if len(documents) > 1 else {}
    return Compiled(text, documents[0], platform, build_dag(composed.config))
