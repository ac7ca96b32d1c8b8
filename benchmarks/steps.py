"""Trivial kfbatch components for the runner benchmarks (no heavy imports on purpose)."""

from __future__ import annotations

import os
import time
from typing import Any


def _read(inputs: dict[str, Any], name: str) -> str:
    path = inputs.get(name)
    if path is None:
        return ""
    with open(os.path.join(path, "text.txt")) as handle:
        return handle.read()


def _write(outputs: dict[str, str], text: str) -> None:
    os.makedirs(outputs["out"])
    with open(os.path.join(outputs["out"], "text.txt"), "w") as handle:
        handle.write(text)


def trivial(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Append ``params["text"]`` to the previous step's text (input ``prev``, if any)."""
    text = _read(inputs, "prev") + params["text"]
    _write(outputs, text)
    return {"chars": len(text)}


def sleep(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Sleep ``params["seconds"]``, then write the fan-out item."""
    time.sleep(float(params["seconds"]))
    _write(outputs, str(params.get("item", "")))
    return {"item": params.get("item")}
