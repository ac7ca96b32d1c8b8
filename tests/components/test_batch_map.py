"""Batch map: the Welch PSD example over etl scoring shards, merged into one dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import signal as sps

from components import batch_map, datagen, etl
from components.errors import DataError, ParamError
from components.examples.signals import welch_psd
from pipelines.errors import ConfigError
from tests.support.params import step_params

#: The signals data (300 records in 3 etl scoring shards), read as ``experiment=signals``
#: reads it (its columns replace the test config's churn ones).
SIGNALS = (
    "data=signals",
    "data.rows=300",
    "data.id_column=signal_id",
    "data.target=label",
    "etl.scoring_shards=3",
)
#: The ``experiment=signals`` Welch PSD map at 100 Hz with 64-sample segments, 50 rows a batch.
WELCH = (
    "experiment=signals",
    *SIGNALS,
    "batch_map.function.fs=100.0",
    "batch_map.function.nperseg=64",
    "batch_map.batch_rows=50",
)


def _with(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``params`` with run-time ``values`` for keys the composed params already hold."""
    assert values.keys() <= params.keys(), sorted(values.keys() - params.keys())
    return params | values


@pytest.fixture(scope="module")
def scoring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signals")
    datagen.run({}, step_params("datagen", *SIGNALS, "seed=4"), {"raw": str(root / "raw")})
    outputs = {n: str(root / n) for n in ("dataset", "feature_spec", "scoring")}
    etl.run({"source": str(root / "raw")}, step_params("etl", *SIGNALS, "seed=1"), outputs)
    return root / "scoring"


def test_each_shard_is_mapped_and_merged_with_every_row(scoring: Path, tmp_path: Path) -> None:
    mapped = []
    for shard in range(3):
        out = tmp_path / f"mapped-{shard}"
        metrics = batch_map.run(
            {"scoring": str(scoring)},
            step_params("batch_map", *WELCH, item=shard),
            {"mapped": str(out)},
        )
        assert metrics["rows_in"] == metrics["rows_out"] > 0
        mapped.append(str(out))
    metrics = batch_map.merge(
        {"mapped": mapped},
        step_params("batch_map_merge", *WELCH),
        {"dataset": str(tmp_path / "dataset")},
    )
    assert metrics == {"rows": 300, "parts": 3}
    manifest = json.loads((tmp_path / "dataset" / "_manifest.json").read_text())
    assert sorted(manifest["parts"]) == [f"part-0000{k}.parquet" for k in range(3)]
    table = pq.read_table(tmp_path / "dataset")
    assert "signal" not in table.column_names
    # The generator's label 1 signals oscillate at 20 Hz, label 0 at 5 Hz (bins of 100/64 Hz).
    for label, peak in ((0, 5.0), (1, 20.0)):
        peaks = np.asarray(table.filter(table["label"].to_numpy() == label)["peak_hz"])
        assert np.all(np.abs(peaks - peak) <= 100 / 64)


def test_welch_psd_matches_scipy_per_record(scoring: Path) -> None:
    batch = pq.read_table(scoring / "shard-00000.parquet").to_batches()[0].slice(0, 5)
    out = welch_psd(batch, fs=100.0, nperseg=64)
    for i in range(5):
        expected = sps.welch(np.asarray(batch["signal"][i].as_py()), fs=100.0, nperseg=64)[1]
        np.testing.assert_allclose(out["psd"][i].as_py(), expected, rtol=1e-5)


def test_bad_functions_are_named(scoring: Path, tmp_path: Path) -> None:
    # the schema refuses a batch_map stage without a function at composition...
    with pytest.raises(ConfigError, match=r"batch_map.function._target_: expected the import"):
        step_params("batch_map", "stages=[etl,batch_map]", *SIGNALS)
    # ...and the step itself still names a function without _target_
    params = _with(step_params("batch_map", *WELCH), function={})
    with pytest.raises(ParamError, match=r"batch_map.function=\{\} needs '_target_'"):
        batch_map.run({"scoring": str(scoring)}, params, {"mapped": str(tmp_path / "a")})
    with pytest.raises(DataError, match=r"returned int; expected a pyarrow.RecordBatch"):
        batch_map.run(
            {"scoring": str(scoring)},
            step_params(
                "batch_map",
                "stages=[etl,batch_map]",
                *SIGNALS,
                "+batch_map.function._target_=builtins.len",
            ),
            {"mapped": str(tmp_path / "b")},
        )
    assert not (tmp_path / "b" / "_manifest.json").exists()
