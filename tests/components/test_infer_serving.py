"""Scoring at scale: shard-count invariance, external data, tasks, auto batch size, optimization."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from components import infer, publish
from components.errors import DataError, ParamError
from components.model_artifact import scores_from_logits
from components.scoring.batching import activation_bytes_per_row, choose_batch_size, optimize_model
from pipelines.errors import ConfigError
from tests.support.params import override, step_params

from .helpers import Pipeline


@pytest.fixture(scope="module")
def external(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scoring rows as one outside Parquet file in row groups of 250 rows."""
    root = tmp_path_factory.mktemp("external")
    table = pa.concat_tables(
        pq.read_table(p) for p in sorted(pipeline.scoring.glob("shard-*.parquet"))
    )
    pq.write_table(table, root / "new.parquet", row_group_size=250)
    return root / "new.parquet"


def _with(params: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``params`` with run-time ``values`` for keys the composed params already hold."""
    assert values.keys() <= params.keys(), sorted(values.keys() - params.keys())
    return params | values


def _run(pipeline: Pipeline, data: Path, shards: int, model: Path | None = None) -> tuple[str, ...]:
    """The overrides of a run that scores ``data`` in ``shards`` shards: the pipeline's etl
    scoring set, or outside data in a scoring-only run (``stages=[infer]``) of ``model``."""
    if data == pipeline.scoring:
        return (f"inference.shards={shards}",)
    return (
        "stages=[infer]",
        override("inference.model_uri", str(model or pipeline.model)),
        override("inference.data_uri", str(data)),
        f"inference.shards={shards}",
        "data.id_column=customer_id",
    )


def _infer_params(
    pipeline: Pipeline, data: Path, shards: int, shard: int, *overrides: str, **values: Any
) -> dict[str, Any]:
    """Branch ``shard`` of the infer step of :func:`_run` in run ``r``."""
    params = step_params("infer", *_run(pipeline, data, shards), *overrides, item=shard)
    return _with(params, **({"run_id": "r"} | values))


def _publish_params(pipeline: Pipeline, data: Path, shards: int) -> dict[str, Any]:
    """The publish step of :func:`_run` in run ``r``, dated today."""
    return _with(step_params("publish", *_run(pipeline, data, shards)), run_id="r", run_date="")


def _score(pipeline: Pipeline, data: Path, shards: int, out: Path, *overrides: str) -> pa.Table:
    for shard in range(shards):
        infer.run(
            {"scoring": str(data), "model": str(pipeline.model)},
            _infer_params(pipeline, data, shards, shard, *overrides),
            {"predictions": str(out)},
        )
    parts = [pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]
    return pa.concat_tables(parts).sort_by("customer_id")


def test_predictions_are_identical_in_one_shard_or_many(
    pipeline: Pipeline, external: Path, tmp_path: Path
) -> None:
    one = _score(pipeline, external, 1, tmp_path / "one", "inference.batch_size=512")
    # 20 shards for 16 row groups of 250 rows: shards cut row groups, 200 rows each.
    many = _score(pipeline, external, 20, tmp_path / "many", "inference.batch_size=512")
    assert one.num_rows == many.num_rows == pq.read_metadata(external).num_rows
    columns = ["customer_id", "score", "label"]
    assert one.select(columns).equals(many.select(columns))
    metrics = publish.run(
        {"predictions": [str(tmp_path / "many")], "scoring": str(external)},
        _publish_params(pipeline, external, 20),
        {"predictions": str(tmp_path / "published")},
    )
    assert metrics == {"rows": one.num_rows, "files": 20}
    parts = sorted((tmp_path / "many").glob("part-*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in parts] == [200] * 20


def test_shards_beyond_the_rows_commit_empty(
    pipeline: Pipeline, external: Path, tmp_path: Path
) -> None:
    tiny = tmp_path / "tiny.parquet"
    pq.write_table(pq.read_table(external).slice(0, 3), tiny)
    _score(pipeline, tiny, 5, tmp_path / "out", "inference.batch_size=512")
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in parts] == [0, 1, 0, 1, 1]
    metrics = publish.run(
        {"predictions": [str(tmp_path / "out")], "scoring": str(tiny)},
        _publish_params(pipeline, tiny, 5),
        {"predictions": str(tmp_path / "published")},
    )
    assert metrics == {"rows": 3, "files": 5}


def test_publish_refuses_an_id_scored_in_two_shards(
    pipeline: Pipeline, external: Path, tmp_path: Path
) -> None:
    table = pq.read_table(external)
    ids = table["customer_id"].to_pylist()
    ids[-1] = ids[0]  # the first and last row groups go to different shards
    doubled = tmp_path / "doubled.parquet"
    pq.write_table(table.set_column(0, "customer_id", pa.array(ids)), doubled, row_group_size=250)
    _score(pipeline, doubled, 2, tmp_path / "out", "inference.batch_size=512")
    with pytest.raises(DataError) as error:
        publish.run(
            {"predictions": str(tmp_path / "out"), "scoring": str(doubled)},
            _publish_params(pipeline, doubled, 2),
            {"predictions": str(tmp_path / "published")},
        )
    assert str(error.value) == (
        "the same id has predictions in more than one shard; expected one prediction per id: "
        "de-duplicate the ids of the data to score"
    )


def test_external_data_needs_an_id_column(
    pipeline: Pipeline, external: Path, tmp_path: Path
) -> None:
    # the schema refuses a scoring run without an id column at composition...
    with pytest.raises(ConfigError, match=r"data.id_column: expected the column that identifies"):
        step_params("infer", *_run(pipeline, external, 1), "data.id_column=null")
    # ...and the step itself refuses outside data it cannot key
    with pytest.raises(DataError) as error:
        infer.run(
            {"scoring": str(external), "model": str(pipeline.model)},
            _infer_params(pipeline, external, 1, 0, id_column=None),
            {"predictions": str(tmp_path)},
        )
    assert str(error.value) == (
        f"no id column is known for {external}, so predictions cannot be keyed; set "
        "data.id_column to the column that identifies rows"
    )


def test_auto_batch_size_is_measured_and_recorded(pipeline: Pipeline, tmp_path: Path) -> None:
    metrics = infer.run(
        {"scoring": str(pipeline.scoring), "model": str(pipeline.model)},
        _infer_params(
            pipeline,
            pipeline.scoring,
            3,
            0,
            "inference.batch_size=auto",
            "inference.memory_cap_mb=64",
        ),
        {"predictions": str(tmp_path)},
    )
    assert metrics["batch_size"] in (256, 512, 1024, 2048, 4096, 8192, 16_384, 32_768)
    marker = json.loads((tmp_path / "_shard-00000.json").read_text())
    assert marker["batch_size"] == metrics["batch_size"]


def test_auto_batch_size_respects_the_memory_cap() -> None:
    model = nn.Sequential(nn.Linear(8, 1000), nn.ReLU(), nn.Linear(1000, 1)).eval()
    per_row = activation_bytes_per_row(model, 8)
    assert per_row == 4 * (8 + 1000 + 1000)  # the Linear and ReLU outputs, side by side
    sample = torch.randn(100, 8)
    size, rates = choose_batch_size(model, sample, memory_cap_bytes=per_row * 1024)
    assert set(rates) == {256, 512, 1024} and size in rates
    with pytest.raises(ParamError) as error:
        choose_batch_size(model, sample, memory_cap_bytes=2**20)
    assert str(error.value) == (
        "inference.memory_cap_mb=1 is too small for a batch of 256 rows (2.0 MiB); raise it or "
        "set inference.batch_size explicitly"
    )


def test_quantized_model_stays_within_tolerance(pipeline: Pipeline, tmp_path: Path) -> None:
    plain = _score(pipeline, pipeline.scoring, 3, tmp_path / "plain", "inference.batch_size=512")
    metrics = infer.run(
        {"scoring": str(pipeline.scoring), "model": str(pipeline.model)},
        _infer_params(
            pipeline,
            pipeline.scoring,
            3,
            0,
            "inference.batch_size=512",
            "inference.optimize=[quantize]",
            "inference.tolerance=0.02",
        ),
        {"predictions": str(tmp_path / "q")},
    )
    assert metrics["optimize"] == "quantize"
    assert 0 < metrics["optimize_max_abs_diff"] <= 0.02
    assert metrics["optimize_label_agreement"] >= 0.98
    quantized = pq.read_table(tmp_path / "q" / "part-00000.parquet").sort_by("customer_id")
    reference = plain.filter(pa.compute.is_in(plain["customer_id"], quantized["customer_id"]))
    diff = np.abs(quantized["score"].to_numpy() - reference["score"].to_numpy())
    assert diff.max() <= 0.02


def test_optimization_beyond_tolerance_is_refused() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1)).eval()
    sample = torch.randn(256, 16) * 4
    with pytest.raises(ParamError) as error:
        optimize_model(model, ["quantize"], sample, task="binary", tolerance=0.0)
    assert "more than inference.tolerance=0; raise the tolerance or drop the optimization" in str(
        error.value
    )
    scripted, metrics = optimize_model(model, ["torchscript"], sample, task="binary", tolerance=0)
    assert metrics["optimize_max_abs_diff"] == 0.0 and metrics["optimize_label_agreement"] == 1.0
    assert isinstance(scripted, torch.jit.ScriptModule)


def test_scores_from_logits_per_task() -> None:
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    torch.testing.assert_close(scores_from_logits("binary", logits), torch.sigmoid(logits[:, 0]))
    assert scores_from_logits("multiclass", logits).sum(dim=1).tolist() == pytest.approx([1, 1])
    assert scores_from_logits("regression", logits).tolist() == [0.0, 2.0]
    with pytest.raises(DataError, match="model task 'ranking' is unknown"):
        scores_from_logits("ranking", logits)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_other_tasks_write_their_columns(
    pipeline: Pipeline, external: Path, tmp_path: Path, task: str
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(pipeline.model, model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    outputs = 3 if task == "multiclass" else 1
    meta["model"] = meta["model"] | {"output_dim": outputs}
    meta["task"], meta["classes"] = task, ["low", "mid", "high"]
    torch.manual_seed(0)
    from components.data.features import FeatureSpec
    from components.model_artifact import save_model
    from components.models import build_model

    spec = FeatureSpec.from_dict(meta["feature_spec"])
    model = build_model(meta["model"], meta["input_dim"])
    saved = save_model(
        str(model_dir), model, model_cfg=meta["model"], spec=spec, metrics={}, history=[]
    )
    (model_dir / "model.json").write_text(
        json.dumps(saved | {"task": task, "classes": meta["classes"]})
    )
    infer.run(
        {"scoring": str(external), "model": str(model_dir)},
        _with(
            step_params(
                "infer", *_run(pipeline, external, 1, model_dir), "inference.batch_size=300"
            ),
            run_id="r",
        ),
        {"predictions": str(tmp_path / "out")},
    )
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    if task == "multiclass":
        probs = np.array(table["probabilities"].to_pylist())
        assert probs.shape == (table.num_rows, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
        np.testing.assert_array_equal(
            table["score"].to_numpy(), probs.max(axis=1).astype(np.float32)
        )
        expected = [meta["classes"][k] for k in probs.argmax(axis=1)]
        assert table["label"].cast(pa.string()).to_pylist() == expected
    else:
        assert "probabilities" not in table.schema.names
        assert table["label"].null_count == table.num_rows


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_scoring_matches_cpu(pipeline: Pipeline, tmp_path: Path) -> None:
    cpu = _score(
        pipeline,
        pipeline.scoring,
        3,
        tmp_path / "cpu",
        "inference.batch_size=512",
        "inference.device=cpu",
    )
    gpu = _score(
        pipeline,
        pipeline.scoring,
        3,
        tmp_path / "gpu",
        "inference.batch_size=512",
        "inference.device=cuda",
    )
    assert cpu["customer_id"].equals(gpu["customer_id"])
    np.testing.assert_allclose(gpu["score"].to_numpy(), cpu["score"].to_numpy(), atol=1e-5)


def _stages(fail_at: int | None = None) -> tuple[list[pa.RecordBatch], Any, infer._Scorer]:
    """Chunks, a prepare function (failing on chunk ``fail_at``) and a CPU scorer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).eval()
    chunks = [pa.record_batch({"id": pa.array(range(i * 50, i * 50 + 50))}) for i in range(6)]

    def prepare(chunk: pa.RecordBatch) -> tuple[pa.Array, torch.Tensor]:
        if fail_at is not None and chunk["id"][0].as_py() == fail_at * 50:
            raise DataError("unreadable chunk")
        ids = chunk.column("id")
        return ids, torch.tensor(np.c_[ids, ids, ids], dtype=torch.float32) / 300

    return chunks, prepare, infer._Scorer(model, "binary", 0.5, 16, torch.device("cpu"))


def test_the_overlapped_pipeline_gives_what_the_sequential_one_gives() -> None:
    results: dict[str, list] = {"threads": [], "sequential": []}
    for name, run_stages in (("threads", infer._pipeline), ("sequential", infer._sequential)):
        chunks, prepare, scorer = _stages()
        run_stages(
            iter(chunks), prepare, scorer, lambda ids, out, n=name: results[n].append((ids, out))
        )
    assert len(results["threads"]) == 6
    for (ids_a, out_a), (ids_b, out_b) in zip(
        results["threads"], results["sequential"], strict=True
    ):
        assert ids_a.equals(ids_b)
        np.testing.assert_array_equal(out_a[0], out_b[0])


def test_an_error_in_the_reader_stops_the_overlapped_pipeline() -> None:
    chunks, prepare, scorer = _stages(fail_at=3)
    written: list = []
    with pytest.raises(DataError, match="unreadable chunk"):
        infer._pipeline(iter(chunks), prepare, scorer, lambda ids, out: written.append(ids))
    assert len(written) <= 3
