"""Adapters around the model under attack: torchattacks' image batches (N, C, H, W), bf16 autocast, the one
decision rule (:class:`StableArgmax`), and the inputs every public entry point accepts (:func:`as_inputs`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._errors import InputError
from .._inputs import as_inputs, model_dtype  # noqa: F401  (the entry points' input rule, re-exported)

#: half-width of the band around a tie, relative to max(1, largest |logit| of the point), in which a point's
#: argmax is decided by its forward pass alone. fp32: batched kernels change a logit by about 1e-6 relative
#: (4e-6 at logits of 10 on the MNIST-1D CNN); bf16 logits are rounded to 8 significant bits (4e-3 relative)
#: after every layer.
DECISION_RTOL = {"fp32": 1e-4, "bf16": 2.0 ** -4}


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


class StableArgmax(nn.Module):
    """``model(x)``, except that a point whose two largest logits are within ``rtol * max(1, max |logit|)`` of
    each other gets the logits of its forward pass alone (in a batch of two copies of itself).

    Batched kernels round differently for different batch sizes and batch-mates, so an argmax within rounding
    of a tie could be decided differently in different batch compositions. Outside the band the batched argmax
    equals the alone one; inside, the alone pass decides. So ``argmax`` of these logits - every "correct" /
    "fooled" decision of an attack, its early stops and the final count - is a function of the point alone.
    The replaced rows keep their autograd graph (gradients flow through the alone pass).
    """

    def __init__(self, model: nn.Module, rtol: float) -> None:
        super().__init__()
        self.model = model
        self.rtol = float(rtol)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if z.ndim != 2 or z.shape[1] < 2 or x.shape[0] < 2:
            return z
        with torch.no_grad():
            top = z.detach().float().topk(2, dim=1).values
            scale = z.detach().float().abs().amax(1).clamp_min(1.0)
            near = ((top[:, 0] - top[:, 1]) <= self.rtol * scale).nonzero().flatten()
        if near.numel() == 0:
            return z
        # two copies, not one: a batch norm left in training mode (flagged by the eval_mode check) would refuse
        # a batch of one; in eval mode both rows are the point's own logits
        alone = torch.cat([self.model(x[i:i + 1].expand(2, *x.shape[1:]))[:1] for i in near.tolist()])
        return z.index_put((near,), alone.to(z.dtype))


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


