"""Training: learns the synthetic churn signal, saves a safe artifact, is deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components import train
from components.errors import DataError, ParamError
from components.model_artifact import load_model
from pipelines.errors import ConfigError
from tests.support.params import override, train_params

from .helpers import Pipeline


def test_learns_and_reports_metrics(pipeline: Pipeline) -> None:
    metrics = pipeline.train_metrics
    assert metrics["val_roc_auc"] > 0.7
    assert metrics["epochs"] == 2
    assert 0 < metrics["val_loss"] < 0.69  # better than a constant guess
    assert 0.5 < metrics["val_accuracy"] <= 1
    assert metrics["samples_per_s"] > 0 and metrics["seconds"] > 0


def test_artifact_loads_with_weights_only(pipeline: Pipeline) -> None:
    state = torch.load(pipeline.model / "model.pt", weights_only=True)
    assert set(state) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias",
                          "net.6.weight", "net.6.bias"}  # fmt: skip
    meta = json.loads((pipeline.model / "model.json").read_text())
    spec = json.loads((pipeline.model / "feature_spec.json").read_text())
    assert meta["feature_spec"] == spec
    assert meta["feature_spec_version"] == spec["version"]
    assert meta["input_dim"] == state["net.0.weight"].shape[1]
    assert meta["target"] == "churned"
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["metrics"]["val_roc_auc"] == pipeline.train_metrics["val_roc_auc"]
    model, loaded_spec, loaded_meta = load_model(str(pipeline.model))
    assert not model.training
    assert loaded_spec.version == spec["version"]
    assert loaded_meta["version"] == meta["version"]


def test_same_params_give_identical_weights(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    train.run(inputs, train_params(), {"model": str(tmp_path / "again")})
    for name in ("model.pt", "model.json", "feature_spec.json"):
        assert (tmp_path / "again" / name).read_bytes() == (pipeline.model / name).read_bytes()
    train.run(inputs, train_params("seed=1"), {"model": str(tmp_path / "other")})
    assert (tmp_path / "other" / "model.pt").read_bytes() != (
        pipeline.model / "model.pt"
    ).read_bytes()


def test_global_torch_state_is_restored(pipeline: Pipeline, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    train.run(inputs, train_params(epochs=1), {"model": str(tmp_path / "m")})
    assert torch.rand(1) == expected
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_tampered_weights_are_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    train.run(inputs, train_params(epochs=1), {"model": str(tmp_path / "m")})
    other = tmp_path / "m" / "model.pt"
    other.write_bytes((pipeline.model / "model.pt").read_bytes())
    with pytest.raises(DataError, match=r"the weights were replaced after training"):
        load_model(str(tmp_path / "m"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optimizer", "lbfgs", r"trainer.optimizer: expected one of 'adam', 'adamw', 'sgd'"),
        ("epochs", 0, r"trainer.epochs: expected a number >= 1, got 0"),
        ("batch_size", 0, r"trainer.batch_size: expected a number >= 1, got 0"),
        ("lr", 0.0, r"trainer.lr: expected a number > 0.0, got 0.0"),
    ],
)
def test_bad_trainer_settings_are_config_errors(key: str, value: object, message: str) -> None:
    """The schema owns the trainer's ranges: a bad value never reaches the step."""
    with pytest.raises(ConfigError, match=message):
        train_params(override(f"trainer.{key}", value))


def test_mismatched_target_and_model_shape(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    with pytest.raises(DataError, match=r"target 'age' differs from the feature spec's target"):
        train.run(inputs, train_params() | {"target": "age"}, {"model": str(tmp_path / "a")})
    params = train_params()
    params["model"]["output_dim"] = 2
    with pytest.raises(ParamError, match=r"returns shape \(1, 2\) for one row"):
        train.run(inputs, params, {"model": str(tmp_path / "b")})


def test_unknown_model_argument_fails_before_training(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    params = train_params()
    params["model"] = {"_target_": "components.models.MLP", "hiden": [4]}
    with pytest.raises(ParamError, match=r"unknown argument 'hiden'; it accepts \['hidden'"):
        train.run(inputs, params, {"model": str(tmp_path / "m")})
    assert not (tmp_path / "m" / "model.json").exists()


def test_early_stopping_keeps_the_best_epoch(pipeline: Pipeline, tmp_path: Path) -> None:
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    params = train_params(
        epochs=30,
        lr=0.05,  # too high: validation loss soon stops improving
        early_stopping={"metric": "val_loss", "mode": "min", "patience": 2, "min_delta": 0.0},
    )
    metrics = train.run(inputs, params, {"model": str(tmp_path / "m")})
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert metrics["epochs"] == len(history) < 30
    best = min(history, key=lambda h: h["val_loss"])
    assert metrics["best_epoch"] == best["epoch"] == len(history) - 2
    assert metrics["val_loss"] == best["val_loss"]
    evaluated = load_model(str(tmp_path / "m"))[2]["metrics"]
    assert evaluated["best_epoch"] == best["epoch"]


def test_cosine_schedule_with_warmup_decays_the_learning_rate(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    inputs = {"dataset": str(pipeline.dataset), "feature_spec": str(pipeline.feature_spec)}
    params = train_params(epochs=4, lr=0.01, schedule="cosine", warmup_steps=10)
    train.run(inputs, params, {"model": str(tmp_path / "m")})
    lrs = [h["lr"] for h in json.loads((tmp_path / "m" / "history.json").read_text())]
    assert (
        lrs == sorted(lrs, reverse=True) and lrs[0] < 0.01 and lrs[-1] == pytest.approx(0, abs=1e-9)
    )
