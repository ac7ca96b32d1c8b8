"""Batch inference over one scoring shard: the map step of the inference fan-out.

On a GPU scoring is a three-stage pipeline so that the device never waits on the host: a
reader thread decodes Parquet, CSV or JSON Lines chunks and turns them into feature tensors,
the calling thread runs the model batch by batch under ``torch.inference_mode``, and a
writer thread encodes predictions to Parquet; queues between them are short, so memory
stays at a few chunks. On CPU the same stages run one after the other in the calling
thread: the step's torch threads already use its whole CPU budget (the local runner and a
pod's CPU limit give it ``threads`` cores), and extra I/O threads competing for those cores
measured 16% slower (2 shard processes on 2 cores: 375k vs 445k rows/s).

Each shard commits exactly once: ``part-<k>.parquet`` is written under a temporary name and
renamed, then ``_shard-<k>.json`` (rows, rejected rows, the file's sha256, a fingerprint of
the inputs) is written last. A re-run that finds a committed shard for the same inputs and
model reuses it. CSV and JSON Lines rows that cannot be read are quarantined in
``_rejects-<k>.parquet``; more than ``max_reject_fraction`` of the shard's rows fails it.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from components.data.features import FeatureSpec
from components.data.rejects import Rejects
from components.data.sources import source_options
from components.errors import DataError, ParamError
from components.io.arrays import from_numpy, strings
from components.io.files import ParquetSink, read_json, sha256_file, write_json
from components.model_artifact import load_model, scores_from_logits
from components.params import InferParams, fan_out_item
from components.scoring.batching import choose_batch_size, optimize_model
from components.scoring.plan import (
    ScoringPlan,
    local_model,
    marker_path,
    part_path,
    plan_scoring,
    rejects_path,
)

__all__ = ["predictions_schema", "run"]

log = logging.getLogger(__name__)

#: Rows decoded and transformed at once; forward batches are slices of a chunk.
CHUNK_ROWS = 32_768
#: Rows of the data to score that auto batch sizing and the optimization check use.
SAMPLE_ROWS = 4096
#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DONE = object()


def predictions_schema(id_column: str, id_type: pa.DataType, task: str, classes: int) -> pa.Schema:
    """Columns of a predictions file: the id column keeps its name and type.

    ``score`` is the positive-class probability (binary), the top class's probability
    (multiclass, with every class's in ``probabilities``) or the prediction (regression,
    whose ``label`` is null). Constant columns are dictionary-encoded: they cost nothing.
    """
    label = pa.dictionary(pa.int16(), pa.string())  # up to MAX_CLASSES (1000) classes
    fields = [pa.field(id_column, id_type), pa.field("score", pa.float32())]
    if task == "multiclass":
        fields.append(pa.field("probabilities", pa.list_(pa.float32(), classes)))
    return pa.schema(
        [
            *fields,
            pa.field("label", label),
            pa.field("model_version", pa.dictionary(pa.int8(), pa.string())),
            pa.field("run_id", pa.dictionary(pa.int8(), pa.string())),
            pa.field("scored_at", pa.timestamp("ms", tz="UTC")),
        ]
    )


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Score shard ``params["shard"]`` into ``predictions/part-<shard>.parquet``.

    Args:
        inputs: ``scoring`` (an etl scoring set, or CSV, JSON Lines or Parquet data, local
            or on an object store) and ``model`` (a model artifact directory, local or on
            an object store).
        params: ``shard``; ``shards`` (fan-out width; default: the scoring set's);
            ``batch_size`` (rows per forward pass, or ``"auto"``); ``memory_cap_mb``
            (auto's cap on one batch's activations); ``threshold`` (binary label cut);
            ``id_column``, ``format``, ``csv``, ``columns``, ``storage_options`` and
            ``batch_rows`` (external data, read as etl reads its source: see
            :meth:`components.data.sources.SourceOptions.of`); ``max_reject_fraction``
            (of a shard's CSV/JSON Lines rows that may be unreadable); ``run_id``;
            ``threads`` (torch threads); ``device`` (``auto``, ``cpu`` or ``cuda``);
            ``optimize`` (list) and ``tolerance`` (largest score change the optimization
            may cause).
        outputs: ``predictions``: directory to create.

    Returns:
        ``rows``, ``rejected``, ``seconds``, ``rows_per_s``, ``batch_size``, ``reused`` (1
        when an already committed shard was kept) and the optimization metrics.
    """
    start = time.perf_counter()
    typed = InferParams.parse(params)
    scoring = str(inputs["scoring"])
    shard = int(fan_out_item(typed, "shard"))
    torch.set_num_threads(typed.threads)
    plan = _plan(scoring, shard, typed)
    with local_model(str(inputs["model"]), typed.storage_options) as model_dir:
        model, spec, meta = load_model(model_dir)
    task = str(meta.get("task", "binary"))
    classes = [str(c) for c in meta.get("classes", ["0", "1"])]
    out_dir = outputs["predictions"]
    os.makedirs(out_dir, exist_ok=True)
    fingerprint = _fingerprint(plan, shard, meta["version"], typed)
    committed = _committed(out_dir, shard, fingerprint)
    if committed is not None:
        log.info("shard %d: already committed (%d rows); reusing it", shard, committed["rows"])
        return {
            "rows": committed["rows"],
            "rejected": committed.get("rejected", 0),
            "seconds": 0.0,
            "rows_per_s": 0.0,
            "reused": 1,
        }

    device = _device(typed.device)
    _keep_freed_memory()
    model = model.to(device)
    # Declared transforms (spec.prepare) build some input columns from others, which raw data
    # lacks: read every column then, and let the spec say what is missing.
    columns = None if spec.prepare else list(dict.fromkeys([plan.id_column, *spec.input_columns]))
    methods, batch_size = typed.optimize, typed.batch_size
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise ParamError(
            f"batch_size {batch_size!r} is not a row count >= 1 or 'auto'; set "
            "inference.batch_size accordingly"
        )
    metrics: dict[str, Any] = {}
    if methods or batch_size == "auto":  # both measure on a sample of the shard
        sample = _sample(plan, shard, columns, spec, device)
        model, metrics = optimize_model(
            model, methods, sample, task=task, tolerance=typed.tolerance
        )
        if batch_size == "auto":
            cap = typed.memory_cap_mb * 2**20
            # an empty shard has nothing to measure and nothing to score
            batch_size = (
                choose_batch_size(model, sample, memory_cap_bytes=cap)[0] if len(sample) else 1
            )

    id_type = _id_type(plan, plan.id_column)
    schema = predictions_schema(plan.id_column, id_type, task, len(classes))
    constants = _Constants(schema, meta["version"], typed.run_id, classes)
    scorer = _Scorer(model, task, typed.threshold, batch_size, device)
    path = part_path(out_dir, shard)
    rejects = Rejects(rejects_path(out_dir, shard))
    chunks = plan.read(plan.shards[shard], columns, max(CHUNK_ROWS, batch_size), rejects.add)
    # a unique id would fill a dictionary that Parquet then abandons
    with ParquetSink(path, schema, plain=[plan.id_column]) as sink, rejects:
        (_pipeline if device.type == "cuda" else _sequential)(
            chunks,
            lambda batch: (batch.column(plan.id_column), _features(spec, batch, device)),
            scorer,
            lambda ids, out: sink.write(constants.batch(ids, *out)),
        )
    expected = plan.expected_rows(shard)
    if sink.rows + rejects.count != expected:
        os.remove(path)
        raise DataError(
            f"shard {shard} of {scoring} gave {sink.rows} predictions and {rejects.count} "
            f"rejected rows for {expected} rows; the input changed while it was scored: "
            "re-run inference"
        )
    try:
        rejects.refuse_above(expected, typed.max_reject_fraction)
    except DataError:
        os.remove(path)  # a failed shard leaves its rejects to inspect, no predictions
        raise
    write_json(
        marker_path(out_dir, shard),
        {
            "shard": shard,
            "file": os.path.basename(path),
            "rows": sink.rows,
            "rejected": rejects.count,
            "sha256": sha256_file(path),
            "inputs": fingerprint,
            "model_version": meta["version"],
            "id_column": plan.id_column,
            "run_id": constants.run_id,
            "batch_size": batch_size,
        },
    )
    seconds = time.perf_counter() - start
    log.info("shard %d: scored %d rows in %.2f s (batch %d)", shard, sink.rows, seconds, batch_size)
    return {
        "rows": sink.rows,
        "rejected": rejects.count,
        "seconds": round(seconds, 3),
        "rows_per_s": round(sink.rows / seconds, 1),
        "batch_size": batch_size,
        "reused": 0,
        **metrics,
    }


def _plan(scoring: str, shard: int, params: InferParams) -> ScoringPlan:
    shards = params.shards
    if not 0 <= shard < shards:
        raise DataError(
            f"shard {shard} is out of range: scoring set {scoring} has {shards} shards "
            f"(0..{shards - 1}); fan inference out over exactly {shards} shards"
        )
    return plan_scoring(scoring, shards, source_options(params.source, params.id_column))


def _fingerprint(plan: ScoringPlan, shard: int, version: str, params: InferParams) -> str:
    """What a committed shard must match to be reused: inputs, model and the settings that
    change predictions or accept them (not the batch size, run id or threads)."""
    keys = ("threshold", "optimize", "tolerance", "max_reject_fraction")
    settings = {k: getattr(params, k) for k in keys}
    text = f"{plan.fingerprint(shard)}|{version}|{sorted(settings.items())!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def _committed(out_dir: str, shard: int, fingerprint: str) -> dict[str, Any] | None:
    """The marker of an intact committed shard made from the same inputs, else None."""
    marker, path = marker_path(out_dir, shard), part_path(out_dir, shard)
    if not (os.path.exists(marker) and os.path.exists(path)):
        return None
    committed = read_json(marker, what="inference")
    if committed.get("inputs") != fingerprint or committed.get("sha256") != sha256_file(path):
        log.info("shard %d: committed output is for other inputs or damaged; redoing it", shard)
        return None
    return committed


def _keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing it back to the OS at once.

    Scoring frees and allocates the same large buffers every chunk (decoded Parquet,
    features, activations). With glibc's adaptive thresholds the heap's free top went back
    to the OS and the next chunk faulted it in again page by page: 25,000-55,000 page faults
    per million rows, 3% of a shard's time with the inputs mapped (it leaves pure forward
    passes alone). Fixed thresholds of 64 MiB (mmap) and 256 MiB (trim) keep the memory.
    A process-wide setting, as is the torch thread count; no-op without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError(
            "inference.device=cuda but no CUDA device is visible; request a GPU "
            "(resources.steps.infer.gpu=1) or set inference.device=cpu"
        )
    return torch.device(name)


def _sample(
    plan: ScoringPlan,
    shard: int,
    columns: list[str] | None,
    spec: FeatureSpec,
    device: torch.device,
) -> torch.Tensor:
    """Up to :data:`SAMPLE_ROWS` feature rows from the start of the shard, on ``device``."""
    batch = next(plan.read(plan.shards[shard], columns, SAMPLE_ROWS), None)
    if batch is None:
        return torch.zeros(0, len(spec.feature_names), device=device)
    if plan.id_column not in batch.schema.names:
        raise DataError(
            f"the data to score lacks the id column {plan.id_column!r} (it has "
            f"{batch.schema.names}); set data.id_column to its id column"
        )
    return _features(spec, batch, device).to(device)


def _id_type(plan: ScoringPlan, id_column: str) -> pa.DataType:
    """The id column's type, from the first input unit of any shard (so that an empty shard
    writes the same schema as the others)."""
    units = tuple(unit for shard in plan.shards for unit in shard)[:1]
    batch = next(plan.read(units, [id_column], 1), None)
    return pa.string() if batch is None else batch.schema.field(id_column).type


def _features(spec: FeatureSpec, batch: pa.RecordBatch, device: torch.device) -> torch.Tensor:
    features = torch.from_numpy(spec.transform(batch))
    if device.type == "cuda":
        features = features.pin_memory()  # lets the host-to-device copy run asynchronously
    return features


class _Constants:
    """Builds output record batches: the constant columns are slices of arrays made once.

    Arrays are made from numpy buffers (:mod:`components.io.arrays`), so that scoring never
    imports pandas.
    """

    def __init__(self, schema: pa.Schema, version: str, run_id: str, classes: list[str]) -> None:
        self.schema, self.run_id = schema, run_id
        self.version = strings([version])
        self.run = strings([run_id])
        self.classes = strings(classes)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.scored_at_ms = int(now.timestamp()) * 1000
        self.zeros = self.stamps = pa.nulls(0)
        self._reserve(CHUNK_ROWS)

    def _reserve(self, rows: int) -> None:
        """Make the constant arrays at least ``rows`` long."""
        if rows <= len(self.zeros):
            return
        self.zeros = from_numpy(np.zeros(rows, np.int8))
        stamps = np.full(rows, self.scored_at_ms, np.int64)
        self.stamps = from_numpy(stamps, self.schema.field("scored_at").type)

    def batch(
        self, ids: pa.Array, score: np.ndarray, label: np.ndarray | None, probs: np.ndarray | None
    ) -> pa.RecordBatch:
        rows = len(ids)
        self._reserve(rows)
        columns: list[pa.Array] = [ids, from_numpy(score)]
        if probs is not None:
            flat = from_numpy(probs.ravel())
            columns.append(pa.FixedSizeListArray.from_arrays(flat, probs.shape[1]))
        if label is None:
            columns.append(pa.nulls(rows, self.schema.field("label").type))
        else:
            columns.append(pa.DictionaryArray.from_arrays(from_numpy(label), self.classes))
        columns += [
            pa.DictionaryArray.from_arrays(self.zeros.slice(0, rows), self.version),
            pa.DictionaryArray.from_arrays(self.zeros.slice(0, rows), self.run),
            self.stamps.slice(0, rows),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


class _Scorer:
    """Runs the model over one chunk in forward batches; returns scores, labels, probabilities."""

    def __init__(
        self, model: nn.Module, task: str, threshold: float, batch_size: int, device: torch.device
    ) -> None:
        self.model, self.task, self.threshold = model, task, threshold
        self.batch_size, self.device = batch_size, device
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def to_device(self, features: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Start copying a chunk to the GPU on a side stream, so that it overlaps the
        previous chunk's compute; returns the tensor and the event marking the copy done."""
        if self.copy_stream is None:
            return features, None
        with torch.cuda.stream(self.copy_stream):
            on_device = features.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        on_device.record_stream(torch.cuda.current_stream(self.device))
        return on_device, copied

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores of one forward batch. A short batch is padded with zero rows to the batch
        size, so that every matrix product has the same shape: kernels then sum each row in
        the same order wherever it falls, and a row gets the same score whichever shard,
        chunk or batch position it was scored in."""
        rows = batch.shape[0]
        if rows < self.batch_size:
            batch = torch.cat([batch, batch.new_zeros(self.batch_size - rows, batch.shape[1])])
        return scores_from_logits(self.task, self.model(batch))[:rows]

    def __call__(
        self, staged: tuple[torch.Tensor, Any]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        features, copied = staged
        if copied is not None:
            torch.cuda.current_stream(self.device).wait_event(copied)
        rows, size = features.shape[0], self.batch_size
        with torch.inference_mode():
            starts = range(0, rows, size) if rows else [0]  # an empty chunk still has a shape
            out = torch.cat([self._forward(features[i : i + size]) for i in starts])
            scores = out.float().cpu().numpy()
        if self.task == "binary":
            return scores, (scores >= self.threshold).astype(np.int16), None
        if self.task == "multiclass":
            return scores.max(axis=1), scores.argmax(axis=1).astype(np.int16), scores
        return scores, None, None


#: Reads one chunk's ids and host-side features.
_Prepare = Callable[[pa.RecordBatch], tuple[pa.Array, torch.Tensor]]
#: Writes one chunk's ids and its scorer outputs.
_Write = Callable[[pa.Array, tuple[Any, ...]], None]


def _sequential(
    chunks: Iterator[pa.RecordBatch], prepare: _Prepare, score: _Scorer, write: _Write
) -> None:
    """Read+transform, score and write each chunk in turn, in the calling thread."""
    for chunk in chunks:
        ids, features = prepare(chunk)
        write(ids, score(score.to_device(features)))


def _pipeline(
    chunks: Iterator[pa.RecordBatch], prepare: _Prepare, score: _Scorer, write: _Write
) -> None:
    """Read+transform, score and write concurrently; the first error anywhere stops all."""
    stop = threading.Event()
    to_score: queue.Queue[Any] = queue.Queue(maxsize=2)
    to_write: queue.Queue[Any] = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def put(q: queue.Queue[Any], item: Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.1)
                return

    def get(q: queue.Queue[Any]) -> Any:
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                return q.get(timeout=0.1)
        return _DONE

    def reader() -> None:
        try:
            for chunk in chunks:
                put(to_score, prepare(chunk))
        except BaseException as error:  # handed to the calling thread
            errors.append(error)
            stop.set()
        put(to_score, _DONE)

    def writer() -> None:
        try:
            while (item := get(to_write)) is not _DONE:
                write(*item)
        except BaseException as error:  # handed to the calling thread
            errors.append(error)
            stop.set()

    threads = [
        threading.Thread(target=reader, name="infer-read", daemon=True),
        threading.Thread(target=writer, name="infer-write", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        previous = None
        while (item := get(to_score)) is not _DONE:
            ids, features = item
            staged = (ids, score.to_device(features))  # copies while the previous one scores
            if previous is not None:
                put(to_write, (previous[0], score(previous[1])))
            previous = staged
        if previous is not None and not stop.is_set():
            put(to_write, (previous[0], score(previous[1])))
        put(to_write, _DONE)
    except BaseException:
        stop.set()
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
