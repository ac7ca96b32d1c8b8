"""What every command shares: exit codes, config arguments, composing the config."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "add_command",
    "compose",
    "number",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

_OVERRIDES_HELP = "Hydra overrides, e.g. trainer.epochs=3 resources=gpu +model.output_dim=1"


def add_command(
    commands: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    summary: str,
    *,
    positionals: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand taking ``positionals``, then Hydra overrides, and the shared options."""
    command = commands.add_parser(name, help=summary, description=summary)
    for positional in positionals:
        command.add_argument(positional)
    command.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)
    command.add_argument("--config-dir", help="your config tree, searched before the packaged one")
    command.add_argument(
        "--config-name", default="config", help="primary config file, without .yaml"
    )
    command.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    command.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines for people (text) or JSON lines with run id, step and attempt",
    )
    command.set_defaults(handler=handler)
    return command


def compose(args: argparse.Namespace) -> Any:
    """The composed config for a command's ``--config-dir``, ``--config-name`` and overrides."""
    from pipelines.config.compose import compose_config

    return compose_config(args.overrides, config_dir=args.config_dir, config_name=args.config_name)


def number(value: float) -> str:
    """A metric for people: integers as they are, floats to four significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
