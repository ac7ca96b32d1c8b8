"""``kfbatch predictions get|versions``: read published predictions from the lookup store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipelines.cli.common import EXIT_FAILED, EXIT_OK, add_command, compose

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add ``kfbatch predictions`` and its verbs to the CLI."""
    predictions = commands.add_parser(
        "predictions", help="read precomputed predictions from the lookup store"
    )
    verbs = predictions.add_subparsers(title="verbs", metavar="VERB")
    get = add_command(
        verbs, "get", _get, "the predictions of one id, newest version first", positionals=("id",)
    )
    get.add_argument("--model-version", help="only this model version")
    get.add_argument("--all", action="store_true", help="every version held, not only the newest")
    get.add_argument("--json", action="store_true", help="one JSON object per line")
    add_command(verbs, "versions", _versions, "model versions held, newest first")
    for verb in verbs.choices.values():
        verb.add_argument("--store", help="SQLAlchemy URL; default: publish.store_url")


def _store(args: argparse.Namespace) -> Any:
    from components.scoring.lookup import LookupStore
    from pipelines.errors import ConfigError

    url = args.store or compose(args).config.publish.store_url
    if not url:
        raise ConfigError("publish.store_url", "the lookup store's URL (or pass --store)", None)
    return LookupStore(url)


def _get(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        rows = store.get(args.id, model_version=args.model_version)
    finally:
        store.close()
    if not rows:
        print(f"no prediction for id {args.id!r} in {store.url}")
        return EXIT_FAILED
    for row in rows if args.all else rows[:1]:
        if args.json:
            print(json.dumps({k: _plain(v) for k, v in row.items()}))
            continue
        label = "" if row["label"] is None else f"  label {row['label']}"
        print(
            f"{row['id']}  score {row['score']:.6g}{label}  model {row['model_version']}  "
            f"run {row['run_id']}  scored {_plain(row['scored_at'])}"
        )
    return EXIT_OK


def _versions(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        versions = store.versions()
    finally:
        store.close()
    if not versions:
        print(f"no predictions in {store.url}")
        return EXIT_OK
    for v in versions:
        print(
            f"{v['model_version']}  {v['rows']} rows  run {v['run_id']}  "
            f"published {_plain(v['published_at'])}"
        )
    return EXIT_OK


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
