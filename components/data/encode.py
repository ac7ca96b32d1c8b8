"""Encoding rows into the float32 feature matrix a fitted :class:`FeatureSpec` describes.

This is the hot path of training, evaluation and inference (the spec's
:meth:`~components.data.features.FeatureSpec.transform`), kept apart from fitting the spec.
Numbers are read from Arrow buffers without pandas and, where Arrow allows, without a copy.
"""

from __future__ import annotations

import functools
import json
import math
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.prepare import Prepare
from components.errors import DataError
from components.io.arrays import numbers, strings

if TYPE_CHECKING:
    from components.data.features import FeatureSpec, NumericColumn

__all__ = ["CYCLES", "as_string", "as_timestamp", "encode", "epoch_days"]

SECONDS_PER_DAY = 86_400.0
#: (part name, extractor, period) of the cyclic timestamp encodings.
CYCLES = (
    ("hour", pc.hour, 24.0),
    ("day_of_week", pc.day_of_week, 7.0),  # Monday = 0
    ("month", pc.month, 12.0),
)


def encode(spec: FeatureSpec, data: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Encode ``data`` into a float32 array of shape ``[rows, len(spec.feature_names)]``.

    ``data`` may be raw rows or ETL output: the spec's row-level transforms are applied
    first and are idempotent.
    """
    if spec.prepare:
        data = _prepare_of(spec)(_as_batch(data), strict=False)
    missing = [name for name in spec.input_columns if name not in data.schema.names]
    if missing:
        raise DataError(
            f"columns {missing} required by feature spec {spec.version[:12]} are missing "
            f"from the input (it has {data.schema.names}); score data with the same "
            "columns the model was trained on"
        )
    rows = data.num_rows
    out = np.empty((rows, len(spec.feature_names)), dtype=np.float32)
    out[:, len(spec.numeric) :] = 0.0  # numeric columns are all written below
    scratch = np.empty(rows, dtype=np.float64)
    j = 0
    for num in spec.numeric:
        offset, scale = _affine(spec.scaling, num)
        _scale_into(out[:, j], _column(data, num.name), num, offset, scale, scratch)
        j += 1
    for cat in spec.categorical:
        values = as_string(_column(data, cat.name))
        found = numbers(pc.index_in(values, strings(cat.vocabulary)))  # NaN: not found
        codes = np.nan_to_num(found, nan=len(cat.vocabulary)).astype(np.intp)
        if spec.encoding == "index":
            out[:, j] = codes
            j += 1
            continue
        out[np.arange(rows), j + codes] = 1.0
        j += len(cat.vocabulary) + 1
    for ts in spec.timestamp:
        column = as_timestamp(_column(data, ts.name), ts.name)
        for _, extract, period in CYCLES:
            angle = _float_values(extract(column), math.nan, ts.name) * (2 * math.pi / period)
            out[:, j] = np.nan_to_num(np.sin(angle))
            out[:, j + 1] = np.nan_to_num(np.cos(angle))
            j += 2
        days = epoch_days(column)
        values = np.where(np.isfinite(days), days, ts.days_mean)
        out[:, j] = (values - ts.days_mean) / ts.days_std
        j += 1
    return out


def _affine(scaling: str, num: NumericColumn) -> tuple[float, float]:
    """``(offset, scale)`` such that a numeric feature is ``(x - offset) / scale``."""
    if scaling == "standard":
        return num.mean, num.std
    if scaling == "minmax":
        return num.minimum, max(num.maximum - num.minimum, 1e-12)
    return 0.0, 1.0


def _column(data: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    column = data.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def as_string(column: pa.Array) -> pa.Array:
    """A categorical column as text, the form its vocabulary is kept in."""
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def as_timestamp(column: pa.Array, name: str) -> pa.Array:
    """A timestamp or date column as timestamps; any other type is a data error."""
    if pa.types.is_date(column.type):
        return pc.cast(column, pa.timestamp("s"))
    if not pa.types.is_timestamp(column.type):
        raise DataError(
            f"timestamp column {name!r} holds {column.type} values; write them as ISO 8601 "
            "(e.g. 2023-04-01T13:45:00) or move the column to another feature role"
        )
    return column


def epoch_days(column: pa.Array) -> np.ndarray:
    """Days since the Unix epoch as float64, NaN where null."""
    seconds = pc.cast(column, pa.timestamp("s", tz=column.type.tz), safe=False)
    return numbers(pc.cast(seconds, pa.int64())) / SECONDS_PER_DAY


def _scale_into(
    out: np.ndarray,
    column: pa.Array,
    num: NumericColumn,
    offset: float,
    scale: float,
    scratch: np.ndarray,
) -> None:
    """Write ``(x - offset) / scale`` of a numeric column into ``out`` (float32).

    The arithmetic runs in float32 for float32 columns (their own precision; half the memory
    traffic) and in float64 for every other type, in ``scratch`` (float64, so that it holds
    either). Numbers are read without a copy where Arrow allows. Nulls and non-finite values
    get the encoded train mean.
    """
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        x = numbers(column)
    else:
        x = _float_values(column, math.nan, num.name)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    work = scratch.view(dtype)[: len(x)]
    np.subtract(x, dtype(offset), out=work, dtype=dtype)
    np.divide(work, dtype(scale), out=work)
    out[:] = work
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            out[~finite] = (num.mean - offset) / scale


def _float_values(column: pa.Array, fill: float, name: str) -> np.ndarray:
    """float64 values with nulls and non-finite values replaced by ``fill``."""
    try:
        x = numbers(pc.cast(column, pa.float64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(
            f"numeric column {name!r} holds {column.type} values that are not numbers ({e}); "
            "fix the data or move the column to features.categorical"
        ) from None
    return np.where(np.isfinite(x), x, fill)


@functools.cache
def _prepare_cached(prepare_json: str) -> Prepare:
    return Prepare.from_dict(json.loads(prepare_json))


def _prepare_of(spec: FeatureSpec) -> Prepare:
    return _prepare_cached(json.dumps(spec.prepare, sort_keys=True))


def _as_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    if isinstance(data, pa.RecordBatch):
        return data
    return pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in data.columns], names=data.schema.names
    )
