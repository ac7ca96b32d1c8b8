"""Shared output helpers: atomic files, manifests and buffered Parquet writing.

Every component writes each output file under a temporary name and renames it into place,
so a reader never sees a half-written file; manifests are written last and mark a
directory as complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from components.errors import DataError, ParamError
from components.names import MANIFEST_FILE, SPLITS

__all__ = [
    "ParquetSink",
    "atomic_path",
    "iter_batches",
    "list_parts",
    "read_json",
    "read_manifest",
    "scoring_shard_path",
    "sha256_file",
    "split_parts",
    "write_json",
]

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 131_072  # PERF-NOTES: >= 128k rows per row group keeps files small


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds."""
    tmp = f"{path}.tmp"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN/inf are refused so the file stays valid."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def read_json(path: str, *, what: str) -> dict[str, Any]:
    """Read a JSON object, raising DataError that names ``what`` produces it when absent."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist; expected the output of {what}: run that step first "
            "(or point this input at its output directory)"
        ) from None


def read_manifest(directory: str) -> dict[str, Any]:
    """Read ``directory/_manifest.json``, which the producing step writes last."""
    return read_json(os.path.join(directory, MANIFEST_FILE), what="a finished upstream step")


def list_parts(directory: str) -> list[str]:
    """Return the ``part-*.parquet`` files in ``directory``, sorted by name."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), "part-*.parquet")))


def iter_batches(path: str, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` of a Parquet file in record batches of at most ``batch_rows`` rows.

    Pre-buffering is off: with it, memory grows through the file (PERF-NOTES).
    """
    reader = pq.ParquetFile(path, pre_buffer=False)
    names = reader.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(
            f"{path} lacks columns {missing} (it has {names}); use data with the columns "
            "the model was trained on"
        )
    yield from reader.iter_batches(batch_size=batch_rows, columns=columns)


def split_parts(dataset_dir: str, split: str) -> list[str]:
    """The Parquet parts of one split (``train``, ``validation``, ``test``) of an etl dataset."""
    if split not in SPLITS:
        raise ParamError(f"split {split!r} is unknown; expected one of {list(SPLITS)}")
    return list_parts(os.path.join(dataset_dir, split))


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def scoring_shard_path(scoring_dir: str, shard: int) -> str:
    """Path of shard ``shard`` in an etl ``scoring`` output directory."""
    return os.path.join(scoring_dir, f"shard-{shard:05d}.parquet")


class ParquetSink:
    """One Parquet output file, written atomically with large buffered row groups.

    Record batches are buffered until ``row_group_rows`` rows are pending, so small
    streaming batches do not become tiny row groups. Dictionary encoding is disabled for
    floating-point columns (it inflates dense floats) and for the ``plain`` columns (a unique
    id: building a dictionary that is then abandoned costs ~40% of encoding). The file
    appears under its final name on :meth:`close`; :meth:`abort` (or an exception inside
    ``with``) removes it.
    """

    def __init__(
        self,
        path: str,
        schema: pa.Schema,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        compression: str = "zstd",
        executor: Executor | None = None,
        plain: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._tmp = f"{path}.tmp"
        self._row_group_rows = row_group_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._executor = executor
        self._in_flight: Future[None] | None = None
        dictionary_columns = [
            f.name for f in schema if not pa.types.is_floating(f.type) and f.name not in plain
        ]
        self._writer = pq.ParquetWriter(
            self._tmp, schema, use_dictionary=dictionary_columns, compression=compression
        )

    def write(self, batch: pa.RecordBatch) -> None:
        """Queue ``batch``; flush a row group once enough rows are pending."""
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self._row_group_rows:
            self.flush()

    @property
    def pending_rows(self) -> int:
        """Rows queued but not yet written as a row group."""
        return self._pending_rows

    def flush(self) -> None:
        """Write the queued rows as one row group."""
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending = []
        self._pending_rows = 0
        if self._executor is None:
            self._writer.write_table(table, row_group_size=table.num_rows)
            return
        # Encoding releases the GIL: it overlaps with parsing. One row group in flight per
        # sink keeps memory bounded and the row groups in order.
        self._wait()
        self._in_flight = self._executor.submit(
            self._writer.write_table, table, row_group_size=table.num_rows
        )

    def _wait(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def close(self) -> int:
        """Flush, close and move the file into place; return the number of rows written."""
        self.flush()
        self._wait()
        self._writer.close()
        os.replace(self._tmp, self.path)
        log.debug("wrote %s (%d rows)", self.path, self.rows)
        return self.rows

    def abort(self) -> None:
        """Close and delete the temporary file without publishing it."""
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._wait()
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._tmp)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
