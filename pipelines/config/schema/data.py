"""Schema of the data groups: ``data``, ``features``, ``etl``, ``quality``, ``batch_map``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import II, MISSING

from components.names import TASKS
from pipelines.config.schema.knobs import knob

__all__ = [
    "BatchMapConfig",
    "CsvConfig",
    "DataConfig",
    "EtlConfig",
    "FeaturesConfig",
    "QualityConfig",
    "SplitConfig",
]


@dataclass
class SplitConfig:
    """Fractions of rows per split, assigned by a stable hash of the id column.

    ``stratify`` (classification only) cuts each target class's hashes at the fractions
    separately, so every class gets its share of each split exactly (up to one hash bin).
    """

    train: float = knob(0.7, ge=0.0, le=1.0)
    validation: float = knob(0.15, ge=0.0, le=1.0)
    test: float = knob(0.15, ge=0.0, le=1.0)
    stratify: bool = False


@dataclass
class CsvConfig:
    """CSV parsing options."""

    delimiter: str = knob(",", pattern=r"^.$", expected="a single character")
    quote_char: str | None = knob(
        '"', pattern=r"^.$", expected="a single character, or null to turn quoting off"
    )
    header: bool = True
    column_names: list[str] | None = None
    skip_rows: int = knob(0, ge=0)
    null_values: list[str] | None = None
    # Spreadsheet exports are often latin-1 / cp1252; pyarrow transcodes them to UTF-8.
    encoding: str = knob("utf-8", check="encoding")
    # "," reads decimal commas (12,5) as numbers, as many European exports write them.
    decimal_point: str = knob(".", choices=(".", ","))


@dataclass
class DataConfig:
    """Where the raw data comes from and which columns play which role."""

    kind: str = knob("csv", choices=("csv", "synthetic", "sklearn", "signals"))
    uri: str | None = knob(None, check="data_location")
    format: str = knob("auto", choices=("auto", "csv", "jsonl", "parquet"))
    columns: dict[str, str] = knob({})
    storage_options: dict[str, Any] = knob({})
    rows: int = knob(100_000, ge=1)
    dataset: str = knob("breast_cancer", choices=("breast_cancer",))
    id_column: str | None = knob(None, check="name")
    target: str = knob(MISSING, check="name")
    split: SplitConfig = field(default_factory=SplitConfig)
    csv: CsvConfig = field(default_factory=CsvConfig)
    batch_rows: int = knob(32_768, ge=1024)
    sample_rows: int | None = knob(None, ge=1, expected="a row count >= 1, or null for all rows")
    task: str = knob("binary", choices=TASKS)
    # The expected labels of a classification target, in order (binary: the second is the
    # positive class); rows with any other label are quarantined. null: the labels seen.
    classes: list[str] | None = None


@dataclass
class FeaturesConfig:
    """Column roles (``null`` = inferred from the data types) and encoding limits."""

    numeric: list[str] | None = None
    categorical: list[str] | None = None
    timestamp: list[str] | None = None
    drop: list[str] = knob([])
    max_categories: int = knob(20, ge=1)
    encoding: str = knob("onehot", choices=("onehot", "index"))
    scaling: str = knob("standard", choices=("standard", "minmax", "none"))
    select: list[str] | None = None
    rename: dict[str, str] = knob({})
    derive: dict[str, str] = knob({})
    timestamp_parts: dict[str, list[str]] = knob({})
    fill: dict[str, Any] = knob({})
    clip: dict[str, list[Any]] = knob({})
    drop_nulls: list[str] = knob([])
    transforms: list[dict[str, Any]] = knob([])


@dataclass
class EtlConfig:
    """How strict ETL is about unreadable rows, and how many scoring shards it writes."""

    max_reject_fraction: float = knob(
        0.0, ge=0.0, le=1.0, expected="a fraction of input rows in [0, 1]"
    )
    # The etl scoring set's shards (each scored by one infer branch, mapped by one batch_map
    # branch); by default as many as inference fans out over.
    scoring_shards: int = knob(II("inference.shards"), ge=1, le=1024)


@dataclass
class QualityConfig:
    """Data-quality checks (see components/data/quality.py) and the drift reference."""

    checks: list[dict[str, Any]] = knob([])
    reference: str | None = knob(None, check="data_location")


@dataclass
class BatchMapConfig:
    """A user function applied to every etl scoring shard in parallel, then merged.

    ``function`` holds ``_target_`` (the import path of ``f(batch, **kwargs) -> batch``) and
    its keyword arguments.
    """

    function: dict[str, Any] = knob({})
    columns: list[str] | None = None
    parallelism: int = knob(2, ge=1)
    batch_rows: int = knob(8192, ge=1)
