"""Model architectures, built from ``_target_`` configs with Hydra's ``instantiate``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import hydra.utils
import torch
from hydra.errors import InstantiationException
from torch import nn

from components.errors import ParamError

__all__ = ["MLP", "build_model"]


class MLP(nn.Module):
    """A feed-forward network of Linear-ReLU(-Dropout) blocks ending in raw logits.

    Args:
        input_dim: Number of input features (from the feature spec).
        hidden: Width of each hidden layer.
        dropout: Dropout probability after each hidden activation (0 disables it).
        output_dim: Number of logits; 1 for binary classification.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        output_dim: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(size)
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``[batch, output_dim]``."""
        return self.net(x)


def build_model(model_cfg: dict[str, Any], input_dim: int) -> nn.Module:
    """Instantiate ``model_cfg`` (a plain dict with ``_target_``) for ``input_dim`` features.

    Raises:
        ParamError: ``_target_`` is missing, cannot be imported or instantiated with these
            arguments (an unknown argument is named with the ones the target accepts), or
            does not build a ``torch.nn.Module``.
    """
    if "_target_" not in model_cfg:
        raise ParamError(
            f"model config has no '_target_' (keys: {sorted(model_cfg)}); set it to an import "
            "path such as 'components.models.MLP'"
        )
    target = model_cfg["_target_"]
    try:
        model = hydra.utils.instantiate(model_cfg, input_dim=input_dim, _convert_="all")
    except InstantiationException as e:
        raise ParamError(f"cannot build model {target!r}: {_explain(model_cfg, e)}") from e
    if not isinstance(model, nn.Module):
        raise ParamError(
            f"model _target_ {target!r} built a {type(model).__name__}, "
            "not a torch.nn.Module; point it at a module class"
        )
    return model


def _explain(model_cfg: dict[str, Any], error: InstantiationException) -> str:
    """One line on why instantiation failed, listing accepted arguments for unknown ones."""
    cause = error.__cause__
    if isinstance(cause, ImportError):
        return " ".join(str(cause).split())
    if isinstance(cause, TypeError):
        accepted = _keyword_arguments(hydra.utils.get_object(model_cfg["_target_"]))
        if accepted is not None:
            if "input_dim" not in accepted:
                return (
                    "it takes no 'input_dim' argument, which kfbatch sets to the number of "
                    "features; point _target_ at a model that takes it"
                )
            given = [k for k in model_cfg if not k.startswith("_")]
            unknown = [k for k in given if k not in accepted]
            if unknown:
                settable = [a for a in accepted if a != "input_dim"]
                return (
                    f"unknown argument{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(map(repr, unknown))}; it accepts {settable} "
                    "(input_dim is set from the feature spec)"
                )
    return " ".join(str(error).split())


def _keyword_arguments(target: Any) -> list[str] | None:
    """Names ``target`` accepts as keywords, in order; None when it takes any keyword."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature (e.g. some builtins)
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in keyword_kinds]
