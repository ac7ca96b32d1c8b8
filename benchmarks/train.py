"""Training throughput: kfbatch's trainer against a plain PyTorch loop, checkpoints, DDP.

Run from the repository root::

    .venv/bin/python -m benchmarks.train [--rows N] [--epochs E] [--repeats R | --quick]

On one synthetic churn dataset (datagen + etl, made once per run in a temporary folder):

1. ``plain``: the baseline, a hand-written loop over the train split already in memory as
   tensors (``randperm`` per epoch, slices of ``batch_size`` rows, the same MLP, AdamW and
   loss), timed over the epochs only.
2. ``kfbatch``: ``components.train.run`` on the same split, streaming it from Parquet and
   transforming features inside the epoch, checkpoints off. Its ``samples_per_s`` counts
   training time only (validation excluded), as the baseline does.
   ``throughput_ratio`` = kfbatch / plain (target >= 0.85).
3. ``checkpoint``: the same run with the default checkpoint frequency
   (``trainer.checkpoint.every_n_steps`` from ``configs/trainer/default.yaml`` plus every
   epoch end). ``checkpoint_overhead`` = time spent writing checkpoints / training time
   (target <= 0.05).
4. ``ddp2``: 2 ranks (gloo, one thread each) against 1 rank with both threads, same global
   batch. ``ddp2_speedup`` = 2-rank / 1-rank samples/s. On a 2-core machine expect < 1
   (PERF-NOTES): the figure is reported, not targeted.

Each measurement is the median of ``--repeats`` runs (3 by default), alternating the order of
plain and kfbatch after one untimed warm-up of each; the ratios are medians of the ratios of
back-to-back pairs, which cancels most of the drift of a machine shared with other work.
Output: a table, then as the last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components import datagen, etl, train
from components.data.features import load_feature_spec
from components.data.labels import fit_target
from components.io.files import iter_batches, split_parts
from components.models import build_model
from pipelines.builder import build_dag
from pipelines.config.compose import compose_config

THREADS = 2
#: The demo config as the benchmark trains it: one scoring shard, an 80/10/10 split, an MLP
#: 256x3 on THREADS threads, no checkpoints unless asked.
BASE = (
    "seed=1",
    "inference.shards=1",
    "data.batch_rows=65536",
    "data.split.train=0.8",
    "data.split.validation=0.1",
    "data.split.test=0.1",
    "model.hidden=[256,256,256]",
    "model.dropout=0.0",
    f"resources.steps.train.cpu={THREADS}",
    "trainer.checkpoint.dir=null",
)


def _params(step: str, *overrides: str) -> dict[str, Any]:
    """The params the DAG gives ``step`` under the benchmark's config and ``overrides``."""
    return dict(build_dag(compose_config((*BASE, *overrides)).config).node(step).params)


def _prepare(root: Path, rows: int) -> dict[str, str]:
    datagen.run({}, _params("datagen", f"data.rows={rows}"), {"raw": str(root / "raw")})
    outputs = {n: str(root / n) for n in ("dataset", "feature_spec", "scoring")}
    etl.run({"source": str(root / "raw")}, _params("etl"), outputs)
    return {"dataset": outputs["dataset"], "feature_spec": outputs["feature_spec"]}


def _trainer(epochs: int, batch_size: int, *overrides: str) -> tuple[str, ...]:
    return (f"trainer.epochs={epochs}", f"trainer.batch_size={batch_size}", *overrides)


def plain_loop(inputs: dict[str, str], epochs: int, batch_size: int) -> float:
    """Samples/s of a hand-written loop over in-memory tensors (the baseline)."""
    spec = load_feature_spec(inputs["feature_spec"])
    parts = split_parts(inputs["dataset"], "train")
    target = fit_target("binary", "churned", parts)
    xs, ys = [], []
    for path in parts:
        for batch in iter_batches(path, [*spec.input_columns, "churned"], 262_144):
            xs.append(spec.transform(batch))
            ys.append(target.encode(batch))
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        torch.manual_seed(0)
        model = build_model(_params("train")["model"], x.shape[1])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(0)
        model.train()
        start = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=generator)
            for offset in range(0, len(y), batch_size):
                index = order[offset : offset + batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[index])[:, 0], y[index])
                loss.backward()
                optimizer.step()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(saved)
    return len(y) * epochs / seconds


def kfbatch_run(inputs: dict[str, str], trainer: tuple[str, ...], out: Path) -> dict[str, Any]:
    """One ``components.train.run`` under the ``trainer.*`` overrides; its metrics."""
    return train.run(inputs, _params("train", *trainer), {"model": str(out)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60k rows, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 60_000, 1
    logging.basicConfig(level=logging.WARNING)
    every = compose_config(BASE).config.trainer.checkpoint.every_n_steps
    results: dict[str, list[float]] = {
        k: [] for k in ("plain", "kfbatch", "ratio", "checkpoint", "overhead", "one", "two", "ddp")
    }
    with tempfile.TemporaryDirectory(prefix="kfbatch-bench-train-") as tmp:
        root = Path(tmp)
        inputs = _prepare(root, args.rows)
        plain_loop(inputs, 1, args.batch_size)  # warm-up: allocator, kernels, page cache
        kfbatch_run(inputs, _trainer(1, args.batch_size), root / "w")
        for repeat in range(args.repeats):
            runs = [
                ("plain", lambda: plain_loop(inputs, args.epochs, args.batch_size)),
                (
                    "kfbatch",
                    lambda: kfbatch_run(inputs, _trainer(args.epochs, args.batch_size), root / "m")[
                        "samples_per_s"
                    ],
                ),
            ]
            for name, call in runs if repeat % 2 == 0 else runs[::-1]:
                results[name].append(call())
            results["ratio"].append(results["kfbatch"][-1] / results["plain"][-1])
            checkpointed = _trainer(
                args.epochs, args.batch_size, f"trainer.checkpoint.dir='{root / 'ck'}'"
            )
            metrics = kfbatch_run(inputs, checkpointed, root / "c")
            results["checkpoint"].append(metrics["checkpoint_seconds"])
            results["overhead"].append(metrics["checkpoint_seconds"] / metrics["train_seconds"])
            one = kfbatch_run(inputs, _trainer(1, args.batch_size), root / "one")
            two = kfbatch_run(
                inputs, _trainer(1, args.batch_size, "trainer.procs_per_node=2"), root / "two"
            )
            results["one"].append(one["samples_per_s"])
            results["two"].append(two["samples_per_s"])
            results["ddp"].append(two["samples_per_s"] / one["samples_per_s"])
    median = {k: statistics.median(v) for k, v in results.items()}
    ratio, speedup = median["ratio"], median["ddp"]
    rows = [
        ("plain PyTorch loop, in-memory tensors", f"{median['plain']:,.0f} samples/s"),
        ("kfbatch trainer, streamed from Parquet", f"{median['kfbatch']:,.0f} samples/s"),
        ("throughput ratio (target >= 0.85)", f"{ratio:.3f}"),
        (
            f"checkpoint time, every {every} steps + epoch ends",
            f"{median['checkpoint'] * 1000:.1f} ms in {args.epochs} epochs",
        ),
        ("checkpoint overhead (target <= 0.05)", f"{median['overhead']:.4f}"),
        ("1 rank x 2 threads", f"{median['one']:,.0f} samples/s"),
        ("2 ranks x 1 thread (gloo DDP)", f"{median['two']:,.0f} samples/s"),
        ("2-rank speedup", f"{speedup:.3f}"),
    ]
    print(
        f"train benchmark: {args.rows:,} rows (80% train), MLP 256x3, batch {args.batch_size}, "
        f"{args.epochs} epochs, {THREADS} threads, medians of {args.repeats}"
    )
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(
        json.dumps(
            {
                "bench": "train",
                "throughput_ratio": round(ratio, 4),
                "checkpoint_overhead": round(median["overhead"], 5),
                "ddp2_speedup": round(speedup, 4),
                "plain_samples_per_s": round(median["plain"], 1),
                "kfbatch_samples_per_s": round(median["kfbatch"], 1),
                "checkpoint_every_n_steps": every,
                "rows": args.rows,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
