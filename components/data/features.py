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

This module holds the spec, its column roles and fitting it batch by batch;
:mod:`components.data.encode` holds the transform itself.
"""

from __future__ import annotations

import dataclasses
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

from components.data.encode import CYCLES, as_string, as_timestamp, encode, epoch_days
from components.data.prepare import Prepare
from components.errors import DataError, ParamError
from components.names import FEATURE_SPEC_FILE

__all__ = [
    "CategoricalColumn",
    "FeatureRoles",
    "FeatureSpec",
    "FeatureSpecAccumulator",
    "NumericColumn",
    "TimestampColumn",
    "load_feature_spec",
]

log = logging.getLogger(__name__)

SCALINGS = ("standard", "minmax", "none")
ENCODINGS = ("onehot", "index")
OTHER = "__other__"


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
        roles: FeatureRoles,
        *,
        schema: pa.Schema | None = None,
        **options: Any,
    ) -> FeatureSpec:
        """Fit a spec on a table or a stream of record batches.

        Args:
            data: A table, or record batches (``schema`` is then required).
            roles: Which columns are the id, the target and the features.
            schema: Schema of the batches; taken from ``data`` when it is a table.
            **options: Keyword arguments of :class:`FeatureSpecAccumulator`.
        """
        if isinstance(data, pa.Table):
            schema, data = data.schema, data.to_batches()
        if schema is None:
            raise TypeError("FeatureSpec.fit needs schema= when given record batches")
        accumulator = FeatureSpecAccumulator(schema, roles, **options)
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
            names += [f"{c.name}.{part}_{fn}" for part, _, _ in CYCLES for fn in ("sin", "cos")]
            names.append(f"{c.name}.days")
        return names

    def transform(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Encode ``data`` into a float32 array of shape ``[rows, len(feature_names)]``
        (raw rows or ETL output alike; see :func:`components.data.encode.encode`)."""
        return encode(self, data)

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


@dataclass(frozen=True)
class FeatureRoles:
    """The id and target columns (never features) and the feature columns of each role.

    A role given as a list is checked against the data; a role left ``None`` is inferred
    from the column types.
    """

    id_column: str | None
    target: str | None
    numeric: Sequence[str] | None = None
    categorical: Sequence[str] | None = None
    timestamp: Sequence[str] | None = None

    def resolve(self, schema: pa.Schema) -> dict[str, list[str]]:
        """Decide which columns are numeric, categorical and timestamp features.

        Roles given as lists are checked against ``schema``; roles given as ``None`` are
        inferred from column types (integer/float: numeric; string/bool: categorical;
        timestamp/date: timestamp), skipping the id, the target and explicitly assigned columns.

        Returns:
            ``{"numeric": [...], "categorical": [...], "timestamp": [...]}`` in schema order.
        """
        given = {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "timestamp": self.timestamp,
        }
        reserved = {c for c in (self.id_column, self.target) if c is not None}
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
                f"no feature columns found among {schema.names} (id={self.id_column!r}, "
                f"target={self.target!r}); list them in features.numeric/categorical/timestamp"
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
        roles: FeatureRoles,
        *,
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
        self._id_column = roles.id_column
        self._target = roles.target
        self._max_categories = max_categories
        self.roles = roles.resolve(schema)
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
            days = epoch_days(as_timestamp(batch.column(name), name))
            moments.update(days[np.isfinite(days)])
        for name, counts in self._counts.items():
            value_counts = pc.value_counts(as_string(batch.column(name)))
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


def _finite(column: pa.Array) -> np.ndarray:
    x = pc.cast(column.drop_null(), pa.float64()).to_numpy(zero_copy_only=False)
    return x[np.isfinite(x)]
