"""ETL: stream source rows into train/validation/test splits and sharded scoring Parquet files.

One pass over the source (two with ``split.stratify``; CSV, JSON Lines or Parquet; local,
glob or object store, see :mod:`components.data.sources`): rows that cannot be read go to the
``rejects`` output with their file, line or row and reason; the declared row-level transforms
(:mod:`components.data.prepare`) run on every batch; quality statistics
(:mod:`components.data.quality`) are gathered on the raw and the prepared rows; each prepared
batch is split by a keyed hash of the row id (so a row keeps its split and shard when rows
are appended or files reordered, see :mod:`components.data.split`), written to one buffered
Parquet writer per output file (:mod:`components.data.writers`), and fed to the feature-spec
accumulator when it belongs to the train split. Manifests are written last and mark the
outputs complete; a failed quality ``error`` check or too many rejects leave them unwritten.

The splits (``dataset``) and the scoring shards (``scoring``) are separate outputs, and
nothing in ``dataset`` depends on the shard count: changing only ``shards`` leaves it
byte-identical, so a runner that caches by input digests reuses training.

With ``split.stratify``, a first pass reads only the id and target columns (all columns
when rows are hashed whole or transforms need them, see :func:`_projection`) and fits the
per-class cut points of :class:`components.data.split.Strata`, which the main pass splits by.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from components.data.features import (
    FeatureRoles,
    FeatureSpec,
    FeatureSpecAccumulator,
    load_feature_spec,
)
from components.data.labels import LabelGate
from components.data.prepare import Prepare
from components.data.quality import (
    Check,
    Profile,
    evaluate,
    parse_checks,
    raise_for_errors,
    reference_of,
    write_report,
)
from components.data.readers import Batch, conform, first_rows, read_batches
from components.data.rejects import Rejects, drop_null_rows, quarantine
from components.data.sources import SourceOptions, open_source
from components.data.split import IdHashes, RowHasher, Strata
from components.data.writers import OutputWriters, parquet_digests
from components.errors import DataError
from components.io.files import write_json
from components.names import FEATURE_SPEC_FILE, MANIFEST_FILE, SPLITS
from components.params import EtlParams

__all__ = ["run"]

log = logging.getLogger(__name__)

PROGRESS_ROWS = 1_000_000

#: Reads the source's batches: ``reader(reject, columns=None)`` (see ``read_batches``).
_Reader = Callable[..., Iterator[Batch]]


@dataclass(frozen=True)
class _Job:
    """The step's inputs, params and outputs in the shape the phases use."""

    params: EtlParams
    source: str
    options: SourceOptions
    prepare: Prepare
    checks: list[Check]
    reference: dict[str, Any]
    id_column: str | None
    target: str
    fractions: tuple[float, float, float]
    dataset_dir: str
    spec_dir: str
    scoring_dir: str
    rejects_dir: str | None
    quality_dir: str | None

    @classmethod
    def of(
        cls, inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
    ) -> _Job:
        """Parse and check the params and the source (nothing is read or written yet)."""
        typed = EtlParams.parse(params)
        options = SourceOptions.of(typed.source, id_column=typed.id_column)
        checks = parse_checks(typed.quality.checks)
        reference = _reference(typed.quality.reference)
        prepare = Prepare.from_dict(typed.features.to_dict())
        source = inputs["source"]
        if not isinstance(source, str):
            raise DataError(f"etl source must be one path or URI, got a list: {source}")
        split = typed.split
        return cls(
            params=typed,
            source=source,
            options=options,
            prepare=prepare,
            checks=checks,
            reference=reference,
            id_column=typed.id_column,
            target=typed.target,
            fractions=(split.train, split.validation, split.test),
            dataset_dir=outputs["dataset"],
            spec_dir=outputs["feature_spec"],
            scoring_dir=outputs["scoring"],
            rejects_dir=outputs.get("rejects") or None,
            quality_dir=outputs.get("quality") or None,
        )

    def make_dirs(self) -> None:
        """Create the output directories every run writes into."""
        splits = [os.path.join(self.dataset_dir, s) for s in SPLITS]
        for directory in (self.spec_dir, self.scoring_dir, *splits):
            os.makedirs(directory, exist_ok=True)

    def hasher(self, strata: Strata | None = None) -> RowHasher:
        """The row hasher of this seed, id column, split fractions and shard count."""
        return RowHasher(
            id_column=self.id_column,
            seed=self.params.seed,
            fractions=self.fractions,
            shards=self.params.shards,
            strata=strata,
        )

    def accumulator(self, schema: pa.Schema) -> FeatureSpecAccumulator:
        """The feature-spec accumulator of the ``features`` params, for rows of ``schema``."""
        features = self.params.features
        return FeatureSpecAccumulator(
            schema,
            FeatureRoles(
                self.id_column,
                self.target,
                numeric=features.numeric,
                categorical=features.categorical,
                timestamp=features.timestamp,
            ),
            max_categories=features.max_categories,
            scaling=features.scaling,
            encoding=features.encoding,
            prepare=self.prepare.to_dict() if not self.prepare.empty else None,
        )


@dataclass(frozen=True)
class _Written:
    """What the main pass wrote."""

    schema: pa.Schema
    rows: int
    splits: list[int]
    shards: list[int]
    repeated_ids: int


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
    job = _Job.of(inputs, params, outputs)
    job.make_dirs()
    start = time.perf_counter()
    fs, files, fmt = open_source(job.source, job.options)
    log.info("etl: %d %s file(s) from %s", len(files), fmt, job.source)
    reader: _Reader = functools.partial(read_batches, fs, files, fmt, job.options)
    strata = _stratify(job, reader) if job.params.split.stratify else None
    profiles = {
        stage: Profile(
            [c for c in job.checks if c.on == stage], job.reference, id_column=job.id_column
        )
        for stage in ("raw", "prepared")
    }
    with quarantine(job.rejects_dir) as rejects:
        schema, batches = _read(job, reader, rejects, profiles["raw"])
        accumulator = job.accumulator(schema)
        written = _route(job, schema, batches, accumulator, profiles["prepared"], strata)
    results = _verify(job, written, rejects, profiles)
    _commit(job, written, rejects.count, accumulator.finalize(), strata)
    return _metrics(written, rejects.count, results, time.perf_counter() - start)


# --------------------------------------------------------------------------- read


def _stratify(job: _Job, reader: _Reader) -> Strata:
    """First pass: per target class, a histogram of the split hash; then the cut points.

    Reads the id, target and ``drop_nulls`` columns only (see :func:`_projection`) and
    prepares them as the main pass does, so both passes see the same rows with the same
    hashes (up to rows the main pass rejects for a bad value in a column left out here).
    """
    start = time.perf_counter()
    projection = _projection(job)
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] = job.prepare
    if projection is not None:
        transform = functools.partial(job.prepare, strict=False)  # skip what needs other columns
    rejects = Rejects(None)
    hasher = job.hasher()
    strata = Strata(job.target, job.fractions)
    schema: pa.Schema | None = None
    rows = 0
    batches = reader(rejects.add, columns=projection)
    for batch in _prepared(job, batches, rejects, transform, Profile([]), []):
        if schema is None:
            schema = batch.schema
            if projection is None:
                _output_schema(schema, job)
            elif job.target not in schema.names or job.id_column not in schema.names:
                raise DataError(
                    f"id_column {job.id_column!r} or target {job.target!r} is not a "
                    f"column of {job.source} (after the features transforms); set both to "
                    "columns of the data"
                )
        batch = conform(batch, schema)
        strata.add(batch, hasher.hash(batch, rows))
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


def _projection(job: _Job) -> list[str] | None:
    """Source columns the stratify pass needs, or None to read them all: those of the id,
    the target and the ``drop_nulls`` columns (see :meth:`Prepare.source_columns`); all of
    them without an id column, as whole rows are hashed."""
    if job.id_column is None:
        return None
    needed = {job.id_column, job.target, *job.params.features.drop_nulls}
    return job.prepare.source_columns(needed)


def _read(
    job: _Job, reader: _Reader, rejects: Rejects, raw_profile: Profile
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The main pass's prepared batches, and their schema (the first batch's)."""
    raw_columns = sorted({c.column for c in job.checks if c.on == "raw" and c.column})
    job.prepare.division_by_zero.clear()  # count the main pass only, not the strata pass
    batches = _prepared(job, reader(rejects.add), rejects, job.prepare, raw_profile, raw_columns)
    first = next(batches, None)
    if first is None:
        raise DataError(
            f"{job.source} holds no readable rows ({rejects.count} rejected); expected data"
        )
    return _output_schema(first.schema, job), _chain(first, batches)


def _prepared(
    job: _Job,
    batches: Iterator[Batch],
    rejects: Rejects,
    transform: Callable[[pa.RecordBatch], pa.RecordBatch],
    raw_profile: Profile,
    raw_columns: list[str],
) -> Iterator[pa.RecordBatch]:
    """Profile the raw rows (only counted without ``raw_columns``), apply the row-level
    transforms, reject rows with a null in a ``drop_nulls`` column and rows whose label
    ``data.classes`` does not list (see :class:`LabelGate`); yield the non-empty
    prepared batches, only the first ``sample_rows`` rows when that is set."""
    required = job.params.features.drop_nulls
    labels = LabelGate(job.params.task, job.target, job.params.classes)

    def prepare(batch: Batch) -> pa.RecordBatch:
        data = batch.data
        if raw_columns:
            raw_profile.update(data.select([c for c in raw_columns if c in data.schema.names]))
        else:
            raw_profile.rows += data.num_rows
        data = transform(data)
        if required:
            data = drop_null_rows(data, required, batch.source, batch.rows, rejects.add)
        return labels(data, batch.source, batch.rows, rejects.add)

    nonempty = (data for data in map(prepare, batches) if data.num_rows)
    limit = job.params.sample_rows
    return nonempty if limit is None else first_rows(nonempty, limit)


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _output_schema(source_schema: pa.Schema, job: _Job) -> pa.Schema:
    names = source_schema.names
    required = {"target": job.target}
    if job.id_column is not None:
        required["id_column"] = job.id_column
    for key, name in required.items():
        if name not in names:
            raise DataError(
                f"{key} {name!r} is not a column of {job.source}; "
                f"available columns: {names}; set {key} to one of them"
            )
    return source_schema


# --------------------------------------------------------------------------- route


def _route(
    job: _Job,
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    accumulator: FeatureSpecAccumulator,
    profile: Profile,
    strata: Strata | None,
) -> _Written:
    """Write every row to its split and scoring shard; profile it, fit the spec on train
    rows and count repeated ids on the way."""
    hasher = job.hasher(strata)
    id_hashes = IdHashes(job.dataset_dir) if job.id_column else None
    plain = [job.id_column] if job.id_column else []  # unique: no dictionary
    rows = 0
    try:
        with OutputWriters(
            schema,
            job.dataset_dir,
            job.scoring_dir,
            job.params.shards,
            plain=plain,
            on_train=accumulator.update,
        ) as writers:
            for batch in batches:
                batch = conform(batch, schema)
                profile.update(batch)
                hashes = hasher.hash(batch, rows)
                if id_hashes is not None:
                    id_hashes.add(hashes)
                if (rows + batch.num_rows) // PROGRESS_ROWS > rows // PROGRESS_ROWS:
                    log.info("etl: %d rows read", rows + batch.num_rows)
                rows += batch.num_rows
                writers.write(batch, hasher.split(batch, hashes), hasher.shard(hashes))
            splits, shards = writers.close()
        repeated = id_hashes.repeated() if id_hashes is not None else 0
    finally:
        if id_hashes is not None:
            id_hashes.close()
    return _Written(schema, rows, splits, shards, repeated)


# --------------------------------------------------------------------------- verify


def _verify(
    job: _Job, written: _Written, rejects: Rejects, profiles: dict[str, Profile]
) -> list[dict[str, Any]]:
    """Evaluate the quality checks and write their report; raise when the outputs must not
    be committed (too many rejects, a failed ``error`` check, repeated ids, no train rows)."""
    rows_in = written.rows + rejects.count
    log.info("etl: %d rows in, %d out, %d rejected", rows_in, written.rows, rejects.count)
    duplicates = {job.id_column: written.repeated_ids} if job.id_column else {}
    results = evaluate(job.checks, profiles, duplicates=duplicates, reference=job.reference)
    if job.quality_dir:
        write_report(
            job.quality_dir,
            {
                "rows_in": rows_in,
                "rows_out": written.rows,
                "rows_rejected": rejects.count,
                "rejects_by_reason": rejects.by_reason,
                "division_by_zero": dict(job.prepare.division_by_zero),
                "reference_version": job.reference.get("version"),
                "checks": results,
                "profiles": {stage: p.to_dict() for stage, p in profiles.items()},
            },
        )
    rejects.refuse_above(rows_in, job.params.max_reject_fraction)
    raise_for_errors(results)
    unique_checked = any(c.check == "unique" and c.column == job.id_column for c in job.checks)
    if job.id_column and written.repeated_ids and not unique_checked:
        raise DataError(
            f"id column {job.id_column!r} has {written.repeated_ids} repeated values; ids must "
            "be unique: deduplicate the source data"
        )
    if written.splits[0] == 0:
        raise DataError(
            f"the train split is empty ({written.rows} rows in total); add rows or raise "
            "split.train"
        )
    return results


# --------------------------------------------------------------------------- commit


def _commit(
    job: _Job, written: _Written, rejected: int, spec: FeatureSpec, strata: Strata | None
) -> None:
    """Write the feature spec, then the manifests that mark the outputs complete."""
    columns = [[f.name, str(f.type)] for f in written.schema]
    write_json(os.path.join(job.spec_dir, FEATURE_SPEC_FILE), spec.to_dict())
    rows_meta = {
        "rows": written.rows,
        "rows_in": written.rows + rejected,
        "rows_rejected": rejected,
    }
    write_json(
        os.path.join(job.dataset_dir, MANIFEST_FILE),
        {
            **rows_meta,
            "splits": dict(zip(SPLITS, written.splits, strict=True)),
            "schema": columns,
            "id_column": job.id_column,
            "target": job.target,
            "feature_spec_version": spec.version,
            "split_fractions": dict(zip(SPLITS, job.fractions, strict=True)),
            "seed": job.params.seed,
            **({"stratified": strata.to_dict()} if strata is not None else {}),
            "files": parquet_digests(job.dataset_dir),
        },
    )
    write_json(
        os.path.join(job.scoring_dir, MANIFEST_FILE),
        {
            **rows_meta,
            "shards": written.shards,
            "schema": columns,
            "id_column": job.id_column,
            "seed": job.params.seed,
            "files": parquet_digests(job.scoring_dir),
        },
    )


def _metrics(
    written: _Written, rejected: int, results: list[dict[str, Any]], seconds: float
) -> dict[str, float | int | str]:
    """The step's metrics: row counts, checks failed and warned, time and throughput."""
    rows = written.rows
    splits = dict(zip(SPLITS, written.splits, strict=True))
    log.info(
        "etl wrote %d rows (%s) in %.2f s, %.0f rows/s",
        rows,
        ", ".join(f"{s}={n}" for s, n in splits.items()),
        seconds,
        rows / seconds,
    )
    return {
        "rows": rows,
        "rows_in": rows + rejected,
        "rows_rejected": rejected,
        **{f"rows_{s}": n for s, n in splits.items()},
        "checks_failed": sum(r["status"] == "fail" for r in results),
        "checks_warned": sum(r["status"] == "warn" for r in results),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
    }


def _reference(directory: str | None) -> dict[str, Any]:
    """Drift reference statistics from a feature spec directory (or {} when none)."""
    if not directory:
        return {}
    return reference_of(load_feature_spec(directory).to_dict())
