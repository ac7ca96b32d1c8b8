"""``kfbatch run``, ``kfbatch config`` and ``kfbatch dag``: the local side of the CLI."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pipelines.cli.common import EXIT_FAILED, EXIT_OK, add_command, compose, number

__all__ = ["register"]

SMOKE_ROWS = 5000
#: What ``kfbatch run --smoke`` changes: a small sample, one epoch, nothing published (a
#: smoke model must not replace the published predictions); the DAG keeps its shape.
SMOKE_OVERRIDES = (
    f"data.sample_rows={SMOKE_ROWS}",
    "trainer.epochs=1",
    "publish.destination=null",
    "publish.store_url=null",
)


def register(commands: Any) -> None:
    """Add the local commands to the CLI."""
    run = add_command(commands, "run", _run, "compose the config, build the DAG and run it locally")
    run.add_argument(
        "--no-cache", action="store_true", help="run every step even if a cached result exists"
    )
    run.add_argument("--run-id", help="name of the run folder (default: timestamp-name-random)")
    run.add_argument(
        "--smoke",
        action="store_true",
        help=f"prove the pipeline first: the first {SMOKE_ROWS} rows, one epoch",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "live", "plain"),
        default="auto",
        help="live table on a terminal (auto) or plain log lines",
    )
    config = add_command(commands, "config", _config, "print the composed config as YAML")
    config.add_argument("--resolve", action="store_true", help="resolve ${...} interpolations")
    dag = add_command(commands, "dag", _dag, "print the DAG: steps, inputs, resources, fan-outs")
    dag.add_argument(
        "--format",
        choices=("tree", "json", "dot"),
        default="tree",
        help="tree with a resource budget (default), exact JSON, or Graphviz dot",
    )


def _config(args: argparse.Namespace) -> int:
    print(compose(args).to_yaml(resolve=args.resolve), end="")
    return EXIT_OK


def _dag(args: argparse.Namespace) -> int:
    import json

    from pipelines.builder import build_dag
    from pipelines.views import dag_dot, dag_tree, resource_budget

    dag = build_dag(compose(args).config)
    if args.format == "json":
        print(json.dumps(dag.to_dict(), indent=2, sort_keys=True))
    elif args.format == "dot":
        print(dag_dot(dag))
    else:
        print(dag_tree(dag))
        print()
        print(resource_budget(dag))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from pipelines.local.runner import run_local

    composed = compose(args)
    if args.smoke:
        rows = min(composed.config.data.rows, SMOKE_ROWS)
        args.overrides = [*args.overrides, *SMOKE_OVERRIDES, f"data.rows={rows}"]
        composed = compose(args)
    reporter = None if args.log_format == "json" else _reporter(args.progress)
    result = run_local(
        composed,
        no_cache=args.no_cache,
        run_id=args.run_id,
        reporter=reporter,
        log_format=args.log_format,
        smoke=args.smoke,
    )
    print(_summary(result, report=_write_report(result.run_dir)))
    return EXIT_OK if result.ok else EXIT_FAILED


def _write_report(run_dir: Any) -> Any:
    """The run's ``report.html``, or None when it could not be written (the run still counts)."""
    from pipelines.report import write_report

    try:
        return write_report(run_dir)
    except Exception as error:  # a report is a view of the run, never a reason to fail it
        logging.getLogger("kfbatch.report").warning(
            "could not write the run report of %s: %s: %s", run_dir, type(error).__name__, error
        )
        return None


def _reporter(progress: str) -> Any:
    live = progress == "live" or (progress == "auto" and sys.stderr.isatty())
    if not live:
        return None
    from rich.console import Console

    from pipelines.local.progress import LiveReporter

    logging.getLogger("kfbatch").setLevel(logging.WARNING)
    return LiveReporter(Console(stderr=True))


def _summary(result: Any, *, report: Any = None) -> str:
    """What a user wants after a run: status, where the outputs are, what failed and why."""
    records = result.nodes.values()
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    smoke = " [smoke run: a sample, one epoch]" if result.smoke else ""
    lines = [
        f"run {result.run_id}: {result.status} ({tally}){smoke}",
        f"  run folder: {result.run_dir}",
    ]
    if report:
        lines.append(f"  report: {report}")
    for record in result.failed:
        lines.append(f"  step {record.node} failed: {record.error}")
        if record.log_path:
            lines.append(f"    log: {record.log_path}")
    if result.ok:
        for label, path in result.final_outputs().items():
            lines.append(f"  {label}: {path}")
        for record in records:
            shown = {k: v for k, v in record.metrics.items() if isinstance(v, (int, float))}
            if record.step == "evaluate" and shown:
                metrics = ", ".join(f"{k}={number(v)}" for k, v in sorted(shown.items()))
                lines.append(f"  {record.node} metrics: {metrics}")
    return "\n".join(lines)
