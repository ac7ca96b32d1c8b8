"""The ``kfbatch`` command line.

Only argparse is imported at start-up so that ``kfbatch --help`` answers at once; each
command imports what it needs when it runs. Exit codes: 0 success, 1 a step or request
failed, 2 invalid configuration or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pipelines.cli import history, kubeflow, local, manifests, predictions
from pipelines.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (the console script exits with it)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_CONFIG
    _setup_logging(args.debug, args.log_format)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at exit
        return code
    except KeyboardInterrupt:
        print("kfbatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `kfbatch dag | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
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
        description=(
            "Batch ML pipelines from a Hydra config tree: run them on this machine, or compile,"
            " submit and schedule them on Kubeflow Pipelines."
        ),
    )
    parser.add_argument("--version", action="version", version=f"kfbatch {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    local.register(commands)
    kubeflow.register(commands)
    history.register(commands)
    manifests.register(commands)
    predictions.register(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kfbatch")
    except PackageNotFoundError:
        return "unknown"


def _setup_logging(debug: bool, log_format: str) -> None:
    """Send kfbatch's own log records to stderr (replacing the handler of an earlier call)."""
    from pipelines.logs import formatter

    logger = logging.getLogger("kfbatch")
    for old in [h for h in logger.handlers if getattr(h, "kfbatch_cli", False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.kfbatch_cli = True
    handler.setFormatter(formatter(log_format, "%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
