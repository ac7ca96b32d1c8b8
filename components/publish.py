"""Publish predictions: the reduce step of the inference fan-out.

Checks that every scoring row has exactly one prediction or was quarantined as unreadable
(each shard committed, its file intact, predictions plus rejected rows equal to its input
rows, ids unique) and that one model made them all; only then gathers the shard files (and
their ``_rejects-<k>.parquet``) into its output with ``_manifest.json`` last. When configured it
also writes a versioned copy under ``destination/<run_date|run_id>=<value>/`` (keeping the
newest ``retention`` versions) and upserts the predictions into the lookup store.
Shards may come from different runs (a resumed run reuses the shards an interrupted one
committed), so several run ids are allowed and recorded.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import shutil
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.data.sources import source_options
from components.errors import DataError, ParamError
from components.io.files import atomic_path, list_parts, read_json, sha256_file, write_json
from components.names import MANIFEST_FILE
from components.params import PublishParams
from components.scoring.lookup import LookupStore
from components.scoring.plan import marker_path, plan_scoring, rejects_path

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Verify and gather shard predictions into ``outputs["predictions"]``, then publish.

    Args:
        inputs: ``predictions``: the infer output directories (one per shard, or one path);
            ``scoring``: what was scored (an etl scoring set, or external data).
        params: ``shards``, ``id_column`` and the source options (``format``, ``csv``,
            ``columns``, ``storage_options``, ``batch_rows``) for external data (an etl
            scoring set records its shards and id column); ``run_id``; ``run_date``
            (``YYYY-MM-DD``; empty for today, UTC); ``destination`` (folder of versioned
            datasets, or null), ``partition_by`` (``run_date`` or ``run_id``),
            ``retention`` (versions kept) and ``store_url`` (SQLAlchemy URL of the lookup
            store, or null).
        outputs: ``predictions``: directory to create.

    Returns:
        ``rows`` and ``files`` published, ``rejected`` rows (when any were quarantined)
        and ``stored`` rows upserted into the store.
    """
    scoring = str(inputs["scoring"])
    sources = inputs["predictions"]
    source_dirs = [sources] if isinstance(sources, str) else list(sources)
    typed = PublishParams.parse(params)
    plan = plan_scoring(scoring, typed.shards, source_options(typed.source, typed.id_column))
    expected = {f"part-{k:05d}.parquet": plan.expected_rows(k) for k in range(len(plan.shards))}

    files = _gather(source_dirs, expected, scoring)
    rows = {name: pq.ParquetFile(path).metadata.num_rows for name, path in files.items()}
    rejected = {name: _rejected(path) for name, path in files.items()}
    _check_counts(expected, rows, rejected)
    _check_markers(files, rows, rejected)
    versions, run_ids = _check_ids_and_versions(files, plan.id_column)

    out_dir = outputs["predictions"]
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(files):
        _link_or_copy(files[name], os.path.join(out_dir, name))
        if rejected[name]:
            quarantined = rejects_path(os.path.dirname(files[name]), int(name[5:10]))
            _link_or_copy(quarantined, os.path.join(out_dir, os.path.basename(quarantined)))
    total = sum(rows.values())
    published_at = dt.datetime.now(dt.UTC)
    run_date = _run_date(typed.run_date, published_at)
    model_version = next(iter(versions), None)
    manifest = {
        "rows": total,
        "files": [{"name": name, "rows": rows[name]} for name in sorted(files)],
        "rejected": sum(rejected.values()),
        "model_version": model_version,
        "run_ids": sorted(run_ids),
        "id_column": plan.id_column,
        "published_at": published_at.isoformat(),
        "run_date": run_date,
    }
    metrics: dict[str, Any] = {"rows": total, "files": len(files)}
    if manifest["rejected"]:
        metrics["rejected"] = manifest["rejected"]
    run_id = typed.run_id
    if typed.destination:
        version_dir = _publish_version(
            out_dir,
            manifest,
            typed.destination,
            typed.partition_by,
            run_id,
            run_date,
            typed.retention,
        )
        manifest["published_to"] = version_dir
    if typed.store_url and model_version is not None:
        store = LookupStore(typed.store_url)
        try:
            metrics["stored"] = store.upsert(
                (
                    batch
                    for name in sorted(files)
                    for batch in pq.ParquetFile(files[name]).iter_batches(batch_size=65_536)
                ),
                model_version=model_version,
                run_id=run_id,
                published_at=published_at,
                id_column=plan.id_column,
            )
            store.retain(typed.retention)
        finally:
            store.close()
    write_json(os.path.join(out_dir, MANIFEST_FILE), manifest)
    log.info(
        "published %d predictions in %d files to %s (%d rows rejected)",
        total,
        len(files),
        out_dir,
        manifest["rejected"],
    )
    return metrics


def _gather(source_dirs: list[str], expected: dict[str, int], scoring: str) -> dict[str, str]:
    files: dict[str, str] = {}
    for directory in source_dirs:
        for path in list_parts(directory):
            name = os.path.basename(path)
            if name in files:
                raise DataError(
                    f"{name} appears in both {os.path.dirname(files[name])} and {directory}; "
                    "each shard must be scored exactly once"
                )
            if name not in expected:
                raise DataError(
                    f"{path} matches no shard of scoring set {scoring} (it has "
                    f"{len(expected)} shards); publish only this scoring set's predictions"
                )
            files[name] = path
    return files


def _rejected(path: str) -> int:
    """Rows the shard of predictions file ``path`` quarantined, from its commit marker (0
    when it has none: :func:`_check_markers` refuses it)."""
    marker = marker_path(os.path.dirname(path), int(os.path.basename(path)[5:10]))
    if not os.path.exists(marker):
        return 0
    return int(read_json(marker, what="inference").get("rejected", 0))


def _check_counts(
    expected: dict[str, int], found: dict[str, int], rejected: dict[str, int]
) -> None:
    """Each shard's predictions plus rejected rows must equal its input rows."""
    missing = [int(name[5:10]) for name in sorted(expected) if name not in found]
    wrong = {
        int(name[5:10]): f"{found[name]} (expected {n - rejected[name]})"
        for name, n in sorted(expected.items())
        if name in found and found[name] + rejected[name] != n
    }
    if missing or wrong:
        detail = f"missing shards: {missing}" if missing else "no shard missing"
        if wrong:
            detail += f"; shards with wrong row counts: {wrong}"
        dropped = sum(rejected.values())
        raise DataError(
            f"expected {sum(expected.values()) - dropped} predictions (one per scoring row"
            f"{f', {dropped} rows rejected' if dropped else ''}), found "
            f"{sum(found.values())}; {detail}: re-run inference for those shards"
        )


def _check_markers(files: dict[str, str], rows: dict[str, int], rejected: dict[str, int]) -> None:
    """Each shard file must have its commit marker, with its row count and sha256, and the
    quarantined rows the marker counts."""
    for name, path in sorted(files.items()):
        shard = int(name[5:10])
        marker = marker_path(os.path.dirname(path), shard)
        if not os.path.exists(marker):
            raise DataError(
                f"{path} has no commit marker {os.path.basename(marker)}, so its shard never "
                "finished: re-run inference for that shard"
            )
        committed = read_json(marker, what="inference")
        if committed.get("rows") != rows[name] or committed.get("sha256") != sha256_file(path):
            raise DataError(
                f"{path} does not match its commit marker (rows {rows[name]} vs "
                f"{committed.get('rows')}, or its sha256 differs); it changed after inference "
                "committed it: re-run inference for that shard"
            )
        quarantined = rejects_path(os.path.dirname(path), shard)
        kept = pq.read_metadata(quarantined).num_rows if os.path.exists(quarantined) else 0
        if rejected[name] and kept != rejected[name]:
            raise DataError(
                f"{quarantined} holds {kept} rejected rows but the commit marker of shard "
                f"{shard} counts {rejected[name]}; the quarantine changed after inference "
                "committed it: re-run inference for that shard"
            )


def _check_ids_and_versions(files: dict[str, str], id_column: str) -> tuple[set[str], set[str]]:
    """One prediction per id across all files, and one model version."""
    versions: set[str] = set()
    run_ids: set[str] = set()
    ids: list[pa.ChunkedArray] = []
    for name in sorted(files):
        table = pq.read_table(files[name], columns=[id_column, "model_version", "run_id"])
        if pc.count_distinct(table[id_column]).as_py() != table.num_rows:
            raise DataError(
                f"{files[name]} holds repeated {id_column!r} values; expected one prediction "
                "per id: re-run inference for that shard"
            )
        ids.append(table[id_column])
        versions.update(pc.unique(table["model_version"].cast(pa.string())).to_pylist())
        run_ids.update(pc.unique(table["run_id"].cast(pa.string())).to_pylist())
    every = pa.chunked_array(
        [chunk for column in ids for chunk in column.chunks], ids[0].type if ids else pa.string()
    )
    if pc.count_distinct(every).as_py() != len(every):
        raise DataError(
            "the same id has predictions in more than one shard; expected one prediction per "
            "id: de-duplicate the ids of the data to score"
        )
    if len(versions) > 1:
        raise DataError(
            f"predictions mix model versions {sorted(versions)}; re-run inference for every "
            "shard with one model"
        )
    return versions, run_ids


def _publish_version(
    out_dir: str,
    manifest: dict[str, Any],
    destination: str,
    partition_by: str,
    run_id: str,
    run_date: str,
    retention: int,
) -> str:
    """Copy the predictions to ``destination/<partition>=<value>/`` (manifest last, folder
    renamed into place), then remove all but the ``retention`` newest versions."""
    value = run_date if partition_by == "run_date" else run_id
    if not value:
        raise DataError(
            "publish.partition_by=run_id needs the run id, which this backend did not give; "
            "use publish.partition_by=run_date"
        )
    final = os.path.join(destination, f"{partition_by}={value}")
    staging = f"{final}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for entry in manifest["files"]:
        _link_or_copy(os.path.join(out_dir, entry["name"]), os.path.join(staging, entry["name"]))
    write_json(os.path.join(staging, MANIFEST_FILE), manifest)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(staging, final)
    versions = sorted(
        (read_json(path, what="publish")["published_at"], os.path.dirname(path))
        for path in glob.glob(os.path.join(glob.escape(destination), "*=*", MANIFEST_FILE))
    )
    for _, old in versions[:-retention]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed published version %s (retention %d)", old, retention)
    log.info("published version %s", final)
    return final


def _link_or_copy(source: str, destination: str) -> None:
    """Hard-link ``source`` into place (copy across filesystems), atomically."""
    with atomic_path(destination) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _run_date(value: str, published_at: dt.datetime) -> str:
    """The run's logical date (``run_date`` param), else the publication date (UTC)."""
    if not value:
        return published_at.date().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ParamError(
            f"run_date {value!r} is not a date YYYY-MM-DD; set run_date=2026-11-21 or leave it "
            "empty for today"
        ) from None
