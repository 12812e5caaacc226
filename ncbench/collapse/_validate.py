"""Input checks for the collapse metrics, done once at the public boundary (spec/nc-metrics.md, 'Bad input')."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._errors import InputError

Array = Any  # numpy array or torch tensor


def as_tensor(x: Array, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}") from err


def check_features(h: Array, name: str, device: torch.device | None = None, *, to_float64: bool = True) -> torch.Tensor:
    """Return ``h`` as a float64 (N, D) tensor; refuse non-2-D, empty and non-finite input.

    ``to_float64=False`` keeps a floating dtype as given (the caller converts block by block, which avoids
    materialising a float64 copy of a large feature matrix).
    """
    t = as_tensor(h, name)
    if t.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (N samples, D features); got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"{name} must hold real numbers; got dtype {t.dtype}")
    dtype = t.dtype if (t.is_floating_point() and not to_float64) else torch.float64
    t = t.to(device=device if device is not None else t.device, dtype=dtype)
    if to_float64:
        check_finite(t, name)
    # else the caller checks: oneshot_stats sees any NaN or inf in its float64 class sums, for free
    return t


def check_finite(t: torch.Tensor, name: str, sums: torch.Tensor | None = None) -> None:
    """Refuse NaN or infinite values, counting the samples that hold them.

    ``sums``: float64 sums over the rows of ``t`` (e.g. class sums) already at hand; NaN and inf always reach
    them, so the per-sample count is only taken when they are not finite.
    """
    if sums is None:
        sums = t.sum(dim=0, dtype=torch.float64)
    if bool(torch.isfinite(sums).all()):
        return
    n_bad = int((~torch.isfinite(t)).any(dim=1).sum())  # (a finite overflow of the sums lands here and passes)
    if n_bad:
        raise InputError(
            f"{name} contain NaN or infinite values in {n_bad} of {t.shape[0]} samples "
            "(check the model's forward pass or the input scaling)"
        )


def check_labels(y: Array, n: int, num_classes: int, name: str, device: torch.device) -> torch.Tensor:
    """Return ``y`` as an int64 (N,) tensor with values in 0..C-1."""
    t = as_tensor(y, name)
    if t.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of class indices; got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise InputError(f"{name} has {t.shape[0]} entries but the features have {n} samples")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"{name} must be integers (class indices 0..C-1); got dtype {t.dtype}")
    t = t.to(device=device, dtype=torch.int64)
    outside = (t < 0) | (t >= num_classes)
    n_out = int(outside.sum())
    if n_out:
        bad = torch.unique(t[outside])[:5].tolist()
        raise InputError(
            f"{name}: {n_out} of {n} samples have a label outside 0..{num_classes - 1} (e.g. {bad}); "
            f"the classifier has {num_classes} classes"
        )
    return t


def check_all_classes_present(y: torch.Tensor, num_classes: int, split: str) -> torch.Tensor:
    """Return the per-class counts; refuse a split in which a class has no sample."""
    counts = torch.bincount(y, minlength=num_classes)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        shown = missing[:10]
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(
            f"{len(missing)} class(es) have no sample in the {split} split: {shown}{more}; "
            "class means (and every collapse metric) need at least one sample of each class"
        )
    return counts


def check_classifier(weight: Array | None, bias: Array | None, dim: int, device: torch.device):
    """Return (W, b) as float64 tensors of shapes (C, D) and (C,), or Nones; b defaults to zeros."""
    if weight is None:
        if bias is not None:
            raise InputError("bias was given without weight; pass the final layer's weight too")
        return None, None
    w = check_features(weight, "weight", device)
    if w.shape[1] != dim:
        raise InputError(
            f"weight has shape {tuple(w.shape)} but the features have D = {dim}; "
            f"expected (C, {dim}) (the final nn.Linear's weight)"
        )
    if bias is None:
        b = torch.zeros(w.shape[0], dtype=torch.float64, device=device)
    else:
        b = as_tensor(bias, "bias").to(device=device, dtype=torch.float64)
        if b.shape != (w.shape[0],):
            raise InputError(f"bias has shape {tuple(b.shape)}; expected ({w.shape[0]},) to match weight")
        if not torch.isfinite(b).all():
            raise InputError("bias contains NaN or infinite values")
    return w, b
