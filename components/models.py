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

__all__ = ["MLP", "TabResNet", "build_model"]

NORMS = ("none", "batch", "layer")


def _norm(kind: str, width: int) -> nn.Module:
    if kind not in NORMS:
        raise ParamError(f"model norm {kind!r} is unknown; expected one of {list(NORMS)}")
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


class MLP(nn.Module):
    """A feed-forward network of Linear-(Norm)-ReLU-(Dropout) blocks ending in raw logits.

    Args:
        input_dim: Number of input features (from the feature spec).
        hidden: Width of each hidden layer.
        dropout: Dropout probability after each hidden activation (0 disables it).
        norm: ``none``, ``batch`` or ``layer`` normalisation before each activation.
        output_dim: Number of outputs (set by the trainer from the task: 1 for binary and
            regression, the class count for multiclass).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        norm: str = "none",
        output_dim: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers.append(nn.Linear(width, int(size)))
            if norm != "none":
                layers.append(_norm(norm, int(size)))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(size)
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``[batch, output_dim]``."""
        return self.net(x)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.norm = _norm(norm, width)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.up(self.norm(x))))
        return x + self.dropout(self.down(h))


class TabResNet(nn.Module):
    """The tabular ResNet of Gorishniy et al. (2021): a residual stream of MLP blocks.

    Each block computes ``x + Dropout(Linear(Dropout(ReLU(Linear(Norm(x))))))``; a final
    norm and ReLU precede the output layer. A strong, simple baseline for tabular data.

    Args:
        input_dim: Number of input features (from the feature spec).
        width: Width of the residual stream.
        blocks: Number of residual blocks.
        expansion: Hidden width of each block as a multiple of ``width``.
        dropout: Dropout probability inside the blocks.
        norm: ``batch`` or ``layer`` normalisation.
        output_dim: Number of outputs (set by the trainer from the task).
    """

    def __init__(
        self,
        input_dim: int,
        width: int = 128,
        blocks: int = 2,
        expansion: float = 2.0,
        dropout: float = 0.1,
        norm: str = "batch",
        output_dim: int = 1,
    ) -> None:
        super().__init__()
        if norm == "none":
            raise ParamError("TabResNet norm 'none' is not supported; use 'batch' or 'layer'")
        hidden = max(1, int(width * expansion))
        self.stem = nn.Linear(input_dim, width)
        self.blocks = nn.Sequential(
            *(_ResidualBlock(width, hidden, dropout, norm) for _ in range(blocks))
        )
        self.head = nn.Sequential(_norm(norm, width), nn.ReLU(), nn.Linear(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``[batch, output_dim]``."""
        return self.head(self.blocks(self.stem(x)))


def build_model(model_cfg: dict[str, Any], input_dim: int, output_dim: int = 1) -> nn.Module:
    """Instantiate ``model_cfg`` (a plain dict with ``_target_``) for ``input_dim`` features.

    ``output_dim`` (the task's output count) is passed only when it is not 1, so models
    written for one logit need not take it.

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
        extra = {"output_dim": output_dim} if output_dim != 1 else {}
        model = hydra.utils.instantiate(model_cfg, input_dim=input_dim, **extra, _convert_="all")
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
