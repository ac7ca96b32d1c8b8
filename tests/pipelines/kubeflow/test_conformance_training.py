"""Conformance of CV, tuning and the evaluation gate: kfp.local runs the compiled YAML.

The compiled pipeline (``ParallelFor`` over fold and trial dicts, the select step, the
final training that reads ``best.json``, and ``dsl.If`` on the gate's result) runs under
``kfp.local``; the local runner runs the same config. Training is deterministic, so both pick
the same trial and train the same final weights. The gate is set so that it closes: on KFP
the gate task succeeds with ``false`` and the inference tasks are skipped; locally the gate
step fails and nothing after it runs.
"""

from __future__ import annotations

import builtins
import json
import warnings
from pathlib import Path

import pytest
from kfp import local
from kfp.components import load_component_from_file

from pipelines.config.compose import compose_config
from pipelines.kubeflow.compiler import write_pipeline
from pipelines.local.runner import run_local

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CONFIG = [
    "data.rows=1500",
    "inference.shards=2",
    "trainer.epochs=1",
    "runtime.retries=0",
    "cv.enabled=true",
    "cv.folds=2",
    "tune.enabled=true",
    "tune.n_trials=2",
    "evaluate.gate.metric=roc_auc",
    "evaluate.gate.min=0.999",
]


def test_cv_tuning_and_a_closed_gate_match_the_local_runner(tmp_path: Path) -> None:
    path = write_pipeline(compose_config(CONFIG), tmp_path / "pipeline.yaml")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "artifacts"),
        raise_on_error=True,
        enable_caching=False,
    )
    real_print = builtins.print
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            task = load_component_from_file(str(path))()
    finally:
        builtins.print = real_print
    (run_dir,) = (tmp_path / "artifacts").iterdir()
    gate = json.loads((run_dir / "gate" / "executor_output.json").read_text())
    assert gate["parameterValues"] == {"Output": False}
    assert not list(run_dir.rglob("infer")) and not (run_dir / "publish").exists()
    assert sorted(p.parent.name for p in run_dir.glob("for-loop-*/*/executor_output.json")) == [
        "cv-train",
        "cv-train",
        "tune-trial",
        "tune-trial",
    ]
    # gated outputs are not returned; the ones nothing reads are
    assert set(task.outputs) == {"cv_aggregate_report", "etl_rejects", "etl_quality"}

    ours = run_local(compose_config([*CONFIG, f"runtime.runs_dir={tmp_path / 'runs'}"]))
    assert ours.nodes["gate"].status == "failed" and ours.nodes["publish"].status == "not_run"
    best = json.loads((run_dir / "tune-select" / "best" / "best.json").read_text())
    assert best == json.loads((ours.output("tune_select", "best") / "best.json").read_text())
    theirs_model = json.loads((run_dir / "train" / "model" / "model.json").read_text())
    ours_model = json.loads((ours.output("train", "model") / "model.json").read_text())
    assert theirs_model["version"] == ours_model["version"]
    assert theirs_model["tuned"]["trial"] == best["trial"]
    cv = json.loads((run_dir / "cv-aggregate" / "report" / "cv.json").read_text())
    assert cv == json.loads((ours.output("cv_aggregate", "report") / "cv.json").read_text())
