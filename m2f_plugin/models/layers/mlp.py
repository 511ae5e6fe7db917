"""Plain multi-layer perceptron (the mask embedding)."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ['MLP']


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    Args:
        in_dims: Input channels.
        hidden_dims: Hidden channels.
        out_dims: Output channels.
        num_layers: Number of linear layers.
    """

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int,
                 num_layers: int = 3) -> None:
        super().__init__()
        dims = [in_dims] + [hidden_dims] * (num_layers - 1) + [out_dims]
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in_dims) -> (..., out_dims)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu()
        return x
