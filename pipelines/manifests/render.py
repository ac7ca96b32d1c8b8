"""Render the GitOps tree: a kustomize base, two components and one overlay per environment.

The tree (``manifests.dir``, ``manifests/`` by default)::

    base/                      what every environment deploys
      namespace.yaml           the namespace (renamed per environment by kustomize)
      serviceaccount.yaml      the identity of the pipeline's pods, the CronJob and the jobs
      rbac.yaml                a Role with only what they need, and its RoleBinding
      pvc.yaml                 data and checkpoint PersistentVolumeClaims
      configmap.yaml           the composed config (the CronJob submits from it)
      kustomizeconfig.yaml     tells kustomize's image transformer about the CRDs' image fields
    components/kfp/            Kubeflow Pipelines: Pipeline, PipelineVersion, submit CronJob
    components/standalone/     without KFP: a TrainJob (or PyTorchJob) and an Indexed Job
    overlays/<env>/kustomization.yaml   namespace, image tag, schedule, storage class,
                               resources and Kueue queue of one environment, as patches

What differs between environments is only the overlay's patches, from
``manifests.envs.<env>`` (:class:`pipelines.config.schema.ManifestEnv`). Rendering is
deterministic: YAML with sorted keys, resources in a fixed order, no timestamps.

Resources are built from the same config and the same DAG as the KFP compiler and the
training launcher (:mod:`pipelines.kubeflow.compiler`, :mod:`pipelines.kubeflow.trainjob`):
the PipelineVersion is kfp's own Kubernetes-manifest output of the compiled pipeline. One
module per part of the tree builds its resources from a
:class:`~pipelines.manifests.deployment.Deployment`: :mod:`~pipelines.manifests.base`,
:mod:`~pipelines.manifests.kfp_component`, :mod:`~pipelines.manifests.standalone` and
:mod:`~pipelines.manifests.overlays`; :mod:`~pipelines.manifests.kustomize` writes the YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelines.config.compose import ComposedConfig
from pipelines.config.schema import Config
from pipelines.config.secrets import refuse_inline
from pipelines.errors import ConfigError
from pipelines.manifests import base, kfp_component, overlays, standalone
from pipelines.manifests.deployment import MANAGED_BY, Deployment
from pipelines.manifests.kustomize import component, dump_yaml, kustomization

__all__ = ["render_tree"]


def render_tree(composed: ComposedConfig, envs: Sequence[str] | None = None) -> dict[str, str]:
    """Every file of the tree: relative path -> YAML text.

    Args:
        composed: The composed config (``kfbatch manifests [overrides]``).
        envs: The environments whose overlays to render (default: all of
            ``manifests.envs``).

    Raises:
        ConfigError: an unknown environment, no environment configured, or a credential
            inline in the config (the tree is committed to Git).
    """
    refuse_inline(composed.container, "GitOps manifests")
    config = composed.config
    known = sorted(config.manifests.envs)
    if not known:
        raise ConfigError("manifests.envs", "at least one environment, e.g. dev: {namespace: ...}")
    for env in envs or ():
        if env not in config.manifests.envs:
            raise ConfigError("--env", f"one of {', '.join(known)} (manifests.envs)", env)
    d = Deployment.of(composed)
    pipeline = kfp_component.pipeline(d)
    files = {
        "base/kustomization.yaml": kustomization(
            resources=[
                "namespace.yaml",
                "serviceaccount.yaml",
                "rbac.yaml",
                "pvc.yaml",
                "configmap.yaml",
            ],
            extra={"configurations": ["kustomizeconfig.yaml"], "labels": _common_labels(config)},
        ),
        "base/namespace.yaml": dump_yaml([base.namespace(d)]),
        "base/serviceaccount.yaml": dump_yaml([base.service_account(d)]),
        "base/rbac.yaml": dump_yaml(base.rbac(d)),
        "base/pvc.yaml": dump_yaml(base.pvcs(d)),
        "base/configmap.yaml": dump_yaml([base.config_map(d)]),
        "base/kustomizeconfig.yaml": dump_yaml(
            [base.image_fields(kfp_component.executors(pipeline))]
        ),
        "components/kfp/kustomization.yaml": component(["pipeline.yaml", "cronjob.yaml"]),
        "components/kfp/pipeline.yaml": dump_yaml(pipeline),
        "components/kfp/cronjob.yaml": dump_yaml([kfp_component.cron_job(d)]),
        "components/standalone/kustomization.yaml": component(
            ["training-job.yaml", "inference-job.yaml"]
        ),
        "components/standalone/training-job.yaml": dump_yaml(standalone.training_jobs(d)),
        "components/standalone/inference-job.yaml": dump_yaml(standalone.inference_jobs(d)),
    }
    for env in envs or known:
        delta = config.manifests.envs[env]
        files[f"overlays/{env}/kustomization.yaml"] = overlays.overlay(d, env, delta)
    return dict(sorted(files.items()))


def _common_labels(config: Config) -> list[dict[str, Any]]:
    return [
        {
            "includeSelectors": False,
            "pairs": {"app.kubernetes.io/part-of": config.name, **MANAGED_BY},
        }
    ]
