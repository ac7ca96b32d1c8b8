"""``kfbatch manifests``: render the GitOps tree, or check that the committed one is current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipelines.cli.common import EXIT_FAILED, EXIT_OK, add_command, compose

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the ``manifests`` command to the CLI."""
    command = add_command(
        commands,
        "manifests",
        _manifests,
        "render the kustomize tree (base, components, overlays per environment) for GitOps",
    )
    command.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="render only this environment's overlay (repeatable; default: every manifests.envs)",
    )
    command.add_argument(
        "--dir", help="where the tree goes (default: manifests.dir from config, 'manifests')"
    )
    command.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and print a diff when the tree on disk differs",
    )


def _manifests(args: argparse.Namespace) -> int:
    from pipelines.manifests import diff_tree, render_tree, write_tree

    composed = compose(args)
    root = Path(args.dir or composed.config.manifests.dir)
    files = render_tree(composed, args.env or None)
    if args.check:
        diff = diff_tree(root, files)
        if diff:
            sys.stdout.write(diff)
            print(
                f"kfbatch: {root} differs from what the config renders; run `kfbatch manifests"
                f"{' ' + ' '.join(args.overrides) if args.overrides else ''}` and commit it",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(f"{root}: up to date ({len(files)} files)")
        return EXIT_OK
    changed, removed = write_tree(root, files)
    for rel in changed:
        print(f"wrote {root / rel}")
    for rel in removed:
        print(f"removed {root / rel}")
    print(f"{root}: {len(files)} files, {len(changed)} written, {len(removed)} removed")
    return EXIT_OK
