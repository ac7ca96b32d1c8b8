"""Batch inference over one scoring shard: the map step of the inference fan-out."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa

from components.errors import DataError
from components.io import ParquetSink, iter_batches, read_manifest, scoring_shard_path
from components.model_artifact import load_model, predict_proba

__all__ = ["predictions_schema", "run"]

log = logging.getLogger(__name__)


def predictions_schema(id_column: str) -> pa.Schema:
    """Columns of a predictions file."""
    return pa.schema(
        [
            (id_column, pa.string()),
            ("score", pa.float32()),
            ("label", pa.int8()),
            ("model_version", pa.string()),
            ("run_id", pa.string()),
        ]
    )


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Score scoring shard ``params["shard"]`` and write ``predictions/part-<shard>.parquet``.

    Args:
        inputs: ``scoring`` (etl output) and ``model`` (train output) directories.
        params: ``shard`` index, ``batch_size`` (rows per forward pass), ``run_id``
            (recorded in every row) and the label ``threshold`` on the score.
        outputs: ``predictions``: directory to create.

    Returns:
        ``rows``, ``seconds`` and ``rows_per_s``.
    """
    start = time.perf_counter()
    scoring_dir = str(inputs["scoring"])
    shard = int(params["shard"])
    batch_size = int(params.get("batch_size", 16_384))
    run_id = str(params.get("run_id", ""))
    threshold = float(params.get("threshold", 0.5))
    manifest = read_manifest(scoring_dir)
    shards = len(manifest["shards"])
    if not 0 <= shard < shards:
        raise DataError(
            f"shard {shard} is out of range: scoring set {scoring_dir} has {shards} shards "
            f"(0..{shards - 1}); fan inference out over exactly {shards} shards"
        )
    id_column = manifest["id_column"]
    if id_column is None:
        raise DataError(
            f"scoring set {scoring_dir} has no id column, so predictions cannot be keyed; "
            "re-run etl with id_column set"
        )
    model, spec, meta = load_model(str(inputs["model"]))
    version = pa.scalar(meta["version"], pa.string())
    run_scalar = pa.scalar(run_id, pa.string())
    schema = predictions_schema(id_column)
    out_dir = outputs["predictions"]
    os.makedirs(out_dir, exist_ok=True)
    source = scoring_shard_path(scoring_dir, shard)
    columns = list(dict.fromkeys([id_column, *spec.input_columns]))
    with ParquetSink(os.path.join(out_dir, f"part-{shard:05d}.parquet"), schema) as sink:
        for batch in iter_batches(source, columns, batch_size):
            scores = predict_proba(model, spec, batch)
            sink.write(
                pa.record_batch(
                    [
                        batch.column(id_column).cast(pa.string()),
                        pa.array(scores, pa.float32()),
                        pa.array((scores >= threshold).astype(np.int8)),
                        pa.repeat(version, batch.num_rows),
                        pa.repeat(run_scalar, batch.num_rows),
                    ],
                    schema=schema,
                )
            )
    seconds = time.perf_counter() - start
    log.info("shard %d: scored %d rows in %.2f s", shard, sink.rows, seconds)
    return {
        "rows": sink.rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(sink.rows / seconds, 1),
    }
