"""``kfbatch compile``, ``submit`` and ``schedule``: the Kubeflow side of the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.cli.common import EXIT_FAILED, EXIT_OK, add_command, compose

__all__ = ["parse_params", "register"]


def register(commands: Any) -> None:
    """Add the Kubeflow commands to the CLI."""
    compile_ = add_command(
        commands, "compile", _compile, "compile the DAG to a Kubeflow Pipelines v2 pipeline"
    )
    compile_.add_argument(
        "-o", "--output", default="pipeline.yaml", help="where to write it (default: %(default)s)"
    )
    submit = add_command(
        commands, "submit", _submit, "compile, upload a pipeline version and start a KFP run"
    )
    submit.add_argument("--wait", action="store_true", help="follow the run until it ends")
    submit.add_argument(
        "--timeout", type=float, default=86_400.0, help="seconds to wait with --wait"
    )
    submit.add_argument(
        "--poll", type=float, default=5.0, help="seconds between status checks with --wait"
    )
    submit.add_argument("--run-name", help="display name of the run (default: generated)")
    schedule = add_command(
        commands,
        "schedule",
        _schedule,
        "compile, upload and create a recurring run (schedule.cron)",
    )
    schedule.add_argument(
        "--replace", action="store_true", help="replace a differing recurring run of that name"
    )
    for command in (submit, schedule):
        command.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a pipeline parameter, e.g. data_uri=s3://bucket/new.csv (repeatable)",
        )


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; the client converts by declared type."""
    from pipelines.errors import ConfigError

    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError("--param", "NAME=VALUE", pair)
        params[name] = value
    return params


def _compile(args: argparse.Namespace) -> int:
    from pipelines.kubeflow.compiler import write_pipeline

    path = write_pipeline(compose(args), Path(args.output))
    print(f"wrote {path}")
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    from pipelines.kubeflow.client import submit_run
    from pipelines.kubeflow.compiler import compile_pipeline

    composed = compose(args)
    params = parse_params(args.param)
    submission = submit_run(
        composed.config,
        compile_pipeline(composed),
        params=params,
        run_name=args.run_name,
        wait=args.wait,
        timeout_s=args.timeout,
        poll_s=args.poll,
        on_status=lambda run: print(f"  {run.state}", flush=True),
    )
    version, run = submission.version, submission.run
    reused = " (unchanged, reused)" if version.reused else ""
    print(f"pipeline version {version.name}{reused}")
    print(f"run {run.run_id}: {run.state}" + (f"  {run.url}" if run.url else ""))
    if run.error:
        print(f"  error: {run.error}")
    return EXIT_FAILED if args.wait and not run.succeeded else EXIT_OK


def _schedule(args: argparse.Namespace) -> int:
    from pipelines.kubeflow.compiler import compile_pipeline
    from pipelines.kubeflow.schedule import create_schedule

    composed = compose(args)
    recurring = create_schedule(
        composed.config,
        compile_pipeline(composed),
        params=parse_params(args.param),
        replace=args.replace,
    )
    state = "unchanged, reused" if recurring.reused else recurring.status.lower()
    print(f"recurring run {recurring.name} ({state}): cron '{recurring.cron}' (KFP's 6 fields)")
    print(
        f"  pipeline version {recurring.version.name}"
        + (f"  {recurring.url}" if recurring.url else "")
    )
    return EXIT_OK
