"""Credentials in a config: found, refused where they would be written down, redacted
elsewhere.

A credential is a value under a ``storage_options`` mapping whose key names one (secret,
token, password, access key, credential, session, private key), or the password of a URL
(``postgresql://user:pw@host/db``, an ``s3://`` or ``https://`` URL with userinfo).
Compiled pipelines and GitOps manifests are files people commit, so :func:`refuse_inline`
fails them with the by-reference alternative; local runs need the values, so the runner,
``kfbatch config`` and the report write :func:`redact`-ed copies instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pipelines.errors import ConfigError

__all__ = ["REDACTED", "Secret", "find_secrets", "redact", "refuse_inline"]

#: What a redacted value reads as.
REDACTED = "***"
#: Keys of ``storage_options`` whose values are credentials (case-insensitive, anywhere).
_CREDENTIAL_KEY = re.compile(
    r"secret|token|passw(or)?d|credential|session|private|access_?key|api_?key", re.IGNORECASE
)
#: Values shorter than this are not replaced inside other text (too likely to match words).
_MIN_REDACTED_LENGTH = 4


@dataclass(frozen=True)
class Secret:
    """One credential of a config: its dotted key and its value."""

    key: str
    value: str

    @property
    def by_reference(self) -> str:
        """How to pass it without writing it down."""
        if ".storage_options." in f".{self.key}":
            return (
                "put it in a Kubernetes Secret and map it to the variable the filesystem reads, "
                "e.g. +kubeflow.secrets.AWS_SECRET_ACCESS_KEY=s3-creds/secret_key (pyarrow "
                "reads the AWS_* variables), and leave it out of storage_options"
            )
        return (
            "drop the password from the URL and pass it from a Kubernetes Secret, e.g. "
            "+kubeflow.secrets.PGPASSWORD=predictions-db/password for a PostgreSQL store"
        )


def find_secrets(container: Mapping[str, Any]) -> list[Secret]:
    """Every credential in a resolved config container, in key order."""
    return sorted(_walk(container, ""), key=lambda s: s.key)


def _walk(node: Any, key: str) -> Iterator[Secret]:
    if isinstance(node, Mapping):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if key.rsplit(".", 1)[-1] == "storage_options" and _CREDENTIAL_KEY.search(str(name)):
                if value not in (None, ""):
                    yield Secret(child, str(value))
                continue
            yield from _walk(value, child)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{key}[{i}]")
    elif isinstance(node, str) and "://" in node:
        try:
            password = urlsplit(node).password
        except ValueError:
            password = None
        if password:
            yield Secret(key, password)


def refuse_inline(container: Mapping[str, Any], what: str) -> None:
    """Fail when a credential would be written into ``what`` (a compiled pipeline, manifests).

    Raises:
        ConfigError: naming the first credential's key and the by-reference alternative.
    """
    found = find_secrets(container)
    if found:
        secret = found[0]
        raise ConfigError(
            secret.key, f"no credential inline in {what}: {secret.by_reference}", REDACTED
        )


def redact(value: Any, secrets: list[Secret]) -> Any:
    """``value`` (text, or a JSON-like structure) with every credential's value replaced."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if len(secret.value) >= _MIN_REDACTED_LENGTH or value == secret.value:
                value = value.replace(secret.value, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value
