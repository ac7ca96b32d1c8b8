"""Arrow arrays to numpy and back through their buffers, without pandas.

``pa.array``, ``pa.scalar`` and ``Array.to_numpy`` import pandas on their first call (to
recognise pandas inputs), a quarter of a second that every scoring process would pay for
nothing: it reads Parquet, runs a model and writes Parquet. The hot paths of scoring use
these helpers instead; each copies nothing it does not have to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["from_numpy", "numbers", "strings"]


def numbers(column: pa.Array) -> np.ndarray:
    """An integer or floating-point column's values; nulls become NaN (integers with nulls
    become float64). No copy when the column has no nulls."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise TypeError(f"numbers() takes integer or floating-point columns, not {column.type}")
    dtype = np.dtype(column.type.to_pandas_dtype())
    validity, data = column.buffers()[:2]
    values = np.frombuffer(data, dtype=dtype, count=column.offset + len(column))[column.offset :]
    if not column.null_count:
        return values
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
    valid = bits[column.offset : column.offset + len(column)].view(bool)
    values = values.astype(np.float64 if dtype.kind in "iu" else dtype)
    values[~valid] = math.nan
    return values


def from_numpy(values: np.ndarray, type: pa.DataType | None = None) -> pa.Array:
    """A null-free Arrow array over a 1-D numeric numpy array's memory (kept alive by it).

    ``type`` reinterprets the memory (e.g. int64 milliseconds as a timestamp); it must
    have the same width as ``values``' dtype.
    """
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise TypeError(f"from_numpy() takes a 1-D numeric array, not {values.dtype}{values.shape}")
    arrow_type = type or pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def strings(values: Sequence[str]) -> pa.Array:
    """A null-free Arrow string array of ``values``."""
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets), data])
