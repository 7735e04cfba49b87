"""Small building blocks: MLP with optional residual (skip) connections."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "silu": nn.SiLU, "gelu": nn.GELU,
               "tanh": nn.Tanh}


class ResidualBlock(nn.Module):
    """``x + f(x)`` with ``f = Linear -> act -> Linear`` (pre-activation, width preserved)."""

    def __init__(self, width: int, activation: str = "silu") -> None:
        super().__init__()
        self.f = nn.Sequential(ACTIVATIONS[activation](), nn.Linear(width, width), ACTIVATIONS[activation](),
                               nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class MLP(nn.Module):
    """``n_in -> width x depth -> n_out``; ``skip=True`` uses residual blocks (depth counts hidden layers)."""

    def __init__(self, n_in: int, n_out: int, width: int = 128, depth: int = 3, activation: str = "silu",
                 skip: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.skip = skip
        layers: list[nn.Module] = [nn.Linear(n_in, width)]
        if skip:
            layers += [ResidualBlock(width, activation) for _ in range(max(depth // 2, 1))]
            layers += [ACTIVATIONS[activation]()]
        else:
            for _ in range(depth - 1):
                layers += [ACTIVATIONS[activation](), nn.Linear(width, width)]
            layers += [ACTIVATIONS[activation]()]
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
