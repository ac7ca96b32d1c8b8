"""Composition, overrides, user config dirs, and one-line errors for bad configurations."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import MISSING

from pipelines.builder import build_dag
from pipelines.config.compose import compose_config, packaged_config_dir
from pipelines.config.schema import Config


def test_default_composition_is_the_demo() -> None:
    composed = compose_config()
    config = composed.config
    assert config.name == "churn-demo"
    assert config.data.kind == "synthetic"
    assert config.stages == ["etl", "train", "evaluate", "infer"]
    assert config.resources.steps.train.cpu == 2.0
    assert composed.choices["model"] == "mlp"
    assert config.model["_target_"] == "components.models.MLP"


def test_overrides_use_hydra_grammar() -> None:
    config = compose_config(
        ["trainer.epochs=9", "resources=gpu", "model.hidden=[32]", "+model.output_dim=1"]
    ).config
    assert config.trainer.epochs == 9
    assert config.resources.steps.train.gpu == 1
    assert config.resources.steps.train.tolerations[0].key == "nvidia.com/gpu"
    assert config.model["hidden"] == [32]
    assert config.model["output_dim"] == 1


def test_experiment_overrides_groups_and_top_level_keys() -> None:
    config = compose_config(["experiment=breast_cancer"]).config
    assert (config.name, config.data.kind, config.data.target) == (
        "breast-cancer",
        "sklearn",
        "malignant",
    )
    assert config.inference.shards == 2


def test_interpolations_resolve_from_one_place(tmp_path: Path) -> None:
    composed = compose_config([f"runtime.runs_dir={tmp_path}"])
    assert composed.config.runtime.cache_dir == f"{tmp_path}/.cache"
    assert "${runtime.runs_dir}" in composed.to_yaml()
    assert "${runtime.runs_dir}" not in composed.to_yaml(resolve=True)


def test_scoring_only_runs_take_object_store_uris() -> None:
    config = compose_config(
        [
            "stages=[infer]",
            "inference.model_uri=s3://models/churn/v3",
            "inference.data_uri=gs://lake/customers/2026-11-21/*.jsonl",
            "data.format=jsonl",
            "+data.storage_options.endpoint_override=http://minio:9000",
        ]
    ).config
    dag = build_dag(config)
    infer = dag.step("infer")
    assert infer.params["source"]["format"] == "jsonl"
    assert infer.params["storage_options"] == {"endpoint_override": "http://minio:9000"}
    assert infer.params["source"]["storage_options"] == infer.params["storage_options"]
    assert infer.params["max_reject_fraction"] == 0.0
    assert dag.step("publish").params["source"] == infer.params["source"]


def test_user_config_dir_is_searched_first(tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "default.yaml").write_text("epochs: 7\nlr: 0.01\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text(
        "kind: csv\nuri: /tmp/x.csv\nid_column: key\ntarget: label\n"
    )
    config = compose_config(["data=mine"], config_dir=tmp_path).config
    assert config.trainer.epochs == 7
    assert (config.data.uri, config.data.target) == ("/tmp/x.csv", "label")
    assert config.model["_target_"] == "components.models.MLP"  # packaged groups still there


BAD_CONFIGS = [
    # (overrides, key named in the message, fragment of the expectation)
    (["trainer.epochs=-1"], "trainer.epochs", "expected a number >= 1, got -1"),
    (["trainer.epochs=abc"], "trainer.epochs", "expected an integer, got 'abc'"),
    (["trainer.epochs=2.5"], "trainer.epochs", "expected an integer"),
    (["trainer.epoch=3"], "trainer.epoch", "did you mean 'epochs'?"),
    (["+trainer.foo=1"], "trainer.foo", "one of the keys epochs"),
    (["trainer.lr=0"], "trainer.lr", "expected a number > 0.0"),
    (["trainer.optimizer=adagrad"], "trainer.optimizer", "one of 'adam', 'adamw', 'sgd'"),
    (["data.split.train=0.9"], "data.split", "train + validation + test = 1, got 'sum 1.2'"),
    (["data.split.test=-0.1", "data.split.train=0.95"], "data.split.test", ">= 0.0"),
    (["resources.default.memory=4GB"], "resources.default.memory", "such as 512Mi or 4Gi"),
    (["resources.steps.train.cpu=0"], "resources.steps.train.cpu", "a CPU count > 0"),
    (["resources.steps.train.cpux=1"], "resources.steps.train.cpux", "did you mean 'cpu'?"),
    (["resources.steps.trian.cpu=4"], "resources.steps.trian", "did you mean 'train'?"),
    (["model.hiden=[8]"], "model.hiden", "an existing key (add a new one with +model.hiden=...)"),
    (
        ["data.split.validation=0", "data.split.train=0.85"],
        "data.split.validation",
        "stage 'train'",
    ),
    (
        ["data=csv", "data.uri=/d.csv", "data.target=y"],
        "data.id_column",
        "the column that identifies rows (predictions are keyed by it)",
    ),
    (["resources.default.gpu=-1"], "resources.default.gpu", ">= 0"),
    (["stages=[etl,trian]"], "stages", "did you mean 'train'?"),
    (["stages=[infer]"], "inference.model_uri", "when stages leave out 'train'"),
    (["stages=[infer]", "inference.model_uri=m"], "inference.data_uri", "leave out 'etl'"),
    (["inference.model_uri=m"], "inference.model_uri", "null when stages include 'train'"),
    (["inference.batch_size=fast"], "inference.batch_size", "a row count >= 1, or auto"),
    (["inference.batch_size=0"], "inference.batch_size", "a row count >= 1, or auto"),
    (["inference.optimize=[prune]"], "inference.optimize", "drawn from ['quantize', "),
    (["publish.partition_by=hour"], "publish.partition_by", "'run_date', 'run_id'"),
    (["publish.retention=0"], "publish.retention", ">= 1"),
    (["stages=[etl,etl]"], "stages", "each stage at most once"),
    (["stages=etl"], "stages", "a list such as [a,b], got 'etl'"),
    (["model=nope"], "model", "one of mlp, resnet, got 'nope'"),
    (["model._target_=MLP"], "model._target_", "import path of a model class"),
    (["model._target_=nopkg.models.MLP"], "model._target_", "path of an importable model class"),
    (["+model.hiden=[8]"], "model.hiden", "an argument of components.models.MLP: hidden, dropout"),
    (["+model.input_dim=3"], "model.input_dim", "did you mean 'output_dim'?"),
    (["data=csv"], "data.target", "is required and has no default"),
    (["data.kind=parquet"], "data.kind", "one of 'csv', 'synthetic', 'sklearn'"),
    (["data.kind=csv"], "data.uri", "the CSV file or directory"),
    (["data.id_column=churned"], "data.id_column", "a column other than data.target"),
    (
        ["data.task=regression", "data.split.stratify=true"],
        "data.split.stratify",
        "false with data.task=regression (stratification needs class labels",
    ),
    (["inference.shards=0"], "inference.shards", ">= 1"),
    (["etl.scoring_shards=0"], "etl.scoring_shards", ">= 1"),
    (["etl.scoring_shards=8"], "inference.shards", "equal to etl.scoring_shards (8) when infer"),
    (["name=My_Pipeline"], "name", "a lowercase DNS-1123 label, got 'My_Pipeline'"),
    (["schedule.cron=0 2 * *"], "schedule.cron", "5 fields (minute hour day-of-month month"),
    (["schedule.cron=0 0 13 * 5"], "schedule.cron", "day"),
    (["runtime.retries=-1"], "runtime.retries", ">= 0"),
    (["trainer.epochs"], "override", "key=value in Hydra's override grammar"),
    (
        ["kubeflow.volumes=[{claim: d, mount_path: data}]"],
        "kubeflow.volumes[0].mount_path",
        "absolute",
    ),
    (["+kubeflow.secrets.AWS_KEY=s3"], "kubeflow.secrets.AWS_KEY", "'<secret name>/<key>'"),
    (["kubeflow.image=repo/img latest"], "kubeflow.image", "with a tag or digest"),
    (
        ["resources.steps.train.tolerations=[{key: a, operator: Maybe}]"],
        "resources.steps.train.tolerations[0].operator",
        "one of 'Equal', 'Exists'",
    ),
    (["quality.checks=[{check: rnage, column: age}]"], "quality.checks", "'rnage' is unknown"),
    (['+features.derive.x="age +"'], "features", "'age +' is not an expression"),
    (["features.select=[age]"], "features.select", "keeps the id and target columns"),
    (["evaluate=gated", "stages=[etl,train,infer]"], "evaluate.gate.metric", "leave out"),
    # Right type, no meaning: refused at composition by the knobs' named checks.
    (["run_date=2026-02-30"], "run_date", "a calendar date YYYY-MM-DD that exists"),
    (["run_date=2026-13-01"], "run_date", "a calendar date YYYY-MM-DD that exists"),
    (["schedule.timezone=Mars/Olympus"], "schedule.timezone", "an IANA time zone"),
    (["schedule.timezone=''"], "schedule.timezone", "an IANA time zone"),
    (["publish.store_url=nonsense"], "publish.store_url", "a SQLAlchemy URL"),
    (["publish.store_url=nosuchdb://h/db"], "publish.store_url", "of an installed dialect"),
    (["publish.destination=ftp://host/p"], "publish.destination", "a path or a file://, s3://"),
    (["publish.destination=s3://"], "publish.destination", "a path or a file://, s3://"),
    (["publish.destination=' '"], "publish.destination", "a non-empty name"),
    (
        ["stages=[infer]", "inference.model_uri=m", "inference.data_uri=htp://x/y.csv"],
        "inference.data_uri",
        "a place data can be read or written",
    ),
    (["data=csv", "data.uri=''", "data.target=y"], "data.uri", "a non-empty name"),
    (["data.target=''"], "data.target", "a non-empty name"),
    (["data.id_column=' id'"], "data.id_column", "without surrounding spaces"),
    (["cv.group_column=''"], "cv.group_column", "a non-empty name"),
    (["trainer.checkpoint.dir=''"], "trainer.checkpoint.dir", "a non-empty name"),
    (["kubeflow.host=kubeflow.example.com"], "kubeflow.host", "an http:// or https:// URL"),
    (["kubeflow.host=http://h:port/pipeline"], "kubeflow.host", "whose port is a number"),
    (["kubeflow.pipeline_root=/tmp/root"], "kubeflow.pipeline_root", "a gs://, s3:// or minio://"),
    (["kubeflow.token_env=KFP-TOKEN"], "kubeflow.token_env", "an environment variable"),
    (["kubeflow.experiment=''"], "kubeflow.experiment", "a non-empty name"),
    (["kubeflow.service_account=My_SA"], "kubeflow.service_account", "ServiceAccount name"),
    (["kubeflow.training_runtime=''"], "kubeflow.training_runtime", "ClusterTrainingRuntime"),
    (
        ["kubeflow.volumes=[{claim: Data_PVC, mount_path: /data}]"],
        "kubeflow.volumes[0].claim",
        "a PVC name",
    ),
    (["resources.default.memory=0Gi"], "resources.default.memory", "above zero"),
    (["manifests.data_size=0"], "manifests.data_size", "above zero"),
    (["resources.steps.train.accelerator=''"], "resources.steps.train.accelerator", "non-empty"),
    (["data.csv.quote_char=','"], "data.csv.quote_char", "other than data.csv.delimiter"),
    (["data.csv.column_names=[a,b,a]"], "data.csv.column_names", "each name once"),
    (["data.csv.column_names=[]"], "data.csv.column_names", "non-empty names"),
    (["data.classes=[no,yes,maybe]"], "data.classes", "exactly 2 labels for data.task=binary"),
    (["data.classes=[yes,yes]"], "data.classes", "distinct non-empty labels"),
    (
        ["data.task=regression", "data.classes=[a,b]"],
        "data.classes",
        "null with data.task=regression",
    ),
    (["data.csv.encoding=latin-9x"], "data.csv.encoding", "a Python codec name"),
    (["data.csv.decimal_point=x"], "data.csv.decimal_point", "one of '.', ','"),
]


def test_meaningful_values_pass_the_named_checks() -> None:
    config = compose_config(
        [
            "run_date=2024-02-29",
            "schedule.timezone=Europe/Berlin",
            "publish.store_url=postgresql+psycopg://kfbatch@db.internal:5432/predictions",
            "publish.destination=s3://lake/predictions",
            "kubeflow.host=https://kubeflow.example.com:8443/pipeline",
            "kubeflow.pipeline_root=minio://mlpipeline/v2/artifacts",
            "kubeflow.service_account=pipeline-runner.v2",
            "resources.default.memory=0.5Gi",
            "data.csv.quote_char=null",
        ]
    ).config
    assert config.schedule.timezone == "Europe/Berlin"
    assert config.run_date == "2024-02-29"


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"), BAD_CONFIGS, ids=[" ".join(c[0]) for c in BAD_CONFIGS]
)
def test_bad_config_fails_with_one_line(kfbatch, overrides, key, fragment) -> None:
    result = kfbatch("dag", *overrides)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"kfbatch: config error: {key}: expected ")
    assert fragment in lines[0]
    if overrides[0] != "trainer.epochs":  # parse errors have no key to trace back
        assert "(from " in lines[0]


def test_bad_group_file_is_named_in_the_error(kfbatch, tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    bad = tmp_path / "trainer" / "fast.yaml"
    bad.write_text("epochs: 1\nlrr: 0.1\n")
    result = kfbatch("config", "--config-dir", str(tmp_path), "trainer=fast")
    assert result.code == 2
    assert "trainer.lrr: expected one of the keys" in result.err
    assert "did you mean 'lr'?" in result.err
    assert f"(from {bad})" in result.err


def test_missing_config_dir_is_a_config_error(kfbatch, tmp_path: Path) -> None:
    result = kfbatch("dag", "--config-dir", str(tmp_path / "nope"))
    assert result.code == 2
    assert "--config-dir: expected an existing directory" in result.err


def test_config_error_exits_2_without_traceback_unless_debug() -> None:
    command = [sys.executable, "-m", "pipelines.cli", "run", "trainer.epochs=-3"]
    plain = subprocess.run(command, capture_output=True, text=True, check=False)
    assert plain.returncode == 2
    assert plain.stderr.strip() == (
        "kfbatch: config error: trainer.epochs: expected a number >= 1, got -3 "
        "(from override 'trainer.epochs=-3')"
    )
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, check=False)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr


def test_bad_step_name_in_a_resources_file_is_caught(kfbatch, tmp_path: Path) -> None:
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "big.yaml").write_text("steps:\n  trian:\n    cpu: 4\n")
    result = kfbatch("dag", "--config-dir", str(tmp_path), "resources=big")
    assert result.code == 2
    assert "resources.steps.trian: expected one of the keys datagen, etl, batch_map" in result.err


#: Options that leave keys for the user to fill in, with the values this test fills in.
REQUIRED_VALUES = {"data=csv": ["data.uri=/d.csv", "data.target=y", "data.id_column=id"]}


def _group_options() -> list[str]:
    root = packaged_config_dir()
    return sorted(
        f"{group.name}={option.stem}"
        for group in root.iterdir()
        if group.is_dir() and not group.name.startswith("_")
        for option in group.glob("*.yaml")
    )


@pytest.mark.parametrize("option", _group_options())
def test_every_packaged_option_composes_and_binds_its_model(option: str) -> None:
    """Compose each group option and bind the model's arguments to its class, unbuilt."""
    required = REQUIRED_VALUES.get(option, [])
    config = compose_config([option, *required]).config
    build_dag(config)
    model = dict(config.model)
    target = model.pop("_target_")
    module, _, name = target.rpartition(".")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    signature.bind(input_dim=4, **model)


#: Options that hold the defaults a run gets when nothing else is chosen.
_DEFAULT_OPTIONS = ("*/default.yaml", "features/auto.yaml", "runtime/local.yaml")


def _defaults_contradicted(node: object, values: dict, path: str) -> list[str]:
    """Keys whose value in a default option differs from a schema default that is set."""
    found = []
    for key, value in values.items():
        default = getattr(node, key)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            found += _defaults_contradicted(default, value, f"{path}{key}.")
        elif default not in (None, MISSING, {}, []) and default != value:
            found.append(f"{path}{key}: schema {default!r}, option {value!r}")
    return found


def test_default_options_never_contradict_the_schema_defaults() -> None:
    """The schema is the one place defaults live: a default option may fill what the schema
    leaves unset (and document every knob), never state another value for a knob."""
    root = packaged_config_dir()
    groups = {f.name: f for f in dataclasses.fields(Config)}
    contradicted = []
    for pattern in _DEFAULT_OPTIONS:
        for file in sorted(root.glob(pattern)):
            group = groups[file.parent.name]
            node = group.default_factory() if callable(group.default_factory) else group.default
            if dataclasses.is_dataclass(node):
                values = yaml.safe_load(file.read_text()) or {}
                contradicted += _defaults_contradicted(node, values, f"{file.parent.name}.")
    assert contradicted == []
