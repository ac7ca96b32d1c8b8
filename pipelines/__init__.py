"""kfbatch's orchestration layer: config composition, the DAG, backends and the CLI.

Layers, top to bottom (each imports only from the layers below; an import-linter contract):
``cli`` (the ``kfbatch`` command); ``manifests`` (the GitOps renderer); the backends
``local`` (embedded runner), ``kubeflow`` (KFP compiler, launcher, training jobs, client),
``views`` and ``report``; ``builder`` (composed config -> DAG, building every step's params)
and ``k8s`` (the Kubernetes pod pieces that ``kubeflow`` and ``manifests`` share); ``dag``
(the DAG model) and ``execution``; ``config`` (schema, composition, validation);
``sources``; ``errors`` and ``logs``. Step code lives in :mod:`components`,
which never imports this package; shared names come from :mod:`components.names`.

Public entry points (import them from their modules; this package stays light so the CLI
starts fast): :func:`pipelines.config.compose.compose_config`,
:func:`pipelines.builder.build_dag` and :func:`pipelines.local.runner.run_local`.
"""

__all__: list[str] = []
