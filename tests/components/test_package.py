"""Package hygiene: cheap imports and the layering rules components must keep."""

from __future__ import annotations

import subprocess
import sys

import pytest

from components.errors import KfbatchError
from components.models import MLP, build_model


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
    with pytest.raises(KfbatchError, match=r"model config has no '_target_'"):
        build_model({"hidden": [8]}, 3)
    with pytest.raises(KfbatchError, match=r"cannot build model 'components.models.Nope'"):
        build_model({"_target_": "components.models.Nope"}, 3)
    with pytest.raises(KfbatchError, match=r"built a dict, not a torch.nn.Module"):
        build_model({"_target_": "builtins.dict"}, 3)
