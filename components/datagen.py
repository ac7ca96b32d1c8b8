"""Demo data: a synthetic customer-churn table or scikit-learn's breast-cancer set, as CSV.

Gives the pipeline realistic input without network access: mixed numeric, categorical and
timestamp columns, a few missing values, and a learnable binary target.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from components.errors import ParamError
from components.io.files import atomic_path
from components.params import DatagenParams

__all__ = ["run"]

log = logging.getLogger(__name__)

DATA_FILE = "data.csv"
SIGNALS_FILE = "data.parquet"
CHUNK_ROWS = 100_000

PLANS = ("basic", "standard", "premium", "family")
PLAN_P = (0.35, 0.35, 0.15, 0.15)
PLAN_PRICE = (35.0, 60.0, 95.0, 80.0)
REGIONS = ("north", "south", "east", "west", "central", "northeast", "northwest", "southeast")
REGION_P = (0.16, 0.16, 0.14, 0.14, 0.12, 0.10, 0.09, 0.09)
REGION_EFFECT = (0.0, 0.15, -0.1, 0.1, 0.0, -0.15, 0.2, 0.05)
PAYMENTS = ("electronic_check", "mailed_check", "bank_transfer", "credit_card")
PAYMENT_P = (0.34, 0.22, 0.22, 0.22)
CONTRACTS = ("month-to-month", "one-year", "two-year")
CONTRACT_P = (0.55, 0.25, 0.20)
# Signup times lie before this instant (seconds since the epoch: 2025-01-01T00:00:00).
REFERENCE_EPOCH_S = 1_735_689_600
CHURN_INTERCEPT = -1.9


def run(
    inputs: dict[str, str | list[str]], params: dict[str, Any], outputs: dict[str, str]
) -> dict[str, float | int | str]:
    """Write ``outputs["raw"]/data.csv`` with the demo data chosen by ``params["kind"]``.

    Args:
        inputs: Unused; datagen has no upstream step.
        params: ``kind`` ("synthetic", "sklearn" or "signals", which writes
            ``data.parquet``); ``rows`` and ``seed`` for synthetic and signals data;
            ``dataset`` ("breast_cancer") for sklearn data.
        outputs: ``raw``: directory to create.

    Returns:
        ``{"rows": n}``.
    """
    del inputs
    out_dir = outputs["raw"]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, DATA_FILE)
    typed = DatagenParams.parse(params)
    kind = typed.kind
    if kind == "synthetic":
        rows = _write_synthetic(path, rows=typed.rows, seed=typed.seed)
    elif kind == "sklearn":
        rows = _write_sklearn(path, dataset=typed.dataset)
    elif kind == "signals":
        # Signals are list columns, which CSV cannot hold: Parquet (etl reads either).
        from components.examples.signals import generate

        path = os.path.join(out_dir, SIGNALS_FILE)
        table = generate(typed.rows, seed=typed.seed)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        rows = table.num_rows
    else:
        raise ParamError(
            f"datagen kind {kind!r} is unknown; expected 'synthetic', 'sklearn' or 'signals'"
        )
    log.info("wrote %d rows to %s", rows, path)
    return {"rows": rows}


def _write_synthetic(path: str, *, rows: int, seed: int) -> int:
    if rows < 1:
        raise ParamError(f"datagen rows={rows} is not positive; set rows to at least 1")
    with atomic_path(path) as tmp, pacsv.CSVWriter(tmp, churn_schema()) as writer:
        for start in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - start)
            writer.write_table(churn_chunk(start, count, seed))
    return rows


def churn_schema() -> pa.Schema:
    """Schema of the synthetic churn CSV (``signup_at`` is written as ISO 8601 text)."""
    return pa.schema(
        [
            ("customer_id", pa.string()),
            ("age", pa.int64()),
            ("tenure_months", pa.int64()),
            ("monthly_charges", pa.float64()),
            ("total_charges", pa.float64()),
            ("support_calls", pa.int64()),
            ("data_usage_gb", pa.float64()),
            ("plan", pa.string()),
            ("region", pa.string()),
            ("payment_method", pa.string()),
            ("contract", pa.string()),
            ("signup_at", pa.string()),
            ("churned", pa.int64()),
        ]
    )


def churn_chunk(start: int, count: int, seed: int) -> pa.Table:
    """Generate rows ``[start, start + count)`` of the churn table, seeded per chunk."""
    rng = np.random.default_rng([seed, start])
    plan = rng.choice(len(PLANS), size=count, p=PLAN_P)
    region = rng.choice(len(REGIONS), size=count, p=REGION_P)
    payment = rng.choice(len(PAYMENTS), size=count, p=PAYMENT_P)
    contract = rng.choice(len(CONTRACTS), size=count, p=CONTRACT_P)

    age = np.clip(rng.normal(44.0, 14.0, count), 18, 90).astype(np.int64)
    max_tenure = np.array([24, 48, 72])[contract]
    tenure = np.floor(rng.uniform(0.0, 1.0, count) ** 1.3 * (max_tenure + 1)).astype(np.int64)
    monthly = np.round(np.array(PLAN_PRICE)[plan] + rng.normal(0.0, 8.0, count), 2)
    monthly = np.maximum(monthly, 10.0)
    total = np.round(monthly * tenure * rng.normal(1.0, 0.05, count), 2)
    support_calls = rng.poisson(0.6 + 1.2 * (plan == 0) + 0.02 * np.maximum(age - 50, 0))
    usage = np.round(rng.gamma(2.0, 6.0 + 4.0 * (plan >= 2), count), 2)
    signup_s = (
        REFERENCE_EPOCH_S
        - tenure * 30 * 86_400
        - rng.integers(0, 30 * 86_400, count) // 60 * 60  # whole minutes
    )

    logit = (
        CHURN_INTERCEPT
        + np.array([0.9, -0.6, -1.3])[contract]
        - 0.035 * (tenure - 20)
        + 0.45 * (support_calls - 1.0)
        + 0.012 * (monthly - 60.0)
        + 0.55 * (payment == 0)
        - 0.015 * (age - 44)
        - 0.02 * (usage - 14.0)
        + np.array(REGION_EFFECT)[region]
        + rng.normal(0.0, 0.6, count)
    )
    churned = (rng.uniform(0.0, 1.0, count) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    numbers = pc.cast(pa.array(np.arange(start + 1, start + count + 1)), pa.string())
    ids = pc.binary_join_element_wise("C", pc.utf8_lpad(numbers, 8, "0"), "")
    signup_at = pc.strftime(
        pa.array(signup_s, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%S", locale="C"
    )
    return pa.table(
        [
            ids,
            pa.array(age),
            pa.array(tenure),
            pa.array(monthly),
            pa.array(total, mask=rng.uniform(size=count) < 0.02),
            pa.array(support_calls.astype(np.int64)),
            pa.array(usage, mask=rng.uniform(size=count) < 0.015),
            pa.array(np.array(PLANS, dtype=object)[plan], pa.string()),
            pa.array(np.array(REGIONS, dtype=object)[region], pa.string()),
            pa.array(
                np.array(PAYMENTS, dtype=object)[payment],
                pa.string(),
                mask=rng.uniform(size=count) < 0.01,
            ),
            pa.array(np.array(CONTRACTS, dtype=object)[contract], pa.string()),
            signup_at,
            pa.array(churned),
        ],
        schema=churn_schema(),
    )


def _write_sklearn(path: str, *, dataset: str) -> int:
    if dataset != "breast_cancer":
        raise ParamError(f"datagen dataset {dataset!r} is unknown; expected 'breast_cancer'")
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    target = frame.pop("target")
    frame.columns = [re.sub(r"\W+", "_", str(c).strip()).lower() for c in frame.columns]
    frame.insert(0, "sample_id", [f"S{i:04d}" for i in range(len(frame))])
    frame["malignant"] = (1 - target).astype("int64")  # sklearn: 0 = malignant
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp)
    return table.num_rows
