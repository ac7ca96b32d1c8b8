"""Kubeflow Pipelines backend: compile the DAG to KFP v2, submit and schedule it."""

__all__: list[str] = []
