"""What every backend does in a step's process: thread limits for every compute pool."""

from __future__ import annotations

import json
import subprocess
import sys

from pipelines.execution import THREAD_ENV


def test_limit_threads_reaches_blas_openmp_torch_pyarrow_and_child_processes() -> None:
    # In a fresh interpreter: the limits are process-wide and would outlive this test.
    script = """
import json, os, subprocess, sys
import numpy, pyarrow, sklearn.ensemble, torch
from threadpoolctl import threadpool_info
from pipelines.execution import limit_threads, THREAD_ENV
limit_threads(1)
child = subprocess.run(
    [sys.executable, "-c", "import os, json; print(json.dumps({k: os.environ[k] for k in %r}))"
     % (THREAD_ENV,)], capture_output=True, text=True, check=True).stdout
print(json.dumps({
    "pools": sorted({(p["user_api"], p["num_threads"]) for p in threadpool_info()}),
    "torch": torch.get_num_threads(),
    "pyarrow": pyarrow.cpu_count(),
    "child": json.loads(child),
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out)
    assert seen["pools"], "numpy loads at least one BLAS pool"
    assert {threads for _, threads in seen["pools"]} == {1}
    assert (seen["torch"], seen["pyarrow"]) == (1, 1)
    assert seen["child"] == dict.fromkeys(THREAD_ENV, "1")
