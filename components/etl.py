"""ETL: stream user CSV into train/validation/test splits and sharded scoring Parquet files.

One pass over the source: each record batch is split by a keyed hash of the row id (so a
row keeps its split and shard when rows are appended or files reordered), written to one
buffered Parquet writer per output file, and fed to the feature-spec accumulator when it
belongs to the train split. The ``dataset`` and ``scoring`` manifests are written last and
mark those outputs complete.

The splits (``dataset``) and the scoring shards (``scoring``) are separate outputs, and
nothing in ``dataset`` depends on the shard count: changing only ``shards`` leaves it
byte-identical, so a runner that caches by input digests reuses training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components.errors import DataError, ParamError
from components.features import FEATURE_SPEC_FILE, FeatureSpecAccumulator
from components.io import MANIFEST_FILE, SPLITS, ParquetSink, scoring_shard_path, write_json

__all__ = ["run"]

log = logging.getLogger(__name__)

# Rows buffered across the scoring shard writers before the largest one is flushed early;
# bounds memory when there are many shards. Split writers are never flushed early, so the
# row groups of the dataset do not depend on the shard count.
PENDING_ROWS_BUDGET = 1_000_000
PROGRESS_ROWS = 1_000_000
_MIN_BLOCK, _MAX_BLOCK = 1 << 20, 64 << 20


@dataclass(frozen=True)
class _Settings:
    id_column: str | None
    target: str
    fractions: tuple[float, float, float]
    shards: int
    seed: int
    features: dict[str, Any]
    drop: tuple[str, ...]
    delimiter: str
    batch_rows: int
    sample_rows: int | None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Settings:
        fmt = params.get("format", "csv")
        if fmt != "csv":
            raise ParamError(f"etl format {fmt!r} is not supported; expected 'csv'")
        split = params.get("split", {"train": 0.8, "validation": 0.1, "test": 0.1})
        unknown = sorted(set(split) - set(SPLITS))
        if unknown:
            raise ParamError(f"split has unknown keys {unknown}; expected only {list(SPLITS)}")
        train, validation, test = (float(split.get(name, 0.0)) for name in SPLITS)
        fractions = (train, validation, test)
        if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] <= 0:
            raise ParamError(
                f"split fractions {dict(zip(SPLITS, fractions, strict=True))} are invalid; "
                "expected non-negative fractions summing to 1 with train > 0"
            )
        shards = int(params.get("shards", 1))
        if shards < 1:
            raise ParamError(f"shards={shards} is invalid; expected at least 1 scoring shard")
        features = dict(params.get("features") or {})
        if not params.get("target"):
            raise ParamError("etl params have no target; set target to the label column's name")
        return cls(
            id_column=params.get("id_column"),
            target=params["target"],
            fractions=fractions,
            shards=shards,
            seed=int(params.get("seed", 0)),
            features=features,
            drop=tuple(features.pop("drop", None) or ()),
            delimiter=(params.get("csv") or {}).get("delimiter", ","),
            batch_rows=int(params.get("batch_rows", 32_768)),
            sample_rows=_positive_or_none(params.get("sample_rows"), "sample_rows"),
        )


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Convert CSV source data into Parquet splits, scoring shards and a feature spec.

    Every source row lands in exactly one split and, independently, in exactly one
    scoring shard.

    Args:
        inputs: ``source``: a CSV file, a directory of ``*.csv`` files (read in name
            order), or a ``pyarrow.fs`` URI of either.
        params: ``id_column`` (None: hash whole rows), ``target``, ``split`` fractions,
            ``shards``, ``seed``, ``features`` (roles, ``drop``, ``max_categories``),
            ``csv.delimiter``, ``batch_rows`` (approximate rows per parsed batch) and
            ``sample_rows`` (read only the first that many rows; None reads all).
        outputs: Directories to create: ``dataset`` (``train/``, ``validation/``,
            ``test/`` and ``_manifest.json``), ``feature_spec`` and ``scoring``
            (``shard-00000.parquet``, ... and ``_manifest.json``).

    Returns:
        Row counts per split, ``seconds`` and ``rows_per_s``.
    """
    settings = _Settings.from_params(params)
    source = inputs["source"]
    if not isinstance(source, str):
        raise DataError(f"etl source must be one path or URI, got a list: {source}")
    dataset_dir, spec_dir = outputs["dataset"], outputs["feature_spec"]
    scoring_dir = outputs["scoring"]
    for directory in (spec_dir, scoring_dir, *(os.path.join(dataset_dir, s) for s in SPLITS)):
        os.makedirs(directory, exist_ok=True)

    start = time.perf_counter()
    fs, files = _source_files(source)
    batches = _read_csv(fs, files, settings)
    if settings.sample_rows is not None:
        batches = _first_rows(batches, settings.sample_rows)
    first = next(batches, None)
    if first is None:
        raise DataError(f"{source} holds no data rows; expected a CSV with a header and rows")
    schema = _output_schema(first.schema, settings, source)
    accumulator = FeatureSpecAccumulator(
        schema,
        id_column=settings.id_column,
        target=settings.target,
        numeric=settings.features.get("numeric"),
        categorical=settings.features.get("categorical"),
        timestamp=settings.features.get("timestamp"),
        max_categories=int(settings.features.get("max_categories", 50)),
    )
    rows, split_rows, shard_rows = _write_outputs(
        _chain(first, batches), schema, settings, dataset_dir, scoring_dir, accumulator
    )
    if split_rows[0] == 0:
        raise DataError(
            f"the train split is empty ({rows} rows in total); add rows or raise split.train"
        )
    if settings.id_column is not None:
        _check_unique_ids(scoring_dir, settings)

    spec = accumulator.finalize()
    columns = [[f.name, str(f.type)] for f in schema]
    write_json(os.path.join(spec_dir, FEATURE_SPEC_FILE), spec.to_dict())
    write_json(
        os.path.join(dataset_dir, MANIFEST_FILE),
        {
            "rows": rows,
            "splits": dict(zip(SPLITS, split_rows, strict=True)),
            "schema": columns,
            "id_column": settings.id_column,
            "target": settings.target,
            "feature_spec_version": spec.version,
            "split_fractions": dict(zip(SPLITS, settings.fractions, strict=True)),
            "seed": settings.seed,
        },
    )
    write_json(
        os.path.join(scoring_dir, MANIFEST_FILE),
        {
            "rows": rows,
            "shards": shard_rows,
            "schema": columns,
            "id_column": settings.id_column,
            "seed": settings.seed,
        },
    )
    seconds = time.perf_counter() - start
    log.info(
        "etl wrote %d rows (%s) in %.2f s, %.0f rows/s",
        rows,
        ", ".join(f"{s}={n}" for s, n in zip(SPLITS, split_rows, strict=True)),
        seconds,
        rows / seconds,
    )
    return {
        "rows": rows,
        **{f"rows_{s}": n for s, n in zip(SPLITS, split_rows, strict=True)},
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
    }


def _write_outputs(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    settings: _Settings,
    dataset_dir: str,
    scoring_dir: str,
    accumulator: FeatureSpecAccumulator,
) -> tuple[int, list[int], list[int]]:
    """Route every row to its split and scoring shard; return (rows, split rows, shard rows)."""
    split_sinks = [
        ParquetSink(os.path.join(dataset_dir, s, "part-00000.parquet"), schema) for s in SPLITS
    ]
    shard_sinks = [
        ParquetSink(scoring_shard_path(scoring_dir, k), schema) for k in range(settings.shards)
    ]
    sinks = split_sinks + shard_sinks
    hasher = _RowHasher(settings)
    rows = 0
    try:
        for batch in batches:
            batch = batch.select(schema.names)
            split_hash, shard_hash = hasher(batch, rows)
            if (rows + batch.num_rows) // PROGRESS_ROWS > rows // PROGRESS_ROWS:
                log.info("etl: %d rows read", rows + batch.num_rows)
            rows += batch.num_rows
            for split, part in _partition(batch, split_hash, len(SPLITS)):
                split_sinks[split].write(part)
                if split == 0:
                    accumulator.update(part)
            for shard, part in _partition(batch, shard_hash, settings.shards):
                shard_sinks[shard].write(part)
            _bound_pending(shard_sinks)
        return rows, [s.close() for s in split_sinks], [s.close() for s in shard_sinks]
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise


def _source_files(source: str) -> tuple[pafs.FileSystem, list[str]]:
    if "://" in source:
        fs, path = pafs.FileSystem.from_uri(source)
    else:
        fs, path = pafs.LocalFileSystem(), os.path.abspath(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return fs, [path]
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(path))
        files = sorted(i.path for i in found if i.is_file and i.path.endswith(".csv"))
        if files:
            return fs, files
        raise DataError(f"directory {source} has no *.csv files; expected CSV source data")
    raise DataError(f"source {source} does not exist; expected a CSV file or a directory of them")


def _read_csv(
    fs: pafs.FileSystem, files: list[str], settings: _Settings
) -> Iterator[pa.RecordBatch]:
    """Yield record batches of every file; later files are parsed with the first's types."""
    block_size = _block_size(fs, files[0], settings.batch_rows)
    column_types: dict[str, pa.DataType] = {}
    if settings.id_column is not None:
        column_types[settings.id_column] = pa.string()
    schema: pa.Schema | None = None
    for path in files:
        with fs.open_input_stream(path) as stream:
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(block_size=block_size),
                    parse_options=pacsv.ParseOptions(delimiter=settings.delimiter),
                    convert_options=pacsv.ConvertOptions(
                        column_types=column_types, strings_can_be_null=True
                    ),
                )
                if schema is None:
                    schema = reader.schema
                    column_types = {f.name: f.type for f in schema}
                elif reader.schema.names != schema.names:
                    raise DataError(
                        f"{path} has columns {reader.schema.names} but {files[0]} has "
                        f"{schema.names}; all source files need the same header"
                    )
                yield from reader
            except pa.ArrowInvalid as e:
                raise DataError(
                    f"{path} cannot be parsed as CSV: {e}; fix the file (types are inferred "
                    "from the first block of the first file)"
                ) from None


def _first_rows(batches: Iterator[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """The first ``limit`` rows of a batch stream (a quick sample for smoke runs)."""
    for batch in batches:
        if batch.num_rows >= limit:
            yield batch.slice(0, limit)
            return
        limit -= batch.num_rows
        yield batch


def _positive_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if int(value) < 1:
        raise ParamError(f"{name}={value} is invalid; expected a row count >= 1 or null")
    return int(value)


def _block_size(fs: pafs.FileSystem, path: str, batch_rows: int) -> int:
    """Bytes per CSV block so that a block holds about ``batch_rows`` rows."""
    with fs.open_input_stream(path) as stream:
        sample = stream.read(_MIN_BLOCK)
    bytes_per_row = len(sample) / max(sample.count(b"\n"), 1)
    return int(min(max(batch_rows * bytes_per_row, _MIN_BLOCK), _MAX_BLOCK))


def _output_schema(source_schema: pa.Schema, settings: _Settings, source: str) -> pa.Schema:
    names = source_schema.names
    required = {"target": settings.target}
    if settings.id_column is not None:
        required["id_column"] = settings.id_column
    for key, name in required.items():
        if name not in names:
            raise DataError(
                f"{key} {name!r} is not a column of {source}; available columns: {names}; "
                f"set {key} to one of them"
            )
        if name in settings.drop:
            raise DataError(f"features.drop lists the {key} {name!r}; remove it from drop")
    unknown = sorted(set(settings.drop) - set(names))
    if unknown:
        raise DataError(
            f"features.drop names columns {unknown} that are not in {source}; "
            f"available columns: {names}"
        )
    return pa.schema([f for f in source_schema if f.name not in settings.drop])


class _RowHasher:
    """Keyed 64-bit hashes of row ids: one for the split, an independent one for the shard.

    SipHash (``pandas.util.hash_array``) of the id text, keyed by the seed: stable across
    processes, platforms and row positions. Without an id column, the whole row's text is
    hashed. The shard hash re-mixes the split hash with a second key.
    """

    def __init__(self, settings: _Settings) -> None:
        self._id_column = settings.id_column
        digest = hashlib.sha256(f"kfbatch-etl:{settings.seed}".encode()).digest()
        self._key = digest[:16].hex()[:16]
        self._shard_key = np.uint64(int.from_bytes(digest[16:24], "little"))
        self._shards = np.uint64(settings.shards)
        self._bounds = np.cumsum(settings.fractions)
        self._bounds[-1] = 1.0

    def __call__(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (split index, shard index) per row; ``offset`` locates errors."""
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
        h = pd.util.hash_array(values, encoding="utf8", hash_key=self._key, categorize=False)
        split = np.searchsorted(self._bounds, (h >> np.uint64(11)) * 2.0**-53, side="right")
        shard = _mix64(h ^ self._shard_key) % self._shards
        return split.astype(np.intp), shard.astype(np.intp)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective 64-bit mixing function."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


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


def _bound_pending(sinks: list[ParquetSink]) -> None:
    while sum(s.pending_rows for s in sinks) > PENDING_ROWS_BUDGET:
        max(sinks, key=lambda s: s.pending_rows).flush()


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _check_unique_ids(scoring_dir: str, settings: _Settings) -> None:
    """Equal ids hash to the same shard, so checking each shard finds every duplicate."""
    for shard in range(settings.shards):
        path = scoring_shard_path(scoring_dir, shard)
        ids = pq.read_table(path, columns=[settings.id_column]).column(0)
        if pc.count_distinct(ids).as_py() != len(ids):
            counts = pc.value_counts(ids)
            repeated = counts.filter(pc.greater(counts.field("counts"), 1))
            example = repeated[0]["values"].as_py()
            raise DataError(
                f"id column {settings.id_column!r} has {len(repeated)} repeated values (e.g. "
                f"{example!r} appears {repeated[0]['counts'].as_py()} times); ids must be "
                "unique: deduplicate the source data"
            )
