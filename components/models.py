"""Model architectures, built from ``_target_`` configs with Hydra's ``instantiate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hydra.utils
import torch
from hydra.errors import InstantiationException
from torch import nn

from components.errors import KfbatchError

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
    """Instantiate ``model_cfg`` (a plain dict with ``_target_``) for ``input_dim`` features."""
    if "_target_" not in model_cfg:
        raise KfbatchError(
            f"model config has no '_target_' (keys: {sorted(model_cfg)}); set it to an import "
            "path such as 'components.models.MLP'"
        )
    try:
        model = hydra.utils.instantiate(model_cfg, input_dim=input_dim, _convert_="all")
    except InstantiationException as e:
        message = " ".join(str(e).split())
        raise KfbatchError(f"cannot build model {model_cfg['_target_']!r}: {message}") from e
    if not isinstance(model, nn.Module):
        raise KfbatchError(
            f"model _target_ {model_cfg['_target_']!r} built a {type(model).__name__}, "
            "not a torch.nn.Module; point it at a module class"
        )
    return model
