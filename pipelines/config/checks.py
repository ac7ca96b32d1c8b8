"""Value checks for knobs whose type is right but whose value may still never work.

A knob names one with ``knob(..., check="date")``; :mod:`pipelines.config.validate` runs it at
composition, so ``kfbatch config``, ``dag`` and ``run`` refuse a calendar date that does not
exist, a time zone that does not exist, a URL no store can parse or a size of zero before
anything runs. Each check raises :class:`ValueError` with what was expected.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

__all__ = ["CHECKS", "DATA_SCHEMES", "PIPELINE_ROOT_SCHEMES"]

#: URI schemes the data readers and writers open (pyarrow's filesystems); a bare path is local.
DATA_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
#: Where Kubeflow Pipelines can keep artifacts (``kubeflow.pipeline_root``).
PIPELINE_ROOT_SCHEMES = ("gs", "s3", "minio")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def _date(value: str) -> None:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError("a calendar date YYYY-MM-DD that exists") from None


def _timezone(value: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("an IANA time zone such as UTC or Europe/Berlin") from None


def _not_blank(value: str) -> None:
    if not value.strip() or value != value.strip():
        raise ValueError("a non-empty name without surrounding spaces")


def _location(value: str, schemes: tuple[str, ...], what: str) -> None:
    _not_blank(value)
    match = _SCHEME.match(value)
    if match is None:
        return
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in schemes or not rest.strip("/"):
        raise ValueError(f"{what}: a path or a {', '.join(s + '://' for s in schemes)} URI")


def _data_location(value: str) -> None:
    _location(value, DATA_SCHEMES, "a place data can be read or written")


def _pipeline_root(value: str) -> None:
    _location(value, PIPELINE_ROOT_SCHEMES, "an object store Kubeflow Pipelines writes to")
    if _SCHEME.match(value) is None:
        raise ValueError("a gs://, s3:// or minio:// URI for Kubeflow Pipelines' artifacts")


def _http_url(value: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("an http:// or https:// URL whose port is a number") from None


def _sqlalchemy_url(value: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(value).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise ValueError(
            "a SQLAlchemy URL of an installed dialect, such as sqlite:///p.db or "
            "postgresql://user@host/db"
        ) from None


def _positive_quantity(value: str) -> None:
    match = _QUANTITY.match(value)
    if match is None or float(match.group(1)) == 0:
        raise ValueError("a Kubernetes quantity above zero such as 512Mi or 4Gi")


def _encoding(value: str) -> None:
    import codecs

    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError("a Python codec name such as utf-8, latin-1 or cp1252") from None


def _env_name(value: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError("the name of an environment variable")


#: Every named check, by the name a knob's ``check`` rule gives.
CHECKS: dict[str, Callable[[Any], None]] = {
    "date": _date,
    "timezone": _timezone,
    "name": _not_blank,
    "data_location": _data_location,
    "pipeline_root": _pipeline_root,
    "http_url": _http_url,
    "sqlalchemy_url": _sqlalchemy_url,
    "positive_quantity": _positive_quantity,
    "env_name": _env_name,
    "encoding": _encoding,
}
