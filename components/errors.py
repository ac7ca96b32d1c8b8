"""Errors raised by components.

Every error a user can act on derives from :class:`KfbatchError` and carries one clear line.
"""

from __future__ import annotations

__all__ = ["DataError", "KfbatchError"]


class KfbatchError(Exception):
    """Base class of kfbatch's user-facing errors: the message is one actionable line."""


class DataError(KfbatchError):
    """The input data is missing, malformed or inconsistent; re-running will not help."""
