"""The entry point of the standalone Kubernetes Jobs: run one component from plain arguments.

A rendered Indexed ``Job`` (``kfbatch manifests``, for clusters without Kubeflow Pipelines)
starts ``python -m pipelines.manifests.job`` in each pod with the component, its inputs,
params and outputs as JSON. ``{index}`` anywhere in them becomes the pod's completion index
(``JOB_COMPLETION_INDEX``, which Kubernetes sets in Indexed Jobs), so one spec gives every
shard its own params and output folder, and the run id placeholder becomes ``--run-id``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pipelines.dag import RUN_ID
from pipelines.execution import load_component, substitute

__all__ = ["INDEX_ENV", "INDEX_TOKEN", "main"]

#: Set by Kubernetes in the pods of an Indexed Job.
INDEX_ENV = "JOB_COMPLETION_INDEX"
#: Replaced by the completion index in the arguments.
INDEX_TOKEN = "{index}"

log = logging.getLogger("kfbatch.job")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the component; exit 0 when it returned, 1 with its error otherwise."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.manifests.job")
    parser.add_argument("--component", required=True, help="module:function")
    parser.add_argument("--inputs", default="{}", help="JSON: name -> path or URI")
    parser.add_argument("--params", default="{}", help="JSON params")
    parser.add_argument("--outputs", default="{}", help="JSON: name -> path")
    parser.add_argument("--index-param", help="the param that receives the completion index")
    parser.add_argument("--run-id", default="", help="replaces the run id placeholder")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    index = os.environ.get(INDEX_ENV, "")
    if not index and INDEX_TOKEN in f"{args.inputs}{args.params}{args.outputs}":
        log.error("the arguments use %s but %s is not set", INDEX_TOKEN, INDEX_ENV)
        return 1

    def decode(text: str) -> Any:
        return substitute(substitute(json.loads(text), INDEX_TOKEN, index), RUN_ID, args.run_id)

    inputs, params, outputs = decode(args.inputs), decode(args.params), decode(args.outputs)
    if args.index_param:
        params[args.index_param] = int(index)
    log.info("%s: inputs %s, outputs %s", args.component, inputs, outputs)
    from components.errors import KfbatchError

    try:
        results = load_component(args.component)(inputs, params, outputs) or {}
    except KfbatchError as error:
        log.error("%s: %s", args.component, error)
        return 1
    log.info("%s: done: %s", args.component, json.dumps(results, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
