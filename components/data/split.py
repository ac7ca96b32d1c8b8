"""Keyed row hashes and what etl decides with them: each row's split and scoring shard, the
per-class cut points of a stratified split, and whether ids repeat.

A row's split and shard come from a keyed hash of its id (of the whole row's text without
an id column), never from its position, so a row keeps both when rows are appended or files
reordered. A stratified split first builds, per target class, a histogram of the split
hash's top :data:`STRATA_BITS` bits and gives each class its own cut points at the split
fractions (:class:`Strata`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.errors import DataError
from components.names import SPLITS

__all__ = ["MAX_CLASSES", "STRATA_BINS", "STRATA_BITS", "IdHashes", "RowHasher", "Strata"]

STRATA_BITS = 16
STRATA_BINS = 1 << STRATA_BITS  # histogram bins of the split hash per target class
MAX_CLASSES = 128  # bounds the stratify histograms to 128 x 2^16 x 8 bytes = 64 MiB
ID_BUCKET_BITS = 8
ID_BUCKETS = 1 << ID_BUCKET_BITS  # spill files of id hashes for the uniqueness check


class RowHasher:
    """Keyed 64-bit hashes of row ids, and the split and the shard they put each row in.

    SipHash (``pandas.util.hash_array``) of the id text, keyed by the seed: stable across
    processes, platforms and row positions. Without an id column, the whole row's text is
    hashed. The shard re-mixes the split hash with a second key, so it is independent of
    the split. With ``strata``, rows of a known target class are split at their class's cut
    points instead.
    """

    def __init__(
        self,
        *,
        id_column: str | None,
        seed: int,
        fractions: tuple[float, float, float],
        shards: int,
        strata: Strata | None = None,
    ) -> None:
        self._id_column = id_column
        self._strata = strata
        digest = hashlib.sha256(f"kfbatch-etl:{seed}".encode()).digest()
        self._key = digest[:16].hex()[:16]
        self._shard_key = np.uint64(int.from_bytes(digest[16:24], "little"))
        self._shards = np.uint64(shards)
        self._bounds = np.cumsum(fractions)
        self._bounds[-1] = 1.0

    def hash(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        """The keyed 64-bit split hash of every row of ``batch``; ``offset`` locates errors."""
        if self._id_column is not None:
            ids = batch.column(self._id_column)
            if ids.null_count:
                first = offset + pc.index(pc.is_null(ids), True).as_py() + 1
                raise DataError(
                    f"id column {self._id_column!r} is empty in {ids.null_count} rows (first "
                    f"at data row {first}); every row needs an id: fill them in"
                )
        else:
            ids = pc.binary_join_element_wise(
                *(pc.cast(c, pa.string()) for c in batch.columns),
                "\x1f",
                null_handling="replace",
                null_replacement="\x00",
            )
        values = ids.to_numpy(zero_copy_only=False)
        return pd.util.hash_array(values, encoding="utf8", hash_key=self._key, categorize=False)

    def split(self, batch: pa.RecordBatch, hashes: np.ndarray) -> np.ndarray:
        """Split index per row (positions in :data:`components.names.SPLITS`)."""
        split = np.searchsorted(self._bounds, (hashes >> np.uint64(11)) * 2.0**-53, side="right")
        if self._strata is not None:
            split = self._strata.split(batch, hashes, split)
        return split.astype(np.intp)

    def shard(self, hashes: np.ndarray) -> np.ndarray:
        """Scoring shard index per row."""
        return (_mix64(hashes ^ self._shard_key) % self._shards).astype(np.intp)


class Strata:
    """Stratified split: per target class, cut points on the split hash at the fractions.

    The first pass counts each class's rows in :data:`STRATA_BINS` bins of the hash's top
    bits (bounded memory: no entry per row). :meth:`fit` then puts each class's cut points
    on the bin edges whose row counts below come nearest to the fractions of the class
    (ties: the edge nearest the unstratified cut), so each class's split sizes are exact up
    to the rows of one bin. A row goes to train below its class's first cut, to validation
    below the second, to test above. Rows with a null target (or a class the first pass did
    not see) keep the unstratified rule. Appending rows moves cut points a little: only
    existing rows whose hashes lie between a class's old and new cut change split.
    """

    def __init__(self, target: str, fractions: tuple[float, float, float]) -> None:
        self._target = target
        self._bounds = np.cumsum(fractions)[:2]
        self._index: dict[str, int] = {}
        self._counts: list[np.ndarray] = []
        self._cuts = np.zeros((0, 2), dtype=np.uint64)
        self._written = np.zeros((1, len(SPLITS)), dtype=np.int64)

    @property
    def classes(self) -> int:
        return len(self._index)

    def _classes(self, batch: pa.RecordBatch, *, grow: bool) -> np.ndarray:
        """Class index per row: -1 for a null target or, unless ``grow``, an unseen class."""
        labels = pc.cast(batch.column(self._target), pa.string())
        if grow:
            for value in pc.unique(labels.drop_null()).to_pylist():
                if value in self._index:
                    continue
                if len(self._index) >= MAX_CLASSES:
                    raise DataError(
                        f"the target has more than {MAX_CLASSES} distinct values (e.g. "
                        f"{value!r}); split.stratify is for class labels: set "
                        "data.split.stratify=false for this target"
                    )
                self._index[value] = len(self._index)
                self._counts.append(np.zeros(STRATA_BINS, dtype=np.int64))
        if not self._index:
            return np.full(len(labels), -1, dtype=np.intp)
        found = pc.index_in(labels, value_set=pa.array(list(self._index), pa.string()))
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.intp)

    def add(self, batch: pa.RecordBatch, hashes: np.ndarray) -> None:
        """Count rows per class and hash bin (first pass)."""
        classes = self._classes(batch, grow=True)
        bins = (hashes >> np.uint64(64 - STRATA_BITS)).astype(np.intp)
        for k in np.unique(classes[classes >= 0]):
            self._counts[k] += np.bincount(bins[classes == k], minlength=STRATA_BINS)

    def fit(self) -> None:
        """Place every class's two cut points (bin edges 0..STRATA_BINS)."""
        cuts = []
        for counts in self._counts:
            below = np.concatenate([[0], np.cumsum(counts)])  # rows in the bins below edge k
            edges = []
            for bound in self._bounds:
                error = np.abs(below - bound * below[-1])
                best = np.flatnonzero(error <= error.min() + 1e-9)
                edges.append(int(best[np.argmin(np.abs(best - bound * STRATA_BINS))]))
            cuts.append(edges)
        self._cuts = np.asarray(cuts, dtype=np.uint64).reshape(-1, 2)
        self._written = np.zeros((self.classes + 1, len(SPLITS)), dtype=np.int64)

    def split(
        self, batch: pa.RecordBatch, hashes: np.ndarray, unstratified: np.ndarray
    ) -> np.ndarray:
        """Split index per row (second pass), ``unstratified`` for rows of no known class;
        counts the rows written per class and split."""
        classes = self._classes(batch, grow=False)
        known = classes >= 0
        split = unstratified.astype(np.intp)
        bins = hashes[known] >> np.uint64(64 - STRATA_BITS)
        cuts = self._cuts[classes[known]]
        split[known] = (bins >= cuts[:, 0]).astype(np.intp) + (bins >= cuts[:, 1])
        cell = np.where(known, classes, self.classes) * len(SPLITS) + split
        written = np.bincount(cell, minlength=self._written.size)
        self._written += written.reshape(self._written.shape)
        return split

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``stratified`` entry: rows written per class and split, cuts."""
        return {
            "target": self._target,
            "bins": STRATA_BINS,
            "classes": {
                label: {
                    **dict(zip(SPLITS, self._written[k].tolist(), strict=True)),
                    "cuts": self._cuts[k].tolist(),
                }
                for label, k in self._index.items()
            },
            "unstratified": dict(zip(SPLITS, self._written[-1].tolist(), strict=True)),
        }


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective 64-bit mixing function."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class IdHashes:
    """Counts repeated ids in bounded memory: the keyed 64-bit hash of every id goes to one
    of :data:`ID_BUCKETS` spill files by its top bits, and each file is checked alone.

    Two different ids share a hash with probability ~n^2/2^65 (about 3e-6 for 10M rows).
    """

    def __init__(self, directory: str) -> None:
        self._dir = tempfile.mkdtemp(prefix=".id-hashes-", dir=directory)
        self._files = [open(os.path.join(self._dir, f"{k:03d}"), "wb") for k in range(ID_BUCKETS)]  # noqa: SIM115

    def add(self, hashes: np.ndarray) -> None:
        bucket = (hashes >> np.uint64(64 - ID_BUCKET_BITS)).astype(np.intp)
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=ID_BUCKETS)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        ordered = hashes[order]
        for k in np.flatnonzero(counts):
            self._files[k].write(ordered[offsets[k] : offsets[k + 1]].tobytes())

    def repeated(self) -> int:
        """Rows whose id hash was seen before (0 when every id is unique)."""
        for f in self._files:
            f.close()
        total = 0
        for k in range(ID_BUCKETS):
            values = np.fromfile(os.path.join(self._dir, f"{k:03d}"), dtype=np.uint64)
            total += values.size - np.unique(values).size
        return total

    def close(self) -> None:
        for f in self._files:
            f.close()
        shutil.rmtree(self._dir, ignore_errors=True)
