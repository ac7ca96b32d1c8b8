"""Package hygiene: cheap imports and the layering rules components must keep."""

from __future__ import annotations

import subprocess
import sys

import pytest

from components.errors import ParamError, PermanentError
from components.models import MLP, build_model

MLP_ARGS = (
    "it accepts ['hidden', 'dropout', 'norm', 'output_dim'] (input_dim is set from the feature "
    "spec)"
)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("components", ["torch", "pyarrow", "pandas", "sklearn"]),
        ("components.datagen", ["torch", "pipelines", "omegaconf"]),
        ("components.etl", ["torch", "pipelines", "omegaconf"]),
        ("components.publish", ["torch", "pipelines"]),
    ],
)
def test_imports_stay_light(module: str, forbidden: list[str]) -> None:
    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_build_model_from_a_plain_target_dict() -> None:
    model = build_model({"_target_": "components.models.MLP", "hidden": [8], "dropout": 0.5}, 3)
    assert isinstance(model, MLP)
    assert [m.__class__.__name__ for m in model.net] == ["Linear", "ReLU", "Dropout", "Linear"]


@pytest.mark.parametrize(
    ("model_cfg", "message"),
    [
        (
            {"hidden": [8]},
            "model config has no '_target_' (keys: ['hidden']); set it to an import path such "
            "as 'components.models.MLP'",
        ),
        (
            {"_target_": "components.models.MLP", "hiden": [4]},
            f"cannot build model 'components.models.MLP': unknown argument 'hiden'; {MLP_ARGS}",
        ),
        (
            {"_target_": "components.models.MLP", "hiden": [4], "drop": 0.1, "dropout": 0.1},
            "cannot build model 'components.models.MLP': unknown arguments 'hiden', 'drop'; "
            + MLP_ARGS,
        ),
        (
            {"_target_": "torch.nn.Linear", "out_features": 1},
            "cannot build model 'torch.nn.Linear': it takes no 'input_dim' argument, which "
            "kfbatch sets to the number of features; point _target_ at a model that takes it",
        ),
        (
            {"_target_": "builtins.dict"},
            "model _target_ 'builtins.dict' built a dict, not a torch.nn.Module; point it at a "
            "module class",
        ),
    ],
)
def test_bad_model_configs_are_one_line_param_errors(
    model_cfg: dict[str, object], message: str
) -> None:
    with pytest.raises(ParamError) as error:
        build_model(model_cfg, 3)
    assert str(error.value) == message
    assert isinstance(error.value, PermanentError)


@pytest.mark.parametrize(
    ("model_cfg", "message"),
    [
        (
            {"_target_": "components.models.Nope"},
            r"^cannot build model 'components.models.Nope': Error loading "
            r"'components.models.Nope': .*importable",
        ),
        (
            {"_target_": "components.models.MLP", "hidden": ["x"]},
            r"^cannot build model 'components.models.MLP': .*invalid literal for int\(\)",
        ),
    ],
)
def test_unbuildable_models_are_param_errors(model_cfg: dict[str, object], message: str) -> None:
    with pytest.raises(ParamError, match=message) as error:
        build_model(model_cfg, 3)
    assert "\n" not in str(error.value)
