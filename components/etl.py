"""ETL: stream source rows into train/validation/test splits and sharded scoring Parquet files.

One pass over the source (two with ``split.stratify``; CSV, JSON Lines or Parquet; local,
glob or object store, see :mod:`components.data.sources`): rows that cannot be read go to the
``rejects`` output with their file, line or row and reason; the declared row-level transforms
(:mod:`components.data.prepare`) run on every batch; quality statistics
(:mod:`components.data.quality`) are gathered on the raw and the prepared rows; each prepared
batch is split by a keyed hash of the row id (so a row keeps its split and shard when rows
are appended or files reordered), written to one buffered Parquet writer per output file,
and fed to the feature-spec accumulator when it belongs to the train split. Manifests are
written last and mark the outputs complete; a failed quality ``error`` check or too many
rejects leave them unwritten.

The splits (``dataset``) and the scoring shards (``scoring``) are separate outputs, and
nothing in ``dataset`` depends on the shard count: changing only ``shards`` leaves it
byte-identical, so a runner that caches by input digests reuses training.

With ``split.stratify``, a first pass reads only the id and target columns (all columns
when rows are hashed whole or transforms need them, see :func:`_projection`) and builds,
per target class, a histogram of the split hash's top :data:`STRATA_BITS` bits; each class
gets its own cut points at the split fractions, and the main pass compares each row's hash
with its class's cut points (see :class:`_Strata`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from components.data.features import FeatureRoles, FeatureSpecAccumulator, load_feature_spec
from components.data.prepare import Prepare
from components.data.quality import (
    Profile,
    evaluate,
    parse_checks,
    raise_for_errors,
    reference_of,
    write_report,
)
from components.data.readers import Batch, read_batches
from components.data.rejects import REJECT_SCHEMA, Reject, Rejects
from components.data.sources import SourceOptions, open_source
from components.errors import DataError
from components.io.files import ParquetSink, scoring_shard_path, sha256_file, write_json
from components.names import FEATURE_SPEC_FILE, MANIFEST_FILE, REJECTS_FILE, SPLITS
from components.params import EtlParams, FeaturesParams

__all__ = ["run"]

log = logging.getLogger(__name__)

# Rows buffered across the scoring shard writers before the largest one is flushed early;
# bounds memory when there are many shards. Split writers are never flushed early, so the
# row groups of the dataset do not depend on the shard count.
PENDING_ROWS_BUDGET = 1_000_000
PROGRESS_ROWS = 1_000_000
ID_BUCKET_BITS = 8
ID_BUCKETS = 1 << ID_BUCKET_BITS  # spill files of id hashes for the uniqueness check
STRATA_BITS = 16
STRATA_BINS = 1 << STRATA_BITS  # histogram bins of the split hash per target class
MAX_CLASSES = 128  # bounds the stratify histograms to 128 x 2^16 x 8 bytes = 64 MiB


@dataclass(frozen=True)
class _Settings:
    """The etl params in the shape the phases use."""

    id_column: str | None
    target: str
    fractions: tuple[float, float, float]
    shards: int
    seed: int
    features: FeaturesParams
    drop_nulls: tuple[str, ...]
    sample_rows: int | None
    max_reject_fraction: float
    stratify: bool

    @classmethod
    def of(cls, params: EtlParams) -> _Settings:
        split = params.split
        return cls(
            id_column=params.id_column,
            target=params.target,
            fractions=(split.train, split.validation, split.test),
            shards=params.shards,
            seed=params.seed,
            features=params.features,
            drop_nulls=tuple(params.features.drop_nulls),
            sample_rows=params.sample_rows,
            max_reject_fraction=params.max_reject_fraction,
            stratify=split.stratify,
        )


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Convert source data into Parquet splits, scoring shards, a feature spec and reports.

    Every source row lands in exactly one split and, independently, in exactly one
    scoring shard, or in the rejects: rows in = rows out + rows rejected.

    Args:
        inputs: ``source``: a file, a directory, a glob pattern or an object-store URI of
            either (CSV, JSON Lines or Parquet).
        params: ``format``, ``csv`` options, ``columns`` (declared types),
            ``storage_options``, ``id_column`` (None: hash whole rows), ``target``, ``split``
            fractions, ``shards``, ``seed``, ``features`` (roles,
            encodings and row-level transforms), ``batch_rows``, ``sample_rows``,
            ``max_reject_fraction`` and ``quality`` (``checks``, ``reference``).
        outputs: Directories to create: ``dataset`` (``train/``, ``validation/``,
            ``test/`` and ``_manifest.json``), ``feature_spec``, ``scoring``
            (``shard-00000.parquet``, ... and ``_manifest.json``) and, when given,
            ``rejects`` (``rejects.parquet`` and ``_manifest.json``) and ``quality``
            (``quality.json`` and ``quality.md``).

    Returns:
        Row counts (in, out, rejected, per split), failed/warned checks, ``seconds`` and
        ``rows_per_s``.
    """
    typed = EtlParams.parse(params)
    settings = _Settings.of(typed)
    options = SourceOptions.of(typed.source, id_column=typed.id_column)
    checks = parse_checks(typed.quality.checks)
    reference = _reference(typed.quality.reference)
    prepare = Prepare.from_dict(typed.features.to_dict())
    source = inputs["source"]
    if not isinstance(source, str):
        raise DataError(f"etl source must be one path or URI, got a list: {source}")
    dataset_dir, spec_dir = outputs["dataset"], outputs["feature_spec"]
    scoring_dir = outputs["scoring"]
    for directory in (spec_dir, scoring_dir, *(os.path.join(dataset_dir, s) for s in SPLITS)):
        os.makedirs(directory, exist_ok=True)

    start = time.perf_counter()
    fs, files, fmt = open_source(source, options)
    log.info("etl: %d %s file(s) from %s", len(files), fmt, source)
    strata = None
    if settings.stratify:
        strata = _stratify(fs, files, fmt, options, prepare, settings, source)
    rejects_dir = outputs.get("rejects")
    if rejects_dir:
        os.makedirs(rejects_dir, exist_ok=True)
    rejects_file = os.path.join(rejects_dir, REJECTS_FILE) if rejects_dir else None
    rejects = Rejects(rejects_file, keep_empty=True)
    raw_checks = [c for c in checks if c.on == "raw"]
    profiles = {
        "raw": Profile(raw_checks, reference),
        "prepared": Profile([c for c in checks if c.on == "prepared"], reference),
    }
    raw_columns = sorted({c.column for c in raw_checks if c.column})
    id_hashes = _IdHashes(dataset_dir) if settings.id_column else None
    try:
        batches = _prepared(
            read_batches(fs, files, fmt, options, rejects.add),
            prepare,
            settings,
            rejects,
            profiles["raw"],
            raw_columns,
        )
        if settings.sample_rows is not None:
            batches = _first_rows(batches, settings.sample_rows)
        first = next(batches, None)
        if first is None:
            raise DataError(
                f"{source} holds no readable rows ({rejects.count} rejected); expected data"
            )
        schema = _output_schema(first.schema, settings, source)
        accumulator = FeatureSpecAccumulator(
            schema,
            FeatureRoles(
                settings.id_column,
                settings.target,
                numeric=settings.features.numeric,
                categorical=settings.features.categorical,
                timestamp=settings.features.timestamp,
            ),
            max_categories=settings.features.max_categories,
            scaling=settings.features.scaling,
            encoding=settings.features.encoding,
            prepare=prepare.to_dict() if not prepare.empty else None,
        )
        rows, split_rows, shard_rows = _write_outputs(
            _chain(first, batches),
            schema,
            settings,
            dataset_dir,
            scoring_dir,
            accumulator,
            profiles["prepared"],
            id_hashes,
            strata,
        )
        repeated = id_hashes.repeated() if id_hashes is not None else 0
    finally:
        rejects.close()
        if rejects_dir:
            write_json(
                os.path.join(rejects_dir, MANIFEST_FILE),
                {
                    "rows": rejects.count,
                    "by_reason": rejects.by_reason,
                    "schema": REJECT_SCHEMA.names,
                },
            )
        if id_hashes is not None:
            id_hashes.close()
    rows_in = rows + rejects.count
    log.info("etl: %d rows in, %d out, %d rejected", rows_in, rows, rejects.count)
    duplicates = {settings.id_column: repeated} if settings.id_column else {}
    results = evaluate(checks, profiles, duplicates=duplicates, reference=reference)
    report = {
        "rows_in": rows_in,
        "rows_out": rows,
        "rows_rejected": rejects.count,
        "rejects_by_reason": rejects.by_reason,
        "reference_version": reference.get("version"),
        "checks": results,
        "profiles": {stage: p.to_dict() for stage, p in profiles.items()},
    }
    if outputs.get("quality"):
        write_report(outputs["quality"], report)
    rejects.refuse_above(rows_in, settings.max_reject_fraction)
    raise_for_errors(results)
    if (
        settings.id_column
        and duplicates.get(settings.id_column)
        and not any(c.check == "unique" and c.column == settings.id_column for c in checks)
    ):
        raise DataError(_duplicate_message(settings.id_column, duplicates))
    if split_rows[0] == 0:
        raise DataError(
            f"the train split is empty ({rows} rows in total); add rows or raise split.train"
        )

    spec = accumulator.finalize()
    columns = [[f.name, str(f.type)] for f in schema]
    write_json(os.path.join(spec_dir, FEATURE_SPEC_FILE), spec.to_dict())
    rows_meta = {"rows": rows, "rows_in": rows_in, "rows_rejected": rejects.count}
    write_json(
        os.path.join(dataset_dir, MANIFEST_FILE),
        {
            **rows_meta,
            "splits": dict(zip(SPLITS, split_rows, strict=True)),
            "schema": columns,
            "id_column": settings.id_column,
            "target": settings.target,
            "feature_spec_version": spec.version,
            "split_fractions": dict(zip(SPLITS, settings.fractions, strict=True)),
            "seed": settings.seed,
            **({"stratified": strata.to_dict(settings.target)} if strata is not None else {}),
            "files": _digests(dataset_dir),
        },
    )
    write_json(
        os.path.join(scoring_dir, MANIFEST_FILE),
        {
            **rows_meta,
            "shards": shard_rows,
            "schema": columns,
            "id_column": settings.id_column,
            "seed": settings.seed,
            "files": _digests(scoring_dir),
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
        "rows_in": rows_in,
        "rows_rejected": rejects.count,
        **{f"rows_{s}": n for s, n in zip(SPLITS, split_rows, strict=True)},
        "checks_failed": sum(r["status"] == "fail" for r in results),
        "checks_warned": sum(r["status"] == "warn" for r in results),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
    }


def _prepared(
    batches: Iterator[Batch],
    prepare: Callable[[pa.RecordBatch], pa.RecordBatch],
    settings: _Settings,
    rejects: Rejects,
    raw_profile: Profile,
    raw_columns: list[str],
) -> Iterator[pa.RecordBatch]:
    """Profile raw rows, apply the row-level transforms, reject rows with required nulls."""
    for batch in batches:
        data = batch.data
        if raw_columns:
            raw_profile.update(data.select([c for c in raw_columns if c in data.schema.names]))
        else:
            raw_profile.rows += data.num_rows
        data = prepare(data)
        if settings.drop_nulls:
            missing = [c for c in settings.drop_nulls if c not in data.schema.names]
            if missing:
                raise DataError(
                    f"features.drop_nulls names {missing}, which are not columns (columns: "
                    f"{data.schema.names}); fix the names"
                )
            null = np.zeros(data.num_rows, dtype=bool)
            reason = np.full(data.num_rows, "", dtype=object)
            for name in settings.drop_nulls:
                is_null = pc.is_null(data.column(name)).to_numpy(zero_copy_only=False)
                reason[is_null & ~null] = f"column {name!r}: null (features.drop_nulls)"
                null |= is_null
            if null.any():
                for i in np.flatnonzero(null):
                    rejects.add(Reject(batch.source, None, int(batch.rows[i]), reason[i], ""))
                data = data.filter(pa.array(~null))
        if data.num_rows:
            yield data


def _reference(directory: str | None) -> dict[str, Any]:
    """Drift reference statistics from a feature spec directory (or {} when none)."""
    if not directory:
        return {}
    return reference_of(load_feature_spec(directory).to_dict())


def _digests(directory: str) -> dict[str, dict[str, Any]]:
    """sha256 and size of every Parquet file under ``directory``, by relative path."""
    found = {}
    for root, _, names in sorted(os.walk(directory)):
        for name in sorted(names):
            if name.endswith(".parquet"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, directory)
                found[rel] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    return found


def _write_outputs(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    settings: _Settings,
    dataset_dir: str,
    scoring_dir: str,
    accumulator: FeatureSpecAccumulator,
    profile: Profile,
    id_hashes: _IdHashes | None,
    strata: _Strata | None,
) -> tuple[int, list[int], list[int]]:
    """Route every row to its split and scoring shard; return (rows, split rows, shard rows)."""
    # One encoding thread for the splits and one for the shards (each keeps its files' row
    # groups in order); both overlap with parsing in this thread (PERF-NOTES: encoding is
    # 40-50% of a CSV -> Parquet pass).
    split_pool = ThreadPoolExecutor(1, thread_name_prefix="etl-splits")
    shard_pool = ThreadPoolExecutor(1, thread_name_prefix="etl-shards")
    plain = [settings.id_column] if settings.id_column else []  # unique: no dictionary
    split_sinks = [
        ParquetSink(
            os.path.join(dataset_dir, s, "part-00000.parquet"),
            schema,
            executor=split_pool,
            plain=plain,
        )
        for s in SPLITS
    ]
    shard_sinks = [
        ParquetSink(scoring_shard_path(scoring_dir, k), schema, executor=shard_pool, plain=plain)
        for k in range(settings.shards)
    ]
    sinks = split_sinks + shard_sinks
    hasher = _RowHasher(settings, strata)
    rows = 0
    try:
        for batch in batches:
            batch = _conform(batch, schema)
            profile.update(batch)
            split_hash, shard_hash = hasher(batch, rows)
            if id_hashes is not None:
                id_hashes.add(hasher.hashes)
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
    finally:
        split_pool.shutdown()
        shard_pool.shutdown()


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Select the output columns; cast when a later batch's types differ (e.g. all-null)."""
    batch = batch.select(schema.names)
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(
            f"a later batch has types {batch.schema.types} that do not match the first "
            f"batch's {schema.types}: {e}; declare the column types in data.columns"
        ) from None


def _first_rows(batches: Iterator[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """The first ``limit`` rows of a batch stream (a quick sample for smoke runs)."""
    for batch in batches:
        if batch.num_rows >= limit:
            yield batch.slice(0, limit)
            return
        limit -= batch.num_rows
        yield batch


def _output_schema(source_schema: pa.Schema, settings: _Settings, source: str) -> pa.Schema:
    names = source_schema.names
    required = {"target": settings.target}
    if settings.id_column is not None:
        required["id_column"] = settings.id_column
    for key, name in required.items():
        if name not in names:
            raise DataError(
                f"{key} {name!r} is not a column of {source}; "
                f"available columns: {names}; set {key} to one of them"
            )
    return source_schema


class _RowHasher:
    """Keyed 64-bit hashes of row ids: one for the split, an independent one for the shard.

    SipHash (``pandas.util.hash_array``) of the id text, keyed by the seed: stable across
    processes, platforms and row positions. Without an id column, the whole row's text is
    hashed. The shard hash re-mixes the split hash with a second key. With ``strata``, rows
    of a known target class are split at their class's cut points instead.
    """

    def __init__(self, settings: _Settings, strata: _Strata | None = None) -> None:
        self._id_column = settings.id_column
        self._target = settings.target
        self._strata = strata
        digest = hashlib.sha256(f"kfbatch-etl:{settings.seed}".encode()).digest()
        self._key = digest[:16].hex()[:16]
        self._shard_key = np.uint64(int.from_bytes(digest[16:24], "little"))
        self._shards = np.uint64(settings.shards)
        self._bounds = np.cumsum(settings.fractions)
        self._bounds[-1] = 1.0

    def __call__(self, batch: pa.RecordBatch, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (split index, shard index) per row; ``offset`` locates errors."""
        h = self.hash(batch, offset)
        self.hashes = h
        split = np.searchsorted(self._bounds, (h >> np.uint64(11)) * 2.0**-53, side="right")
        if self._strata is not None:
            split = self._strata.split(batch.column(self._target), h, split)
        shard = _mix64(h ^ self._shard_key) % self._shards
        return split.astype(np.intp), shard.astype(np.intp)

    def hash(self, batch: pa.RecordBatch, offset: int) -> np.ndarray:
        """The keyed 64-bit split hash of every row of ``batch``."""
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


def _stratify(
    fs: pafs.FileSystem,
    files: list[str],
    fmt: str,
    options: SourceOptions,
    prepare: Prepare,
    settings: _Settings,
    source: str,
) -> _Strata:
    """First pass: per target class, a histogram of the split hash; then the cut points.

    Reads the id, target and ``drop_nulls`` columns only (see :func:`_projection`) and
    prepares them as the main pass does, so both passes see the same rows with the same
    hashes (up to rows the main pass rejects for a bad value in a column left out here).
    """
    start = time.perf_counter()
    projection = _projection(prepare, settings)
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] = prepare
    if projection is not None:
        transform = functools.partial(prepare, strict=False)  # skip what needs other columns
    rejects = Rejects(None)
    batches = _prepared(
        read_batches(fs, files, fmt, options, rejects.add, columns=projection),
        transform,
        settings,
        rejects,
        Profile([]),
        [],
    )
    if settings.sample_rows is not None:
        batches = _first_rows(batches, settings.sample_rows)
    hasher = _RowHasher(settings)
    strata = _Strata(settings.fractions)
    schema: pa.Schema | None = None
    rows = 0
    for batch in batches:
        if schema is None:
            schema = batch.schema
            if projection is None:
                _output_schema(schema, settings, source)
            elif settings.target not in schema.names or settings.id_column not in schema.names:
                raise DataError(
                    f"id_column {settings.id_column!r} or target {settings.target!r} is not a "
                    f"column of {source} (after the features transforms); set both to columns "
                    "of the data"
                )
        batch = _conform(batch, schema)
        strata.add(batch.column(settings.target), hasher.hash(batch, rows))
        rows += batch.num_rows
    strata.fit()
    log.info(
        "etl: stratify pass read %d rows (%s), %d target classes, in %.2f s",
        rows,
        "all columns" if projection is None else f"columns {projection}",
        strata.classes,
        time.perf_counter() - start,
    )
    return strata


def _projection(prepare: Prepare, settings: _Settings) -> list[str] | None:
    """Source columns the stratify pass needs, or None to read them all.

    All are needed without an id column (whole rows are hashed), with user transforms (they
    may read any column) and when the id, target or a ``drop_nulls`` column is derived.
    Renamed columns are read under their source names.
    """
    if settings.id_column is None or prepare.transforms:
        return None
    needed = {settings.id_column, settings.target, *settings.drop_nulls}
    derived = set(prepare.derive) | {
        f"{column}_{part}" for column, parts in prepare.timestamp_parts.items() for part in parts
    }
    if needed & derived:
        return None
    columns = set(needed)
    while more := {old for old, new in prepare.rename.items() if new in columns} - columns:
        columns |= more
    return sorted(columns)


class _Strata:
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

    def __init__(self, fractions: tuple[float, float, float]) -> None:
        self._bounds = np.cumsum(fractions)[:2]
        self._index: dict[str, int] = {}
        self._counts: list[np.ndarray] = []
        self._cuts = np.zeros((0, 2), dtype=np.uint64)
        self._written = np.zeros((1, len(SPLITS)), dtype=np.int64)

    @property
    def classes(self) -> int:
        return len(self._index)

    def _classes(self, target: pa.Array, *, grow: bool) -> np.ndarray:
        """Class index per row: -1 for a null target or, unless ``grow``, an unseen class."""
        labels = pc.cast(target, pa.string())
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

    def add(self, target: pa.Array, hashes: np.ndarray) -> None:
        """Count rows per class and hash bin (first pass)."""
        classes = self._classes(target, grow=True)
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

    def split(self, target: pa.Array, hashes: np.ndarray, plain: np.ndarray) -> np.ndarray:
        """Split index per row (second pass); counts the rows written per class and split."""
        classes = self._classes(target, grow=False)
        known = classes >= 0
        split = plain.astype(np.intp)
        bins = hashes[known] >> np.uint64(64 - STRATA_BITS)
        cuts = self._cuts[classes[known]]
        split[known] = (bins >= cuts[:, 0]).astype(np.intp) + (bins >= cuts[:, 1])
        cell = np.where(known, classes, self.classes) * len(SPLITS) + split
        written = np.bincount(cell, minlength=self._written.size)
        self._written += written.reshape(self._written.shape)
        return split

    def to_dict(self, target: str) -> dict[str, Any]:
        """The manifest's ``stratified`` entry: rows written per class and split, cuts."""
        return {
            "target": target,
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


class _IdHashes:
    """Counts repeated ids in bounded memory: the keyed 64-bit hash of every id goes to one
    of :data:`ID_BUCKETS` spill files by its top bits, and each file is checked alone.

    Two different ids share a hash with probability ~n^2/2^65 (about 3e-6 for 10M rows).
    """

    def __init__(self, dataset_dir: str) -> None:
        self._dir = tempfile.mkdtemp(prefix=".id-hashes-", dir=dataset_dir)
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


def _duplicate_message(id_column: str, duplicates: dict[str, int]) -> str:
    return (
        f"id column {id_column!r} has {duplicates[id_column]} repeated values; ids must be "
        "unique: deduplicate the source data"
    )
