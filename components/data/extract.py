"""Extract: stream CSV, JSON Lines and Parquet files from local paths or object stores.

Sources are a file, a directory, a glob pattern (``data/2024-*.csv``) or an object-store URI
of either (``s3://bucket/raw/*.csv``, ``gs://...``, ``file:///...``), opened through
``pyarrow.fs``. Every reader yields record batches of bounded size, so memory does not grow
with the input.

Rows that cannot be read are not dropped silently: a CSV row with the wrong number of
fields, a JSON line that is not valid JSON, or a value that cannot be cast to its column's
type is handed to the ``reject`` callback with its source file, line or row number and the
reason, and the rest of the batch goes on. Values are parsed as text first and cast column
by column, so one bad value costs one row, not the whole file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from components.errors import DataError, ParamError
from components.io.files import ParquetSink
from components.params import SourceParams

__all__ = [
    "FORMATS",
    "REJECT_SCHEMA",
    "Batch",
    "Reject",
    "Rejects",
    "SourceOptions",
    "count_records",
    "filesystem",
    "open_source",
    "parse_type",
    "read_batches",
    "source_options",
]

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {
    "csv": (".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".csv.zst"),
    "jsonl": (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".json.gz"),
    "parquet": (".parquet", ".pq"),
}
_NAMES_SAMPLE = 64 << 10
_GLOB = re.compile(r"[*?\[]")
_MIN_BLOCK, _MAX_BLOCK = 1 << 20, 64 << 20

#: Columns of the ``rejects`` Parquet output.
REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),  # 1-based line in a text file, when known
        ("row", pa.int64()),  # 1-based record number in its file, when known
        ("reason", pa.string()),
        ("record", pa.string()),  # the raw text (CSV/JSON) or the offending value
    ]
)


@dataclass(frozen=True)
class Reject:
    """One row that could not be read."""

    source: str
    line: int | None
    row: int | None
    reason: str
    record: str


class Rejects:
    """Rows that could not be read: counted (by reason) and, when ``path`` is given,
    quarantined there as Parquet of :data:`REJECT_SCHEMA` (buffered; written on close).

    With ``keep_empty`` the file is written even when nothing was rejected (etl's rejects
    output always exists); otherwise none is left, and a stale one from an earlier attempt
    is removed. As a context manager, an exception discards the file being written.
    """

    def __init__(self, path: str | None, *, keep_empty: bool = False) -> None:
        self.path = path
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self.first: str | None = None
        self._keep_empty = keep_empty
        self._pending: list[Reject] = []
        self._sink: ParquetSink | None = None

    def add(self, reject: Reject) -> None:
        """Count one unreadable row and quarantine it."""
        self.count += 1
        kind = reject.reason.split(":")[0]
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        if self.first is None:
            where = f"line {reject.line}" if reject.line else f"row {reject.row}"
            self.first = f"{reject.source} {where}: {reject.reason}"
        if self.path is not None:
            self._pending.append(reject)
            if len(self._pending) >= 65_536:
                self._flush()

    def refuse_above(self, rows: int, max_fraction: float) -> None:
        """Raise when more than ``max_fraction`` of ``rows`` read could not be read."""
        if self.count <= max_fraction * rows:
            return
        raise DataError(
            f"{self.count} of {rows} rows ({self.count / rows:.2%}) could not be read, more "
            f"than max_reject_fraction={max_fraction}; first: {self.first}; fix the source or "
            f"raise etl.max_reject_fraction (see {self.path or 'rejects'})"
        )

    def _flush(self) -> None:
        if self.path is None or not (self._pending or self._keep_empty):
            return
        if self._sink is None:
            self._sink = ParquetSink(self.path, REJECT_SCHEMA)
        if self._pending:
            columns = {f.name: [getattr(r, f.name) for r in self._pending] for f in REJECT_SCHEMA}
            self._sink.write(pa.RecordBatch.from_pydict(columns, schema=REJECT_SCHEMA))
            self._pending.clear()

    def close(self) -> None:
        """Write the quarantined rows (or remove a stale file when there are none to keep)."""
        self._flush()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        elif self.path is not None and os.path.exists(self.path):
            os.remove(self.path)

    def __enter__(self) -> Rejects:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        elif self._sink is not None:
            self._sink.abort()


@dataclass(frozen=True)
class SourceOptions:
    """How to find and parse the source files.

    Attributes:
        format: ``csv``, ``jsonl``, ``parquet`` or ``auto`` (from the file extension).
        delimiter, quote_char, header, column_names, skip_rows, null_values: CSV options;
            ``quote_char=None`` turns quoting off; ``header=False`` needs ``column_names``
            (or names columns ``f0, f1, ...``).
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


@dataclass
class Batch:
    """A record batch with where it came from: ``rows[i]`` is the record number of row i."""

    data: pa.RecordBatch
    source: str
    rows: np.ndarray


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


def read_batches(
    fs: pafs.FileSystem,
    files: list[str],
    fmt: str,
    options: SourceOptions,
    reject: Callable[[Reject], None],
    columns: Sequence[str] | None = None,
) -> Iterator[Batch]:
    """Stream every file's rows as batches cast to one schema; unreadable rows go to ``reject``.

    The schema (names and types) comes from the first file's first block plus the declared
    ``columns``; later files must have the same columns.

    ``columns`` projects: only those of the named columns that a file has are read (CSV
    converts only them, Parquet reads only their column chunks, JSON Lines drops the rest
    after parsing), with the same types as in a full read. Rows are still rejected for a
    wrong field count, but no longer for a bad value in a column left out.
    """
    wanted = None if columns is None else set(columns)
    if wanted is not None:
        options = dataclasses.replace(
            options, columns={k: v for k, v in options.columns.items() if k in wanted}
        )
    reader: Callable[..., Iterator[tuple[pa.RecordBatch, np.ndarray]]]
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt]
    caster: _Caster | None = None
    if fmt == "csv":
        # Types from the first block, so that the CSV reader converts values itself (fast);
        # it falls back to text plus per-column casts in a file where a value fails.
        sample = _csv_sample(fs, files[0], options)
        caster = _Caster(sample.schema, options, files[0])
        caster(sample, np.zeros(sample.num_rows, dtype=np.int64), files[0], lambda r: None)
        reader = functools.partial(_read_csv, types=caster.types)
    for path in files:
        for raw, rows in reader(fs, path, options, reject, wanted=wanted):
            if caster is None:
                caster = _Caster(raw.schema, options, path)
            elif raw.schema.names != _kept(caster.names, wanted):
                raise DataError(
                    f"{path} has columns {raw.schema.names} but {files[0]} has "
                    f"{_kept(caster.names, wanted)}; all source files need the same columns"
                )
            batch, rows = caster(raw, rows, path, reject)
            if batch.num_rows:
                yield Batch(batch, path, rows)


def count_records(fs: pafs.FileSystem, path: str, fmt: str, options: SourceOptions) -> int:
    """Records in one file as :func:`read_batches` counts them: the rows it yields plus the
    rows it rejects (Parquet rows, CSV rows well-formed or not, non-blank JSON lines).

    A pass of its own that parses but casts nothing, so that a caller can check that every
    record of its input came out exactly once, as a row or a reject.
    """
    if fmt == "parquet":
        return pq.read_metadata(path, filesystem=fs).num_rows
    if fmt == "jsonl":
        count, rest = 0, b""
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(_MAX_BLOCK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                count += sum(1 for line in lines if line.strip())
        return count + bool(rest.strip())
    malformed: list[int] = []  # appended from the reader's threads (atomic)

    def count_malformed(row: Any) -> str:
        malformed.append(1)
        return "skip"

    read_options, parse_options, names = _csv_options(fs, path, options, lambda r: None)
    read_options.use_threads = True
    counting = pacsv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        invalid_row_handler=count_malformed,
    )
    convert = pacsv.ConvertOptions(column_types={names[0]: pa.string()}, include_columns=names[:1])
    with fs.open_input_stream(path) as stream:
        reader = pacsv.open_csv(
            stream, read_options=read_options, parse_options=counting, convert_options=convert
        )
        rows = sum(batch.num_rows for batch in reader)
    return rows + len(malformed)


def _kept(names: list[str], wanted: set[str] | None) -> list[str]:
    """``names`` in their order, only the wanted ones (all when ``wanted`` is None)."""
    return list(names) if wanted is None else [n for n in names if n in wanted]


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


# --------------------------------------------------------------------------- readers


def _block_size(fs: pafs.FileSystem, path: str, batch_rows: int) -> int:
    """Bytes per block so that a block holds about ``batch_rows`` rows."""
    with fs.open_input_stream(path) as stream:
        sample = stream.read(_MIN_BLOCK)
    bytes_per_row = len(sample) / max(sample.count(b"\n"), 1)
    return int(min(max(batch_rows * bytes_per_row, _MIN_BLOCK), _MAX_BLOCK))


def _csv_options(
    fs: pafs.FileSystem,
    path: str,
    options: SourceOptions,
    reject: Callable[[Reject], None],
    *,
    threads: bool = False,
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, list[str]]:
    """Read and parse options of one CSV file, and its column names.

    With ``threads``, the reader parses blocks in parallel but cannot tell the line of a
    malformed row: the row handler then stops the reader (the caller re-reads the file
    without threads).
    """
    block_size = _block_size(fs, path, options.batch_rows)
    names = list(options.column_names) if options.column_names else None
    read_options = pacsv.ReadOptions(
        block_size=block_size,
        use_threads=threads,
        skip_rows=options.skip_rows,
        column_names=names,
        autogenerate_column_names=not options.header and names is None,
    )
    if options.header and names:
        read_options.skip_rows_after_names = 1
    parse_options = pacsv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char if options.quote_char else False,
        invalid_row_handler=lambda row: _bad_csv_row(row, path, reject),
    )
    with fs.open_input_stream(path) as stream:
        head = stream.read(_NAMES_SAMPLE)  # the names need the first lines, not a block
    if head.count(b"\n") < options.skip_rows + 2:
        with fs.open_input_stream(path) as stream:
            head = stream.read(block_size)
    return read_options, parse_options, _csv_names(head, read_options, parse_options)


def _csv_sample(fs: pafs.FileSystem, path: str, options: SourceOptions) -> pa.RecordBatch:
    """The first block of a CSV file as text columns (to infer the column types)."""
    read_options, parse_options, names = _csv_options(fs, path, options, lambda r: None)
    with fs.open_input_stream(path) as stream:
        head = stream.read(read_options.block_size)
    cut = head.rfind(b"\n")
    quiet = pacsv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        invalid_row_handler=lambda row: "skip",
    )
    table = pacsv.read_csv(
        io.BytesIO(head[: cut + 1] if cut > 0 else head),
        read_options=read_options,
        parse_options=quiet,
        convert_options=_convert(names, dict.fromkeys(names, pa.string()), options),
    )
    return _first_batch(table)


def _first_batch(table: pa.Table) -> pa.RecordBatch:
    table = table.combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _convert(
    names: list[str],
    types: dict[str, pa.DataType],
    options: SourceOptions,
    wanted: set[str] | None = None,
) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types={n: types.get(n, pa.string()) for n in names},
        strings_can_be_null=True,
        **({"include_columns": _kept(names, wanted)} if wanted is not None else {}),
        **({"null_values": list(options.null_values)} if options.null_values else {}),
    )


def _read_csv(
    fs: pafs.FileSystem,
    path: str,
    options: SourceOptions,
    reject: Callable[[Reject], None],
    *,
    types: dict[str, pa.DataType],
    wanted: set[str] | None = None,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Parse with the given column types; rows with the wrong field count are rejected.

    The reader runs threaded and converts values itself (fast). When a row is malformed or
    a value fails to convert, it cannot go on: the file is read again from the start,
    without threads (so bad rows have line numbers) or as text (so the caster rejects the
    rows with bad values one by one), skipping the rows already yielded.
    """
    seen_lines: set[int] = set()

    def once(r: Reject) -> None:
        if r.line is None or r.line not in seen_lines:
            seen_lines.add(r.line or 0)
            reject(r)

    row = 0
    threads = True
    while True:
        read_options, parse_options, names = _csv_options(fs, path, options, once, threads=threads)
        skip = row
        with fs.open_input_stream(path) as stream:
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=read_options,
                    parse_options=parse_options,
                    convert_options=_convert(names, types, options, wanted),
                )
                for batch in reader:
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    if skip:
                        batch, skip = batch.slice(skip), 0
                    yield batch, np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
                    row += batch.num_rows
                return
            except pa.ArrowInvalid as e:
                message = str(e).lower()
                if threads and "parse error" in message:
                    threads = False  # a malformed row: its line is known only without threads
                elif types and "conversion error" in message:
                    types = {}  # a bad value: read as text, the caster rejects its row
                else:
                    raise DataError(f"{path} cannot be parsed as CSV: {e}; fix the file") from None
                log.info("%s: %s; reading it again to quarantine the bad rows", path, e)


def _csv_names(
    head: bytes, read_options: pacsv.ReadOptions, parse_options: pacsv.ParseOptions
) -> list[str]:
    """Column names of a CSV from its first block."""
    cut = head.rfind(b"\n")
    sample = head[: cut + 1] if cut > 0 else head
    quiet = pacsv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        invalid_row_handler=lambda row: "skip",
    )
    try:
        table = pacsv.read_csv(io.BytesIO(sample), read_options=read_options, parse_options=quiet)
    except pa.ArrowInvalid as e:
        raise DataError(f"the CSV header cannot be parsed: {e}; check data.csv options") from None
    return table.schema.names


def _bad_csv_row(row: Any, path: str, reject: Callable[[Reject], None]) -> str:
    if row.number is None:  # a threaded reader: stop, to re-read without threads
        return "error"
    reject(
        Reject(
            path,
            row.number,
            None,
            f"expected {row.expected_columns} fields, found {row.actual_columns}",
            row.text,
        )
    )
    return "skip"


def _read_jsonl(
    fs: pafs.FileSystem,
    path: str,
    options: SourceOptions,
    reject: Callable[[Reject], None],
    *,
    wanted: set[str] | None = None,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Parse blocks of lines; a block that fails is re-parsed line by line to find bad lines."""
    block_size = _block_size(fs, path, options.batch_rows)
    schema: pa.Schema | None = None
    line = 0
    with fs.open_input_stream(path) as stream:
        rest = b""
        while True:
            chunk = stream.read(block_size)
            data = rest + chunk
            if not chunk:
                rest = b""
            else:
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                data, rest = data[: cut + 1], data[cut + 1 :]
            if data.strip():
                lines = data.split(b"\n")
                if lines and lines[-1] == b"":
                    lines.pop()
                good: list[bytes] = []
                numbers: list[int] = []
                for offset, text in enumerate(lines, start=line + 1):
                    if text.strip():
                        good.append(text)
                        numbers.append(offset)
                line += len(lines)
                if schema is None:
                    schema = _json_schema(good, options)
                table, kept = _json_table(good, numbers, schema, path, reject)
                table = table.select(_kept(table.schema.names, wanted))
                for batch in table.to_batches():
                    n = batch.num_rows
                    yield batch, kept[:n]
                    kept = kept[n:]
            if not chunk:
                break


def _json_schema(lines: list[bytes], options: SourceOptions) -> pa.Schema:
    """Text for every field; numbers and booleans as inferred so a string stays a reject."""
    for end in (len(lines), 1):
        try:
            inferred = pajson.read_json(io.BytesIO(b"\n".join(lines[:end]))).schema
            break
        except pa.ArrowInvalid:
            continue
    else:
        inferred = pa.schema([])
    return pa.schema(
        [
            pa.field(f.name, pa.string())
            if f.name == options.id_column or pa.types.is_timestamp(f.type)
            else f
            for f in inferred
        ]
    )


def _json_table(
    lines: list[bytes],
    numbers: list[int],
    schema: pa.Schema,
    path: str,
    reject: Callable[[Reject], None],
) -> tuple[pa.Table, np.ndarray]:
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(io.BytesIO(b"\n".join(lines)), parse_options=parse)
        return table.select(schema.names), np.asarray(numbers, dtype=np.int64)
    except pa.ArrowInvalid:
        pass
    good: list[bytes] = []
    kept: list[int] = []
    for text, number in zip(lines, numbers, strict=True):
        try:
            json.loads(text)
            pajson.read_json(io.BytesIO(text), parse_options=parse)
        except ValueError as e:
            reason = str(e).splitlines()[0]
            if not isinstance(e, pa.ArrowInvalid):
                reason = f"invalid JSON: {reason}"
            reject(Reject(path, number, number, reason, text.decode("utf-8", "replace")))
            continue
        good.append(text)
        kept.append(number)
    if not good:
        return schema.empty_table(), np.zeros(0, dtype=np.int64)
    table = pajson.read_json(io.BytesIO(b"\n".join(good)), parse_options=parse)
    return table.select(schema.names), np.asarray(kept, dtype=np.int64)


def _read_parquet(
    fs: pafs.FileSystem,
    path: str,
    options: SourceOptions,
    reject: Callable[[Reject], None],
    *,
    wanted: set[str] | None = None,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Stream row groups without pre-buffering (which grows memory through the file)."""
    del reject  # Parquet values are typed: cast failures are found by the caster
    with fs.open_input_file(path) as f:
        try:
            reader = pq.ParquetFile(f, pre_buffer=False)
        except pa.ArrowInvalid as e:
            raise DataError(f"{path} is not a Parquet file: {e}") from None
        row = 0
        columns = None if wanted is None else _kept(reader.schema_arrow.names, wanted)
        for batch in reader.iter_batches(batch_size=options.batch_rows, columns=columns):
            yield batch, np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
            row += batch.num_rows


# --------------------------------------------------------------------------- casting


class _Caster:
    """Cast each column to its declared or inferred type; rows with bad values are rejected."""

    def __init__(self, schema: pa.Schema, options: SourceOptions, path: str) -> None:
        self.names = schema.names
        unknown = sorted(set(options.columns) - set(schema.names))
        if unknown:
            raise DataError(
                f"data.columns declares {unknown}, which are not columns of {path} "
                f"(it has {schema.names}); fix the names"
            )
        self.types: dict[str, pa.DataType] = {}
        self._first = True
        self._declared = {n: parse_type(t, f"columns.{n}") for n, t in options.columns.items()}
        self._id_column = options.id_column

    def _infer(self, batch: pa.RecordBatch) -> None:
        """Types of text columns as pyarrow's CSV reader would infer them from this batch."""
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if name in self._declared:
                self.types[name] = self._declared[name]
            elif name == self._id_column or not pa.types.is_string(column.type):
                self.types[name] = column.type
            else:
                self.types[name] = _infer_text(column)

    def __call__(
        self, batch: pa.RecordBatch, rows: np.ndarray, path: str, reject: Callable[[Reject], None]
    ) -> tuple[pa.RecordBatch, np.ndarray]:
        if self._first:
            self._infer(batch)
            self._first = False
        bad = np.zeros(batch.num_rows, dtype=bool)
        reasons: dict[int, str] = {}
        columns = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            target = self.types[name]
            if column.type == target:
                columns.append(column)
                continue
            try:
                columns.append(pc.cast(column, target))
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            failed = _failing_positions(column, target)
            for i in failed:
                if not bad[i]:
                    reasons[i] = f"column {name!r}: cannot parse {column[i].as_py()!r} as {target}"
                bad[i] = True
            mask = np.zeros(len(column), dtype=bool)
            mask[failed] = True
            cleaned = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
            columns.append(pc.cast(cleaned, target))
        out = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
        if not bad.any():
            return out, rows
        for i in np.flatnonzero(bad):
            record = {n: batch.column(n)[i].as_py() for n in batch.schema.names}
            reject(Reject(path, None, int(rows[i]), reasons[int(i)], json.dumps(record)))
        keep = pa.array(~bad)
        return out.filter(keep), rows[~bad]


def _infer_text(column: pa.Array) -> pa.DataType:
    """The narrowest of int64, float64, bool, timestamp[s] that nearly every value casts to.

    Up to 1% of the first batch's values may fail (they become rejects), so that one bad
    value early in the file does not turn a numeric column into text.
    """
    sample = column.drop_null().slice(0, 10_000)
    if len(sample) == 0:
        return pa.string()
    for candidate in (pa.int64(), pa.float64(), pa.bool_(), pa.timestamp("s")):
        try:
            pc.cast(sample, candidate)
            return candidate
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if len(sample) < 100 or len(_failing_positions(sample[:100], candidate, limit=1)) > 1:
            continue  # most values fail: not this type (checked on a few values first)
        allowed = len(sample) // 100
        if len(_failing_positions(sample, candidate, limit=allowed)) <= allowed:
            return candidate
    return pa.string()


def _failing_positions(
    column: pa.Array, target: pa.DataType, *, limit: int | None = None
) -> list[int]:
    """Positions whose value fails to cast, found by bisection (k bad values: O(k log n)).

    Stops after ``limit + 1`` failures when a limit is given.
    """
    failed: list[int] = []
    stack = [(0, len(column))]
    while stack and (limit is None or len(failed) <= limit):
        start, stop = stack.pop()
        try:
            pc.cast(column.slice(start, stop - start), target)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if stop - start == 1:
            failed.append(start)
            continue
        middle = (start + stop) // 2
        stack += [(middle, stop), (start, middle)]
    return sorted(failed)
