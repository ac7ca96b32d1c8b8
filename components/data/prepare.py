"""Row-level transforms declared in ``configs/features/*.yaml``, applied before encoding.

A :class:`Prepare` turns a raw record batch into the columns the feature spec encodes, in
this order: rename, null fills and clipping, derived columns from arithmetic expressions,
timestamp parts (fills and clips of derived columns after them), user transforms named by
import path (``_target_``), then select/drop. ETL applies it to
every row it writes, and :class:`components.data.features.FeatureSpec` stores it and applies it
again before encoding, so scoring raw rows gives the same features as scoring ETL output.
That works because every step is idempotent: renames apply when the old name is present,
derived columns, timestamp parts and user transforms run only when their output columns are
absent, and fills and clips give the same result twice. A user transform is a function
``f(batch, **kwargs) -> batch``; list the columns it adds under ``adds`` so that it is
skipped on data that already has them (otherwise it must itself be idempotent).
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.binding import bind_target
from components.errors import DataError, ParamError

__all__ = ["TIMESTAMP_PARTS", "Prepare"]

TIMESTAMP_PARTS: dict[str, Callable[[pa.Array], pa.Array]] = {
    "year": pc.year,
    "month": pc.month,
    "day": pc.day,
    "hour": pc.hour,
    "minute": pc.minute,
    "day_of_week": pc.day_of_week,
    "day_of_year": pc.day_of_year,
}
_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "abs": np.abs,
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "min": np.minimum,
    "max": np.maximum,
    "where": np.where,
}
_BINARY = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
    ast.Mod: np.mod,
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}


@dataclass(frozen=True)
class Prepare:
    """The declared row-level transforms; ``to_dict()`` is stored in the feature spec."""

    rename: dict[str, str] = field(default_factory=dict)
    derive: dict[str, str] = field(default_factory=dict)
    timestamp_parts: dict[str, list[str]] = field(default_factory=dict)
    fill: dict[str, Any] = field(default_factory=dict)
    clip: dict[str, list[float | None]] = field(default_factory=dict)
    transforms: list[dict[str, Any]] = field(default_factory=list)
    select: list[str] | None = None
    drop: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Prepare:
        """Build from the ``features`` params (unknown keys are ignored: they are roles)."""
        d = d or {}
        prepare = cls(
            rename=dict(d.get("rename") or {}),
            derive=dict(d.get("derive") or {}),
            timestamp_parts={k: list(v) for k, v in (d.get("timestamp_parts") or {}).items()},
            fill=dict(d.get("fill") or {}),
            clip={k: list(v) for k, v in (d.get("clip") or {}).items()},
            transforms=[dict(t) for t in d.get("transforms") or ()],
            select=list(d["select"]) if d.get("select") is not None else None,
            drop=list(d.get("drop") or ()),
        )
        prepare._check()
        return prepare

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (part of the feature spec's content and version)."""
        return {
            "rename": self.rename,
            "derive": self.derive,
            "timestamp_parts": self.timestamp_parts,
            "fill": self.fill,
            "clip": self.clip,
            "transforms": self.transforms,
            "select": self.select,
            "drop": self.drop,
        }

    @property
    def empty(self) -> bool:
        """True when the batch passes through unchanged."""
        return not any(self.to_dict().values())

    def source_columns(self, columns: set[str]) -> list[str] | None:
        """The source columns that prepared ``columns`` come from (a renamed one under its
        source name), or None when any source column may feed them: with user transforms
        (they may read any column) or when one of ``columns`` is derived."""
        if self.transforms:
            return None
        derived = set(self.derive) | {
            f"{column}_{part}" for column, parts in self.timestamp_parts.items() for part in parts
        }
        if columns & derived:
            return None
        found = set(columns)
        while more := {old for old, new in self.rename.items() if new in found} - found:
            found |= more
        return sorted(found)

    def _check(self) -> None:
        for name, expression in self.derive.items():
            _parse(expression, name)
        for column, parts in self.timestamp_parts.items():
            unknown = sorted(set(parts) - set(TIMESTAMP_PARTS))
            if unknown:
                raise ParamError(
                    f"features.timestamp_parts.{column} lists {unknown}; expected some of "
                    f"{list(TIMESTAMP_PARTS)}"
                )
        for column, bounds in self.clip.items():
            if len(bounds) != 2:
                raise ParamError(
                    f"features.clip.{column}={bounds} is invalid; expected [low, high] "
                    "(null for no bound)"
                )
        for spec in self.transforms:
            _user_transform(spec)

    def _fill_and_clip(self, columns: dict[str, pa.Array], *, pending: bool, strict: bool) -> None:
        """Fill and clip raw columns before deriving from them (``pending=False``), then the
        derived ones (``pending=True``); a column missing at the end is an error."""
        for name, value in self.fill.items():
            if (not pending or not strict) and name not in columns:
                continue
            column = _column(columns, name, "fill")
            if pa.types.is_null(column.type):
                column = column.cast(pa.scalar(value).type)
            if column.null_count:
                columns[name] = pc.fill_null(column, pa.scalar(value).cast(column.type))
        for name, (low, high) in self.clip.items():
            if (not pending or not strict) and name not in columns:
                continue
            column = _column(columns, name, "clip")
            if low is not None:
                column = pc.max_element_wise(column, pa.scalar(low).cast(column.type))
            if high is not None:
                column = pc.min_element_wise(column, pa.scalar(high).cast(column.type))
            columns[name] = column

    def __call__(self, batch: pa.RecordBatch, *, strict: bool = True) -> pa.RecordBatch:
        """Apply the transforms to ``batch`` (idempotent: prepared data passes unchanged).

        ``strict=False`` (the feature spec on a selection of prepared columns) skips the
        transforms whose columns are absent instead of failing.
        """
        if self.empty:
            return batch
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        for old, new in self.rename.items():
            if old in columns and new not in columns:
                columns = {new if k == old else k: v for k, v in columns.items()}
        self._fill_and_clip(columns, pending=False, strict=strict)
        for name, expression in self.derive.items():
            if name in columns:
                continue
            tree = _parse(expression, name)
            if not strict and not _names(tree) <= set(columns):
                continue
            columns[name] = pa.array(_evaluate(tree, columns, name))
        for column, parts in self.timestamp_parts.items():
            for part in parts:
                name = f"{column}_{part}"
                if name not in columns and (strict or column in columns):
                    source = _column(columns, column, f"timestamp_parts.{column}")
                    if pa.types.is_date(source.type):
                        source = pc.cast(source, pa.timestamp("s"))
                    columns[name] = pc.cast(TIMESTAMP_PARTS[part](source), pa.int32())
        self._fill_and_clip(columns, pending=True, strict=strict)
        out = pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))
        for spec in self.transforms:
            adds = spec.get("adds") or []
            if not adds or any(name not in out.schema.names for name in adds):
                out = _apply_user(spec, out)
        keep = self.select if self.select is not None else out.schema.names
        keep = [n for n in keep if n not in set(self.drop)]
        present = [n for n in keep if n in out.schema.names]
        return out.select(present)


def _column(columns: dict[str, pa.Array], name: str, key: str) -> pa.Array:
    if name not in columns:
        raise DataError(
            f"features.{key} names column {name!r}, which is not in the data (it has "
            f"{list(columns)}); fix the name"
        )
    return columns[name]


@functools.cache
def _parse(expression: str, name: str) -> ast.Expression:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise ParamError(
            f"features.derive.{name}={expression!r} is not an expression: {e.msg}"
        ) from None
    for node in ast.walk(tree):
        allowed = (
            ast.Expression,
            ast.BinOp,
            ast.UnaryOp,
            ast.Compare,
            ast.Call,
            ast.Name,
            ast.Constant,
            ast.Load,
            ast.USub,
            ast.UAdd,
            *_BINARY,
        )
        if not isinstance(node, allowed):
            raise ParamError(
                f"features.derive.{name}={expression!r} uses {type(node).__name__}; expected "
                f"arithmetic, comparisons and the functions {sorted(_FUNCTIONS)}"
            )
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
        ):
            raise ParamError(
                f"features.derive.{name}={expression!r} calls an unknown function; expected "
                f"one of {sorted(_FUNCTIONS)}"
            )
    return tree


def _names(tree: ast.AST) -> set[str]:
    """Column names an expression reads (not its function names or constants)."""
    functions = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and id(n) not in functions and n.id not in ("pi", "e")
    }


def _evaluate(tree: ast.AST, columns: dict[str, pa.Array], name: str) -> np.ndarray:
    """Evaluate over float64 numpy arrays (nulls as NaN); NaN results become nulls."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id in ("pi", "e") and node.id not in columns:
                return math.pi if node.id == "pi" else math.e
            column = _column(columns, node.id, f"derive.{name}")
            return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Compare):
            left = value(node.left)
            result: Any = True
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = value(comparator)
                result = np.logical_and(result, _BINARY[type(op)](left, right))
                left = right
            return np.asarray(result, dtype=np.float64)
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(value(a) for a in node.args))

    rows = len(next(iter(columns.values()))) if columns else 0
    with np.errstate(all="ignore"):
        result = np.broadcast_to(np.asarray(value(tree), dtype=np.float64), (rows,))
    return np.where(np.isfinite(result), result, np.nan)


def _user_transform(spec: dict[str, Any]) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    return bind_target(
        spec,
        key="features.transforms",
        example="mypackage.transforms.add_ratio",
        ignore=("adds",),
    )


def _apply_user(spec: dict[str, Any], batch: pa.RecordBatch) -> pa.RecordBatch:
    result = _user_transform(spec)(batch)
    if isinstance(result, pa.Table):
        result = result.combine_chunks().to_batches()[0] if result.num_rows else None
    if not isinstance(result, pa.RecordBatch):
        raise DataError(
            f"user transform {spec['_target_']} returned {type(result).__name__}; expected a "
            "pyarrow.RecordBatch with the same rows"
        )
    if result.num_rows != batch.num_rows:
        raise DataError(
            f"user transform {spec['_target_']} returned {result.num_rows} rows for "
            f"{batch.num_rows}; transforms must keep every row (filter with drop_nulls)"
        )
    return result
