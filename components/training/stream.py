"""Streaming, shuffled, distributed batches over the Parquet parts of a dataset split.

The training set need not fit in memory: an epoch reads row groups in a seeded random
order, ``buffer_rows`` rows at a time, shuffles the rows inside each buffer, and cuts the
resulting stream into *global* batches. Each rank takes its contiguous slice of every global
batch, so 1 rank and N ranks see exactly the same global batches (only the split of the
work differs), and the order depends on ``(seed, epoch)`` alone: it is recomputed from the
Parquet metadata, which makes the sampler position just ``(epoch, batch index)`` and lets a
resumed run skip the buffers before its position without reading them.

Every rank reads every buffer it needs (read and feature transform are cheap next to a
training step) and keeps only its slice for the forward and backward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

__all__ = ["Chunk", "ShardStream", "list_chunks"]

Transform = Callable[[pa.Table], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Chunk:
    """One Parquet row group and where its rows start in the split's row numbering."""

    path: str
    row_group: int
    start: int
    rows: int


def list_chunks(parts: list[str]) -> list[Chunk]:
    """Row groups of ``parts`` in order, from the Parquet footers only."""
    chunks, start = [], 0
    for path in parts:
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            chunks.append(Chunk(path, group, start, rows))
            start += rows
    return chunks


class ShardStream:
    """Epochs of global batches over ``chunks``, sliced for ``rank`` of ``world``.

    Args:
        chunks: Row groups of the split (:func:`list_chunks`).
        columns: Columns to read.
        transform: Turns a table of ``columns`` into (features, labels) arrays.
        global_batch: Rows per global batch (across every rank).
        rank: This process's rank; ``world``: the number of ranks.
        seed: Seeds the order (combined with the epoch).
        buffer_rows: Rows shuffled together.
        keep: Optional boolean mask over the split's rows (a fold's training rows).
    """

    def __init__(
        self,
        chunks: list[Chunk],
        columns: list[str],
        transform: Transform,
        *,
        global_batch: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        buffer_rows: int = 262_144,
        keep: np.ndarray | None = None,
    ) -> None:
        self.chunks, self.columns, self.transform = chunks, columns, transform
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.seed, self.buffer_rows, self.keep = seed, buffer_rows, keep
        self.kept = [self._kept_rows(c) for c in chunks]
        self.rows = int(sum(self.kept))

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch (the last may be short)."""
        return math.ceil(self.rows / self.global_batch)

    def local_slice(self, size: int) -> slice:
        """This rank's rows of a global batch of ``size`` rows."""
        return slice(size * self.rank // self.world, size * (self.rank + 1) // self.world)

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Yield (features, labels, global batch size) for this rank, from ``start_batch`` on."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.chunks), generator=generator).tolist()
        skip_rows = start_batch * self.global_batch
        position = 0  # rows of the epoch's stream before the current buffer
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        pending_rows = 0
        for buffer in self._buffers(order):
            size = sum(self.kept[i] for i in buffer)
            permutation = torch.randperm(size, generator=generator).numpy()
            if position + size <= skip_rows:  # wholly before the resume position: skip reading
                position += size
                continue
            features, labels = self._read(buffer)
            features, labels = features[permutation], labels[permutation]
            drop = max(0, skip_rows - position)
            position += size
            pending.append((features[drop:], labels[drop:]))
            pending_rows += size - drop
            while pending_rows >= self.global_batch:
                x, y = _concat(pending)
                yield from self._slice(x[: self.global_batch], y[: self.global_batch])
                pending = [(x[self.global_batch :], y[self.global_batch :])]
                pending_rows -= self.global_batch
        if pending_rows:
            x, y = _concat(pending)
            yield from self._slice(x, y)

    def _slice(self, x: np.ndarray, y: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        part = self.local_slice(len(y))
        yield x[part], y[part], len(y)

    def _buffers(self, order: list[int]) -> Iterator[list[int]]:
        buffer: list[int] = []
        rows = 0
        for index in order:
            if not self.kept[index]:
                continue
            buffer.append(index)
            rows += self.kept[index]
            if rows >= self.buffer_rows:
                yield buffer
                buffer, rows = [], 0
        if buffer:
            yield buffer

    def _read(self, buffer: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pieces = []
        for index in buffer:
            chunk = self.chunks[index]
            table = pq.ParquetFile(chunk.path, pre_buffer=False).read_row_group(
                chunk.row_group, columns=self.columns
            )
            features, labels = self.transform(table)
            if self.keep is not None:
                mask = self.keep[chunk.start : chunk.start + chunk.rows]
                features, labels = features[mask], labels[mask]
            pieces.append((features, labels))
        return _concat(pieces)

    def _kept_rows(self, chunk: Chunk) -> int:
        if self.keep is None:
            return chunk.rows
        return int(self.keep[chunk.start : chunk.start + chunk.rows].sum())


def _concat(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(pieces) == 1:
        return pieces[0]
    return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
