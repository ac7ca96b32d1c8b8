"""A kfbatch component that imports torch and pyarrow at top level, as real components do."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import torch


def heavy(inputs: dict[str, Any], params: dict[str, Any], outputs: dict[str, str]) -> dict:
    """Trivial work with both libraries; appends ``params["text"]`` to the previous text."""
    previous = ""
    if "prev" in inputs:
        with open(os.path.join(inputs["prev"], "text.txt")) as handle:
            previous = handle.read()
    total = float(torch.arange(4, dtype=torch.float32).sum())
    table = pa.table({"x": [1, 2, 3]})
    text = previous + params["text"]
    os.makedirs(outputs["out"])
    with open(os.path.join(outputs["out"], "text.txt"), "w") as handle:
        handle.write(text)
    return {"sum": total, "rows": table.num_rows}
