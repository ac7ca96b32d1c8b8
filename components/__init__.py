"""kfbatch components: the pure-Python work of each pipeline step.

Layout, top to bottom (a module imports only from the rows below its own, and steps never
import each other; ``pyproject.toml``'s import-linter layers contract enforces it):

- **Steps**, one module each, exposing ``run(inputs, params, outputs) -> metrics`` over
  paths: ``datagen``, ``etl``, ``batch_map``, ``train``, ``cv``, ``tune``, ``evaluate`` (and
  ``evaluate:gate``), ``infer`` and ``publish``. A runner imports the one it needs by name
  (``importlib.import_module("components.train")``), so these import paths are stable: golden
  compile files and cache keys name them.
- **Capabilities**, one subpackage each: ``training/`` (the trainer, distributed process
  management, optimisers, checkpoints, streaming batches), ``scoring/`` (shard planning, batch
  sizing and model optimisation, the lookup store), ``evaluation/`` (metrics and charts),
  ``data/`` (sources, row transforms, the feature spec, quality checks, labels), and the
  model itself (``models``: architectures; ``model_artifact``: the saved model).
- **Shared ground**: ``io/`` (atomic files, manifests, Parquet, Arrow <-> NumPy),
  ``binding`` (``_target_`` resolution), ``params`` (each step's typed, strictly parsed
  parameters, built by the DAG from the composed config: no component keeps a default of its
  own), ``names`` (every shared name: splits, tasks, metrics, file and environment variable
  names; stdlib only, so config code and backends import it too) and ``errors``.

Nothing here imports ``pipelines``, kfp or kubernetes (an import-linter contract), and
importing this package is cheap: it loads no torch or pyarrow.
"""

from components.errors import DataError, KfbatchError, ParamError, PermanentError

__all__ = ["DataError", "KfbatchError", "ParamError", "PermanentError"]
