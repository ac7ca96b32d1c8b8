"""The feature spec: one fitted description of how raw columns become model inputs.

ETL fits it on the train split, training stores it next to the model, and evaluation and
inference transform with that same stored spec, so training and scoring features never
drift. Encoding, per column role:

* numeric: nulls and non-finite values become the train mean, then ``(x - mean) / std``
  (``scaling: standard``), ``(x - min) / (max - min)`` (``minmax``) or ``x`` (``none``),
  computed in float32 for float32 columns and in float64 for other types.
* categorical: one-hot over the ``max_categories`` most frequent train values (ties broken
  by value), plus one ``__other__`` slot that receives unseen values *and* nulls; or, with
  ``encoding: index``, one column holding the value's position in that vocabulary (the
  vocabulary size for other values).
* timestamp: hour, day of week and month as sin/cos pairs (0 when null), plus days since
  the Unix epoch standardised like a numeric column.

Before encoding, the spec applies its row-level transforms
(:class:`components.data.prepare.Prepare`: renames, derived columns, fills, clips, user
transforms), which are idempotent, so raw rows and ETL output rows give identical features.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.prepare import Prepare
from components.errors import DataError, ParamError
from components.io.arrays import numbers, strings
from components.names import FEATURE_SPEC_FILE

__all__ = [
    "CategoricalColumn",
    "FeatureSpec",
    "FeatureSpecAccumulator",
    "NumericColumn",
    "TimestampColumn",
    "load_feature_spec",
    "resolve_roles",
]

log = logging.getLogger(__name__)

SCALINGS = ("standard", "minmax", "none")
ENCODINGS = ("onehot", "index")
OTHER = "__other__"
SECONDS_PER_DAY = 86_400.0
# (part name, extractor, period) of the cyclic timestamp encodings.
_CYCLES = (
    ("hour", pc.hour, 24.0),
    ("day_of_week", pc.day_of_week, 7.0),  # Monday = 0
    ("month", pc.month, 12.0),
)


@dataclass(frozen=True)
class NumericColumn:
    """A numeric input standardised with its train mean and standard deviation."""

    name: str
    mean: float
    std: float
    minimum: float = 0.0
    maximum: float = 1.0


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical input one-hot encoded over ``vocabulary`` plus an ``__other__`` slot."""

    name: str
    vocabulary: tuple[str, ...]


@dataclass(frozen=True)
class TimestampColumn:
    """A timestamp input: cyclic hour/weekday/month parts plus standardised epoch days."""

    name: str
    days_mean: float
    days_std: float


@dataclass(frozen=True)
class FeatureSpec:
    """How to turn raw columns into a float32 feature matrix; fitted once, then frozen."""

    id_column: str | None
    target: str | None
    numeric: tuple[NumericColumn, ...] = ()
    categorical: tuple[CategoricalColumn, ...] = ()
    timestamp: tuple[TimestampColumn, ...] = ()
    fitted_rows: int = 0
    scaling: str = "standard"
    encoding: str = "onehot"
    prepare: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        data: pa.Table | Iterable[pa.RecordBatch],
        *,
        schema: pa.Schema | None = None,
        **roles: Any,
    ) -> FeatureSpec:
        """Fit a spec on a table or a stream of record batches.

        Args:
            data: A table, or record batches (``schema`` is then required).
            schema: Schema of the batches; taken from ``data`` when it is a table.
            **roles: Keyword arguments of :class:`FeatureSpecAccumulator`.
        """
        if isinstance(data, pa.Table):
            schema, data = data.schema, data.to_batches()
        if schema is None:
            raise TypeError("FeatureSpec.fit needs schema= when given record batches")
        accumulator = FeatureSpecAccumulator(schema, **roles)
        for batch in data:
            accumulator.update(batch)
        return accumulator.finalize()

    @property
    def version(self) -> str:
        """sha256 of the canonical JSON of the spec: equal versions transform identically."""
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def input_columns(self) -> list[str]:
        """The raw columns :meth:`transform` reads, in feature order."""
        return [c.name for group in (self.numeric, self.categorical, self.timestamp) for c in group]

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns of :meth:`transform`, in order."""
        names = [c.name for c in self.numeric]
        for c in self.categorical:
            if self.encoding == "index":
                names.append(c.name)
                continue
            names += [f"{c.name}={v}" for v in c.vocabulary] + [f"{c.name}={OTHER}"]
        for c in self.timestamp:
            names += [f"{c.name}.{part}_{fn}" for part, _, _ in _CYCLES for fn in ("sin", "cos")]
            names.append(f"{c.name}.days")
        return names

    def transform(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Encode ``data`` into a float32 array of shape ``[rows, len(feature_names)]``.

        ``data`` may be raw rows or ETL output: the row-level transforms are applied first
        and are idempotent.
        """
        if self.prepare:
            data = _prepare_of(self)(_as_batch(data), strict=False)
        missing = [name for name in self.input_columns if name not in data.schema.names]
        if missing:
            raise DataError(
                f"columns {missing} required by feature spec {self.version[:12]} are missing "
                f"from the input (it has {data.schema.names}); score data with the same "
                "columns the model was trained on"
            )
        rows = data.num_rows
        out = np.empty((rows, len(self.feature_names)), dtype=np.float32)
        out[:, len(self.numeric) :] = 0.0  # numeric columns are all written below
        scratch = np.empty(rows, dtype=np.float64)
        j = 0
        for num in self.numeric:
            offset, scale = self._affine(num)
            _scale_into(out[:, j], _column(data, num.name), num, offset, scale, scratch)
            j += 1
        for cat in self.categorical:
            values = _as_string(_column(data, cat.name))
            found = numbers(pc.index_in(values, strings(cat.vocabulary)))  # NaN: not found
            codes = np.nan_to_num(found, nan=len(cat.vocabulary)).astype(np.intp)
            if self.encoding == "index":
                out[:, j] = codes
                j += 1
                continue
            out[np.arange(rows), j + codes] = 1.0
            j += len(cat.vocabulary) + 1
        for ts in self.timestamp:
            column = _as_timestamp(_column(data, ts.name), ts.name)
            for _, extract, period in _CYCLES:
                angle = _float_values(extract(column), math.nan, ts.name) * (2 * math.pi / period)
                out[:, j] = np.nan_to_num(np.sin(angle))
                out[:, j + 1] = np.nan_to_num(np.cos(angle))
                j += 2
            days = _epoch_days(column)
            values = np.where(np.isfinite(days), days, ts.days_mean)
            out[:, j] = (values - ts.days_mean) / ts.days_std
            j += 1
        return out

    def _affine(self, num: NumericColumn) -> tuple[float, float]:
        """``(offset, scale)`` such that a numeric feature is ``(x - offset) / scale``."""
        if self.scaling == "standard":
            return num.mean, num.std
        if self.scaling == "minmax":
            return num.minimum, max(num.maximum - num.minimum, 1e-12)
        return 0.0, 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the spec, including its ``version``."""
        return {**self._content(), "version": self.version}

    def to_json(self) -> str:
        """Indented JSON text of :meth:`to_dict` (the content of ``feature_spec.json``)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        """Rebuild a spec from :meth:`to_dict` output, checking its recorded version."""
        spec = cls(
            id_column=d["id_column"],
            target=d["target"],
            numeric=tuple(NumericColumn(**c) for c in d["numeric"]),
            categorical=tuple(
                CategoricalColumn(c["name"], tuple(c["vocabulary"])) for c in d["categorical"]
            ),
            timestamp=tuple(TimestampColumn(**c) for c in d["timestamp"]),
            fitted_rows=d["fitted_rows"],
            scaling=d.get("scaling", "standard"),
            encoding=d.get("encoding", "onehot"),
            prepare=d.get("prepare") or {},
        )
        recorded = d.get("version")
        if recorded is not None and recorded != spec.version:
            raise DataError(
                f"feature spec records version {recorded[:12]} but its content hashes to "
                f"{spec.version[:12]}; the file was edited by hand: re-run etl to refit it"
            )
        return spec

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Parse the JSON text written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def _content(self) -> dict[str, Any]:
        return {
            "id_column": self.id_column,
            "target": self.target,
            "numeric": [dataclasses.asdict(c) for c in self.numeric],
            "categorical": [
                {"name": c.name, "vocabulary": list(c.vocabulary)} for c in self.categorical
            ],
            "timestamp": [dataclasses.asdict(c) for c in self.timestamp],
            "fitted_rows": self.fitted_rows,
            "scaling": self.scaling,
            "encoding": self.encoding,
            "prepare": self.prepare,
        }


def load_feature_spec(directory: str) -> FeatureSpec:
    """Read ``directory/feature_spec.json`` (written by etl and copied next to models)."""
    path = os.path.join(directory, FEATURE_SPEC_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return FeatureSpec.from_json(f.read())
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist; expected the feature_spec output of etl: run etl first"
        ) from None


def resolve_roles(
    schema: pa.Schema,
    *,
    id_column: str | None,
    target: str | None,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    timestamp: Sequence[str] | None = None,
) -> dict[str, list[str]]:
    """Decide which columns are numeric, categorical and timestamp features.

    Roles given as lists are checked against ``schema``; roles given as ``None`` are
    inferred from column types (integer/float: numeric; string/bool: categorical;
    timestamp/date: timestamp), skipping the id, the target and explicitly assigned columns.

    Returns:
        ``{"numeric": [...], "categorical": [...], "timestamp": [...]}`` in schema order.
    """
    given = {"numeric": numeric, "categorical": categorical, "timestamp": timestamp}
    reserved = {c for c in (id_column, target) if c is not None}
    listed = [name for names in given.values() if names is not None for name in names]
    repeated = sorted({name for name in listed if listed.count(name) > 1})
    if repeated:
        raise DataError(
            f"columns {repeated} are listed more than once in features.numeric/categorical/"
            "timestamp; give each column one role"
        )
    assigned = set(listed)
    for role, names in given.items():
        for name in names or ():
            if name not in schema.names:
                raise DataError(
                    f"features.{role} names column {name!r}, which is not in the data; "
                    f"available columns: {schema.names}"
                )
            if name in reserved:
                raise DataError(
                    f"features.{role} names column {name!r}, which is the id or target "
                    "column; remove it from the feature list"
                )
            if not _ROLE_TYPES[role](schema.field(name).type):
                raise DataError(
                    f"features.{role} names column {name!r} of type "
                    f"{schema.field(name).type}, which cannot be used as {role}; "
                    "move it to another feature role"
                )
    roles: dict[str, list[str]] = {}
    for role, names in given.items():
        if names is not None:
            roles[role] = [f.name for f in schema if f.name in set(names)]
        else:
            roles[role] = [
                f.name
                for f in schema
                if f.name not in reserved | assigned and _INFERRED_TYPES[role](f.type)
            ]
    used = reserved | {name for names in roles.values() for name in names}
    for f in schema:
        if f.name not in used:
            log.warning("column %r (%s) has no feature role and is ignored", f.name, f.type)
    if not any(roles.values()):
        raise DataError(
            f"no feature columns found among {schema.names} (id={id_column!r}, "
            f"target={target!r}); list them in features.numeric/categorical/timestamp"
        )
    return roles


class FeatureSpecAccumulator:
    """Streaming statistics for a :class:`FeatureSpec`: update batch by batch, then finalize.

    Memory is constant per numeric/timestamp column and proportional to the number of
    distinct values per categorical column.
    """

    def __init__(
        self,
        schema: pa.Schema,
        *,
        id_column: str | None,
        target: str | None,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        timestamp: Sequence[str] | None = None,
        max_categories: int = 50,
        scaling: str = "standard",
        encoding: str = "onehot",
        prepare: dict[str, Any] | None = None,
    ) -> None:
        if scaling not in SCALINGS:
            raise ParamError(f"features.scaling={scaling!r} is unknown; expected one of {SCALINGS}")
        if encoding not in ENCODINGS:
            raise ParamError(
                f"features.encoding={encoding!r} is unknown; expected one of {ENCODINGS}"
            )
        self._scaling, self._encoding = scaling, encoding
        self._prepare = Prepare.from_dict(prepare).to_dict() if prepare else {}
        if max_categories < 1:
            raise DataError(
                f"features.max_categories={max_categories} is not positive; set it to >= 1"
            )
        self._id_column = id_column
        self._target = target
        self._max_categories = max_categories
        self.roles = resolve_roles(
            schema,
            id_column=id_column,
            target=target,
            numeric=numeric,
            categorical=categorical,
            timestamp=timestamp,
        )
        self._rows = 0
        self._numeric = {name: _Moments() for name in self.roles["numeric"]}
        self._days = {name: _Moments() for name in self.roles["timestamp"]}
        self._counts: dict[str, Counter[str]] = {n: Counter() for n in self.roles["categorical"]}

    def update(self, batch: pa.RecordBatch) -> None:
        """Add the rows of ``batch`` to the statistics."""
        self._rows += batch.num_rows
        for name, moments in self._numeric.items():
            moments.update(_finite(batch.column(name)))
        for name, moments in self._days.items():
            days = _epoch_days(_as_timestamp(batch.column(name), name))
            moments.update(days[np.isfinite(days)])
        for name, counts in self._counts.items():
            value_counts = pc.value_counts(_as_string(batch.column(name)))
            values = value_counts.field("values").to_pylist()
            for value, count in zip(values, value_counts.field("counts").to_pylist(), strict=True):
                if value is not None:
                    counts[value] += count

    def finalize(self) -> FeatureSpec:
        """Freeze the statistics into a :class:`FeatureSpec`."""
        numeric = tuple(
            NumericColumn(n, *m.mean_std(), *m.range()) for n, m in self._numeric.items()
        )
        timestamp = tuple(TimestampColumn(n, *m.mean_std()) for n, m in self._days.items())
        categorical = tuple(
            CategoricalColumn(
                name,
                tuple(v for v, _ in sorted(counts.items(), key=lambda vc: (-vc[1], vc[0])))[
                    : self._max_categories
                ],
            )
            for name, counts in self._counts.items()
        )
        return FeatureSpec(
            id_column=self._id_column,
            target=self._target,
            numeric=numeric,
            categorical=categorical,
            timestamp=timestamp,
            fitted_rows=self._rows,
            scaling=self._scaling,
            encoding=self._encoding,
            prepare=self._prepare,
        )


class _Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        n_b = x.size
        self.minimum = min(self.minimum, float(x.min()))
        self.maximum = max(self.maximum, float(x.max()))
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def mean_std(self) -> tuple[float, float]:
        """Population mean and std; std is 1.0 when undefined or zero (constant column)."""
        std = math.sqrt(self.m2 / self.n) if self.n else 0.0
        return self.mean, std if std > 1e-12 else 1.0

    def range(self) -> tuple[float, float]:
        """Minimum and maximum seen (0 and 1 when nothing was seen)."""
        return (self.minimum, self.maximum) if self.n else (0.0, 1.0)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_categorical(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)


def _is_timestamp(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t)


_INFERRED_TYPES = {
    "numeric": _is_numeric,
    "categorical": _is_categorical,
    "timestamp": _is_timestamp,
}
# Explicit roles also accept bool as numeric and any integer as categorical (e.g. codes).
_ROLE_TYPES = {
    "numeric": lambda t: _is_numeric(t) or pa.types.is_boolean(t),
    "categorical": lambda t: _is_categorical(t) or pa.types.is_integer(t),
    "timestamp": _is_timestamp,
}


def _column(data: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    column = data.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _as_string(column: pa.Array) -> pa.Array:
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def _as_timestamp(column: pa.Array, name: str) -> pa.Array:
    if pa.types.is_date(column.type):
        return pc.cast(column, pa.timestamp("s"))
    if not pa.types.is_timestamp(column.type):
        raise DataError(
            f"timestamp column {name!r} holds {column.type} values; write them as ISO 8601 "
            "(e.g. 2023-04-01T13:45:00) or move the column to another feature role"
        )
    return column


def _epoch_days(column: pa.Array) -> np.ndarray:
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


def _finite(column: pa.Array) -> np.ndarray:
    x = pc.cast(column.drop_null(), pa.float64()).to_numpy(zero_copy_only=False)
    return x[np.isfinite(x)]


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
