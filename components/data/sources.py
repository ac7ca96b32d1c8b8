"""Where source rows come from and how to parse them: :class:`SourceOptions` (the ``source``
params of a step), filesystems and URIs, and the files a source names.

A source is a file, a directory, a glob pattern (``data/2024-*.csv``) or an object-store URI
of either (``s3://bucket/raw/*.csv``, ``gs://...``, ``file:///...``), opened through
``pyarrow.fs``; :func:`open_source` resolves it to sorted files and their format, which
:mod:`components.data.readers` then streams.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from components.errors import DataError, ParamError
from components.params import SourceParams

__all__ = [
    "FORMATS",
    "SourceOptions",
    "filesystem",
    "open_source",
    "parse_type",
    "source_options",
]

FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {
    "csv": (".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".csv.zst"),
    "jsonl": (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".json.gz"),
    "parquet": (".parquet", ".pq"),
}
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class SourceOptions:
    """How to find and parse the source files.

    Attributes:
        format: ``csv``, ``jsonl``, ``parquet`` or ``auto`` (from the file extension).
        delimiter, quote_char, header, column_names, skip_rows, null_values, encoding,
            decimal_point: CSV options; ``quote_char=None`` turns quoting off;
            ``header=False`` needs ``column_names`` (or names columns ``f0, f1, ...``);
            ``encoding`` is a Python codec name; ``decimal_point=","`` reads ``12,5`` as 12.5.
        columns: Declared column types (``{name: "float64"}``, or Arrow types); undeclared
            columns keep the type inferred from the first block of the first file.
        id_column: Always read as text.
        storage_options: Keyword arguments of the object store's ``pyarrow.fs`` filesystem
            (e.g. ``endpoint_override``, ``access_key``, ``secret_key``, ``region``).
        batch_rows: Approximate rows per record batch.
    """

    format: str
    delimiter: str
    quote_char: str | None
    header: bool
    column_names: tuple[str, ...] | None
    skip_rows: int
    null_values: tuple[str, ...] | None
    encoding: str
    decimal_point: str
    columns: dict[str, str | pa.DataType]
    id_column: str | None
    storage_options: dict[str, Any]
    batch_rows: int

    @classmethod
    def of(cls, source: SourceParams, *, id_column: str | None) -> SourceOptions:
        """The options of a step's ``source`` params (see :class:`components.params.SourceParams`).

        Raises:
            ParamError: an unknown format or declared column type.
        """
        if source.format not in (*FORMATS, "auto"):
            raise ParamError(
                f"format {source.format!r} is not supported; expected one of {FORMATS}/auto"
            )
        csv = source.csv
        options = cls(
            format=source.format,
            delimiter=csv.delimiter,
            quote_char=csv.quote_char,
            header=csv.header,
            column_names=tuple(csv.column_names) if csv.column_names else None,
            skip_rows=csv.skip_rows,
            null_values=tuple(csv.null_values) if csv.null_values is not None else None,
            encoding=csv.encoding,
            decimal_point=csv.decimal_point,
            columns=dict(source.columns),
            id_column=id_column,
            storage_options=dict(source.storage_options),
            batch_rows=source.batch_rows,
        )
        for name, type_name in options.columns.items():
            parse_type(type_name, f"columns.{name}")
        return options


def source_options(source: SourceParams | None, id_column: str | None) -> SourceOptions | None:
    """:meth:`SourceOptions.of` ``source``; None when a step reads no outside data."""
    return None if source is None else SourceOptions.of(source, id_column=id_column)


def parse_type(name: str | pa.DataType, key: str) -> pa.DataType:
    """The Arrow type named ``name`` (``float64``, ``int32``, ``string``, ``timestamp[s]``...);
    an Arrow type is returned as is."""
    if isinstance(name, pa.DataType):
        return name
    aliases = {"float": "float64", "int": "int64", "str": "string", "bool": "bool_"}
    name = aliases.get(name, name)
    match = re.fullmatch(r"timestamp\[(s|ms|us|ns)(?:, tz=([\w/+-]+))?\]", name)
    if match:
        return pa.timestamp(match.group(1), tz=match.group(2))
    factory = getattr(pa, name if name not in ("date", "date32") else "date32", None)
    if name in ("timestamp", "datetime"):
        return pa.timestamp("s")
    try:
        result = factory() if callable(factory) else None
    except TypeError:
        result = None
    if not isinstance(result, pa.DataType):
        raise ParamError(
            f"{key}={name!r} is not a column type; expected e.g. float64, int64, string, bool, "
            "date32 or timestamp[s]"
        )
    return result


def open_source(uri: str, options: SourceOptions) -> tuple[pafs.FileSystem, list[str], str]:
    """Resolve a file, directory, glob or URI to (filesystem, sorted files, format)."""
    fs, path = filesystem(uri, options.storage_options)
    pattern = None
    if _GLOB.search(path):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if _GLOB.search(p))
        base = "/".join(parts[:first]) or ("/" if path.startswith("/") else ".")
        pattern, path = path, base
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise DataError(
            f"source {uri} cannot be listed: {e}; check the URI and credentials"
        ) from None
    if info.type == pafs.FileType.File and pattern is None:
        files = [path]
    elif info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted(
            i.path
            for i in found
            if i.is_file
            and not os.path.basename(i.path).startswith(("_", "."))
            and (pattern is None or fnmatch.fnmatchcase(i.path, pattern))
        )
    else:
        files = []
    fmt = options.format
    if fmt == "auto":
        fmt = _format_of(files[0] if files else (pattern or path), uri)
    if pattern is None and info.type == pafs.FileType.Directory:
        files = [f for f in files if f.lower().endswith(_EXTENSIONS[fmt])]
    if not files:
        raise DataError(
            f"source {uri} matches no {fmt if fmt != 'auto' else 'data'} files; expected a "
            "file, a directory of them or a glob pattern such as data/*.csv"
        )
    return fs, files, fmt


# --------------------------------------------------------------------------- filesystems


def filesystem(uri: str, storage_options: dict[str, Any]) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow.fs`` filesystem of a path or URI, and the path on it.

    ``storage_options`` configure an ``s3://`` or ``gs://`` filesystem (endpoint,
    credentials, region); without them the filesystem is built from the URI and the
    environment (the SDK's usual credential chain).
    """
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    scheme, rest = uri.split("://", 1)
    if scheme == "s3" and storage_options:
        return pafs.S3FileSystem(**storage_options), rest
    if scheme in ("gs", "gcs") and storage_options:
        return pafs.GcsFileSystem(**storage_options), rest
    if scheme == "file":
        return pafs.LocalFileSystem(), rest
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"source {uri} cannot be opened: {e}; check the URI scheme") from None


def _format_of(path: str, uri: str) -> str:
    lower = path.lower()
    for fmt, extensions in _EXTENSIONS.items():
        if lower.endswith(extensions):
            return fmt
    raise DataError(
        f"cannot tell the format of {uri} from its extension; set data.format to one of "
        f"{list(FORMATS)}"
    )
