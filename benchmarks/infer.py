"""Batch inference throughput: kfbatch's infer step against pure forward and per-row scoring.

Run from the repository root::

    .venv/bin/python -m benchmarks.infer [--rows N] [--repeats N] [--shards N]

Setup: ``--rows`` (default 2,000,000) generated rows of 64 float features and an int64 id,
written to one Parquet file in row groups of 131,072 rows, and a model artifact holding the
PERF-NOTES MLP (64 -> 256 -> 256 -> 256 -> 2, eval mode).

Measured in the same run, ``--repeats`` times (default 5: single repeats on this machine
range over +-10%; the JSON figures are medians of per-repeat ratios, so that load from other
processes drifting between repeats cancels out):

1. ``auto``: the batch size ``inference.batch_size: auto`` picks on this machine (the
   component's own search on a 4,096-row sample under a 256 MiB activation cap, one torch
   thread as in each shard).
2. ``e2e``: the inference fan-out as the local runner lays it out with
   ``resources.steps.infer.cpu=1`` and ``inference.parallelism=--shards``: one process per
   shard, all at once, each running ``components.infer.run`` (one torch thread) Parquet in
   to Parquet out at the auto batch size; rows/s over the wall time from the first shard's
   start to the last one's end (model loading, checks, commit markers included; the
   interpreter's start-up excluded); the largest peak RSS of a shard process.
3. ``forward``: the same model on pre-made tensors at the same batch size, the ceiling e2e
   is compared with: the faster of one process with all torch threads (200,000 rows) and
   ``--shards`` processes of one thread each over ``--rows`` rows (run right before and
   right after e2e, averaged).
4. ``per_row``: one model call per row on pre-made tensors (the faster of one and all torch
   threads), timed on 20,000 rows and extrapolated.

Output: a table, then, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from components import infer
from components.data.features import FeatureSpec, NumericColumn
from components.model_artifact import load_model, save_model
from components.scoring.batching import choose_batch_size

FEATURES = 64
MODEL = {"_target_": "components.models.MLP", "hidden": [256, 256, 256], "output_dim": 2}
ROW_GROUP = 131_072
FORWARD_ROWS = 200_000
PER_ROW_ROWS = 20_000
MEMORY_CAP_MB = 256
START_DELAY_S = 5.0


def make_data(directory: Path, rows: int) -> Path:
    """Write ``rows`` rows of an int64 ``id`` and 64 float32 features; return the file."""
    path = directory / "scoring.parquet"
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(FEATURES)]
    schema = pa.schema([("id", pa.int64()), *[(n, pa.float32()) for n in names]])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            values = rng.standard_normal((n, FEATURES), dtype=np.float32)
            ids = pa.array(np.arange(start, start + n, dtype=np.int64))
            columns = [ids, *[pa.array(values[:, j]) for j in range(FEATURES)]]
            writer.write_table(pa.table(columns, schema=schema), row_group_size=n)
    return path


def make_model(directory: Path) -> Path:
    """Save the benchmark MLP with an identity feature spec over the 64 columns."""
    torch.manual_seed(0)
    from components.models import build_model

    model = build_model(MODEL, FEATURES).eval()
    spec = FeatureSpec(
        id_column="id",
        target=None,
        numeric=tuple(NumericColumn(f"f{i}", 0.0, 1.0) for i in range(FEATURES)),
    )
    save_model(str(directory), model, model_cfg=MODEL, spec=spec, metrics={}, history=[])
    return directory


def auto_batch_size(model_dir: Path, data: Path) -> int:
    """The batch size the infer step's ``auto`` search picks on a sample of ``data``."""
    model, spec, _ = load_model(str(model_dir))
    sample = pq.ParquetFile(data).read_row_group(0).slice(0, infer.SAMPLE_ROWS)
    features = torch.from_numpy(spec.transform(sample))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each shard's process
    size, _ = choose_batch_size(model, features, memory_cap_bytes=MEMORY_CAP_MB * 2**20)
    torch.set_num_threads(threads)
    return size


def _children(mode: str, jobs: list[list]) -> list[dict]:
    """Run one child process per job at once; return what each printed (one JSON line).

    Every child starts its timed work at the same moment (:data:`START_DELAY_S` after
    launch, once imports are done), so that no child runs alone for a while.
    """
    start_at = time.time() + START_DELAY_S
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.infer",
                "--child",
                json.dumps([mode, start_at, *job]),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    results = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child failed with exit code {proc.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def _wall(results: list[dict]) -> float:
    return max(r["end"] for r in results) - min(r["start"] for r in results)


def run_e2e(model_dir: Path, data: Path, out: Path, shards: int, batch_size: int) -> dict:
    """The inference fan-out: one process per shard, all at once, one torch thread each (the
    local runner's layout with ``resources.steps.infer.cpu=1``); rows/s over the wall time
    from the first shard's start to the last one's end, and the largest peak RSS."""
    jobs = [[str(model_dir), str(data), str(out), shards, k, batch_size] for k in range(shards)]
    results = _children("e2e", jobs)
    rows = sum(r["rows"] for r in results)
    return {
        "rows": rows,
        "rows_per_s": rows / _wall(results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


def run_forward_processes(model_dir: Path, processes: int, rows: int, batch_size: int) -> float:
    """Pure forward in ``processes`` processes of one thread each, at once; rows/s."""
    jobs = [[str(model_dir), rows // processes, batch_size] for _ in range(processes)]
    results = _children("forward", jobs)
    return sum(r["rows"] for r in results) / _wall(results)


def child(args: str) -> None:
    """One measurement inside a fresh process with one torch thread (prints one JSON line)."""
    mode, start_at, *job = json.loads(args)
    torch.set_num_threads(1)
    if mode == "forward":
        model_dir, rows, batch_size = job
        model, _, _ = load_model(model_dir)
        tensors = torch.randn(rows, FEATURES, generator=torch.Generator().manual_seed(1))
        batches = list(torch.split(tensors, batch_size))
        with torch.inference_mode():
            model(batches[0])
        time.sleep(max(0.0, start_at - time.time()))
        start = time.time()
        rate = forward_rate(model, batches, warm=False)
        print(json.dumps({"rows": rows, "start": start, "end": time.time(), "rate": rate}))
        return
    model_dir, data, out, shards, shard, batch_size = job
    params = _infer_params(model_dir, data, shards, shard, batch_size)
    time.sleep(max(0.0, start_at - time.time()))
    start = time.time()
    metrics = infer.run({"scoring": data, "model": model_dir}, params, {"predictions": out})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"rows": metrics["rows"], "start": start, "end": time.time(), "peak_rss_mb": peak}
    print(json.dumps(result))


def _infer_params(model_dir: str, data: str, shards: int, shard: int, batch_size: int) -> dict:
    """Branch ``shard``'s params of a scoring-only run, composed as ``kfbatch run`` would
    (one CPU per shard: one torch thread)."""
    from pipelines.builder import build_dag
    from pipelines.config.compose import compose_config
    from pipelines.dag import RUN_ID
    from pipelines.execution import substitute

    overrides = [
        "stages=[infer]",
        f"inference.model_uri={model_dir}",
        f"inference.data_uri={data}",
        f"inference.shards={shards}",
        f"inference.batch_size={batch_size}",
        "data.id_column=id",
        "resources.steps.infer.cpu=1",
    ]
    dag = build_dag(compose_config(overrides).config)
    params = dict(dag.node(dag.node_names("infer")[shard]).params)
    return substitute(params, RUN_ID, "bench")


def forward_rate(
    model: torch.nn.Module, batches: list[torch.Tensor], *, warm: bool = True
) -> float:
    """Rows/s of the model over pre-made batches."""
    with torch.inference_mode():
        if warm:
            model(batches[0])
        start = time.perf_counter()
        for batch in batches:
            torch.sigmoid(model(batch)[:, 0])
        seconds = time.perf_counter() - start
    return sum(len(b) for b in batches) / seconds


def per_row_rate(model: torch.nn.Module, rows: torch.Tensor) -> float:
    """Rows/s when every row is its own model call (the faster of 1 and all torch threads)."""
    rates = []
    threads = torch.get_num_threads()
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        with torch.inference_mode():
            start = time.perf_counter()
            for i in range(len(rows)):
                torch.sigmoid(model(rows[i : i + 1])[:, 0])
            rates.append(len(rows) / (time.perf_counter() - start))
    torch.set_num_threads(threads)
    return max(rates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="kfbatch-bench-infer-") as tmp_name:
        tmp = Path(tmp_name)
        data = make_data(tmp, args.rows)
        model_dir = make_model(tmp / "model")
        batch_size = auto_batch_size(model_dir, data)
        model, _, _ = load_model(str(model_dir))
        gen = torch.Generator().manual_seed(1)
        tensors = torch.randn(min(FORWARD_ROWS, args.rows), FEATURES, generator=gen)
        batches = list(torch.split(tensors, batch_size))
        e2e, forward, forward_threads, forward_procs, per_row, peaks = [], [], [], [], [], []
        ratios, speedups = [], []
        for repeat in range(args.repeats):
            out = tmp / f"out-{repeat}"
            # Pure forward right before and right after e2e, so that a neighbour's load
            # drifting during the repeat weighs on both sides of the ratio alike.
            before = run_forward_processes(model_dir, args.shards, args.rows, batch_size)
            result = run_e2e(model_dir, data, out, args.shards, batch_size)
            after = run_forward_processes(model_dir, args.shards, args.rows, batch_size)
            assert result["rows"] == args.rows, result
            e2e.append(result["rows_per_s"])
            peaks.append(result["peak_rss_mb"])
            forward_procs.append((before + after) / 2)
            forward_threads.append(forward_rate(model, batches))
            # the ceiling: the faster way to run pure forward on this machine, this repeat
            forward.append(max(forward_threads[-1], forward_procs[-1]))
            per_row.append(per_row_rate(model, tensors[:PER_ROW_ROWS]))
            ratios.append(e2e[-1] / forward[-1])
            speedups.append(e2e[-1] / per_row[-1])
        written = sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(out.glob("*.parquet")))
        assert written == args.rows, written
    per_row_ = statistics.median(per_row)
    summary = {
        "bench": "infer",
        "e2e_vs_forward": round(statistics.median(ratios), 3),
        "speedup_vs_per_row": round(statistics.median(speedups), 1),
        "peak_rss_mb": round(max(peaks), 1),
        "auto_batch_size": batch_size,
    }
    print(f"rows {args.rows:,}  shards {args.shards}  batch (auto) {batch_size}")
    print(f"torch threads {torch.get_num_threads()}  cpus {os.cpu_count()}")
    print(f"{'what':<34}{'rows/s (median)':>18}  all repeats")
    for label, values in (
        ("kfbatch infer, Parquet -> Parquet", e2e),
        ("pure forward (the faster of below)", forward),
        (f"  1 process x {torch.get_num_threads()} threads", forward_threads),
        (f"  {args.shards} processes x 1 thread", forward_procs),
        ("per-row calls (extrapolated)", per_row),
    ):
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{label:<34}{statistics.median(values):>18,.0f}  {runs}")
    print(f"per-row time for {args.rows:,} rows: {args.rows / per_row_:.1f} s (extrapolated)")
    print("e2e / forward per repeat: " + ", ".join(f"{r:.3f}" for r in ratios))
    print("e2e / per-row per repeat: " + ", ".join(f"{r:.1f}" for r in speedups))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
