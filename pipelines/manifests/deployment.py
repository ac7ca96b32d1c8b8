"""What the GitOps tree deploys: the config completed for a cluster, its DAG and its names.

:class:`Deployment` is built once per rendering and read by the builders of every file
(:mod:`~pipelines.manifests.base`, :mod:`~pipelines.manifests.kfp_component`,
:mod:`~pipelines.manifests.standalone`, :mod:`~pipelines.manifests.overlays`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from pipelines import k8s
from pipelines.builder import build_dag
from pipelines.config.compose import ComposedConfig
from pipelines.config.schema import Config, PvcMount
from pipelines.dag import Dag, Step

__all__ = ["CONFIG_FILE", "CONFIG_MOUNT", "DATA_MOUNT", "MANAGED_BY", "Deployment"]

#: The composed config's file name in the ConfigMap (``--config-name kfbatch``).
CONFIG_FILE = "kfbatch.yaml"
#: Where the config ConfigMap is mounted in the CronJob's pod.
CONFIG_MOUNT = "/etc/kfbatch"
#: Where the data PVC is mounted in every pod.
DATA_MOUNT = "/data"
#: The label of every pod and job the tree creates.
MANAGED_BY = {"app.kubernetes.io/managed-by": "kfbatch"}


@dataclass(frozen=True)
class Deployment:
    """The cluster config (:meth:`of`), its DAG, and the names its resources share."""

    composed: ComposedConfig
    dag: Dag

    @classmethod
    def of(cls, composed: ComposedConfig) -> Deployment:
        """The deployment of ``composed``, with what the tree creates filled in."""
        cluster = _cluster_composed(composed)
        return cls(cluster, build_dag(cluster.config))

    @property
    def config(self) -> Config:
        return self.composed.config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def namespace(self) -> str:
        return self.config.kubeflow.namespace

    @property
    def service_account(self) -> str:
        return str(self.config.kubeflow.service_account)

    @property
    def checkpoint_pvc(self) -> str:
        return str(self.config.kubeflow.checkpoint_pvc)

    @property
    def data_pvc(self) -> str:
        volumes = self.config.kubeflow.volumes
        return volumes[0].claim if volumes else f"{self.name}-data"

    @property
    def data_mount(self) -> str:
        volumes = self.config.kubeflow.volumes
        return volumes[0].mount_path if volumes else DATA_MOUNT

    def meta(self, name: str, **extra: Any) -> dict[str, Any]:
        """Metadata of an object in the deployment's namespace (see :func:`k8s.metadata`)."""
        return k8s.metadata(name, self.namespace, **extra)

    def container(self, name: str, **fields: Any) -> dict[str, Any]:
        """A container of the project image, pulled on every start (see :func:`k8s.container`)."""
        return k8s.container(name, image=self.config.kubeflow.image, pull_policy="Always", **fields)

    def step(self, name: str) -> Step | None:
        """The DAG step ``name``, or None when the pipeline has none."""
        return next((s for s in self.dag.steps if s.name == name), None)


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
