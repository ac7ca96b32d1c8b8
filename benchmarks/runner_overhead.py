"""Orchestration overhead: kfbatch's local runner against ``kfp.local`` on three workloads.

Run from the repository root::

    .venv/bin/python -m benchmarks.runner_overhead [--repeats N | --quick]

Workloads, each run by both systems in the same process, alternating which goes first:

1. ``trivial``: a chain of 10 steps, each reading the previous step's output and writing a
   tiny one. Metric: wall time / 10 (``per_step_overhead_s``).
2. ``heavy``: the same chain with steps that import torch and pyarrow (kfbatch: at module top
   level; kfp: inside the lightweight component). Metric: wall time / 10.
3. ``fanout``: 8 branches that sleep 1 s each (kfbatch: a fan-out step, parallelism 8, CPU
   request 0.25 per branch; kfp: ``dsl.ParallelFor(..., parallelism=8)``). Metric: wall time.

kfp.local uses ``SubprocessRunner(use_venv=False)`` and components built with
``install_kfp_package=False`` (no pip step: its lightest setting), with caching off
(``enable_caching=False``, also its default) and a fresh pipeline root per run. kfbatch runs with
``no_cache=True`` and a fresh runs/cache directory per run, and every node must report
``succeeded`` (not ``cached``). Wall time is the blocking call only: ``run_dag(...)`` (which
starts and stops its worker processes) or the kfp pipeline call after ``local.init``.

Output: a table of medians over the repetitions, then, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipelines.config.schema import RuntimeConfig
from pipelines.dag import Dag, FanOut, Ref, Resources, Step
from pipelines.local.runner import run_dag

CHAIN_STEPS = 10
FAN_OUT = 8
SLEEP_S = 1.0
BRANCH = Resources(cpu=0.25, memory="1Gi")
TEXTS = [f"s{i};" for i in range(CHAIN_STEPS)]
EXPECTED_CHAIN = "".join(TEXTS)

SYSTEMS = ("kfbatch", "kfp.local")
#: workload -> (label, divisor of the wall time, JSON keys (kfbatch, kfp.local), target ratio)
WORKLOADS: dict[str, tuple[str, int, tuple[str, str], float]] = {
    "trivial": (
        f"trivial chain, per step (wall/{CHAIN_STEPS})",
        CHAIN_STEPS,
        ("per_step_overhead_s", "kfp_local_per_step_overhead_s"),
        1.0,
    ),
    "heavy": (
        f"torch+pyarrow chain, per step (wall/{CHAIN_STEPS})",
        CHAIN_STEPS,
        ("heavy_step_overhead_s", "kfp_local_heavy_step_overhead_s"),
        1 / 3,
    ),
    "fanout": (
        f"fan-out {FAN_OUT} x sleep {SLEEP_S:g}s, wall",
        1,
        ("fanout_wall_s", "kfp_local_fanout_wall_s"),
        1.0,
    ),
}
RATIO_KEYS = {"trivial": "per_step_ratio", "heavy": "heavy_step_ratio", "fanout": "fanout_ratio"}


# --------------------------------------------------------------------------- kfbatch


def _chain_dag(name: str, component: str) -> Dag:
    steps = []
    for i, text in enumerate(TEXTS):
        inputs = {"prev": Ref(f"s{i - 1}", "out")} if i else {}
        steps.append(Step(f"s{i}", component, {"text": text}, inputs, ("out",), BRANCH))
    return Dag(name, tuple(steps))


def _fanout_dag() -> Dag:
    fan_out = FanOut("item", tuple(range(FAN_OUT)), FAN_OUT)
    step = Step(
        "s", "benchmarks.steps:sleep", {"seconds": SLEEP_S}, {}, ("out",), BRANCH, fan_out=fan_out
    )
    return Dag("bench-fanout", (step,))


KFBATCH_DAGS = {
    "trivial": _chain_dag("bench-trivial", "benchmarks.steps:trivial"),
    "heavy": _chain_dag("bench-heavy", "benchmarks.heavy_steps:heavy"),
    "fanout": _fanout_dag(),
}


def run_kfbatch(workload: str, tmp: Path) -> float:
    """Run one workload with kfbatch in fresh directories; the wall time of ``run_dag``."""
    dag = KFBATCH_DAGS[workload]
    runtime = RuntimeConfig(runs_dir=str(tmp / "runs"), cache_dir=str(tmp / "cache"), retries=0)
    started = time.perf_counter()
    result = run_dag(dag, runtime, no_cache=True)
    wall = time.perf_counter() - started
    if not result.ok:
        failed = "; ".join(f"{r.node}: {r.error} (log {r.log_path})" for r in result.failed)
        raise RuntimeError(f"kfbatch {workload} run failed: {failed}")
    statuses = {record.status for record in result.nodes.values()}
    if statuses != {"succeeded"}:
        raise RuntimeError(f"kfbatch {workload}: nodes not all executed ({statuses})")
    if workload != "fanout":
        text = (result.output(f"s{CHAIN_STEPS - 1}", "out") / "text.txt").read_text()
        if text != EXPECTED_CHAIN:
            raise RuntimeError(f"kfbatch {workload}: chain output {text!r}")
    return wall


# --------------------------------------------------------------------------- kfp.local


_KFP: dict[str, Callable[[], Any]] = {}


def run_kfp(workload: str, tmp: Path) -> float:
    """Run one workload with kfp.local in fresh directories; the wall time of the call."""
    from kfp import local

    if not _KFP:
        from benchmarks.kfp_steps import pipelines

        _KFP.update(pipelines(TEXTS, FAN_OUT, SLEEP_S))
    pipeline = _KFP[workload]
    (tmp / "workspace").mkdir()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp / "root"),
        workspace_root=str(tmp / "workspace"),
        raise_on_error=True,
        enable_caching=False,
    )
    real_print = builtins.print
    started = time.perf_counter()
    try:
        task = pipeline()
    finally:
        wall = time.perf_counter() - started
        # kfp.local's indented_print() swaps builtins.print per task and is not thread-safe:
        # after a ParallelFor it can leave an indenting print installed for good. Undo that.
        builtins.print = real_print
    if workload != "fanout":
        text = Path(task.output.path).read_text()
        if text != EXPECTED_CHAIN:
            raise RuntimeError(f"kfp.local {workload}: chain output {text!r}")
    else:
        written = list((tmp / "root").rglob("out"))
        if len(written) != FAN_OUT:
            raise RuntimeError(f"kfp.local fanout: {len(written)} outputs, not {FAN_OUT}")
    return wall


RUNNERS: dict[str, Callable[[str, Path], float]] = {"kfbatch": run_kfbatch, "kfp.local": run_kfp}


# --------------------------------------------------------------------------- harness


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (this process and its children) to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved, strict=True):
                os.dup2(old, fd)
                os.close(old)


def measure(system: str, workload: str) -> float:
    """One run of ``workload`` on ``system`` in a fresh temp dir; its wall time in seconds."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{workload}-") as name:
        tmp = Path(name)
        log = tmp / "output.log"
        try:
            with _quiet(log):
                return RUNNERS[system](workload, tmp)
        except BaseException:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            print(f"--- {system} {workload} failed; last output:\n{tail}", file=sys.stderr)
            raise


def warm_up() -> None:
    """Untimed: load torch/pyarrow/kfp from disk once and run each system once on a toy chain."""
    subprocess.run([sys.executable, "-c", "import torch, pyarrow, kfp.dsl"], check=True)
    for system in SYSTEMS:
        measure(system, "trivial")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else max(1, args.repeats)
    logging.getLogger("kfbatch.runner").setLevel(logging.WARNING)

    script_started = time.perf_counter()
    print(f"runner overhead: kfbatch vs kfp.local, {repeats} repetition(s), {os.cpu_count()} cpus")
    warm_up()
    samples: dict[tuple[str, str], list[float]] = {(w, s): [] for w in WORKLOADS for s in SYSTEMS}
    for rep in range(repeats):
        order = SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]
        for workload, (_, divisor, _, _) in WORKLOADS.items():
            for system in order:
                wall = measure(system, workload)
                samples[workload, system].append(wall / divisor)
                print(f"  rep {rep + 1} {workload:<8} {system:<10} {wall:7.3f} s wall", flush=True)

    medians = {key: statistics.median(values) for key, values in samples.items()}
    print()
    header = f"{'workload':<44} {'kfbatch':>9} {'kfp.local':>10} {'ratio':>7} {'target':>7}  met"
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {"bench": "runner"}
    ratios: dict[str, float] = {}
    for workload, (label, _, (key, kfp_key), target) in WORKLOADS.items():
        ours, theirs = medians[workload, "kfbatch"], medians[workload, "kfp.local"]
        ratio = ours / theirs
        met = "yes" if ratio <= target else "NO"
        print(f"{label:<44} {ours:8.3f}s {theirs:9.3f}s {ratio:7.2f} {f'<={target:.2f}':>7}  {met}")
        summary[key], summary[kfp_key] = round(ours, 4), round(theirs, 4)
        ratios[RATIO_KEYS[workload]] = round(ratio, 3)
    spread = "; ".join(
        f"{w}/{s} {min(v):.3f}-{max(v):.3f}" for (w, s), v in samples.items() if len(v) > 1
    )
    print("ratio = kfbatch / kfp.local (lower is better); medians of", repeats, "run(s)")
    if spread:
        print(f"range (s, per the metric): {spread}")
    elapsed = time.perf_counter() - script_started
    print(f"total benchmark time {elapsed:.1f} s")
    print(json.dumps({**summary, **ratios, "repeats": repeats}))


if __name__ == "__main__":
    main()
