"""What a scoring shard reads: an etl scoring set, or data from outside the pipeline.

An etl ``scoring`` output already holds one ``shard-<k>.parquet`` per shard and a manifest
with the id column and row counts. Any other source is found as the etl step finds its
source (:func:`components.data.sources.open_source`: a file, folder or glob, local or behind a
``file://``, ``s3://`` or ``gs://`` URI; CSV, JSON Lines or Parquet; the same ``data.*``
options) and cut into units from file metadata alone, so that every shard step and the
publish step agree on the split without talking to each other: Parquet rows, in file and
row-group order, are cut into equal contiguous ranges (a shard's last row group may be
shared with the next shard, each reading its own rows of it), so that shards finish
together; CSV and JSON Lines files, whose row counts would take a pass to learn, are dealt
round-robin as whole files.

Parquet is read directly (column projection, no pre-buffering, on the calling thread). CSV
and JSON Lines go through :func:`components.data.readers.read_batches`, so they are parsed and
cast as etl would (the id column as text), with the column types of the source's first
file in every shard; rows that cannot be read go to a reject callback, which the infer
step turns into ``_rejects-<k>.parquet`` (:class:`components.data.rejects.Rejects`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components.data.readers import count_records, read_batches
from components.data.rejects import Reject
from components.data.sources import SourceOptions, filesystem, open_source
from components.errors import DataError
from components.io.files import read_manifest, scoring_shard_path
from components.names import (
    MANIFEST_FILE,
    MODEL_META_FILE,
    part_file,
    shard_marker_file,
    shard_rejects_file,
)

__all__ = [
    "ScoringPlan",
    "Unit",
    "local_model",
    "marker_path",
    "part_path",
    "plan_scoring",
    "rejects_path",
]

_EDGE_BYTES = 1 << 16
_TEXT_FORMATS = ("csv", "jsonl")
#: How an etl scoring set is read: local Parquet shards the etl step wrote, in batches of
#: this many rows (the scorer re-slices them to its own batch size).
_SCORING_SET = SourceOptions(
    format="parquet",
    delimiter=",",
    quote_char='"',
    header=True,
    column_names=None,
    skip_rows=0,
    null_values=None,
    encoding="utf-8",
    decimal_point=".",
    columns={},
    id_column=None,
    storage_options={},
    batch_rows=32_768,
)


@dataclass(frozen=True)
class Unit:
    """A slice of input: a whole file, or rows ``start..stop`` (None: to the end) of one
    Parquet row group."""

    path: str
    row_group: int | None = None
    start: int = 0
    stop: int | None = None


@dataclass(frozen=True)
class ScoringPlan:
    """Which units each shard scores, how to read them, and the column that keys predictions.

    Attributes:
        format: ``parquet`` (an etl scoring set is Parquet), ``csv`` or ``jsonl``.
        fs: The filesystem the unit paths are on.
        options: How the source is parsed and reached (the etl step's source options).
        etl_rows: Each shard's row count, when the source is an etl scoring set.
    """

    source: str
    id_column: str
    shards: tuple[tuple[Unit, ...], ...]
    format: str = "parquet"
    fs: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem, compare=False)
    options: SourceOptions = field(default_factory=lambda: _SCORING_SET, compare=False)
    etl_rows: tuple[int, ...] | None = None

    def expected_rows(self, shard: int) -> int:
        """Input rows of shard ``shard``: each must get a prediction or be rejected.

        Parquet rows come from the footers; CSV and JSON Lines records are counted by a
        parse-only pass of their own (:func:`components.data.readers.count_records`).
        """
        if self.etl_rows is not None:
            return self.etl_rows[shard]
        units = self.shards[shard]
        if self.format in _TEXT_FORMATS:
            return sum(
                count_records(self.fs, unit.path, self.format, self.options) for unit in units
            )
        footers = {
            path: pq.read_metadata(path, filesystem=self.fs)
            for path in dict.fromkeys(unit.path for unit in units)
        }
        rows = 0
        for unit in units:
            metadata = footers[unit.path]
            if unit.row_group is None:
                rows += metadata.num_rows
            else:
                group_rows = metadata.row_group(unit.row_group).num_rows
                rows += (group_rows if unit.stop is None else unit.stop) - unit.start
        return rows

    def fingerprint(self, shard: int) -> str:
        """A digest of shard ``shard``'s inputs: the unit layout, how files are parsed, and
        each file's name, size, first and last 64 KiB (a Parquet footer summarises every row
        group) and, on an object store, modification time."""
        parsing = dataclasses.asdict(self.options)
        del parsing["storage_options"]  # how to reach the data, not what it holds
        head = [self.id_column, len(self.shards), self.format, parsing]
        digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
        units = self.shards[shard]
        for unit in units:
            where = f"{os.path.basename(unit.path)}:{unit.row_group}:{unit.start}:{unit.stop}"
            digest.update(where.encode())
        remote = not isinstance(self.fs, pafs.LocalFileSystem)
        for path in dict.fromkeys(unit.path for unit in units):
            info = self.fs.get_file_info(path)
            digest.update(f"{os.path.basename(path)}:{info.size}".encode())
            if remote:
                digest.update(f":{info.mtime_ns}".encode())
            with self.fs.open_input_file(path) as f:
                digest.update(f.read_at(_EDGE_BYTES, 0))
                digest.update(f.read_at(_EDGE_BYTES, max(info.size - _EDGE_BYTES, 0)))
        return digest.hexdigest()

    def read(
        self,
        units: tuple[Unit, ...],
        columns: list[str] | None,
        rows: int,
        reject: Callable[[Reject], None] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream ``columns`` (None: all) of ``units`` in record batches of at most ``rows`` rows.

        Parquet is read without pre-buffering (it grows memory through the file, PERF-NOTES)
        and on the calling thread only, so that decoding does not compete with the model's
        threads; local files are memory-mapped rather than copied out of the page cache. CSV
        and JSON Lines rows that cannot be read go to ``reject`` (None: dropped, for reads
        that only sample).
        """
        if self.format in _TEXT_FORMATS:
            yield from self._read_text(units, columns, rows, reject or (lambda r: None))
            return
        local = isinstance(self.fs, pafs.LocalFileSystem)
        for unit in units:
            # a local file is mapped: pages are decoded where the page cache holds them
            with pq.ParquetFile(
                unit.path, pre_buffer=False, filesystem=self.fs, memory_map=local
            ) as parquet:
                _check_columns(unit.path, parquet.schema_arrow.names, columns)
                groups = None if unit.row_group is None else [unit.row_group]
                batches = parquet.iter_batches(
                    batch_size=rows, row_groups=groups, columns=columns, use_threads=False
                )
                yield from _rows_between(batches, unit.start, unit.stop)

    def _read_text(
        self,
        units: tuple[Unit, ...],
        columns: list[str] | None,
        rows: int,
        reject: Callable[[Reject], None],
    ) -> Iterator[pa.RecordBatch]:
        if not units:
            return
        first, sample = self._sample
        if sample is not None:  # before projecting, which would hide a missing column
            _check_columns(first, sample.names, columns)
        types = {f.name: f.type for f in sample} if sample is not None else self.options.columns
        options = dataclasses.replace(self.options, columns=dict(types))
        paths = [unit.path for unit in units]
        for batch in read_batches(self.fs, paths, self.format, options, reject, columns):
            _check_columns(batch.source, batch.data.schema.names, columns)
            for start in range(0, batch.data.num_rows, rows):
                yield batch.data.slice(start, rows)

    @functools.cached_property
    def _sample(self) -> tuple[str, pa.Schema | None]:
        """The source's first file and the schema of its first readable rows (None when it
        has none): every shard casts to these types, as one etl pass over the source would,
        so that a value reads the same whichever shard scores it."""
        first = next((unit.path for units in self.shards for unit in units), "")
        if not first:
            return first, None
        batches = read_batches(self.fs, [first], self.format, self.options, lambda r: None)
        sample = next(batches, None)
        batches.close()
        return first, None if sample is None else sample.data.schema


def part_path(directory: str, shard: int) -> str:
    """The predictions file of shard ``shard``."""
    return os.path.join(directory, part_file(shard))


def marker_path(directory: str, shard: int) -> str:
    """The commit marker of shard ``shard``, written after its predictions file."""
    return os.path.join(directory, shard_marker_file(shard))


def rejects_path(directory: str, shard: int) -> str:
    """The quarantined rows of shard ``shard`` (only when it rejected any)."""
    return os.path.join(directory, shard_rejects_file(shard))


def plan_scoring(source: str, shards: int, options: SourceOptions | None) -> ScoringPlan:
    """Split ``source`` into ``shards`` shards.

    Args:
        source: An etl ``scoring`` directory, or data in an etl input format: a file,
            folder or glob, local or behind a ``file://``, ``s3://`` or ``gs://`` URI.
        shards: The fan-out width; an etl scoring set must have exactly this many shards.
        options: How to find and parse external data (the etl step's source options);
            ``options.id_column`` keys its predictions (an etl scoring set records its own).
            None when only an etl scoring set is expected.
    """
    if "://" not in source and os.path.isfile(os.path.join(source, MANIFEST_FILE)):
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
        return ScoringPlan(source, manifest["id_column"], units, etl_rows=counts)
    if options is None:
        raise DataError(
            f"{source} is not an etl scoring set (it has no {MANIFEST_FILE}); score outside "
            "data with inference.data_uri in a run without the etl stage"
        )
    if options.id_column is None:
        raise DataError(
            f"no id column is known for {source}, so predictions cannot be keyed; set "
            "data.id_column to the column that identifies rows"
        )
    fs, files, fmt = open_source(source, options)
    if fmt == "parquet":
        ranges = _parquet_ranges(fs, files, shards)
    else:
        ranges = [[Unit(path) for path in files[k::shards]] for k in range(shards)]
    units = tuple(tuple(shard) for shard in ranges)
    return ScoringPlan(source, options.id_column, units, fmt, fs, options)


@contextlib.contextmanager
def local_model(uri: str, storage_options: dict[str, Any]) -> Iterator[str]:
    """A local directory holding the model artifact at ``uri``.

    A local path is used in place; an object-store URI (``s3://``, ``gs://``) is copied
    to a temporary directory, removed on exit (an artifact is small: ``model.json``, the
    weights and the feature spec).
    """
    if "://" not in uri:
        yield uri
        return
    fs, path = filesystem(uri, storage_options)
    if isinstance(fs, pafs.LocalFileSystem):
        yield path
        return
    try:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as e:
        raise DataError(
            f"model {uri} cannot be listed: {e}; check inference.model_uri and data.storage_options"
        ) from None
    if not any(info.is_file and info.base_name == MODEL_META_FILE for info in found):
        raise DataError(
            f"{uri} holds no model.json; point inference.model_uri at a model artifact "
            "directory (a train step's model output)"
        )
    with tempfile.TemporaryDirectory(prefix="kfbatch-model-") as tmp:
        pafs.copy_files(
            path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
        )
        yield tmp


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


def _parquet_ranges(fs: pafs.FileSystem, paths: list[str], shards: int) -> list[list[Unit]]:
    """Cut the rows of ``paths`` (in order) into ``shards`` contiguous ranges whose sizes
    differ by at most one row, as row-group slices."""
    groups = [
        (path, g, metadata.row_group(g).num_rows)
        for path in paths
        for metadata in (pq.read_metadata(path, filesystem=fs),)
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
