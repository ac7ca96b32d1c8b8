"""What every backend does to execute one step in its process, in one place.

The local worker and the in-pod KFP launcher both load a component by its ``module:function``
path, keep its compute libraries to the step's CPUs, and put the run id into its params.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["limit_threads", "load_component", "substitute"]


def load_component(component: str) -> Callable[..., Any]:
    """The function named by ``module:function`` (``run`` when no function is given)."""
    module_name, _, function_name = component.partition(":")
    return getattr(importlib.import_module(module_name), function_name or "run")


def limit_threads(threads: int | None) -> None:
    """Keep torch and pyarrow (once a component imported them) to ``threads`` threads.

    Both size their pools by the machine's cores, not by the step's CPU request or the
    container's limit.
    """
    if threads is None:
        return
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
