"""Casting text to the declared or inferred column types, one bad value costing one row.

Readers parse values as text where they cannot type them themselves; :class:`Caster` then
casts column by column and hands each row with a value that does not cast to the ``reject``
callback (with its record number and reason), keeping the rest of the batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.rejects import Reject
from components.data.sources import SourceOptions, parse_type
from components.errors import DataError

__all__ = ["Caster"]

log = logging.getLogger(__name__)


class Caster:
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
        self._decimal_point = options.decimal_point
        #: Text columns whose values would be numbers with the other decimal point.
        self.locale_numbers: list[str] = []

    def _infer(self, batch: pa.RecordBatch) -> None:
        """Types of text columns as pyarrow's CSV reader would infer them from this batch."""
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if name in self._declared:
                self.types[name] = self._declared[name]
            elif name == self._id_column or not pa.types.is_string(column.type):
                self.types[name] = column.type
            else:
                self.types[name] = _infer_text(self._numeric_text(column))
                if self.types[name] == pa.string() and self._other_locale_numbers(column):
                    self.locale_numbers.append(name)
                    log.warning(
                        "column %r holds numbers written with decimal commas (e.g. %r) and is "
                        "read as text; set data.csv.decimal_point=',' to read them as numbers",
                        name,
                        column.drop_null()[0].as_py(),
                    )

    def _numeric_text(self, column: pa.Array) -> pa.Array:
        """Text as numbers are cast from: with the decimal point ``.``."""
        if self._decimal_point == "." or not pa.types.is_string(column.type):
            return column
        return pc.replace_substring(column, self._decimal_point, ".")

    def _other_locale_numbers(self, column: pa.Array) -> bool:
        """Whether most of a text column would be floats with a decimal comma instead."""
        if self._decimal_point != ".":
            return False
        sample = column.drop_null().slice(0, 10_000)
        if len(sample) == 0 or not pc.any(pc.match_substring(sample, ",")).as_py():
            return False
        swapped = pc.replace_substring(sample, ",", ".")
        return _infer_text(swapped) == pa.float64()

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
            if pa.types.is_floating(target) or pa.types.is_decimal(target):
                column = self._numeric_text(column)
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
