"""The whole pipeline on small data: demo, a real dataset, a user's own CSV, failures."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.config.compose import compose_config
from pipelines.local.records import RunResult
from pipelines.local.runner import run_local
from pipelines.report import write_report

pytestmark = pytest.mark.integration

SMALL = ["data.rows=3000", "trainer.epochs=2", "inference.shards=3", "runtime.retries=0"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e") / "runs"


@pytest.fixture(scope="module")
def demo(runs_dir: Path) -> RunResult:
    """One small end-to-end demo run that many tests inspect."""
    return run_local(compose_config([*SMALL, f"runtime.runs_dir={runs_dir}"]))


def _predictions(result: RunResult) -> ds.Dataset:
    return ds.dataset(result.output("publish", "predictions"), format="parquet")


def test_demo_runs_every_step(demo: RunResult) -> None:
    assert demo.ok, [(r.node, r.error) for r in demo.failed]
    assert list(demo.nodes) == [
        "datagen",
        "etl",
        "train",
        "evaluate",
        "infer-0",
        "infer-1",
        "infer-2",
        "publish",
    ]
    assert all(r.status == "succeeded" for r in demo.nodes.values())


def test_demo_predicts_every_row_once(demo: RunResult) -> None:
    table = _predictions(demo).to_table()
    assert table.num_rows == 3000
    assert set(table.column_names) >= {"customer_id", "score", "label", "model_version", "run_id"}
    assert len(set(table.column("customer_id").to_pylist())) == 3000
    assert set(table.column("run_id").to_pylist()) == {demo.run_id}
    scores = table.column("score").to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_demo_evaluates_on_the_test_split(demo: RunResult) -> None:
    metrics = demo.nodes["evaluate"].metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    etl = demo.nodes["etl"].metrics
    assert metrics["rows"] == etl["rows_test"]
    assert etl["rows_train"] + etl["rows_validation"] + etl["rows_test"] == 3000


def test_demo_run_folder_has_config_manifest_and_logs(demo: RunResult) -> None:
    assert "rows: 3000" in (demo.run_dir / "config.yaml").read_text()
    manifest = json.loads((demo.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    train = manifest["nodes"]["train"]
    assert set(train["inputs"]) == {"dataset", "feature_spec"}
    assert len(train["outputs"]["model"]["digest"]) == 64
    assert Path(train["attempts"][0]["log"]).read_text().strip()


def test_rerun_reuses_every_step(demo: RunResult, runs_dir: Path) -> None:
    again = run_local(compose_config([*SMALL, f"runtime.runs_dir={runs_dir}"]))
    assert again.ok
    assert {r.status for r in again.nodes.values()} == {"cached"}
    assert _predictions(again).count_rows() == 3000


def test_more_shards_rescore_without_retraining(demo: RunResult, runs_dir: Path) -> None:
    reshard = run_local(
        compose_config([*SMALL, "inference.shards=4", f"runtime.runs_dir={runs_dir}"])
    )
    statuses = {name: r.status for name, r in reshard.nodes.items()}
    assert statuses["etl"] == "succeeded"  # the scoring set is re-sharded...
    assert statuses["train"] == statuses["evaluate"] == "cached"  # ...the training data is not
    assert [statuses[f"infer-{i}"] for i in range(4)] == ["succeeded"] * 4
    assert _predictions(reshard).count_rows() == 3000


def test_resume_partway_through_the_fan_out(demo: RunResult, runs_dir: Path) -> None:
    """A run stopped after some shards were scored reuses them and scores only the rest."""
    shutil.rmtree(Path(demo.nodes["infer-1"].outputs["predictions"]["path"]).parents[1])
    resumed = run_local(compose_config([*SMALL, f"runtime.runs_dir={runs_dir}"]))
    assert resumed.ok, [(r.node, r.error) for r in resumed.failed]
    ran = sorted(name for name, r in resumed.nodes.items() if r.status == "succeeded")
    assert ran == ["infer-1", "publish"]
    table = _predictions(resumed).to_table()
    assert table.num_rows == len(set(table.column("customer_id").to_pylist())) == 3000
    assert set(table.column("run_id").to_pylist()) == {demo.run_id, resumed.run_id}


def test_changed_training_params_rerun_only_downstream(demo: RunResult, runs_dir: Path) -> None:
    changed = run_local(
        compose_config([*SMALL, "trainer.epochs=1", f"runtime.runs_dir={runs_dir}"])
    )
    statuses = {name: r.status for name, r in changed.nodes.items()}
    assert statuses["datagen"] == statuses["etl"] == "cached"
    assert statuses["train"] == statuses["publish"] == "succeeded"


def test_scoring_only_run_reads_a_glob_of_json_lines(demo: RunResult, tmp_path: Path) -> None:
    rows = ds.dataset(demo.output("etl", "scoring"), format="parquet").to_table().to_pylist()
    day = tmp_path / "day"
    day.mkdir()
    for k in range(2):
        lines = (json.dumps(row, default=str) + "\n" for row in rows[k::2])
        (day / f"part-{k}.jsonl").write_text("".join(lines))
    overrides = [
        "stages=[infer]",
        f"inference.model_uri={demo.output('train', 'model')}",
        f"inference.data_uri='{day}/part-*.jsonl'",
        "inference.shards=2",
        "runtime.retries=0",
        f"runtime.runs_dir={tmp_path / 'runs'}",
    ]
    first = run_local(compose_config(overrides))
    assert first.ok, [(r.node, r.error) for r in first.failed]
    assert _predictions(first).count_rows() == len(rows) == 3000
    assert {r.status for r in run_local(compose_config(overrides)).nodes.values()} == {"cached"}
    good = "".join(json.dumps(r, default=str) + "\n" for r in rows[1:9:2])
    (day / "part-1.jsonl").write_text(good + '{"customer_id": "cut off\n')
    changed = run_local(compose_config([*overrides, "etl.max_reject_fraction=0.25"]))  # 1 of 5
    assert {r.status for r in changed.nodes.values()} == {"succeeded"}  # the glob's files changed
    assert _predictions(changed).count_rows() == 1500 + 4
    assert changed.nodes["infer-1"].metrics["rejected"] == 1
    assert "rows quarantined as unreadable" in write_report(changed.run_dir).read_text()


def test_breast_cancer_experiment_learns(tmp_path: Path) -> None:
    overrides = ["experiment=breast_cancer", "trainer.epochs=15", f"runtime.runs_dir={tmp_path}"]
    result = run_local(compose_config(overrides))
    assert result.ok, [(r.node, r.error) for r in result.failed]
    assert result.nodes["evaluate"].metrics["roc_auc"] > 0.9
    assert _predictions(result).count_rows() == 569


def _write_loans(path: Path, rows: int = 600) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["loan_id", "amount", "term", "grade", "issued_at", "defaulted"])
        for i in range(rows):
            grade = "ABCD"[i % 4]
            amount = 1000 + (i * 37) % 9000
            defaulted = int(grade == "D" or amount > 8500)
            writer.writerow(
                [
                    f"L{i:05d}",
                    amount,
                    36 + 24 * (i % 2),
                    grade,
                    f"2024-0{1 + i % 9}-1{i % 10}T08:00:00",
                    defaulted,
                ]
            )


def test_user_csv_through_config_dir_only(kfbatch, tmp_path: Path) -> None:
    data = tmp_path / "loans.csv"
    _write_loans(data)
    conf = tmp_path / "myconf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "loans.yaml").write_text(
        f"kind: csv\nuri: {data}\nid_column: loan_id\ntarget: defaulted\n"
        "split: {train: 0.8, validation: 0.1, test: 0.1}\n"
    )
    result = kfbatch(
        "run",
        "--config-dir",
        str(conf),
        "--progress",
        "plain",
        "data=loans",
        "name=loans",
        "trainer.epochs=3",
        "inference.shards=2",
        f"runtime.runs_dir={tmp_path / 'runs'}",
    )
    assert result.code == 0, result.err
    assert "publish.predictions: " in result.out
    predictions = Path(result.out.split("publish.predictions: ")[1].split()[0])
    table = ds.dataset(predictions, format="parquet").to_table()
    assert table.num_rows == 600
    assert "loan_id" in table.column_names


def test_failed_step_is_named_with_its_log(kfbatch, tmp_path: Path) -> None:
    data = tmp_path / "loans.csv"
    _write_loans(data, rows=50)
    result = kfbatch(
        "run",
        "--progress",
        "plain",
        "data=csv",
        f"data.uri={data}",
        "data.target=missing_col",
        "data.id_column=loan_id",
        f"runtime.runs_dir={tmp_path / 'runs'}",
    )
    assert result.code == 1
    assert "failed (1 failed, 7 not_run)" in result.out
    assert "step etl failed: DataError: " in result.out
    log = Path(result.out.split("log: ")[1].split()[0])
    assert "missing_col" in log.read_text()


def test_missing_input_file_fails_the_step_that_reads_it(kfbatch, tmp_path: Path) -> None:
    result = kfbatch(
        "run",
        "--progress",
        "plain",
        "data=csv",
        f"data.uri={tmp_path / 'nope.csv'}",
        "data.target=y",
        "data.id_column=id",
        f"runtime.runs_dir={tmp_path / 'runs'}",
    )
    assert result.code == 1
    assert "step etl failed: input" in result.out
    assert "does not exist; check data.uri" in result.out


def test_reused_run_id_is_refused(kfbatch, tmp_path: Path) -> None:
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    result = kfbatch("run", "--run-id", "taken", f"runtime.runs_dir={tmp_path / 'runs'}")
    assert result.code == 1
    assert "already exists; choose another --run-id" in result.err


def test_smoke_run_proves_the_whole_dag_on_a_sample(kfbatch, tmp_path: Path) -> None:
    result = kfbatch("run", "--smoke", "--progress", "plain", f"runtime.runs_dir={tmp_path}")
    assert result.code == 0, result.err
    assert "[smoke run: a sample, one epoch]" in result.out
    manifest = json.loads((tmp_path / "latest" / "manifest.json").read_text())
    assert manifest["smoke"] is True
    assert manifest["run_id"].endswith("-smoke")
    assert manifest["nodes"]["etl"]["metrics"]["rows"] == 5000
    assert manifest["nodes"]["train"]["metrics"]["epochs"] == 1
    assert manifest["nodes"]["publish"]["metrics"]["rows"] == 5000
    listed = kfbatch("runs", "list", "--runs-dir", str(tmp_path))
    assert "churn-demo (smoke)" in listed.out
