"""Errors raised by components.

Every error a user can act on derives from :class:`KfbatchError` and carries one clear line.
:class:`PermanentError` marks failures that a retry cannot fix, so runners fail them at once.
"""

from __future__ import annotations

__all__ = ["DataError", "KfbatchError", "ParamError", "PermanentError"]


class KfbatchError(Exception):
    """Base class of kfbatch's user-facing errors: the message is one actionable line."""


class PermanentError(KfbatchError):
    """Running the same step again with the same inputs would fail the same way."""


class DataError(PermanentError):
    """The input data is missing, malformed or inconsistent."""


class ParamError(PermanentError):
    """A component's params are invalid (e.g. model arguments that its class does not take)."""
