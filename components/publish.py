"""Publish predictions: the reduce step of the inference fan-out.

Gathers every shard's ``part-*.parquet`` into one directory after checking that there is
exactly one prediction per scoring row and that one model made them all, then writes
``_manifest.json`` last. Shards may come from different runs (a resumed run reuses the
shards an interrupted one finished), so several run ids are allowed and recorded.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.errors import DataError
from components.io import MANIFEST_FILE, atomic_path, list_parts, read_manifest, write_json

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Verify and gather shard predictions into ``outputs["predictions"]``.

    Ids are checked for uniqueness within each file: etl shards by a hash of the id, so
    equal ids always land in the same shard, and memory stays bounded by one shard.
    Predictions from more than one model version are refused; the manifest lists the
    sorted ``run_ids`` that scored the rows.

    Args:
        inputs: ``predictions``: the infer output directories (one per shard, or one
            path); ``scoring``: the etl scoring set that was scored.
        params: Unused; the id column and expected counts come from the scoring manifest.
        outputs: ``predictions``: directory to create.

    Returns:
        ``rows`` and ``files`` published.
    """
    del params
    scoring_dir = str(inputs["scoring"])
    sources = inputs["predictions"]
    source_dirs = [sources] if isinstance(sources, str) else list(sources)
    manifest = read_manifest(scoring_dir)
    id_column = manifest["id_column"]
    expected = {f"part-{k:05d}.parquet": n for k, n in enumerate(manifest["shards"])}

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
                    f"{path} matches no shard of scoring set {scoring_dir} (it has "
                    f"{len(expected)} shards); publish only this scoring set's predictions"
                )
            files[name] = path
    rows = {name: pq.ParquetFile(path).metadata.num_rows for name, path in files.items()}
    _check_counts(expected, rows)

    versions: set[str] = set()
    run_ids: set[str] = set()
    for name in sorted(files):
        table = pq.read_table(files[name], columns=[id_column, "model_version", "run_id"])
        if pc.count_distinct(table[id_column]).as_py() != table.num_rows:
            raise DataError(
                f"{files[name]} holds repeated {id_column!r} values; expected one prediction "
                "per id: re-run inference for that shard"
            )
        versions.update(pc.unique(table["model_version"]).to_pylist())
        run_ids.update(pc.unique(table["run_id"]).to_pylist())
    if len(versions) > 1:
        raise DataError(
            f"predictions mix model versions {sorted(versions)}; re-run inference for every "
            "shard with one model"
        )

    out_dir = outputs["predictions"]
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(files):
        _link_or_copy(files[name], os.path.join(out_dir, name))
    total = sum(rows.values())
    write_json(
        os.path.join(out_dir, MANIFEST_FILE),
        {
            "rows": total,
            "files": [{"name": name, "rows": rows[name]} for name in sorted(files)],
            "model_version": next(iter(versions), None),
            "run_ids": sorted(run_ids),
        },
    )
    log.info("published %d predictions in %d files to %s", total, len(files), out_dir)
    return {"rows": total, "files": len(files)}


def _check_counts(expected: dict[str, int], found: dict[str, int]) -> None:
    missing = [int(name[5:10]) for name in sorted(expected) if name not in found]
    wrong = {
        int(name[5:10]): f"{found[name]} (expected {n})"
        for name, n in sorted(expected.items())
        if name in found and found[name] != n
    }
    if missing or wrong:
        detail = f"missing shards: {missing}" if missing else "no shard missing"
        if wrong:
            detail += f"; shards with wrong row counts: {wrong}"
        raise DataError(
            f"expected {sum(expected.values())} predictions (one per scoring row), found "
            f"{sum(found.values())}; {detail}: re-run inference for those shards"
        )


def _link_or_copy(source: str, destination: str) -> None:
    """Hard-link ``source`` into place (copy across filesystems), atomically."""
    with atomic_path(destination) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
