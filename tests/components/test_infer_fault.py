"""Exactly once under a crash: SIGKILL a scoring run midway, run it again, count predictions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from .helpers import Pipeline

SHARDS = 6
COPIES = 100


def _statuses(runs: Path) -> dict[str, str]:
    (manifest,) = _manifests(runs)
    return {
        name: node["status"] for name, node in json.loads(manifest.read_text())["nodes"].items()
    }


def _manifests(runs: Path) -> list[Path]:
    """Run manifests, not counting the ``latest`` link."""
    return [p for p in runs.glob("*/manifest.json") if not p.parent.is_symlink()]


def _committed_shards(cache: Path) -> int:
    """Shards whose results the runner has committed to its step cache."""
    count = 0
    for entry in cache.glob("*/entry.json"):
        if "reused" in json.loads(entry.read_text())["metrics"]:  # infer's metrics
            count += 1
    return count


@pytest.mark.fault
@pytest.mark.slow
def test_killed_scoring_run_resumes_with_one_prediction_per_id(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    rows = pa.concat_tables(
        pq.read_table(p) for p in sorted(pipeline.scoring.glob("shard-*.parquet"))
    )
    # Enough rows (copies with new ids) that each shard takes a while, so the kill lands
    # with some shards committed and others not.
    copies = [
        rows.set_column(
            0, "customer_id", pc.binary_join_element_wise(rows["customer_id"], f"-{k}", "")
        )
        for k in range(COPIES)
    ]
    table = pa.concat_tables(copies)
    data = tmp_path / "to_score.parquet"
    pq.write_table(table, data, row_group_size=len(table) // SHARDS)
    command = [
        str(Path(sys.executable).parent / "kfbatch"),
        "run",
        "stages=[infer]",
        f"inference.model_uri={pipeline.model}",
        f"inference.data_uri={data}",
        f"inference.shards={SHARDS}",
        "inference.parallelism=1",
        "inference.batch_size=8",  # slow on purpose: the kill must land mid fan-out
        "data.id_column=customer_id",
        f"runtime.runs_dir={tmp_path / 'first'}",
        f"runtime.cache_dir={tmp_path / 'cache'}",
        "runtime.retries=0",
        f"publish.store_url=sqlite:///{tmp_path}/store.db",
    ]
    first = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _committed_shards(tmp_path / "cache") < 2:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the runner and its workers, mid fan-out
    first.wait()
    committed = _committed_shards(tmp_path / "cache")
    assert 2 <= committed < SHARDS, f"{committed} shards had committed when the run was killed"

    command[command.index(f"runtime.runs_dir={tmp_path / 'first'}")] = (
        f"runtime.runs_dir={tmp_path / 'second'}"
    )
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = _statuses(tmp_path / "second")
    assert sum(resumed[f"infer-{k}"] == "cached" for k in range(SHARDS)) == committed
    assert all(resumed[f"infer-{k}"] in ("cached", "succeeded") for k in range(SHARDS))
    assert resumed["publish"] == "succeeded"

    (run_dir,) = _manifests(tmp_path / "second")
    published = run_dir.parent / "steps" / "publish" / "outputs" / "predictions"
    ids = [
        value
        for part in sorted(published.glob("part-*.parquet"))
        for value in pq.read_table(part, columns=["customer_id"])["customer_id"].to_pylist()
    ]
    assert len(ids) == len(set(ids)) == table.num_rows
    assert set(ids) == set(table["customer_id"].to_pylist())
