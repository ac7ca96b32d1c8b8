"""The training target: which task it is, its classes, and how labels become numbers.

Fitted from the train split's target column (a one-column scan), stored in the model
artifact, and used by training and evaluation alike so that class index ``i`` always means
``classes[i]``. Class labels are the column's values as strings, sorted; for binary tasks
``classes[1]`` is the positive class (``1`` / ``true`` for 0/1 and boolean columns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.rejects import Reject
from components.errors import DataError, ParamError
from components.io.files import iter_batches
from components.names import TASKS

__all__ = ["MAX_CLASSES", "LabelGate", "Target", "fit_target"]

MAX_CLASSES = 1000  # more distinct labels than this is almost surely a regression target
READ_BATCH_ROWS = 262_144


@dataclass(frozen=True)
class Target:
    """A fitted target: ``task``, the target ``column`` and the sorted class labels."""

    task: str
    column: str
    classes: tuple[str, ...] = ()

    @property
    def output_dim(self) -> int:
        """Model outputs the task needs: the class count for multiclass, else 1."""
        return len(self.classes) if self.task == "multiclass" else 1

    def encode(self, data: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Labels of ``data``: float32 0/1 (binary), int64 class indices, or float32 values.

        Raises:
            DataError: the column is missing, has nulls, or holds a label unseen in training.
        """
        column = _target_column(data, self.column)
        if self.task == "regression":
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            if not np.isfinite(values).all():
                raise DataError(
                    f"target column {self.column!r} holds a non-finite value; clean the target "
                    "or drop those rows"
                )
            return values.astype(np.float32)
        codes = pc.index_in(_as_labels(column), pa.array(self.classes, pa.string()))
        if codes.null_count:
            unseen = pc.filter(_as_labels(column), pc.is_null(codes))[0].as_py()
            raise DataError(
                f"target column {self.column!r} holds {unseen!r}, which the train split never "
                f"has (classes: {list(self.classes)[:10]}); add such rows to the train split"
            )
        indices = codes.to_numpy(zero_copy_only=False).astype(np.int64)
        return indices.astype(np.float32) if self.task == "binary" else indices

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in the model artifact."""
        return {"task": self.task, "column": self.column, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        """Inverse of :meth:`to_dict`."""
        return cls(d["task"], d["column"], tuple(d.get("classes") or ()))


class LabelGate:
    """What ETL lets through as labels, batch by batch, so label surprises surface there.

    With declared ``classes`` (``data.classes``), a row whose label is another value is
    rejected with a reason; without them, a binary target with a third value (or a
    classification target with more than :data:`MAX_CLASSES` values) fails the step with the
    message the train step would give. Null labels pass (the train step refuses them).
    """

    def __init__(self, task: str, column: str, classes: list[str] | None) -> None:
        self.task, self.column = task, column
        self.classes = pa.array(classes, pa.string()) if classes is not None else None
        self.seen: set[str] = set()

    def __call__(
        self,
        data: pa.RecordBatch,
        source: str,
        rows: np.ndarray,
        reject: Callable[[Reject], None],
    ) -> pa.RecordBatch:
        """``data`` less the rows with an undeclared label (each rejected)."""
        if self.task == "regression" or self.column not in data.schema.names:
            return data  # a missing target is reported where the schema is checked
        column = data.column(self.column)
        if self.classes is None:  # the labels of the distinct values only: cheap per batch
            self.seen.update(_as_labels(pc.unique(pc.drop_null(column))).to_pylist())
            _check_label_count(self.task, self.column, sorted(self.seen, key=_label_order))
            return data
        labels = _as_labels(column)
        other = pc.invert(pc.is_in(labels, value_set=self.classes))  # null labels: null
        other = pc.fill_null(other, False).to_numpy(zero_copy_only=False)
        if not other.any():
            return data
        declared = self.classes.to_pylist()
        for i in np.flatnonzero(other):
            reason = (
                f"column {self.column!r}: label {labels[i].as_py()!r} is not one of "
                f"data.classes {declared}"
            )
            reject(Reject(source, None, int(rows[i]), reason, ""))
        return data.filter(pa.array(~other))


def _check_label_count(task: str, column: str, labels: list[str]) -> None:
    if task == "binary" and len(labels) > 2:
        raise DataError(
            f"data.task=binary but the target {column!r} has more than 2 distinct values "
            f"{labels[:10]}; expected exactly 2 (set data.task=multiclass for more, or list "
            "the expected labels in data.classes to quarantine rows with any other)"
        )
    if len(labels) > MAX_CLASSES:
        raise DataError(
            f"target column {column!r} has more than {MAX_CLASSES} distinct values; set "
            "data.task=regression for a numeric target"
        )


def fit_target(
    task: str, column: str, parts: Iterable[str], classes: list[str] | None = None
) -> Target:
    """Fit the target of ``task`` from the ``column`` of the Parquet ``parts`` (train split).

    Declared ``classes`` (``data.classes``) fix the labels and their order (for binary, the
    second is the positive class); otherwise they are the labels seen, sorted.

    Raises:
        ParamError: ``task`` is unknown.
        DataError: binary data without exactly two labels, multiclass data with fewer than
            two or more than :data:`MAX_CLASSES`, or a regression target that is not numeric.
    """
    if task not in TASKS:
        raise ParamError(f"data.task {task!r} is unknown; expected one of {list(TASKS)}")
    if task == "regression":
        for path in parts:
            for batch in iter_batches(path, [column], READ_BATCH_ROWS):
                kind = batch.schema.field(column).type
                if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                    raise DataError(
                        f"target column {column!r} is {kind}, not numeric; regression needs "
                        "a numeric target (or set data.task to binary or multiclass)"
                    )
                break
            break
        return Target(task, column)
    seen: set[str] = set()
    for path in parts:
        for batch in iter_batches(path, [column], READ_BATCH_ROWS):
            labels = _as_labels(_target_column(batch, column))
            seen.update(v for v in pc.unique(labels).to_pylist())
            if len(seen) > MAX_CLASSES:
                raise DataError(
                    f"target column {column!r} has more than {MAX_CLASSES} distinct values; "
                    "set data.task=regression for a numeric target"
                )
    if classes is not None:
        undeclared = sorted(seen - set(classes), key=_label_order)
        if undeclared:
            raise DataError(
                f"the train split's target {column!r} holds {undeclared[:10]}, which "
                f"data.classes {classes} does not list; re-run etl with these classes"
            )
        return Target(task, column, tuple(classes))
    classes = tuple(sorted(seen, key=_label_order))
    if task == "binary" and len(classes) != 2:
        raise DataError(
            f"data.task=binary but the train split's target {column!r} has "
            f"{len(classes)} distinct values {list(classes)[:10]}; expected exactly 2 "
            "(set data.task=multiclass for more)"
        )
    if task == "multiclass" and len(classes) < 2:
        raise DataError(
            f"the train split's target {column!r} has only {list(classes)}; multiclass "
            "needs at least 2 classes"
        )
    return Target(task, column, classes)


def _target_column(data: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    if name not in data.schema.names:
        raise DataError(
            f"target column {name!r} is missing from the input (it has {data.schema.names}); "
            "training and evaluation need labelled rows"
        )
    column = data.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise DataError(
            f"target column {name!r} is empty in {column.null_count} rows; label every row "
            "of the train, validation and test splits"
        )
    return column


def _as_labels(column: pa.Array) -> pa.Array:
    """Labels as strings; integral floats (1.0) read as integers (1), booleans as true/false."""
    if pa.types.is_floating(column.type):
        values = pc.drop_null(column).to_numpy(zero_copy_only=False)
        if np.all(values == np.round(values)):
            column = pc.cast(column, pa.int64())
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "true", "false")
    return pc.cast(column, pa.string())


def _label_order(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order before other labels; false before true."""
    try:
        return 0, float(label), label
    except ValueError:
        return 1, 0.0, label
