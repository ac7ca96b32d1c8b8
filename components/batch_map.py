"""Batch map: apply a user function to every shard of a dataset, in parallel, then merge.

``run`` is one branch of the DAG's fan-out: it streams one etl scoring shard in record
batches, calls the user function (``function._target_``, an import path, with the other
keys of ``function`` as keyword arguments) on each batch, and writes what it returns (a
``pyarrow.RecordBatch``, any number of rows) to ``mapped/part-<shard>.parquet``.
``merge`` collects every branch's part into one Parquet dataset with a manifest (rows per
part, schema, digests), written last.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from components.binding import bind_target
from components.errors import DataError
from components.io.files import (
    ParquetSink,
    iter_batches,
    read_manifest,
    scoring_shard_path,
    sha256_file,
    write_json,
)
from components.names import MANIFEST_FILE
from components.params import BatchMapParams, fan_out_item

__all__ = ["merge", "run"]

log = logging.getLogger(__name__)


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Map one shard of ``inputs["scoring"]`` through the user function into ``outputs["mapped"]``.

    Args:
        inputs: ``scoring``: an etl scoring directory.
        params: ``shard`` (the fan-out item), ``function`` (``_target_`` plus keyword
            arguments), ``columns`` (None: all) and ``batch_rows``.
        outputs: ``mapped``: directory to create.

    Returns:
        ``rows_in``, ``rows_out`` and ``seconds``.
    """
    typed = BatchMapParams.parse(params)
    shard = int(fan_out_item(typed, "shard"))
    function = _function(typed.function)
    source = scoring_shard_path(str(inputs["scoring"]), shard)
    read_manifest(str(inputs["scoring"]))  # the etl step finished
    columns = typed.columns or pq.read_schema(source).names
    out_dir = outputs["mapped"]
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    rows_in = rows_out = 0
    sink: ParquetSink | None = None
    try:
        for batch in iter_batches(source, list(columns), typed.batch_rows):
            rows_in += batch.num_rows
            result = function(batch)
            if isinstance(result, pa.Table):
                result = result.combine_chunks()
                result = pa.RecordBatch.from_arrays(result.columns, schema=result.schema)
            if not isinstance(result, pa.RecordBatch):
                raise DataError(
                    f"batch_map function {typed.function['_target_']} returned "
                    f"{type(result).__name__}; expected a pyarrow.RecordBatch"
                )
            if sink is None:
                sink = ParquetSink(_part(out_dir, shard), result.schema)
            elif not result.schema.equals(sink.schema):
                raise DataError(
                    f"batch_map function returned schema {result.schema} after "
                    f"{sink.schema}; return the same columns for every batch"
                )
            sink.write(result)
            rows_out += result.num_rows
        if sink is None:  # an empty shard: an empty part with the input schema
            sink = ParquetSink(_part(out_dir, shard), pq.read_schema(source))
        sink.close()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    seconds = time.perf_counter() - start
    write_json(
        os.path.join(out_dir, MANIFEST_FILE),
        {"shard": shard, "rows_in": rows_in, "rows": rows_out},
    )
    log.info("batch_map shard %d: %d rows in, %d out in %.2f s", shard, rows_in, rows_out, seconds)
    return {"rows_in": rows_in, "rows_out": rows_out, "seconds": round(seconds, 3)}


def merge(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Collect the parts of every ``batch_map`` branch into ``outputs["dataset"]``.

    Args:
        inputs: ``mapped``: the branches' output directories (a list).
        params: Unused.
        outputs: ``dataset``: directory to create (``part-*.parquet`` and a manifest).

    Returns:
        ``rows`` and ``parts``.
    """
    del params
    mapped = inputs["mapped"]
    directories = [mapped] if isinstance(mapped, str) else list(mapped)
    out_dir = outputs["dataset"]
    os.makedirs(out_dir, exist_ok=True)
    parts: dict[str, dict[str, Any]] = {}
    schema: pa.Schema | None = None
    for directory in directories:
        manifest = read_manifest(directory)
        name = os.path.basename(_part(directory, int(manifest["shard"])))
        source = os.path.join(directory, name)
        part_schema = pq.read_schema(source)
        if schema is None:
            schema = part_schema
        elif not part_schema.equals(schema):
            raise DataError(
                f"batch_map part {source} has schema {part_schema}, other parts {schema}; "
                "the function must return the same columns for every shard"
            )
        target = os.path.join(out_dir, name)
        shutil.copyfile(source, f"{target}.tmp")
        os.replace(f"{target}.tmp", target)
        parts[name] = {"rows": int(manifest["rows"]), "sha256": sha256_file(target)}
    rows = sum(p["rows"] for p in parts.values())
    write_json(
        os.path.join(out_dir, MANIFEST_FILE),
        {
            "rows": rows,
            "parts": parts,
            "schema": [[f.name, str(f.type)] for f in schema] if schema is not None else [],
        },
    )
    return {"rows": rows, "parts": len(parts)}


def _part(directory: str, shard: int) -> str:
    return os.path.join(directory, f"part-{shard:05d}.parquet")


def _function(spec: dict[str, Any]) -> Callable[[pa.RecordBatch], Any]:
    return bind_target(
        spec, key="batch_map.function", example="components.examples.signals.welch_psd"
    )
