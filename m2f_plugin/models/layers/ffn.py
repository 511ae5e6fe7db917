"""Transformer feed-forward block with residual (post-norm is the caller's)."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ['FFN']


class FFN(nn.Module):
    """``x + fc2(dropout(relu(fc1(x))))``.

    Args:
        embed_dims: Input/output channels C.
        hidden_dims: Hidden channels.
        dropout: Dropout after the activation and after ``fc2``.
    """

    def __init__(self, embed_dims: int = 256, hidden_dims: int = 1024,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        return x + self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))
