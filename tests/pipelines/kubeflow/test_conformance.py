"""Conformance: the compiled YAML, executed by ``kfp.local``, gives what the local runner gives.

One tiny config is run twice: by ``run_local`` and by ``kfp.local``'s ``SubprocessRunner``
executing the compiled pipeline YAML (loaded back with kfp's own loader), so the very file a
cluster would receive runs every task's command: the lightweight component's executor, the
launcher, the component. Training is deterministic, so both produce the same model (same
weights digest), the same predictions row for row, and the same metrics.

What kfp.local does with the rest of the YAML: it ignores the Kubernetes platform spec
(PVCs, secrets, node selectors, tolerations, timeouts: accepted, not applied) and warns that
CPU, memory and accelerator settings have no effect; it honours retries, caching options,
container env vars, ``ParallelFor`` (with parallelism), ``dsl.Collected``, pipeline outputs
and the run id placeholder. The config below includes a checkpoint PVC, a secret and a
timeout, so the platform spec is present. A second, one-task run checks that the
``data_uri`` pipeline parameter chooses the data at run time.
"""

from __future__ import annotations

import builtins
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from kfp import local
from kfp.components import load_component_from_file

from pipelines.config.compose import compose_config
from pipelines.kubeflow.compiler import write_pipeline
from pipelines.kubeflow.launch import RUN_ID_TOKEN
from pipelines.local.records import RunResult
from pipelines.local.runner import run_local

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TINY = [
    "data.rows=2000",
    "inference.shards=2",
    "inference.threshold=0.3",  # the tiny model scores low: both labels occur at 0.3
    "trainer.epochs=3",
    "runtime.retries=0",
    "runtime.step_timeout_s=300",
    "publish.destination=null",  # no versioned copy or lookup store: kfp.local has no run
    "publish.store_url=null",  # folder to put them in; tests/components cover both
    "kubeflow.checkpoint_pvc=train-checkpoints",
    "+kubeflow.secrets={AWS_ACCESS_KEY_ID: s3-creds/access_key}",
]
#: Metrics that measure time, which no two runs share.
TIMINGS = {"seconds", "rows_per_s", "samples_per_s", "train_seconds", "checkpoint_seconds"}


@dataclass(frozen=True)
class KfpRun:
    """The outputs of a kfp.local run and where its tasks wrote their executor outputs."""

    outputs: dict[str, Any]
    run_dir: Path

    def executor_output(self, task_dir: str) -> dict[str, Any]:
        """The executor output (artifact metadata) written by the task in ``task_dir``."""
        return json.loads((self.run_dir / task_dir / "executor_output.json").read_text())

    def artifact_metadata(self, task_dir: str, output: str) -> dict[str, Any]:
        artifacts = self.executor_output(task_dir)["artifacts"][output]["artifacts"]
        return artifacts[0]["metadata"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    runs = tmp_path_factory.mktemp("local") / "runs"
    result = run_local(compose_config([*TINY, f"runtime.runs_dir={runs}"]))
    assert result.ok, [(r.node, r.error) for r in result.failed]
    return result


def _run_with_kfp_local(overrides: list[str], root: Path, **arguments: str) -> KfpRun:
    """Compile ``overrides``, load the YAML with kfp's loader and run it with kfp.local."""
    path = write_pipeline(compose_config(overrides), root / "pipeline.yaml")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / "artifacts"),
        raise_on_error=True,
        enable_caching=False,
    )
    pipeline = load_component_from_file(str(path))
    real_print = builtins.print
    try:
        with warnings.catch_warnings():
            # "settings [...] have no effect in the current local runner" and "non-Python
            # base image": both expected here (see the module docstring).
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            task = pipeline(**arguments)
    finally:
        # kfp.local swaps builtins.print per task, not thread-safely: after a ParallelFor
        # it can leave its indenting print installed for the rest of the session.
        builtins.print = real_print
    (run_dir,) = (root / "artifacts").iterdir()
    return KfpRun(dict(task.outputs), run_dir)


@pytest.fixture(scope="module")
def kfp_run(tmp_path_factory: pytest.TempPathFactory) -> KfpRun:
    return _run_with_kfp_local(TINY, tmp_path_factory.mktemp("kfp"))


def _assert_close(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same keys; numbers equal to 1e-6 (KFP metadata holds every number as a float)."""
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, (int, float)):
            assert actual[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        else:
            assert actual[key] == value, key


def _predictions(path: Path | str) -> pa.Table:
    return ds.dataset(str(path), format="parquet").to_table().sort_by("customer_id")


def test_predictions_match_row_for_row(local_run: RunResult, kfp_run: KfpRun) -> None:
    ours = _predictions(local_run.output("publish", "predictions"))
    theirs = _predictions(kfp_run.outputs["publish_predictions"].path)
    assert ours.num_rows == theirs.num_rows == 2000
    assert ours["customer_id"].to_pylist() == theirs["customer_id"].to_pylist()
    np.testing.assert_allclose(
        theirs["score"].to_numpy(), ours["score"].to_numpy(), rtol=0, atol=1e-6
    )
    assert ours["label"].to_pylist() == theirs["label"].to_pylist()
    assert set(ours["label"].to_pylist()) == {"0", "1"}
    # The same weights: the model version is the digest of model.pt.
    assert set(ours["model_version"].to_pylist()) == set(theirs["model_version"].to_pylist())
    assert set(ours["run_id"].to_pylist()) == {local_run.run_id}
    (kfp_run_id,) = set(theirs["run_id"].to_pylist())
    assert kfp_run_id and RUN_ID_TOKEN not in kfp_run_id and "{{" not in kfp_run_id


def test_evaluation_matches(local_run: RunResult, kfp_run: KfpRun) -> None:
    ours = json.loads((local_run.output("evaluate", "metrics") / "metrics.json").read_text())
    theirs = json.loads(
        (Path(kfp_run.outputs["evaluate_metrics"].path) / "metrics.json").read_text()
    )
    assert theirs.pop("confusion_matrix") == ours.pop("confusion_matrix")
    _assert_close(theirs, ours)
    # The Metrics artifact the UI shows holds the numbers the component returned.
    metadata = kfp_run.outputs["evaluate_metrics"].metadata
    _assert_close(metadata, local_run.nodes["evaluate"].metrics)


def test_every_step_reports_the_same_metrics(local_run: RunResult, kfp_run: KfpRun) -> None:
    task_dirs = {
        "datagen": "datagen",
        "etl": "etl",
        "train": "train",
        "infer-0": "for-loop-2-iteration-0/infer",
        "infer-1": "for-loop-2-iteration-1/infer",
        "publish": "publish",
    }
    for node, task_dir in task_dirs.items():
        expected = {k: v for k, v in local_run.nodes[node].metrics.items() if k not in TIMINGS}
        logged = kfp_run.artifact_metadata(task_dir, "metrics")
        _assert_close({k: v for k, v in logged.items() if k not in TIMINGS}, expected)


def test_ui_artifacts(local_run: RunResult, kfp_run: KfpRun) -> None:
    evaluate = local_run.nodes["evaluate"].metrics
    classification = kfp_run.artifact_metadata("evaluate", "classification")
    rows = [r["row"] for r in classification["confusionMatrix"]["rows"]]
    assert rows == [[evaluate["tn"], evaluate["fp"]], [evaluate["fn"], evaluate["tp"]]]
    report = kfp_run.artifact_metadata("evaluate", "report")
    assert report == {"display_name": "evaluation report"}
    assert "| roc_auc |" in (kfp_run.run_dir / "evaluate" / "report").read_text()
    quality = kfp_run.artifact_metadata("etl", "quality_report")
    assert quality == {"display_name": "data quality"}
    assert "# Data quality" in (kfp_run.run_dir / "etl" / "quality_report").read_text()
    model = kfp_run.artifact_metadata("train", "model")
    local_model = json.loads((local_run.output("train", "model") / "model.json").read_text())
    assert model["version"] == local_model["version"]
    assert model["framework"] == "pytorch"


def _write_csv(path: Path, rows: int) -> Path:
    lines = ["id,amount,plan,churned"]
    lines += [f"c{i},{i % 97 / 7:.3f},{'abc'[i % 3]},{int(i % 5 == 0)}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_data_uri_parameter_picks_the_data_at_run_time(tmp_path: Path) -> None:
    compiled_with = _write_csv(tmp_path / "compiled.csv", 50)
    given = _write_csv(tmp_path / "given.csv", 300)
    overrides = ["data=csv", "data.id_column=id", "data.target=churned", "stages=[etl]"]
    run = _run_with_kfp_local(
        [*overrides, f"data.uri={compiled_with}"], tmp_path / "kfp", data_uri=str(given)
    )
    local_run = run_local(
        compose_config([*overrides, f"data.uri={given}", f"runtime.runs_dir={tmp_path}/runs"])
    )
    assert local_run.ok, [(r.node, r.error) for r in local_run.failed]
    theirs = json.loads((Path(run.outputs["etl_dataset"].path) / "_manifest.json").read_text())
    ours = json.loads((local_run.output("etl", "dataset") / "_manifest.json").read_text())
    assert theirs["rows"] == 300
    assert theirs == ours
