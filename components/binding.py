"""User code named by import path (``_target_``), bound with Hydra's ``instantiate``.

Batch-map functions and user transforms are plain functions ``f(batch, **kwargs)``; their
config names the function and its keyword arguments, which are bound here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from components.errors import ParamError

__all__ = ["bind_target"]


def bind_target(
    spec: Mapping[str, Any], *, key: str, example: str, ignore: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """``spec["_target_"]`` with the other keys of ``spec`` (except ``ignore``) bound.

    Args:
        spec: ``{"_target_": "package.module.function", **kwargs}``.
        key: The config key, for messages.
        example: An import path to suggest when ``_target_`` is missing.
        ignore: Keys that are not arguments of the function.

    Raises:
        ParamError: ``_target_`` is missing, cannot be imported, or does not take the kwargs.
    """
    target = spec.get("_target_")
    if not isinstance(target, str) or "." not in target or ":" in target:
        raise ParamError(
            f"{key}={dict(spec)} needs '_target_': the import path of a function, such as {example}"
        )
    from hydra.errors import InstantiationException  # only when user code is named
    from hydra.utils import instantiate

    config = {k: v for k, v in spec.items() if k not in ignore}
    try:
        return instantiate({**config, "_partial_": True, "_convert_": "all"})
    except InstantiationException as error:
        raise ParamError(f"{key}._target_ {target!r} cannot be bound: {error}") from None
