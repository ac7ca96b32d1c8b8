"""What a scoring shard reads: an etl scoring set, or Parquet/CSV data from outside the pipeline.

An etl ``scoring`` output already holds one ``shard-<k>.parquet`` per shard and a manifest
with the id column and row counts. Any other path (a Parquet or CSV file, or a directory of
them) is cut into units from file metadata alone, so that every shard step and the publish
step agree on the split without talking to each other: Parquet rows, in file and row-group
order, are cut into equal contiguous ranges (a shard's last row group may be shared with the
next shard, each reading its own rows of it), so that shards finish together; CSV files,
whose row counts would take a pass to learn, are dealt round-robin as whole files.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.errors import DataError
from components.io import MANIFEST_FILE, read_manifest, scoring_shard_path

__all__ = [
    "ScoringPlan",
    "Unit",
    "marker_path",
    "part_path",
    "plan_scoring",
    "read_batches",
]

_SUFFIXES = (".parquet", ".csv")
_EDGE_BYTES = 1 << 16


@dataclass(frozen=True)
class Unit:
    """A slice of input: a whole Parquet or CSV file, or rows ``start..stop`` (None: to the
    end) of one Parquet row group."""

    path: str
    row_group: int | None = None
    start: int = 0
    stop: int | None = None

    @property
    def is_csv(self) -> bool:
        """Whether the unit is a CSV file."""
        return self.path.endswith(".csv")

    def rows(self) -> int:
        """Rows in the unit (a CSV file is counted by streaming through it)."""
        if self.is_csv:
            return sum(batch.num_rows for batch in pacsv.open_csv(self.path))
        metadata = pq.ParquetFile(self.path).metadata
        if self.row_group is None:
            return metadata.num_rows
        stop = metadata.row_group(self.row_group).num_rows if self.stop is None else self.stop
        return stop - self.start


@dataclass(frozen=True)
class ScoringPlan:
    """Which units each shard scores, and the column that keys predictions."""

    source: str
    id_column: str
    shards: tuple[tuple[Unit, ...], ...]
    etl_rows: tuple[int, ...] | None = None

    def expected_rows(self, shard: int) -> int:
        """Rows shard ``shard`` must predict."""
        if self.etl_rows is not None:
            return self.etl_rows[shard]
        return sum(unit.rows() for unit in self.shards[shard])

    def fingerprint(self, shard: int) -> str:
        """A digest of shard ``shard``'s input files: their names, sizes, first and last
        64 KiB (a Parquet footer summarises every row group), and the unit layout."""
        digest = hashlib.sha256(json.dumps([self.id_column, len(self.shards)]).encode())
        for unit in self.shards[shard]:
            size = os.path.getsize(unit.path)
            where = f"{os.path.basename(unit.path)}:{unit.row_group}:{unit.start}:{unit.stop}"
            digest.update(f"{where}:{size}".encode())
            with open(unit.path, "rb") as f:
                digest.update(f.read(_EDGE_BYTES))
                f.seek(max(size - _EDGE_BYTES, 0))
                digest.update(f.read(_EDGE_BYTES))
        return digest.hexdigest()


def part_path(directory: str, shard: int) -> str:
    """The predictions file of shard ``shard``."""
    return os.path.join(directory, f"part-{shard:05d}.parquet")


def marker_path(directory: str, shard: int) -> str:
    """The commit marker of shard ``shard``, written after its predictions file."""
    return os.path.join(directory, f"_shard-{shard:05d}.json")


def plan_scoring(source: str, shards: int, id_column: str | None) -> ScoringPlan:
    """Split ``source`` into ``shards`` shards.

    Args:
        source: An etl ``scoring`` directory, or a Parquet/CSV file or directory of them.
        shards: The fan-out width; an etl scoring set must have exactly this many shards.
        id_column: The id column of external data (an etl scoring set records its own).
    """
    if os.path.isfile(os.path.join(source, MANIFEST_FILE)):
        manifest = read_manifest(source)
        counts = tuple(int(n) for n in manifest["shards"])
        if manifest["id_column"] is None:
            raise DataError(
                f"scoring set {source} has no id column, so predictions cannot be keyed; "
                "re-run etl with id_column set"
            )
        if shards != len(counts):
            raise DataError(
                f"scoring set {source} has {len(counts)} shards but inference.shards={shards}; "
                f"fan inference out over exactly {len(counts)} shards"
            )
        units = tuple((Unit(scoring_shard_path(source, k)),) for k in range(len(counts)))
        return ScoringPlan(source, manifest["id_column"], units, counts)
    if id_column is None:
        raise DataError(
            f"no id column is known for {source}, so predictions cannot be keyed; set "
            "data.id_column to the column that identifies rows"
        )
    files = _files(source)
    csv = [Unit(path) for path in files if path.endswith(".csv")]
    parquet = _parquet_ranges([path for path in files if not path.endswith(".csv")], shards)
    return ScoringPlan(
        source, id_column, tuple((*parquet[k], *csv[k::shards]) for k in range(shards))
    )


def read_batches(
    units: tuple[Unit, ...], columns: list[str] | None, rows: int
) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` (None: all) of ``units`` in record batches of at most ``rows`` rows.

    Parquet is read without pre-buffering (it grows memory through the file, PERF-NOTES)
    and on the calling thread only, so that decoding does not compete with the model's
    threads.
    """
    for unit in units:
        if unit.is_csv:
            options = pacsv.ConvertOptions(include_columns=columns)
            reader = pacsv.open_csv(unit.path, convert_options=options)
            _check_columns(unit.path, reader.schema.names, columns)
            yield from reader
            continue
        parquet = pq.ParquetFile(unit.path, pre_buffer=False)
        _check_columns(unit.path, parquet.schema_arrow.names, columns)
        groups = None if unit.row_group is None else [unit.row_group]
        batches = parquet.iter_batches(
            batch_size=rows, row_groups=groups, columns=columns, use_threads=False
        )
        yield from _rows_between(batches, unit.start, unit.stop)


def _rows_between(
    batches: Iterator[pa.RecordBatch], start: int, stop: int | None
) -> Iterator[pa.RecordBatch]:
    """The rows ``start..stop`` (None: to the end) of a stream of batches."""
    first = 0
    for batch in batches:
        lo, hi = max(start - first, 0), batch.num_rows if stop is None else stop - first
        first += batch.num_rows
        if hi <= 0:
            return
        if lo < batch.num_rows:
            yield batch if (lo, hi) == (0, batch.num_rows) else batch.slice(lo, hi - lo)


def _check_columns(path: str, names: list[str], columns: list[str] | None) -> None:
    missing = [c for c in columns or () if c not in names]
    if missing:
        raise DataError(
            f"{path} lacks columns {missing} (it has {names}); use data with the columns "
            "the model was trained on"
        )


def _files(source: str) -> list[str]:
    if os.path.isfile(source):
        files = [source]
    elif os.path.isdir(source):
        files = sorted(
            path
            for suffix in _SUFFIXES
            for path in glob.glob(
                os.path.join(glob.escape(source), f"**/*{suffix}"), recursive=True
            )
        )
    else:
        files = []
    if not files or any(not f.endswith(_SUFFIXES) for f in files):
        raise DataError(
            f"{source} is not an etl scoring set, a Parquet/CSV file or a directory holding "
            "them; point inference.data_uri at the data to score"
        )
    return files


def _parquet_ranges(paths: list[str], shards: int) -> list[list[Unit]]:
    """Cut the rows of ``paths`` (in order) into ``shards`` contiguous ranges whose sizes
    differ by at most one row, as row-group slices."""
    groups = [
        (path, g, metadata.row_group(g).num_rows)
        for path in paths
        for metadata in (pq.ParquetFile(path).metadata,)
        for g in range(metadata.num_row_groups)
    ]
    total = sum(rows for _, _, rows in groups)
    bounds = [total * k // shards for k in range(shards + 1)]
    ranges: list[list[Unit]] = [[] for _ in range(shards)]
    first = 0  # global index of the current row group's first row
    for path, group, rows in groups:
        for k in range(shards):
            lo, hi = max(bounds[k], first), min(bounds[k + 1], first + rows)
            if lo < hi:
                whole = lo == first and hi == first + rows
                start, stop = (0, None) if whole else (lo - first, hi - first)
                ranges[k].append(Unit(path, group, start, stop))
        first += rows
    return ranges
