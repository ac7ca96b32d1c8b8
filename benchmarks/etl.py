"""ETL throughput and memory: kfbatch's etl step against plain pyarrow CSV -> Parquet.

Run from the repository root::

    .venv/bin/python -m benchmarks.etl [--repeats N | --quick]

For each size (0.5 GB and 2 GB; ``--quick``: 25 MB and 100 MB) a synthetic CSV is generated
in a temporary directory (20 columns: an id, 15 floats, 2 categories, a timestamp and a 0/1
label) and converted, in the same run, by

* ``baseline``: ``pyarrow.csv.open_csv`` streaming into one ``pyarrow.parquet.ParquetWriter``
  (zstd, no dictionary for floats, 128k-row row groups), the plain streaming conversion;
* ``kfbatch``: ``components.etl.run`` with row-level transforms (a derived column, a clip, a
  fill, timestamp parts), six quality checks on raw and prepared rows, train/validation/test
  splits, 4 scoring shards, the fitted feature spec, rejects and the quality report.

Each conversion runs in a fresh child process, which reports its own wall time and peak RSS
(``ru_maxrss``); the two systems alternate which goes first. The ratio is baseline seconds /
kfbatch seconds on the same file (medians). The files are deleted afterwards.

Output: a table of medians, then, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

SIZES_MB = {"small": 512, "large": 2048}
QUICK_SIZES_MB = {"small": 25, "large": 100}
CHUNK_ROWS = 200_000
FLOATS = 15

#: The etl step under test, as a user would configure it: a derived column, a clip, a fill,
#: timestamp parts, six quality checks on raw and prepared rows, 4 scoring shards.
ETL_OVERRIDES = (
    "data=csv",
    "data.uri=benchmark.csv",
    "data.format=csv",
    "data.id_column=id",
    "data.target=label",
    "data.batch_rows=32768",
    "+data.columns.f0=float64",
    "+data.columns.at='timestamp[s]'",
    "seed=1",
    "inference.shards=4",
    "+features.derive.f0_plus_f1='f0 + f1'",
    "+features.clip.f2=[-3.0,3.0]",
    "+features.fill.f3=0.0",
    "+features.timestamp_parts.at=[hour,day_of_week]",
    "etl.max_reject_fraction=0.01",
    "quality.checks=[{check: row_count, min: 1}, {column: id, check: not_null},"
    " {column: f0, check: null_fraction, max: 0.1},"
    " {column: f2, check: range, min: -3, max: 3, on: prepared},"
    " {column: kind, check: allowed, values: [a, b, c, d]},"
    " {column: label, check: type, type: int64}]",
)


def generate(path: Path, megabytes: int, seed: int = 0) -> int:
    """Write a CSV of about ``megabytes`` MB; return its row count."""
    rng = np.random.default_rng(seed)
    target = megabytes * 1_000_000
    rows = 0
    with pacsv.CSVWriter(str(path), _schema()) as writer:
        while True:
            n = CHUNK_ROWS
            ids = pa.array([f"r{i}" for i in range(rows, rows + n)])
            columns = {"id": ids}
            for j in range(FLOATS):
                columns[f"f{j}"] = pa.array(np.round(rng.normal(size=n), 4))
            columns["kind"] = pa.array(np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)])
            columns["region"] = pa.array(
                np.array([f"reg{k}" for k in range(30)])[rng.integers(0, 30, n)]
            )
            seconds = 1_700_000_000 + rng.integers(0, 86_400 * 365, n)
            columns["at"] = pa.array(seconds.astype("datetime64[s]"))
            columns["label"] = pa.array(rng.integers(0, 2, n))
            writer.write_batch(pa.RecordBatch.from_pydict(columns, schema=_schema()))
            rows += n
            if path.stat().st_size >= target:
                break
    return rows


def _schema() -> pa.Schema:
    return pa.schema(
        [("id", pa.string())]
        + [(f"f{j}", pa.float64()) for j in range(FLOATS)]
        + [
            ("kind", pa.string()),
            ("region", pa.string()),
            ("at", pa.timestamp("s")),
            ("label", pa.int64()),
        ]
    )


# --------------------------------------------------------------------------- children


def _baseline(source: str, out: str) -> int:
    import pyarrow.parquet as pq

    reader = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=16 << 20))
    floats = [f.name for f in reader.schema if not pa.types.is_floating(f.type)]
    rows = 0
    with pq.ParquetWriter(
        os.path.join(out, "data.parquet"),
        reader.schema,
        compression="zstd",
        use_dictionary=floats,
    ) as writer:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= 131_072:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
                rows += pending_rows
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
            rows += pending_rows
    return rows


def _kfbatch(source: str, out: str) -> Callable[[], int]:
    """The etl step on ``source``, its params composed first (as the runner hands a worker
    composed params: composing is not part of the step's time)."""
    from pipelines.builder import build_dag
    from pipelines.config.compose import compose_config

    params = dict(build_dag(compose_config(ETL_OVERRIDES).config).node("etl").params)
    outputs = {
        name: os.path.join(out, name)
        for name in ("dataset", "feature_spec", "scoring", "rejects", "quality")
    }

    def convert() -> int:
        from components import etl

        return int(etl.run({"source": source}, params, outputs)["rows"])

    return convert


def child_main(system: str, source: str, out: str) -> None:
    """Entry of a child process: convert once, print seconds, rows and peak RSS as JSON."""
    convert = (
        functools.partial(_baseline, source, out) if system == "baseline" else _kfbatch(source, out)
    )
    start = time.perf_counter()
    rows = convert()
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mb": peak_kb / 1024}))


def _measure(system: str, source: Path, work: Path) -> dict[str, float]:
    out = work / f"out-{system}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.etl", "--child", system, str(source), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small files, one repetition")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return
    sizes = QUICK_SIZES_MB if args.quick else SIZES_MB
    repeats = 1 if args.quick else args.repeats
    summary: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kfbatch-bench-etl-") as tmp:
        work = Path(tmp)
        for label, megabytes in sizes.items():
            source = work / f"{label}.csv"
            rows = generate(source, megabytes)
            size_mb = source.stat().st_size / 1e6
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "kfbatch": []}
            for r in range(repeats):
                order = ("baseline", "kfbatch") if r % 2 == 0 else ("kfbatch", "baseline")
                for system in order:
                    result = _measure(system, source, work)
                    if result["rows"] != rows:
                        raise SystemExit(f"{system} wrote {result['rows']} rows of {rows}")
                    runs[system].append(result)
            source.unlink()
            summary[label] = {
                "mb": size_mb,
                "rows": rows,
                **{
                    f"{system}_{key}": statistics.median(r[key] for r in results)
                    for system, results in runs.items()
                    for key in ("seconds", "peak_rss_mb")
                },
            }
    print(f"{'file':<8}{'MB':>8}{'rows':>11}{'system':>10}{'s':>9}{'MB/s':>8}{'peak RSS MB':>13}")
    for label, s in summary.items():
        for system in ("baseline", "kfbatch"):
            seconds = s[f"{system}_seconds"]
            print(
                f"{label:<8}{s['mb']:>8.0f}{s['rows']:>11}{system:>10}{seconds:>9.2f}"
                f"{s['mb'] / seconds:>8.1f}{s[f'{system}_peak_rss_mb']:>13.0f}"
            )
    ratios = [s["baseline_seconds"] / s["kfbatch_seconds"] for s in summary.values()]
    print(
        json.dumps(
            {
                "bench": "etl",
                "throughput_ratio": round(min(ratios), 3),
                "peak_rss_mb_small": round(summary["small"]["kfbatch_peak_rss_mb"], 1),
                "peak_rss_mb_large": round(summary["large"]["kfbatch_peak_rss_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
