"""kfbatch components: the pure-Python work of each pipeline step.

Each step is a module exposing ``run(inputs, params, outputs) -> metrics``: ``datagen``,
``etl``, ``train``, ``cv``, ``tune``, ``evaluate`` (and ``evaluate:gate``), ``infer`` and
``publish``; a runner imports the one it needs by name
(``importlib.import_module("components.train")``). Importing this package is cheap: it
loads no torch or pyarrow.
"""

from components.errors import DataError, KfbatchError, ParamError, PermanentError

__all__ = ["DataError", "KfbatchError", "ParamError", "PermanentError"]
