"""Kubeflow Pipelines backend: compile the DAG to KFP v2, submit and schedule it.

- :mod:`~pipelines.kubeflow.compiler` translates the DAG to KFP v2 IR YAML, with one
  declaration per component kind from :mod:`~pipelines.kubeflow.tasks`;
- :mod:`~pipelines.kubeflow.launch` runs a step's component inside its KFP pod;
- :mod:`~pipelines.kubeflow.trainjob` runs multi-node training as a TrainJob or PyTorchJob
  (``build``, ``watch``, ``stage``);
- :mod:`~pipelines.kubeflow.connection` (host, credentials, bounded requests) and
  :mod:`~pipelines.kubeflow.package` (the compiled pipeline, its parameters) serve
  :mod:`~pipelines.kubeflow.client` (upload, experiments, runs) and
  :mod:`~pipelines.kubeflow.schedule` (recurring runs), which report
  :mod:`~pipelines.kubeflow.runs`' dataclasses.

Pod pieces (resources, security contexts, placement, volumes) are :mod:`pipelines.k8s`'s.
"""

__all__: list[str] = []
