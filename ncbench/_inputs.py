"""The inputs every public entry point that runs a model accepts, checked once at the boundary.

Tensors or numpy arrays; floating inputs of any precision are cast to the model's dtype, integer labels of any
width to int64; anything else is refused in one line that names the entry point, the argument and its dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._errors import InputError


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter or buffer (float32 when it has none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def as_inputs(model: nn.Module, x, y, *, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as floating-point inputs in the model's dtype and ``y`` as int64 class indices, or an InputError
    that names ``who`` (the entry point), the argument and its dtype or shape.

    Accepts tensors and numpy arrays; floating inputs of any precision (cast), integer labels of any width
    (cast). Refuses integer inputs (images in 0-255 must be divided by 255 first), non-integer labels, labels
    that are not one index per input."""
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    if not x.is_floating_point():
        raise InputError(f"{who}: inputs must be floating point in [0, 1]; got dtype {x.dtype} "
                         "(scale integer images to [0, 1] first, e.g. x / 255)")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InputError(f"{who}: labels must be integer class indices; got dtype {y.dtype}")
    if y.ndim != 1 or x.ndim < 2 or y.shape[0] != x.shape[0]:
        raise InputError(f"{who}: labels must be one class index per input, shape ({x.shape[0] if x.ndim else '?'},); "
                         f"got inputs of shape {tuple(x.shape)} and labels of shape {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise InputError(f"{who}: labels must be >= 0; got {int(y.min())}")
    return x.to(model_dtype(model)), y.long()
