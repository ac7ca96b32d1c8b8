"""How long compiling the full demo to a Kubeflow pipeline takes (target: under 5 s).

Run from the repository root::

    .venv/bin/python -m benchmarks.compile [--repeats N] [-- OVERRIDES...]

Measures, in this order and in this process:

1. ``imports``: importing the compiler (kfp, kfp-kubernetes, the config and DAG code), once;
2. ``compose``: composing and validating the config (the first call also loads Hydra);
3. ``first compile``: the first ``compile_pipeline`` call (kfp finishes loading lazily);
4. ``compile``: ``compile_pipeline`` on the composed config, ``--repeats`` times: the median
   is the benchmark's figure (one-time imports excluded);

and, in a fresh Python process, ``cold end to end``: interpreter start, imports, compose and
compile, as ``kfbatch compile`` pays it. Output: a table, then as the last line
``{"bench": "compile", "seconds": <median compile seconds>, ...}``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

TARGET_S = 5.0

_COLD = (
    "import sys\n"
    "from pipelines.config.compose import compose_config\n"
    "from pipelines.kubeflow.compiler import compile_pipeline\n"
    "compile_pipeline(compose_config(sys.argv[1:]))\n"
)


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed compiles (default 7)")
    parser.add_argument("overrides", nargs="*", help="config overrides (default: the demo)")
    args = parser.parse_args(argv)

    import_s, _ = _timed(lambda: importlib.import_module("pipelines.kubeflow.compiler"))
    from pipelines.config.compose import compose_config
    from pipelines.kubeflow.compiler import compile_pipeline

    first_compose_s, composed = _timed(lambda: compose_config(args.overrides))
    compose_s = statistics.median(
        _timed(lambda: compose_config(args.overrides))[0] for _ in range(3)
    )
    first_compile_s, text = _timed(lambda: compile_pipeline(composed))
    runs = [_timed(lambda: compile_pipeline(composed)) for _ in range(args.repeats)]
    compile_s = statistics.median(seconds for seconds, _ in runs)
    identical = all(value == text for _, value in runs)
    cold_s, _ = _timed(
        lambda: subprocess.run(
            [sys.executable, "-c", _COLD, *args.overrides],
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    )

    tasks = text.count("\n    exec-")
    print(
        f"compile benchmark: {composed.config.name} ({tasks} executors, {len(text):,} bytes), "
        f"{args.repeats} repeats, {os.cpu_count()} cpus"
    )
    rows = [
        ("imports (kfp, kfp-kubernetes, config, DAG), once", import_s),
        ("compose + validate, first (loads Hydra)", first_compose_s),
        ("compose + validate, median of 3", compose_s),
        ("compile, first call", first_compile_s),
        (f"compile, median of {args.repeats}", compile_s),
        ("cold end to end (new process: imports, compose, compile)", cold_s),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"{'what':<{width}}  seconds")
    print("-" * (width + 9))
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:7.3f}")
    spread = ", ".join(f"{seconds:.3f}" for seconds, _ in runs)
    print(f"compile runs (s): {spread}; identical output: {identical}")
    print(f"target: median compile < {TARGET_S:g} s: {'met' if compile_s < TARGET_S else 'MISSED'}")
    print(
        json.dumps(
            {
                "bench": "compile",
                "seconds": round(compile_s, 4),
                "import_seconds": round(import_s, 3),
                "compose_seconds": round(compose_s, 4),
                "cold_seconds": round(cold_s, 3),
                "sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
            }
        )
    )


if __name__ == "__main__":
    main()
