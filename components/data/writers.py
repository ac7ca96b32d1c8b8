"""The etl outputs' Parquet writers: every row to its split's file and, independently, to
its scoring shard's file, and the digests the manifests list.

Each output file has one buffered :class:`components.io.files.ParquetSink`. One encoding
thread serves the splits and one the shards (each keeps its files' row groups in order);
both overlap with parsing in the calling thread (PERF-NOTES: encoding is 40-50% of a
CSV -> Parquet pass).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from components.io.files import ParquetSink, scoring_shard_path, sha256_file
from components.names import SPLITS

__all__ = ["PENDING_ROWS_BUDGET", "OutputWriters", "parquet_digests"]

# Rows buffered across the scoring shard writers before the largest one is flushed early;
# bounds memory when there are many shards. Split writers are never flushed early, so the
# row groups of the dataset do not depend on the shard count.
PENDING_ROWS_BUDGET = 1_000_000


class OutputWriters:
    """One Parquet file per split (``<dataset>/<split>/part-00000.parquet``) and per scoring
    shard; ``on_train`` sees every batch of train rows as it is written, and ``plain``
    columns are written without dictionary encoding (unique ids).

    As a context manager, an exception aborts every file (none is left half-written).
    """

    def __init__(
        self,
        schema: pa.Schema,
        dataset_dir: str,
        scoring_dir: str,
        shards: int,
        *,
        plain: list[str],
        on_train: Callable[[pa.RecordBatch], None],
    ) -> None:
        self._split_pool = ThreadPoolExecutor(1, thread_name_prefix="etl-splits")
        self._shard_pool = ThreadPoolExecutor(1, thread_name_prefix="etl-shards")
        self._splits = [
            ParquetSink(
                os.path.join(dataset_dir, s, "part-00000.parquet"),
                schema,
                executor=self._split_pool,
                plain=plain,
            )
            for s in SPLITS
        ]
        self._shards = [
            ParquetSink(
                scoring_shard_path(scoring_dir, k), schema, executor=self._shard_pool, plain=plain
            )
            for k in range(shards)
        ]
        self._on_train = on_train

    def write(self, batch: pa.RecordBatch, splits: np.ndarray, shards: np.ndarray) -> None:
        """Write each row of ``batch`` to its split (``splits[i]``) and shard (``shards[i]``)."""
        for split, part in _partition(batch, splits, len(SPLITS)):
            self._splits[split].write(part)
            if split == 0:
                self._on_train(part)
        for shard, part in _partition(batch, shards, len(self._shards)):
            self._shards[shard].write(part)
        while sum(s.pending_rows for s in self._shards) > PENDING_ROWS_BUDGET:
            max(self._shards, key=lambda s: s.pending_rows).flush()

    def close(self) -> tuple[list[int], list[int]]:
        """Finish every file; return the rows written per split and per shard."""
        return [s.close() for s in self._splits], [s.close() for s in self._shards]

    def __enter__(self) -> OutputWriters:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is not None:
                for sink in self._splits + self._shards:
                    sink.abort()
        finally:
            self._split_pool.shutdown()
            self._shard_pool.shutdown()


def _partition(
    batch: pa.RecordBatch, keys: np.ndarray, groups: int
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (group, rows of the group in their original order) for non-empty groups."""
    if groups == 1:
        yield 0, batch
        return
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=groups)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for group in np.flatnonzero(counts):
        yield int(group), batch.take(order[offsets[group] : offsets[group + 1]])


def parquet_digests(directory: str) -> dict[str, dict[str, Any]]:
    """sha256 and size of every Parquet file under ``directory``, by relative path."""
    found = {}
    for root, _, names in sorted(os.walk(directory)):
        for name in sorted(names):
            if name.endswith(".parquet"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, directory)
                found[rel] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    return found
