"""Multiclass and regression training and evaluation, labels, folds and the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components import datagen, etl, evaluate, train
from components.data.labels import Target, fit_target
from components.errors import DataError, ParamError
from components.model_artifact import load_model, scores_from_logits
from components.training.data import fold_assignment
from tests.support.params import etl_params, override, step_params, train_params

from .helpers import Pipeline


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def task_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """etl + train + evaluate on synthetic churn data with a multiclass or numeric target."""
    task = request.param
    target = {"multiclass": "contract", "regression": "monthly_charges"}[task]
    root = tmp_path_factory.mktemp(task)
    demo = step_params("datagen", "data=demo", "data.rows=3000", "seed=5")
    datagen.run({}, demo, {"raw": str(root / "raw")})
    etl.run(
        {"source": str(root / "raw")},
        etl_params(override("data.target", target), f"data.task={task}"),
        {n: str(root / n) for n in ("dataset", "feature_spec", "scoring")},
    )
    params = train_params(override("data.target", target), f"data.task={task}", epochs=3)
    inputs = {"dataset": str(root / "dataset"), "feature_spec": str(root / "feature_spec")}
    trained = train.run(inputs, params, {"model": str(root / "model")})
    evaluated = evaluate.run(
        {"dataset": str(root / "dataset"), "model": str(root / "model")},
        step_params("evaluate"),
        {"metrics": str(root / "metrics")},
    )
    return {"task": task, "root": root, "train": trained, "evaluate": evaluated}


def test_metrics_follow_the_task(task_run: dict) -> None:
    trained, evaluated = task_run["train"], task_run["evaluate"]
    saved = json.loads((task_run["root"] / "metrics" / "metrics.json").read_text())
    if task_run["task"] == "multiclass":
        assert set(trained) >= {"val_loss", "val_accuracy", "val_f1_macro"}
        assert trained["val_accuracy"] > 0.4  # three classes: better than a uniform guess
        assert set(evaluated) >= {"accuracy", "f1_macro", "precision_macro", "roc_auc", "log_loss"}
        assert saved["classes"] == ["month-to-month", "one-year", "two-year"]
        matrix = np.array(saved["confusion_matrix"])
        assert matrix.shape == (3, 3) and matrix.sum() == evaluated["rows"]
    else:
        assert set(trained) >= {"val_loss", "val_rmse", "val_mae", "val_r2"}
        assert trained["val_r2"] > 0.3  # charges are predictable from plan and usage
        assert set(evaluated) >= {"mae", "rmse", "r2"} and "confusion_matrix" not in saved
        assert evaluated["rmse"] >= evaluated["mae"] > 0


def test_artifact_carries_task_and_classes(task_run: dict) -> None:
    model, spec, meta = load_model(str(task_run["root"] / "model"))
    assert meta["task"] == task_run["task"]
    rows = pq.read_table(task_run["root"] / "dataset" / "test").slice(0, 5)
    with torch.inference_mode():
        scores = scores_from_logits(meta["task"], model(torch.from_numpy(spec.transform(rows))))
    if meta["task"] == "multiclass":
        assert meta["output_dim"] == len(meta["classes"]) == 3
        assert scores.shape == (5, 3)
        torch.testing.assert_close(scores.sum(dim=1), torch.ones(5))
    else:
        assert meta["classes"] == [] and scores.shape == (5,)
    history = json.loads((task_run["root"] / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_binary_scores_are_positive_class_probabilities() -> None:
    logits = torch.tensor([[0.0], [2.0]])
    torch.testing.assert_close(scores_from_logits("binary", logits), torch.sigmoid(logits[:, 0]))


def test_target_labels_are_sorted_strings_and_unseen_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"y": [2, 10, 2, 1]}), path)
    target = fit_target("multiclass", "y", [str(path)])
    assert target.classes == ("1", "2", "10")  # numeric order, not string order
    assert target.encode(pa.table({"y": [10, 1]})).tolist() == [2, 0]
    with pytest.raises(DataError, match=r"holds '7', which the train split never has"):
        target.encode(pa.table({"y": [7]}))
    with pytest.raises(DataError, match=r"data.task=binary but .* has 3 distinct values"):
        fit_target("binary", "y", [str(path)])
    with pytest.raises(ParamError, match=r"data.task 'ordinal' is unknown"):
        fit_target("ordinal", "y", [str(path)])
    assert Target.from_dict(target.to_dict()) == target


def test_folds_are_stratified_and_keep_groups_together(tmp_path: Path) -> None:
    path = tmp_path / "part-00000.parquet"
    y = np.array([0] * 80 + [1] * 20)
    groups = np.arange(100) // 4
    pq.write_table(pa.table({"y": y, "g": groups}), path)
    target = fit_target("binary", "y", [str(path)])
    folds = fold_assignment([str(path)], target, folds=5, stratify=True, group_column=None, seed=1)
    for k in range(5):
        assert (folds == k).sum() == 20 and y[folds == k].sum() == 4
    grouped = fold_assignment(
        [str(path)], target, folds=5, stratify=False, group_column="g", seed=1
    )
    for g in np.unique(groups):
        assert len(np.unique(grouped[groups == g])) == 1
    with pytest.raises(DataError, match=r"fewer than cv.folds=200"):
        fold_assignment([str(path)], target, folds=200, stratify=True, group_column=None, seed=1)


def test_gate_passes_the_model_on_or_stops_with_a_clear_message(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    evaluate.run(
        {"dataset": str(pipeline.dataset), "model": str(pipeline.model)},
        step_params("evaluate"),
        {"metrics": str(tmp_path / "metrics")},
    )
    inputs = {"evaluation": str(tmp_path / "metrics"), "model": str(pipeline.model)}
    opened = evaluate.gate(inputs, _gate("evaluate.gate.min=0.5"), {"model": str(tmp_path / "ok")})
    assert opened["passed"] == 1
    assert (tmp_path / "ok" / "model.pt").read_bytes() == (pipeline.model / "model.pt").read_bytes()
    load_model(str(tmp_path / "ok"))
    with pytest.raises(
        evaluate.GateClosed,
        match=r"gate closed: test roc_auc = 0\.\d{4} is below the minimum 0\.999",
    ):
        evaluate.gate(inputs, _gate("evaluate.gate.min=0.999"), {"model": str(tmp_path / "no")})
    assert not (tmp_path / "no" / "model.json").exists()
    closed = evaluate.gate(
        inputs,
        _gate("evaluate.gate.min=0.999") | {"raise_when_closed": False},
        {"model": str(tmp_path / "kfp")},
    )
    assert closed["passed"] == 0
    with pytest.raises(ParamError, match=r"gate.metric 'auc' is not a metric"):
        evaluate.gate(inputs, _gate() | {"metric": "auc"}, {"model": str(tmp_path / "x")})


def _gate(*overrides: str) -> dict[str, object]:
    """The gate step's params: the packaged ``evaluate=gated`` option under ``overrides``."""
    return step_params("gate", "evaluate=gated", *overrides)


def _labelled(path: Path, labels: list[str]) -> Path:
    rows = [f"r{i},{i % 13 * 0.5},{labels[i % len(labels)]}" for i in range(300)]
    path.write_text("\n".join(["id,x,answer", *rows]) + "\n")
    return path


def _etl_labels(source: Path, out: Path, *overrides: str) -> dict:
    params = etl_params("data.id_column=id", "data.target=answer", *overrides)
    outputs = {n: str(out / n) for n in ("dataset", "feature_spec", "scoring", "rejects")}
    return etl.run({"source": str(source)}, params, outputs)


def test_a_third_label_of_a_binary_target_fails_etl(tmp_path: Path) -> None:
    source = _labelled(tmp_path / "in.csv", ["yes", "no", "yes", "no", "maybe"])
    with pytest.raises(DataError, match=r"data.task=binary but the target 'answer' has more "):
        _etl_labels(source, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset" / "_manifest.json").exists()


def test_declared_classes_quarantine_other_labels_and_order_the_classes(
    tmp_path: Path,
) -> None:
    source = _labelled(tmp_path / "in.csv", ["yes", "no", "yes", "no", "maybe"])
    out = tmp_path / "out"
    metrics = _etl_labels(source, out, "data.classes=[yes,no]", "etl.max_reject_fraction=0.25")
    assert (metrics["rows_in"], metrics["rows"], metrics["rows_rejected"]) == (300, 240, 60)
    reasons = set(pq.read_table(out / "rejects" / "rejects.parquet")["reason"].to_pylist())
    assert reasons == {"column 'answer': label 'maybe' is not one of data.classes ['yes', 'no']"}
    train.run(
        {"dataset": str(out / "dataset"), "feature_spec": str(out / "feature_spec")},
        train_params("data.target=answer", "data.classes=[yes,no]", epochs=1),
        {"model": str(out / "model")},
    )
    _, _, meta = load_model(str(out / "model"))
    assert meta["classes"] == ["yes", "no"]  # declared order: "no" is the positive class
