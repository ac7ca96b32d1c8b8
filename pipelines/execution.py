"""What every backend does to execute one step in its process, in one place.

The local worker and the in-pod KFP launcher both load a component by its ``module:function``
path, keep its compute libraries to the step's CPUs, and put the run id into its params.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["limit_threads", "load_component", "substitute"]


def load_component(component: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (``run`` when no function is given)."""
    module_name, _, function_name = component.partition(":")
    return getattr(importlib.import_module(module_name), function_name or "run")


#: Variables the BLAS and OpenMP runtimes read when they start (in processes a step spawns).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(threads: int | None) -> None:
    """Keep torch, pyarrow and the BLAS/OpenMP pools (numpy, scipy, scikit-learn) of this
    process, once a component imported them, and of the processes it starts, to ``threads``.

    All size their pools by the machine's cores, not by the step's CPU request or the
    container's limit.
    """
    if threads is None:
        return
    from threadpoolctl import threadpool_limits

    for name in THREAD_ENV:
        os.environ[name] = str(max(threads, 1))
    threadpool_limits(max(threads, 1))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].set_cpu_count(max(threads, 1))


def substitute(value: Any, placeholder: str, replacement: str) -> Any:
    """Replace ``placeholder`` inside every string of a params structure."""
    if isinstance(value, str):
        return value.replace(placeholder, replacement)
    if isinstance(value, Mapping):
        return {k: substitute(v, placeholder, replacement) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [substitute(v, placeholder, replacement) for v in value]
    return value
