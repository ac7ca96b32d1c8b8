"""kfbatch's orchestration layer: config composition, the DAG, backends and the CLI.

Public entry points (import them from their modules; this package stays light so the CLI
starts fast): :func:`pipelines.config.compose.compose_config`,
:func:`pipelines.dag.build_dag` and :func:`pipelines.local.runner.run_local`.
"""

__all__: list[str] = []
