"""Rows that could not be read: one :class:`Reject` each, counted and quarantined by
:class:`Rejects` as Parquet of :data:`REJECT_SCHEMA` (the etl ``rejects`` output and the
infer step's ``_rejects-<k>.parquet``), so that no bad row is dropped silently.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.errors import DataError
from components.io.files import ParquetSink, write_json
from components.names import MANIFEST_FILE, REJECTS_FILE

__all__ = ["REJECT_SCHEMA", "Reject", "Rejects", "drop_null_rows", "quarantine"]

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


@contextlib.contextmanager
def quarantine(directory: str | None) -> Iterator[Rejects]:
    """Rejects kept as a ``rejects`` output in ``directory`` (``rejects.parquet`` and a
    ``_manifest.json`` of counts by reason), or only counted when it is None. Closed, with
    the manifest written, even when reading fails, so what was rejected can be inspected."""
    if directory:
        os.makedirs(directory, exist_ok=True)
    rejects = Rejects(os.path.join(directory, REJECTS_FILE) if directory else None, keep_empty=True)
    try:
        yield rejects
    finally:
        rejects.close()
        if directory:
            write_json(
                os.path.join(directory, MANIFEST_FILE),
                {
                    "rows": rejects.count,
                    "by_reason": rejects.by_reason,
                    "schema": REJECT_SCHEMA.names,
                },
            )


def drop_null_rows(
    data: pa.RecordBatch,
    columns: Sequence[str],
    source: str,
    rows: np.ndarray,
    reject: Callable[[Reject], None],
) -> pa.RecordBatch:
    """``data`` less its rows with a null in one of ``columns`` (``features.drop_nulls``),
    each rejected naming the first such column; ``rows`` are the record numbers in ``source``.
    """
    missing = [c for c in columns if c not in data.schema.names]
    if missing:
        raise DataError(
            f"features.drop_nulls names {missing}, which are not columns (columns: "
            f"{data.schema.names}); fix the names"
        )
    null = np.zeros(data.num_rows, dtype=bool)
    reason = np.full(data.num_rows, "", dtype=object)
    for name in columns:
        is_null = pc.is_null(data.column(name)).to_numpy(zero_copy_only=False)
        reason[is_null & ~null] = f"column {name!r}: null (features.drop_nulls)"
        null |= is_null
    if not null.any():
        return data
    for i in np.flatnonzero(null):
        reject(Reject(source, None, int(rows[i]), reason[i], ""))
    return data.filter(pa.array(~null))
