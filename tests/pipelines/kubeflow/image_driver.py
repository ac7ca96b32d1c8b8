"""Run a compiled pipeline's tasks the way the project image runs them (test helper).

Started by ``test_image.py`` with the Python of a fresh virtual environment into which only
the built wheel was installed, from a folder outside the repository. It compiles the config
given as arguments with that installation, then lets ``kfp.local`` execute every task's
``command`` + ``args`` from the YAML: kfp substitutes the placeholders (``{{$}}``, the
executor input, output paths) as the KFP launcher does in a pod and runs
``sh -ec '... python3 -m kfp.dsl.executor_main ...'`` with this interpreter as ``python3``.
Prints one JSON line: where the launcher was imported from and the pipeline's outputs.
"""

import json
import os
import sys
import warnings

from kfp import local
from kfp.components import load_component_from_file

import pipelines.kubeflow.launch
from pipelines.config.compose import compose_config
from pipelines.kubeflow.compiler import write_pipeline


def main(overrides: list[str]) -> None:
    path = write_pipeline(compose_config(overrides), "pipeline.yaml")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=os.path.abspath("artifacts"),
        raise_on_error=True,
        enable_caching=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = load_component_from_file(str(path))()
    result = {
        "launcher": pipelines.kubeflow.launch.__file__,
        "outputs": {name: artifact.path for name, artifact in task.outputs.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
