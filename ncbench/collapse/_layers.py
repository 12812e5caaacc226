"""Per-layer collapse: nc1, nc1_quotient, cdnv and ncc_accuracy on the flattened output of named modules."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._errors import InputError
from ._api import collapse_metrics

LAYER_KEYS = ("nc1", "nc1_quotient", "cdnv", "ncc_accuracy")


@torch.no_grad()
def _layer_features(model: nn.Module, x: torch.Tensor, layers: list[str], batch_size: int,
                    projections: dict[str, torch.Tensor | None], max_dim: int, seed: int):
    modules = dict(model.named_modules())
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    current: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            current[name] = output.detach().flatten(1)
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    device = next(model.parameters()).device
    try:
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size].to(device))
            for name in layers:
                f = current.pop(name).to(torch.float64)
                if name not in projections:  # decide once, from the first batch, seeded per layer
                    d = f.shape[1]
                    if d > max_dim:
                        g = torch.Generator(device="cpu").manual_seed(seed)
                        p = torch.randn(d, max_dim, generator=g, dtype=torch.float64) / math.sqrt(max_dim)
                        projections[name] = p.to(f.device)
                    else:
                        projections[name] = None
                p = projections[name]
                store[name].append((f if p is None else f @ p).cpu())
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(parts) for name, parts in store.items()}


def layer_collapse(model: nn.Module, train, test=None, *, layers: list[str], batch_size: int = 512,
                   max_dim: int = 4096, seed: int = 0, global_mean: str = "classes") -> dict[str, dict]:
    """``nc1``, ``nc1_quotient``, ``cdnv`` and ``ncc_accuracy`` of named modules' flattened outputs.

    Parameters
    ----------
    model : nn.Module
        Put in eval mode for the measurement (and restored after).
    train, test : (inputs, labels)
        Inputs in the model's input scale and integer labels.
    layers : list of str
        Names as in ``model.named_modules()``.
    max_dim : int
        Outputs wider than this are reduced by a fixed Gaussian random projection (seeded by ``seed``, scaled
        by 1/sqrt(max_dim)) to ``max_dim`` dimensions; the result says so under ``projected_from``.

    Returns
    -------
    dict
        ``{layer: {"dim": int, "projected_from": int | None, "train": {...}, "test": {...}}}``.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        names = ", ".join(n for n in modules if n) or "(none)"
        raise InputError(f"unknown layer(s) {unknown}; the model's modules are: {names}")
    if max_dim < 1:
        raise InputError(f"max_dim must be >= 1; got {max_dim}")
    was_training = model.training
    model.eval()
    projections: dict[str, torch.Tensor | None] = {}
    try:
        feats_tr = _layer_features(model, torch.as_tensor(train[0]), layers, batch_size, projections, max_dim, seed)
        feats_te = None
        if test is not None:
            feats_te = _layer_features(model, torch.as_tensor(test[0]), layers, batch_size, projections, max_dim, seed)
    finally:
        model.train(was_training)
    out = {}
    for name in layers:
        h = feats_tr[name]
        p = projections[name]
        res = collapse_metrics((h, train[1]), None if test is None else (feats_te[name], test[1]),
                               global_mean=global_mean, ls_gap=False)
        entry = {"dim": h.shape[1], "projected_from": None if p is None else p.shape[0]}
        for split, metrics in res.items():
            entry[split] = {k: metrics[k] for k in LAYER_KEYS}
        out[name] = entry
    return out
