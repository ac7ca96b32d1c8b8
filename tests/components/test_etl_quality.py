"""ETL transforms and quality: declared transforms, feature-spec reuse, checks and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from components import etl
from components.data.features import load_feature_spec
from components.data.prepare import Prepare
from components.errors import DataError, ParamError
from tests.support.params import additions, etl_params, override, step_params

OUTPUTS = ("dataset", "feature_spec", "scoring", "rejects", "quality")
DERIVE = {"amount_per_day": "amount / (days + 1)", "big": "amount > 10"}
#: The declared transforms of most tests here, without their ``fill``.
TRANSFORMS = (
    *additions("features.rename", {"amt": "amount"}),
    *additions("features.derive", DERIVE),
    *additions("features.timestamp_parts", {"at": ["hour", "day_of_week"]}),
    *additions("features.clip", {"amount": [0, 20]}),
    override(
        "features.transforms",
        [{"_target_": "tests.components.test_etl_quality.add_kind_code", "adds": ["kind_code"]}],
    ),
    "features.drop=[note]",
    "features.scaling=minmax",
    "features.encoding=index",
)
FEATURES = (*TRANSFORMS, *additions("features.fill", {"days": 0}))


def add_kind_code(batch: pa.RecordBatch, *, offset: int = 0) -> pa.RecordBatch:
    """A user transform: the length of ``kind`` plus ``offset`` as a new column."""
    import pyarrow.compute as pc

    code = pc.add(pc.utf8_length(batch.column("kind")), offset)
    return batch.append_column("kind_code", code)


def _write(path: Path, start: int, stop: int) -> Path:
    rows = [
        f"r{i},{i % 31 * 1.0},{'' if i % 7 == 0 else i % 5},{'abcd'[i % 4] * (i % 3 + 1)},"
        f"2024-03-{i % 28 + 1:02d}T{i % 24:02d}:00:00,{i % 2},n{i}"
        for i in range(start, stop)
    ]
    path.write_text("\n".join(["id,amt,days,kind,at,label,note", *rows]) + "\n")
    return path


def _run(
    source: Path, out: Path, *overrides: str, features: tuple[str, ...] = FEATURES
) -> dict[str, Any]:
    """Run etl on ``source`` into ``out``: a 60/20/20 split into two scoring shards, the
    ``features`` overrides, then ``overrides``."""
    params = etl_params(
        "data.id_column=id",
        "data.target=label",
        "data.split.train=0.6",
        "data.split.validation=0.2",
        "data.split.test=0.2",
        "inference.shards=2",
        "seed=5",
        *features,
        *overrides,
    )
    return etl.run({"source": str(source)}, params, {n: str(out / n) for n in OUTPUTS})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    _run(_write(root / "in.csv", 0, 400), root / "out")
    return root


def test_declared_transforms_shape_the_written_rows(prepared: Path) -> None:
    table = pq.read_table(prepared / "out" / "scoring").sort_by("id")
    assert "amt" not in table.column_names and "note" not in table.column_names
    row = {k: v[0] for k, v in table.slice(0, 1).to_pydict().items()}  # r0
    assert row["id"] == "r0" and row["days"] == 0  # null filled
    assert row["kind_code"] == 1 and row["at_hour"] == 0
    r29 = table.filter(pa.compute.equal(table["id"], "r29")).to_pylist()[0]
    assert r29["amount"] == 20.0  # 29 clipped to 20
    assert r29["amount_per_day"] == pytest.approx(20.0 / (29 % 5 + 1))
    assert r29["big"] == 1.0
    spec = load_feature_spec(str(prepared / "out" / "feature_spec"))
    assert spec.encoding == "index" and spec.scaling == "minmax"
    assert spec.prepare["derive"] == DERIVE


def test_the_feature_spec_gives_identical_features_for_raw_and_etl_rows(prepared: Path) -> None:
    spec = load_feature_spec(str(prepared / "out" / "feature_spec"))
    scoring = pq.read_table(prepared / "out" / "scoring").sort_by("id")
    raw = pacsv.read_csv(prepared / "in.csv").sort_by("id")
    from_etl = spec.transform(scoring.select(spec.input_columns))
    from_raw = spec.transform(raw)
    assert from_raw.shape == (400, len(spec.feature_names))
    np.testing.assert_array_equal(from_raw, from_etl)
    amount = spec.feature_names.index("amount")
    assert from_raw[:, amount].min() >= 0.0 and from_raw[:, amount].max() <= 1.0  # minmax


def test_inference_scores_raw_rows_like_etl_rows(prepared: Path, tmp_path: Path) -> None:
    import torch

    from components import infer
    from components.model_artifact import save_model
    from components.models import build_model

    spec = load_feature_spec(str(prepared / "out" / "feature_spec"))
    torch.manual_seed(0)
    cfg = {"_target_": "components.models.MLP", "hidden": [8]}
    model = build_model(cfg, len(spec.feature_names))
    save_model(str(tmp_path / "model"), model, model_cfg=cfg, spec=spec, metrics={}, history=[])
    scored = {}
    sources = (("raw", prepared / "in.csv", 1), ("etl", prepared / "out" / "scoring", 2))
    for name, data, shards in sources:
        out = tmp_path / name
        for shard in range(shards):
            params = step_params(
                "infer",
                *(
                    ("stages=[infer]", "inference.data_uri=in.csv", "inference.model_uri=model")
                    if name == "raw"
                    else ()
                ),
                f"inference.shards={shards}",
                "data.id_column=id",
                "inference.batch_size=64",
                item=shard,
            )
            inputs = {"scoring": str(data), "model": str(tmp_path / "model")}
            infer.run(inputs, params, {"predictions": str(out)})
        table = pq.read_table(out, columns=["id", "score"])
        scored[name] = table.sort_by("id").combine_chunks()
    assert scored["raw"].num_rows == 400
    assert scored["raw"]["id"].equals(scored["etl"]["id"])
    # the features are identical (test above); batching may move the last float bit
    np.testing.assert_allclose(scored["raw"]["score"], scored["etl"]["score"], atol=1e-6)


def test_prepare_is_idempotent_and_checks_expressions() -> None:
    prepare = Prepare.from_dict(etl_params(*FEATURES)["features"])
    raw = pacsv.read_csv(
        pa.py_buffer(b"id,amt,days,kind,at,label,note\nr1,30,,ab,2024-01-01T05:00:00,1,x\n")
    ).to_batches()[0]
    once = prepare(raw)
    assert prepare(once).equals(once)
    with pytest.raises(ParamError, match=r"features.derive.x='amount.__class__' uses Attribute"):
        Prepare.from_dict({"derive": {"x": "amount.__class__"}})
    with pytest.raises(ParamError, match=r"calls an unknown function"):
        Prepare.from_dict({"derive": {"x": "eval(amount)"}})


def test_drop_nulls_rows_are_rejected_and_counted(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.csv", 0, 70)
    features = (*TRANSFORMS, "features.drop_nulls=[days]")
    metrics = _run(source, tmp_path / "out", "etl.max_reject_fraction=0.5", features=features)
    assert (metrics["rows_in"], metrics["rows"], metrics["rows_rejected"]) == (70, 60, 10)
    reasons = pq.read_table(tmp_path / "out" / "rejects" / "rejects.parquet")["reason"]
    assert set(reasons.to_pylist()) == {"column 'days': null (features.drop_nulls)"}


CHECKS = [
    {"check": "row_count", "min": 10, "max": 1000},
    {"check": "not_null", "column": "id"},
    {"check": "null_fraction", "column": "days", "max": 0.1, "level": "warn"},
    {"check": "range", "column": "amount", "min": 0, "max": 20, "on": "prepared"},
    {"check": "allowed", "column": "label", "values": [0, 1]},
    {"check": "type", "column": "amt", "type": "double"},
    {"check": "unique", "column": "id"},
]


def test_quality_report_lists_checks_and_profiles(tmp_path: Path) -> None:
    metrics = _run(
        _write(tmp_path / "in.csv", 0, 300), tmp_path / "out", override("quality.checks", CHECKS)
    )
    assert (metrics["checks_failed"], metrics["checks_warned"]) == (0, 1)
    report = json.loads((tmp_path / "out" / "quality" / "quality.json").read_text())
    status = {r["name"]: r["status"] for r in report["checks"]}
    assert status == {
        "row_count": "pass",
        "id.not_null": "pass",
        "days.null_fraction": "warn",  # 43 of 300 rows are empty
        "amount.range@prepared": "pass",
        "label.allowed": "pass",
        "amt.type": "pass",
        "id.unique": "pass",
    }
    amount = report["profiles"]["prepared"]["columns"]["amount"]
    assert (amount["min"], amount["max"], amount["count"]) == (0.0, 20.0, 300)
    # moments over every value; quantiles and histogram over 1 value in 8, over [min, max]
    amounts = np.clip([i % 31 * 1.0 for i in range(300)], 0, 20)
    assert amount["std"] == pytest.approx(float(np.std(amounts)), rel=1e-12)
    assert amount["sampled_every"] == 8 and sum(amount["histogram"]["counts"]) == 38
    assert amount["exact"] is True and amount["rank_error"] == 0.0
    assert amount["quantiles"]["p50"] == float(np.quantile(amounts[::8], 0.5))
    markdown = (tmp_path / "out" / "quality" / "quality.md").read_text()
    assert "| days.null_fraction | warn | warn | 0.1433 | null fraction <= 0.1 |" in markdown


def test_a_failed_error_check_fails_etl_naming_column_value_and_threshold(tmp_path: Path) -> None:
    checks = [{"check": "range", "column": "amt", "min": 0, "max": 25}]
    with pytest.raises(DataError) as error:
        _run(
            _write(tmp_path / "in.csv", 0, 100),
            tmp_path / "out",
            override("quality.checks", checks),
        )
    assert str(error.value) == (
        "quality check range on column 'amt' (raw rows): observed 15 values outside, range "
        "[0, 30], expected every value in [0, 25] (e.g. 26.0); fix the data or relax the "
        "check in quality.checks (see quality.md)"
    )
    assert not (tmp_path / "out" / "dataset" / "_manifest.json").exists()
    report = json.loads((tmp_path / "out" / "quality" / "quality.json").read_text())
    assert report["checks"][0]["status"] == "fail"


def test_drift_against_a_reference_feature_spec(tmp_path: Path, prepared: Path) -> None:
    shifted = tmp_path / "in.csv"
    _write(shifted, 0, 300)
    text = shifted.read_text().splitlines()
    # Shift every amount up by 15 and rename kinds: both columns drift.
    rows = [line.split(",") for line in text[1:]]
    for r in rows:
        r[1] = str(float(r[1]) + 15)
        r[3] = "zz" + r[3]
    shifted.write_text("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n")
    checks = [
        {"check": "drift", "column": "amount", "max": 0.5, "on": "prepared", "level": "warn"},
        {"check": "drift", "column": "kind", "max": 0.2, "on": "prepared", "level": "warn"},
    ]
    reference = str(prepared / "out" / "feature_spec")
    metrics = _run(
        shifted,
        tmp_path / "out",
        override("quality.checks", checks),
        override("quality.reference", reference),
    )
    assert metrics["checks_warned"] == 2
    report = json.loads((tmp_path / "out" / "quality" / "quality.json").read_text())
    observed = {r["name"]: r["observed"] for r in report["checks"]}
    assert observed["kind.drift@prepared"] == 1.0  # every value is outside the vocabulary
    assert observed["amount.drift@prepared"] > 0.5


def test_rows_keep_their_split_when_rows_are_appended_with_transforms(tmp_path: Path) -> None:
    _run(_write(tmp_path / "a.csv", 0, 200), tmp_path / "a")
    _run(_write(tmp_path / "b.csv", 0, 300), tmp_path / "b")

    def splits(out: Path) -> dict[str, str]:
        return {
            i: split
            for split in ("train", "validation", "test")
            for i in pq.read_table(out / "dataset" / split, columns=["id"])["id"].to_pylist()
        }

    before, after = splits(tmp_path / "a"), splits(tmp_path / "b")
    assert len(after) == 300
    assert all(after[i] == split for i, split in before.items())


def test_the_spec_transforms_a_selection_of_its_input_columns(tmp_path: Path) -> None:
    """Training reads only ``input_columns``: transforms of other columns are skipped."""
    features = (
        *additions("features.fill", {"days": 0, "note": "none"}),
        *additions("features.clip", {"amt": [0, 10]}),
        *additions("features.derive", {"log_amt": "log1p(amt)"}),
        "features.drop=[at]",
        "features.numeric=[log_amt,days]",
        "features.categorical=[kind]",
    )
    out = tmp_path / "out"
    _run(_write(tmp_path / "in.csv", 0, 100), out, features=features)
    spec = load_feature_spec(str(out / "feature_spec"))
    assert spec.input_columns == ["days", "log_amt", "kind"]  # in schema order
    scoring = pq.read_table(out / "scoring", columns=[*spec.input_columns, "id"]).sort_by("id")
    raw = pacsv.read_csv(tmp_path / "in.csv").sort_by("id")
    np.testing.assert_array_equal(
        spec.transform(scoring.select(spec.input_columns)), spec.transform(raw)
    )
    log_amt = spec.transform(raw)[:, 1] * spec.numeric[1].std + spec.numeric[1].mean
    assert log_amt.max() == pytest.approx(np.log1p(10.0), rel=1e-6)  # clipped before deriving


def test_derived_columns_have_sql_null_semantics() -> None:
    batch = pa.record_batch(
        {
            "amount": pa.array([5.0, None, 20.0, 0.0]),
            "n": pa.array([1, 2, None, 0]),
            "d": pa.array([2, 0, 1, 0]),
        }
    )
    derive = {
        "big": "amount > 10",
        "pick": "where(amount > 10, 1, 0)",
        "next": "n + 1",
        "ratio": "n / d",
        "rest": "n % d",
        "square": "n ** 2",
        "log_amount": "log(amount)",
        "between": "1 < n < 3",
        "at_least_one": "max(n, 1)",
    }
    prepare = Prepare.from_dict(etl_params(*additions("features.derive", derive))["features"])
    prepared = prepare(batch)
    out = prepared.to_pydict()
    assert out["big"] == [False, None, True, False]  # null in, null out (not 0.0)
    assert out["pick"] == [0, None, 1, 0]  # where on a null condition is null
    assert out["next"] == [2, 3, None, 1] and prepared.schema.field("next").type == pa.int64()
    assert out["ratio"] == [0.5, None, None, None]  # n / 0 is null, counted
    assert out["rest"] == [1, None, None, None]
    assert out["square"] == [1, 4, None, 0]
    assert out["log_amount"][1:] == [None, pytest.approx(np.log(20.0)), None]  # log(0): null
    assert out["between"] == [False, True, None, False]
    assert out["at_least_one"] == [1, 2, None, 1]
    assert prepare.division_by_zero == {"ratio": 2, "rest": 2}


def test_divisions_by_zero_are_counted_in_the_quality_report(tmp_path: Path) -> None:
    _run(
        _write(tmp_path / "in.csv", 0, 100),
        tmp_path / "out",
        features=(*FEATURES, *additions("features.derive", {"per_day": "amount / days"})),
    )
    report = json.loads((tmp_path / "out" / "quality" / "quality.json").read_text())
    days = [i % 5 for i in range(100) if i % 7 != 0]  # filled with 0 where empty
    assert report["division_by_zero"] == {"per_day": 100 - len([d for d in days if d])}
    markdown = (tmp_path / "out" / "quality" / "quality.md").read_text()
    assert "Derived column per_day: " in markdown
