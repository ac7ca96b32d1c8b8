"""Cross-validation and hyperparameter search as parallel fan-outs, and the evaluation gate."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest

from pipelines.builder import build_dag
from pipelines.config.compose import compose_config
from pipelines.errors import ConfigError
from pipelines.local.records import RunResult
from pipelines.local.runner import run_local
from pipelines.report import write_report
from pipelines.tuning import trials

SMALL = [
    "data.rows=1500",
    "trainer.epochs=1",
    "trainer.batch_size=128",
    "inference.shards=2",
    "runtime.retries=0",
    "runtime.cpus=2",
    "resources.steps.train.cpu=1",
]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """5-fold CV and a 6-trial random search, then a gate the model cannot pass."""
    runs = tmp_path_factory.mktemp("cv-tune") / "runs"
    overrides = [
        *SMALL,
        f"runtime.runs_dir={runs}",
        "cv.enabled=true",
        "cv.folds=5",
        "cv.parallelism=2",
        "tune.enabled=true",
        "tune.n_trials=6",
        "tune.parallelism=2",
        "evaluate.gate.metric=roc_auc",
        "evaluate.gate.min=0.999",
    ]
    return run_local(compose_config(overrides))


@pytest.mark.integration
@pytest.mark.slow
def test_folds_and_trials_run_as_parallel_fan_outs(searched: RunResult) -> None:
    nodes = searched.nodes
    folds = [f"cv_train-{k}" for k in range(5)]
    trial_nodes = [f"tune_trial-{k}" for k in range(6)]
    for name in [*folds, *trial_nodes, "cv_aggregate", "tune_select", "train", "evaluate"]:
        assert nodes[name].status == "succeeded", (name, nodes[name].error)
    # Both fan-outs become ready together after etl and share the two CPUs: two training
    # branches run at any time (never more: each takes one CPU of runtime.cpus=2).
    events = sorted(
        (datetime.fromisoformat(t), +1 if i == 0 else -1)
        for n in [*folds, *trial_nodes]
        for i, t in enumerate((nodes[n].started_at, nodes[n].ended_at))
    )
    running, peak = 0, 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2


@pytest.mark.integration
@pytest.mark.slow
def test_cv_aggregate_reports_mean_std_and_every_fold(searched: RunResult) -> None:
    report = json.loads((searched.output("cv_aggregate", "report") / "cv.json").read_text())
    assert [f["fold"] for f in report["folds"]] == [0, 1, 2, 3, 4]
    aucs = [f["val_roc_auc"] for f in report["folds"]]
    assert report["summary"]["val_roc_auc"]["mean"] == pytest.approx(sum(aucs) / 5)
    assert report["summary"]["val_roc_auc"]["std"] > 0
    assert (searched.output("cv_aggregate", "report") / "cv.png").stat().st_size > 1000
    metrics = searched.nodes["cv_aggregate"].metrics
    assert metrics["folds"] == 5 and "val_loss_std" in metrics


@pytest.mark.integration
@pytest.mark.slow
def test_select_picks_the_best_trial_and_final_training_uses_it(searched: RunResult) -> None:
    best_dir = searched.output("tune_select", "best")
    best = json.loads((best_dir / "best.json").read_text())
    with open(best_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    top = max(rows, key=lambda r: float(r["val_roc_auc"]))
    assert int(top["trial"]) == best["trial"] and top["rank"] == "1"
    expected = build_dag(compose_config([*SMALL, "tune.enabled=true", "tune.n_trials=6"]).config)
    items = expected.step("tune_trial").fan_out.items
    assert best["overrides"] == items[best["trial"]]["overrides"]
    model = json.loads((searched.output("train", "model") / "model.json").read_text())
    assert model["tuned"] == {"trial": best["trial"], "overrides": best["overrides"]}
    assert model["trainer"]["lr"] == best["overrides"]["trainer.lr"]
    assert model["model"]["dropout"] == best["overrides"]["model.dropout"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_closed_gate_stops_before_inference(searched: RunResult) -> None:
    assert searched.status == "failed"
    gate = searched.nodes["gate"]
    assert gate.status == "failed"
    assert "evaluation gate closed: test roc_auc = 0." in gate.error
    assert "is below the minimum 0.999" in gate.error
    assert all(searched.nodes[n].status == "not_run" for n in ("infer-0", "infer-1", "publish"))


def test_trials_are_drawn_from_the_seed_and_follow_the_grammar() -> None:
    space = {
        "trainer.lr": "tag(log, interval(1e-4, 1e-2))",
        "model.hidden": "choice([64], [128, 64])",
        "trainer.batch_size": "range(64, 257, 64)",
        "trainer.epochs": "int(interval(1, 5))",
    }
    drawn = trials(space, search="random", n_trials=20, seed=3)
    assert drawn == trials(space, search="random", n_trials=20, seed=3)
    assert drawn != trials(space, search="random", n_trials=20, seed=4)
    for trial in drawn:
        assert 1e-4 <= trial["trainer.lr"] <= 1e-2
        assert trial["model.hidden"] in ([64], [128, 64])
        assert trial["trainer.batch_size"] in (64, 128, 192, 256)
        assert isinstance(trial["trainer.epochs"], int) and 1 <= trial["trainer.epochs"] <= 5
    grid = trials(
        {"trainer.lr": "choice(0.1, 0.01)", "model.dropout": "choice(0.0, 0.5)"},
        search="grid",
        n_trials=3,
        seed=0,
    )
    assert grid == [
        {"model.dropout": 0.0, "trainer.lr": 0.1},
        {"model.dropout": 0.0, "trainer.lr": 0.01},
        {"model.dropout": 0.5, "trainer.lr": 0.1},
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.space={trainer.lr: 'intervl(1,2)'}"], "Unknown function 'intervl'"),
        (["tune=grid", "tune.space={trainer.lr: 'interval(0.1,1)'}"], "cannot be enumerated"),
        (["tune.objective=val_rmse"], "tune.objective: expected a binary validation metric"),
    ],
)
def test_bad_tuning_configs_fail_at_composition(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        compose_config(["tune.enabled=true", *overrides])


def test_space_keys_outside_model_and_trainer_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"tune.space.data.rows: expected a dotted model\.\*"):
        trials({"data.rows": "choice(1,2)"}, search="random", n_trials=1, seed=0)


def test_cv_and_tune_fan_outs_in_the_dag() -> None:
    dag = build_dag(
        compose_config(
            [
                "cv.enabled=true",
                "cv.folds=3",
                "tune.enabled=true",
                "tune.n_trials=2",
                "tune.cv=true",
            ]
        ).config
    )
    assert dag.step("cv_train").fan_out.items == ({"fold": 0}, {"fold": 1}, {"fold": 2})
    items = dag.step("tune_trial").fan_out.items
    assert [(i["trial"], i["fold"]) for i in items] == [(t, f) for t in range(2) for f in range(3)]
    assert dag.step("train").inputs["best"].step == "tune_select"
    assert dag.step("tune_trial").params["cv"]["folds"] == 3


def test_gate_sits_between_evaluate_and_inference() -> None:
    dag = build_dag(compose_config(["evaluate=gated"]).config)
    names = [s.name for s in dag.steps]
    assert names.index("evaluate") < names.index("gate") < names.index("infer")
    assert dag.step("infer").inputs["model"].step == "gate"
    plain = build_dag(compose_config([]).config)
    assert "gate" not in [s.name for s in plain.steps]
    assert plain.step("infer").inputs["model"].step == "train"


@pytest.mark.integration
@pytest.mark.slow
def test_report_shows_cv_tuning_and_the_gate_failure(searched: RunResult) -> None:
    page = write_report(searched.run_dir).read_text()
    assert '<section id="cv">' in page and "Cross-validation <span" in page
    assert '<section id="tuning">' in page and "6 trials, val_roc_auc, maximize" in page
    assert "hyperparameters of tuning trial" in page
    assert "evaluation gate closed" in page
    assert page.count("data:image/png;base64,") >= 4  # cv, tuning, training, ROC (+ DAG...)
