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
#: Functions a derived column may call, as pyarrow kernels (null in, null out).
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": pc.abs_checked,
    "log": pc.ln,
    "log1p": pc.log1p,
    "exp": pc.exp,
    "sqrt": pc.sqrt,
    "min": lambda *a: pc.min_element_wise(*a, skip_nulls=False),
    "max": lambda *a: pc.max_element_wise(*a, skip_nulls=False),
    "where": lambda condition, yes, no: pc.if_else(_truth(condition), yes, no),
}
#: Arithmetic kept exact on integers (checked: an overflow is an error, not a wrap-around).
_ARITHMETIC = {ast.Add: pc.add_checked, ast.Sub: pc.subtract_checked, ast.Mult: pc.multiply_checked}
_COMPARISONS = {
    ast.Lt: pc.less,
    ast.LtE: pc.less_equal,
    ast.Gt: pc.greater,
    ast.GtE: pc.greater_equal,
    ast.Eq: pc.equal,
    ast.NotEq: pc.not_equal,
}
_OPERATORS = (*_ARITHMETIC, ast.Div, ast.Pow, ast.Mod, *_COMPARISONS)


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
    #: Rows per derived column whose division (``/`` or ``%``) by zero gave null, so far.
    division_by_zero: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

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
            columns[name], zeros = _evaluate(tree, columns, name)
            if zeros:
                self.division_by_zero[name] = self.division_by_zero.get(name, 0) + zeros
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
            *_OPERATORS,
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


def _evaluate(tree: ast.AST, columns: dict[str, pa.Array], name: str) -> tuple[pa.Array, int]:
    """The derived column and how many of its rows divided by zero.

    SQL-like semantics on pyarrow kernels: a null input gives null, comparisons and ``where``
    on null are null (``and`` of a chained comparison is Kleene's), integer ``+ - * %`` and
    ``**`` with a non-negative integer exponent stay integer, ``/`` is true division, a
    division by zero is null (and counted), and a result that is not finite (``log(0)``,
    ``sqrt(-1)``) is null.

    Raises:
        DataError: the columns' types do not support the expression, or an integer overflows.
    """
    zeros = 0
    rows = len(next(iter(columns.values()))) if columns else 0

    def divisor(right: Any) -> Any:
        nonlocal zeros
        if isinstance(right, pa.Scalar):
            if right.as_py() == 0:
                zeros += rows
                return pa.scalar(None, right.type)
            return right
        is_zero = pc.equal(right, 0)
        zeros += int(pc.sum(pc.cast(is_zero, pa.int64())).as_py() or 0)
        return pc.if_else(is_zero, pa.scalar(None, right.type), right)

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        if isinstance(node, ast.Name):
            if node.id in ("pi", "e") and node.id not in columns:
                return pa.scalar(math.pi if node.id == "pi" else math.e)
            return _column(columns, node.id, f"derive.{name}")
        if isinstance(node, ast.UnaryOp):
            operand = value(node.operand)
            return pc.negate_checked(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = value(node.left), value(node.right)
            op = type(node.op)
            if op in _ARITHMETIC:
                return _ARITHMETIC[op](left, right)
            if op is ast.Div:
                return pc.divide(_float(left), divisor(_float(right)))
            if op is ast.Mod:
                return pc.modulo(left, divisor(right))
            if _integer(left) and _integer(right) and _non_negative(right):
                return pc.power_checked(left, right)
            return pc.power(_float(left), _float(right))
        if isinstance(node, ast.Compare):
            left, result = value(node.left), None
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = value(comparator)
                step = _COMPARISONS[type(op)](left, right)
                result = step if result is None else pc.and_kleene(result, step)
                left = right
            return result
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(value(a) for a in node.args))

    try:
        result = value(tree)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise DataError(
            f"features.derive.{name} cannot be computed on these columns: {e}; fix the "
            "expression or the column types (data.columns)"
        ) from None
    if isinstance(result, pa.Scalar):  # a constant expression
        result = pa.repeat(result, rows)
    if pa.types.is_floating(result.type):
        result = pc.if_else(pc.is_finite(result), result, pa.scalar(None, result.type))
    return result, zeros


def _truth(condition: Any) -> Any:
    """A ``where`` condition as booleans (a number is true when not zero)."""
    if pa.types.is_boolean(condition.type):
        return condition
    return pc.not_equal(condition, 0)


def _float(value: Any) -> Any:
    return value if pa.types.is_floating(value.type) else pc.cast(value, pa.float64())


def _integer(value: Any) -> bool:
    return pa.types.is_integer(value.type)


def _non_negative(value: Any) -> bool:
    smallest = value if isinstance(value, pa.Scalar) else pc.min(value)
    return smallest.as_py() is None or smallest.as_py() >= 0


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
