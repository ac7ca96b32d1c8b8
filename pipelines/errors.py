"""Errors raised by the pipelines layer (configuration, orchestration)."""

from __future__ import annotations

from components.errors import KfbatchError

__all__ = ["ConfigError", "KfbatchError"]

_UNSET = object()


class ConfigError(KfbatchError):
    """The composed configuration is invalid; raised before anything runs or is compiled.

    Args:
        key: Dotted config key at fault (or the override / group that failed).
        expected: What a valid value looks like.
        given: The value that was given, shown with ``repr``.
        source: Where the value came from (a file or an override), when known.
    """

    def __init__(
        self, key: str, expected: str, given: object = _UNSET, *, source: str = ""
    ) -> None:
        self.key, self.expected, self.given, self.source = key, expected, given, source
        given_text = "" if given is _UNSET else f", got {given!r}"
        origin = f" (from {source})" if source else ""
        super().__init__(f"{key}: expected {expected}{given_text}{origin}")

    def with_source(self, source: str) -> ConfigError:
        """Return the same error annotated with where the value came from."""
        return ConfigError(self.key, self.expected, self.given, source=source)
