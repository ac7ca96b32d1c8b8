"""Stream the rows of CSV, JSON Lines and Parquet source files as typed record batches.

Every reader yields record batches of bounded size, so memory does not grow with the input.
Rows that cannot be read are not dropped silently: a CSV row with the wrong number of
fields, a JSON line that is not valid JSON, or a value that cannot be cast to its column's
type is handed to the ``reject`` callback with its source file, line or row number and the
reason, and the rest of the batch goes on. Values are parsed as text first where needed and
cast column by column (:class:`components.data.casting.Caster`), so one bad value costs one
row, not the whole file.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from components.data.casting import Caster
from components.data.rejects import Reject
from components.data.sources import SourceOptions
from components.errors import DataError

__all__ = ["Batch", "conform", "count_records", "first_rows", "read_batches"]

log = logging.getLogger(__name__)

_NAMES_SAMPLE = 64 << 10
_MIN_BLOCK, _MAX_BLOCK = 1 << 20, 64 << 20

#: A record batch of one file and the 1-based record number of each of its rows.
_Rows = tuple[pa.RecordBatch, np.ndarray]


@dataclass
class Batch:
    """A record batch with where it came from: ``rows[i]`` is the record number of row i."""

    data: pa.RecordBatch
    source: str
    rows: np.ndarray


def _ignore(reject: Reject) -> None:
    """A reject callback for passes that only look (samples, counts)."""


@dataclass(frozen=True)
class _File:
    """One source file to read: where it is, how to parse it, where its bad rows go, and
    which columns to keep (None: all)."""

    fs: pafs.FileSystem
    path: str
    options: SourceOptions
    reject: Callable[[Reject], None] = _ignore
    wanted: set[str] | None = None


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
    reader: Callable[[_File], Iterator[_Rows]]
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt]
    caster: Caster | None = None
    if fmt == "csv":
        # Types from the first block, so that the CSV reader converts values itself (fast);
        # it falls back to text plus per-column casts in a file where a value fails.
        sample = _csv_sample(_File(fs, files[0], options))
        caster = Caster(sample.schema, options, files[0])
        caster(sample, np.zeros(sample.num_rows, dtype=np.int64), files[0], _ignore)
        reader = functools.partial(_read_csv, types=caster.types)
    for path in files:
        for raw, rows in reader(_File(fs, path, options, reject, wanted)):
            if caster is None:
                caster = Caster(raw.schema, options, path)
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

    read_options, parse_options, names = _csv_options(_File(fs, path, options))
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


def first_rows(batches: Iterator[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """The first ``limit`` rows of a batch stream (a quick sample for smoke runs)."""
    for batch in batches:
        if batch.num_rows >= limit:
            yield batch.slice(0, limit)
            return
        limit -= batch.num_rows
        yield batch


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` as the columns of ``schema`` (the first batch's), cast when its types differ
    (e.g. a column that is all null in this batch)."""
    batch = batch.select(schema.names)
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(
            f"a later batch has types {batch.schema.types} that do not match the first "
            f"batch's {schema.types}: {e}; declare the column types in data.columns"
        ) from None


def _kept(names: list[str], wanted: set[str] | None) -> list[str]:
    """``names`` in their order, only the wanted ones (all when ``wanted`` is None)."""
    return list(names) if wanted is None else [n for n in names if n in wanted]


def _block_size(file: _File) -> int:
    """Bytes per block so that a block holds about ``batch_rows`` rows."""
    with file.fs.open_input_stream(file.path) as stream:
        sample = stream.read(_MIN_BLOCK)
    bytes_per_row = len(sample) / max(sample.count(b"\n"), 1)
    return int(min(max(file.options.batch_rows * bytes_per_row, _MIN_BLOCK), _MAX_BLOCK))


# --------------------------------------------------------------------------- CSV


def _csv_options(
    file: _File, *, threads: bool = False
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, list[str]]:
    """Read and parse options of one CSV file, and its column names.

    With ``threads``, the reader parses blocks in parallel but cannot tell the line of a
    malformed row: the row handler then stops the reader (the caller re-reads the file
    without threads).
    """
    options = file.options
    block_size = _block_size(file)
    names = list(options.column_names) if options.column_names else None
    read_options = pacsv.ReadOptions(
        block_size=block_size,
        use_threads=threads,
        skip_rows=options.skip_rows,
        column_names=names,
        autogenerate_column_names=not options.header and names is None,
        encoding=options.encoding,
    )
    if options.header and names:
        read_options.skip_rows_after_names = 1
    parse_options = pacsv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char if options.quote_char else False,
        invalid_row_handler=lambda row: _bad_csv_row(row, file.path, file.reject),
    )
    with file.fs.open_input_stream(file.path) as stream:
        head = stream.read(_NAMES_SAMPLE)  # the names need the first lines, not a block
    if head.count(b"\n") < options.skip_rows + 2:
        with file.fs.open_input_stream(file.path) as stream:
            head = stream.read(block_size)
    return read_options, parse_options, _csv_names(head, read_options, parse_options)


def _csv_sample(file: _File) -> pa.RecordBatch:
    """The first block of a CSV file as text columns (to infer the column types)."""
    read_options, parse_options, names = _csv_options(file)
    with file.fs.open_input_stream(file.path) as stream:
        head = stream.read(read_options.block_size)
    cut = head.rfind(b"\n")
    quiet = pacsv.ParseOptions(
        delimiter=parse_options.delimiter,
        quote_char=parse_options.quote_char,
        invalid_row_handler=lambda row: "skip",
    )
    try:
        table = pacsv.read_csv(
            io.BytesIO(head[: cut + 1] if cut > 0 else head),
            read_options=read_options,
            parse_options=quiet,
            convert_options=_convert(names, dict.fromkeys(names, pa.string()), file.options),
        )
    except pa.ArrowInvalid as e:
        raise _csv_error(file.path, e, file.options) from None
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
        decimal_point=options.decimal_point,
        **({"include_columns": _kept(names, wanted)} if wanted is not None else {}),
        **({"null_values": list(options.null_values)} if options.null_values else {}),
    )


def _read_csv(file: _File, *, types: dict[str, pa.DataType]) -> Iterator[_Rows]:
    """Parse with the given column types; rows with the wrong field count are rejected.

    The reader runs threaded and converts values itself (fast). When a row is malformed or
    a value fails to convert, it cannot go on: the file is read again from the start,
    without threads (so bad rows have line numbers) or as text (so the caster rejects the
    rows with bad values one by one), skipping the rows already yielded.
    """
    seen_lines: set[int] = set()
    reject, path = file.reject, file.path

    def once(r: Reject) -> None:
        if r.line is None or r.line not in seen_lines:
            seen_lines.add(r.line or 0)
            reject(r)

    file = dataclasses.replace(file, reject=once)
    row = 0
    threads = True
    while True:
        read_options, parse_options, names = _csv_options(file, threads=threads)
        skip = row
        with file.fs.open_input_stream(path) as stream:
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=read_options,
                    parse_options=parse_options,
                    convert_options=_convert(names, types, file.options, file.wanted),
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
                elif types and "conversion error" in message and not _undecodable(e):
                    types = {}  # a bad value: read as text, the caster rejects its row
                else:
                    raise _csv_error(path, e, file.options) from None
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
        if _undecodable(e):
            raise DataError(
                f"the CSV header is not valid {read_options.encoding} text ({e}); set "
                "data.csv.encoding to the file's encoding, e.g. latin-1 or cp1252"
            ) from None
        raise DataError(f"the CSV header cannot be parsed: {e}; check data.csv options") from None
    return table.schema.names


def _undecodable(error: pa.ArrowInvalid) -> bool:
    """Whether pyarrow failed on bytes that are not text in the expected encoding."""
    return "invalid utf8" in str(error).lower()


def _csv_error(path: str, error: pa.ArrowInvalid, options: SourceOptions) -> DataError:
    """A data error for a CSV file pyarrow gave up on, naming the fix."""
    if _undecodable(error):
        return DataError(
            f"{path} is not valid {options.encoding} text ({error}); set data.csv.encoding to "
            "the file's encoding, e.g. latin-1 or cp1252 for spreadsheet exports"
        )
    return DataError(f"{path} cannot be parsed as CSV: {error}; fix the file")


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


# --------------------------------------------------------------------------- JSON Lines


def _read_jsonl(file: _File) -> Iterator[_Rows]:
    """Parse blocks of lines; a block that fails is re-parsed line by line to find bad lines."""
    block_size = _block_size(file)
    schema: pa.Schema | None = None
    line = 0
    with file.fs.open_input_stream(file.path) as stream:
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
                utf8 = _is_utf8(data)  # pyarrow's JSON parser lets invalid UTF-8 through
                for offset, text in enumerate(lines, start=line + 1):
                    if not text.strip():
                        continue
                    if not utf8 and not _is_utf8(text):
                        reason = "not valid UTF-8 text (JSON Lines files are UTF-8)"
                        record = text.decode("utf-8", "replace")
                        file.reject(Reject(file.path, offset, offset, reason, record))
                        continue
                    good.append(text)
                    numbers.append(offset)
                line += len(lines)
                if schema is None:
                    schema = _json_schema(good, file.options)
                table, kept = _json_table(good, numbers, schema, file.path, file.reject)
                table = table.select(_kept(table.schema.names, file.wanted))
                for batch in table.to_batches():
                    n = batch.num_rows
                    yield batch, kept[:n]
                    kept = kept[n:]
            if not chunk:
                break


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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


# --------------------------------------------------------------------------- Parquet


def _read_parquet(file: _File) -> Iterator[_Rows]:
    """Stream row groups without pre-buffering (which grows memory through the file).

    Parquet values are typed: values that do not cast are rejected by the caster.
    """
    with file.fs.open_input_file(file.path) as f:
        try:
            reader = pq.ParquetFile(f, pre_buffer=False)
        except pa.ArrowInvalid as e:
            raise DataError(f"{file.path} is not a Parquet file: {e}") from None
        row = 0
        columns = None if file.wanted is None else _kept(reader.schema_arrow.names, file.wanted)
        for batch in reader.iter_batches(batch_size=file.options.batch_rows, columns=columns):
            yield batch, np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)
            row += batch.num_rows
