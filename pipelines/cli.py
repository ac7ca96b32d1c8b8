"""The ``kfbatch`` command line.

Only argparse is imported at start-up so that ``kfbatch --help`` answers at once; each
command imports what it needs. Exit codes: 0 success, 1 a step failed, 2 invalid
configuration or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

_OVERRIDES_HELP = "Hydra overrides, e.g. trainer.epochs=3 resources=gpu +features.drop=[col]"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (the console script exits with it)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_CONFIG
    _setup_logging(args.debug)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("kfbatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        from components.errors import KfbatchError
        from pipelines.errors import ConfigError

        if args.debug or not isinstance(error, KfbatchError):
            raise
        kind = "config error" if isinstance(error, ConfigError) else "error"
        print(f"kfbatch: {kind}: {error}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(error, ConfigError) else EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kfbatch",
        description="Batch ML pipelines from a Hydra config tree: run them on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"kfbatch {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    run = _command(commands, "run", _run, "compose the config, build the DAG and run it locally")
    run.add_argument(
        "--no-cache", action="store_true", help="run every step even if a cached result exists"
    )
    run.add_argument("--run-id", help="name of the run folder (default: timestamp-name-random)")
    run.add_argument(
        "--progress",
        choices=("auto", "live", "plain"),
        default="auto",
        help="live table on a terminal (auto) or plain log lines",
    )
    config = _command(commands, "config", _config, "print the composed config as YAML")
    config.add_argument("--resolve", action="store_true", help="resolve ${...} interpolations")
    dag = _command(commands, "dag", _dag, "print the DAG: steps, inputs, resources, fan-outs")
    dag.add_argument(
        "--format",
        choices=("tree", "json", "dot"),
        default="tree",
        help="tree with a resource budget (default), exact JSON, or Graphviz dot",
    )
    return parser


def _command(
    commands: Any, name: str, handler: Callable[[argparse.Namespace], int], summary: str
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=summary, description=summary)
    command.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)
    command.add_argument("--config-dir", help="your config tree, searched before the packaged one")
    command.add_argument(
        "--config-name", default="config", help="primary config file, without .yaml"
    )
    command.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    command.set_defaults(handler=handler)
    return command


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kfbatch")
    except PackageNotFoundError:
        return "unknown"


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _compose(args: argparse.Namespace) -> Any:
    from pipelines.config.compose import compose_config

    return compose_config(args.overrides, config_dir=args.config_dir, config_name=args.config_name)


def _config(args: argparse.Namespace) -> int:
    print(_compose(args).to_yaml(resolve=args.resolve), end="")
    return EXIT_OK


def _dag(args: argparse.Namespace) -> int:
    import json

    from pipelines.dag import build_dag
    from pipelines.views import dag_dot, dag_tree, resource_budget

    dag = build_dag(_compose(args).config)
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

    composed = _compose(args)
    reporter = _reporter(args.progress)
    result = run_local(composed, no_cache=args.no_cache, run_id=args.run_id, reporter=reporter)
    print(_summary(result))
    return EXIT_OK if result.ok else EXIT_FAILED


def _reporter(progress: str) -> Any:
    live = progress == "live" or (progress == "auto" and sys.stderr.isatty())
    if not live:
        return None
    from rich.console import Console

    from pipelines.local.progress import LiveReporter

    logging.getLogger().setLevel(logging.WARNING)
    return LiveReporter(Console(stderr=True))


def _summary(result: Any) -> str:
    """What a user wants after a run: status, where the outputs are, what failed and why."""
    records = result.nodes.values()
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"run {result.run_id}: {result.status} ({tally})", f"  run folder: {result.run_dir}"]
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
                metrics = ", ".join(f"{k}={_number(v)}" for k, v in sorted(shown.items()))
                lines.append(f"  {record.node} metrics: {metrics}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
