"""Schema of the scoring groups: ``inference`` and ``publish``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.config.schema.knobs import knob

__all__ = [
    "InferenceConfig",
    "PublishConfig",
]


@dataclass
class InferenceConfig:
    """Sharded batch scoring: ``shards`` fan-out branches, ``parallelism`` at a time.

    ``model_uri``/``data_uri`` score data with an existing model artifact without the
    etl/train stages (``stages=[infer]``); ``batch_size`` is rows or ``auto``.
    """

    shards: int = knob(4, ge=1, le=1024)
    parallelism: int = knob(2, ge=1)
    batch_size: Any = knob(4096, expected="a row count >= 1, or auto")
    memory_cap_mb: int = knob(256, ge=1)
    threshold: float = knob(0.5, ge=0.0, le=1.0)
    device: str = knob("auto", choices=("auto", "cpu", "cuda"))
    optimize: list[str] = knob([])
    tolerance: float = knob(0.01, ge=0.0)
    model_uri: str | None = knob(None, check="data_location")
    data_uri: str | None = knob(None, check="data_location")


@dataclass
class PublishConfig:
    """Where verified predictions go: a versioned dataset and a lookup store."""

    destination: str | None = knob(None, check="data_location")
    partition_by: str = knob("run_date", choices=("run_date", "run_id"))
    retention: int = knob(3, ge=1)
    store_url: str | None = knob(None, check="sqlalchemy_url")
