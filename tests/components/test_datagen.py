"""Demo data generation: determinism, schema, realism of the synthetic churn table."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from components import datagen
from components.errors import ParamError
from tests.support.params import step_params


def _synthetic(tmp_path: Path, name: str, rows: int, seed: int) -> Path:
    out = tmp_path / name
    params = step_params("datagen", "data=demo", f"data.rows={rows}", f"seed={seed}")
    metrics = datagen.run({}, params, {"raw": str(out)})
    assert metrics == {"rows": rows}
    return out / "data.csv"


def test_synthetic_is_deterministic_for_the_same_params(tmp_path: Path) -> None:
    first = _synthetic(tmp_path, "a", 1500, seed=1).read_bytes()
    assert _synthetic(tmp_path, "b", 1500, seed=1).read_bytes() == first
    assert _synthetic(tmp_path, "c", 1500, seed=2).read_bytes() != first


def test_synthetic_schema_and_realism(tmp_path: Path) -> None:
    table = pacsv.read_csv(
        _synthetic(tmp_path, "raw", 20_000, seed=0),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )
    assert table.schema.names == [
        "customer_id",
        "age",
        "tenure_months",
        "monthly_charges",
        "total_charges",
        "support_calls",
        "data_usage_gb",
        "plan",
        "region",
        "payment_method",
        "contract",
        "signup_at",
        "churned",
    ]
    assert str(table.schema.field("signup_at").type) == "timestamp[s]"  # ISO 8601 parses
    assert table["customer_id"][0].as_py() == "C00000001"
    assert pc.count_distinct(table["customer_id"]).as_py() == 20_000
    assert pc.count_distinct(table["region"]).as_py() == 8
    assert set(pc.unique(table["contract"]).to_pylist()) == {
        "month-to-month",
        "one-year",
        "two-year",
    }
    null_share = {name: table[name].null_count / 20_000 for name in table.schema.names}
    assert [n for n, share in null_share.items() if share > 0] == [
        "total_charges",
        "data_usage_gb",
        "payment_method",
    ]
    assert all(0.005 < share < 0.03 for share in null_share.values() if share > 0)
    assert 0.2 < pc.mean(table["churned"]).as_py() < 0.32


def test_sklearn_breast_cancer_export(tmp_path: Path) -> None:
    params = step_params("datagen", "data=breast_cancer")
    metrics = datagen.run({}, params, {"raw": str(tmp_path / "raw")})
    table = pacsv.read_csv(tmp_path / "raw" / "data.csv")
    assert metrics == {"rows": 569}
    assert table.num_rows == 569
    assert table.schema.names[:3] == ["sample_id", "mean_radius", "mean_texture"]
    assert table.schema.names[-1] == "malignant"
    assert all(" " not in name for name in table.schema.names)
    assert table["sample_id"][0].as_py() == "S0000"
    assert pc.sum(table["malignant"]).as_py() == 212  # 212 malignant, 357 benign


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "parquet"}, r"datagen kind 'parquet' is unknown"),
        ({"kind": "synthetic", "rows": 0}, r"datagen rows=0 is not positive"),
        ({"kind": "sklearn", "dataset": "iris"}, r"datagen dataset 'iris' is unknown"),
    ],
)
def test_bad_params_are_param_errors(
    tmp_path: Path, params: dict[str, object], message: str
) -> None:
    """A value the schema would refuse still fails in the step, naming itself."""
    broken = step_params("datagen", "data=demo") | params
    with pytest.raises(ParamError, match=message):
        datagen.run({}, broken, {"raw": str(tmp_path / "raw")})
