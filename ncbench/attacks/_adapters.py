"""Adapters between ncbench models and torchattacks, which assumes image batches (N, C, H, W)."""

from __future__ import annotations

import math

import torch
from torch import nn


def image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) for an input of shape ``shape`` (without batch). (C, L) becomes (C, H, W) with H*W = L and
    H <= W as close as possible (Square's square windows then cover positions that are not contiguous in the
    signal: a valid but weaker locality prior); (D,) becomes (1, H, W) likewise."""
    if len(shape) == 3:
        return tuple(shape)
    c, length = (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))
    h = max(d for d in range(1, int(math.isqrt(length)) + 1) if length % d == 0)
    return c, h, length // h


class As4D(nn.Module):
    """Takes (N, C, H, W) and calls ``model`` on (N, *shape); logits unchanged."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], *self.shape))


class Autocast(nn.Module):
    """Runs ``model`` under bf16 autocast and returns float32 logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


def perturbation_size(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per point, the size of perturbations ``d`` (N, ...) in the threat model's norm (Linf or L2)."""
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)


def to_4d(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], *image_shape(tuple(x.shape[1:])))
