"""The rows a rank trains and validates on: its share of the train stream, the validation
arrays (the validation split, or one held-out fold), and the cross-validation folds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from components.data.features import FeatureSpec
from components.data.labels import Target
from components.errors import DataError, ParamError
from components.io.files import iter_batches, split_parts
from components.names import SPLIT_TRAIN, SPLIT_VALIDATION
from components.params import TrainParams
from components.training.distributed import World
from components.training.stream import ShardStream, list_chunks

__all__ = ["fold_assignment", "training_data"]

READ_BATCH_ROWS = 262_144

Arrays = tuple[np.ndarray, np.ndarray]


def training_data(
    dataset_dir: str, spec: FeatureSpec, target: Target, params: TrainParams, world: World
) -> tuple[ShardStream, Arrays]:
    """This rank's training stream and the validation arrays (features, encoded labels).

    A variant naming a ``fold`` trains on the other folds of the train split and validates
    on this one; otherwise it trains on the train split and validates on the validation split.

    Raises:
        DataError: no train rows, or no validation rows.
        ParamError: a fold without fold settings.
    """
    columns = [*spec.input_columns, target.column]

    def transform(table: pa.Table) -> Arrays:
        return spec.transform(table), target.encode(table)

    train_parts = split_parts(dataset_dir, SPLIT_TRAIN)
    fold = (params.variant or {}).get("fold")
    keep = None
    if fold is not None:
        if params.cv is None:
            raise ParamError("train: variant names a fold but cv (the fold settings) is null")
        assignment = fold_assignment(
            train_parts,
            target,
            folds=params.cv.folds,
            stratify=params.cv.stratify,
            group_column=params.cv.group_column,
            seed=params.cv.seed,
        )
        keep = assignment != int(fold)
        validation = _read_rows(train_parts, columns, transform, ~keep)
    else:
        validation = _read_rows(
            split_parts(dataset_dir, SPLIT_VALIDATION), columns, transform, None
        )
    if len(validation[1]) == 0:
        raise DataError(
            f"the validation rows of {dataset_dir} are empty; add data or raise "
            "data.split.validation"
        )
    config = params.trainer
    stream = ShardStream(
        list_chunks(train_parts),
        columns,
        transform,
        global_batch=config.batch_size,
        rank=world.rank,
        world=world.size,
        seed=config.seed,
        buffer_rows=config.shuffle_buffer_rows,
        keep=keep,
    )
    if stream.rows == 0:
        raise DataError(
            f"the train split of {dataset_dir} has no rows; add data or raise its split fraction"
        )
    return stream, validation


def fold_assignment(
    parts: list[str],
    target: Target,
    *,
    folds: int,
    stratify: bool,
    group_column: str | None,
    seed: int,
) -> np.ndarray:
    """The fold (0..folds-1) of every row of the split, from a scan of its label/group columns.

    Stratified for classification when ``stratify``; rows sharing ``group_column`` stay in
    one fold. Deterministic for a seed, so every fold's branch computes the same assignment.

    Raises:
        DataError: fewer rows (or groups) than folds.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    columns = [target.column] + ([group_column] if group_column else [])
    labels, groups = [], []
    for path in parts:
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            labels.append(target.encode(batch))
            if group_column:
                groups.append(batch.column(group_column).to_numpy(zero_copy_only=False))
    y = np.concatenate(labels)
    group = np.concatenate(groups) if group_column else None
    count = len(np.unique(group)) if group is not None else len(y)
    if count < folds:
        what = f"groups of {group_column!r}" if group_column else "rows"
        raise DataError(
            f"the train split has {count} {what}, fewer than cv.folds={folds}; "
            "lower cv.folds or add data"
        )
    classification = stratify and target.task != "regression"
    if group is not None and classification:
        splitter: Any = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    elif group is not None:
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
    elif classification:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    assignment = np.empty(len(y), np.int16)
    for index, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y, group)):
        assignment[held_out] = index
    return assignment


def _read_rows(
    parts: list[str],
    columns: list[str],
    transform: Callable[[pa.Table], Arrays],
    mask: np.ndarray | None,
) -> Arrays:
    """Every row of ``parts`` (where ``mask`` is true), transformed to arrays."""
    features, labels, offset = [], [], 0
    for path in parts:
        for batch in iter_batches(path, columns, READ_BATCH_ROWS):
            x, y = transform(pa.Table.from_batches([batch]))
            if mask is not None:
                keep = mask[offset : offset + len(y)]
                x, y = x[keep], y[keep]
            offset += batch.num_rows
            features.append(x)
            labels.append(y)
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return np.concatenate(features), np.concatenate(labels)
