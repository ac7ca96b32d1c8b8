"""Multi-node training on a cluster: build a Kubeflow Trainer ``TrainJob`` (or a
``PyTorchJob``) and watch it to the end.

No kfp extension creates a training job from a pipeline task, so this package does, in
three modules that the KFP training task and ``kfbatch manifests`` share:

- :mod:`~pipelines.kubeflow.trainjob.build`: pure builders of the job manifests (plain
  dicts) from a :class:`~pipelines.kubeflow.trainjob.build.TrainingJobSpec` or from the
  config and the training step;
- :mod:`~pipelines.kubeflow.trainjob.watch`: :func:`~pipelines.kubeflow.trainjob.watch.run_trainjob`
  creates the job, follows its conditions and cleans it up;
- :mod:`~pipelines.kubeflow.trainjob.stage`: what the KFP training task does with
  ``trainer.nodes > 1``: stage its inputs on the shared checkpoint PVC, run the job, copy
  the outputs back into its artifacts.
"""

__all__: list[str] = []
