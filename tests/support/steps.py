"""Small real components for runner tests: they write files, sleep, fail on purpose."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Write ``params['text']`` plus every input's text into output ``out``/data.txt."""
    parts = [params.get("text", "")]
    for value in inputs.values():
        for path in value if isinstance(value, list) else [value]:
            parts.append(Path(path, "data.txt").read_text())
    Path(outputs["out"]).mkdir(parents=True)
    Path(outputs["out"], "data.txt").write_text("|".join(parts))
    return {"chars": sum(len(p) for p in parts)}


def sleep(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Sleep ``params['seconds']`` and record when it ran (for overlap checks)."""
    started = time.time()
    time.sleep(params["seconds"])
    Path(outputs["out"]).mkdir(parents=True)
    window = {"start": started, "end": time.time(), "pid": os.getpid()}
    Path(outputs["out"], "window.json").write_text(json.dumps(window))
    Path(outputs["out"], "data.txt").write_text(str(params.get("item", "")))
    return window


def fail_if_marker(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Fail while the file ``params['marker']`` exists; otherwise behave like :func:`write`."""
    if Path(params["marker"]).exists():
        raise RuntimeError(f"marker {params['marker']} present")
    return write(inputs, params, outputs)


def flaky(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Fail the first ``params['fail_times']`` calls (counted in a file), then succeed."""
    counter = Path(params["counter"])
    calls = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(calls + 1))
    if calls < params["fail_times"]:
        raise OSError(f"transient failure {calls + 1}")
    return write(inputs, params, outputs)


def bad_data(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Raise the error a component raises on bad input."""
    from components.errors import DataError

    raise DataError("column 'x' has 3 unparsable values; fix the input file")


def die_once(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Kill this worker process the first time (as the OOM killer would), then succeed."""
    marker = Path(params["marker"])
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), 9)
    return write(inputs, params, outputs)
