"""Per-layer collapse: ``nc1``, ``nc1_quotient``, ``cdnv`` and ``ncc_accuracy`` of named modules' flattened
outputs, exact at any width.

These four need only the class means and the within-class scatter restricted to the span of the class means
(:class:`._stats.SpanStats`), so the outputs are never stored: each split is run through the model twice
(pass 1 the class sums, pass 2 the projections), in O(N C D) time and O(C D) memory per layer. Nothing is
projected at random. ``ncbench.features`` re-exports :func:`layer_collapse` and builds ``layer_outputs`` on
:func:`layer_batches`; this module imports nothing from it, so the two do not import each other.
"""

from __future__ import annotations

from contextlib import closing
from typing import Iterator

import torch
from torch import nn

from .._errors import InputError
from .._inputs import model_dtype
from ._api import GLOBAL_MEANS, _finalize
from ._stats import SpanStats, SplitStats
from ._validate import as_tensor, check_all_classes_present, check_labels

#: The per-layer metrics: those that the class means and the scatter in their span determine exactly.
LAYER_KEYS = ("nc1", "nc1_quotient", "cdnv", "ncc_accuracy")


def _check_layers(model: nn.Module, layers) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        names = ", ".join(n for n in modules if n) or "(none)"
        raise InputError(f"unknown layer(s) {unknown}; the model's modules are: {names}")
    return modules


def _device_and_format(model: nn.Module) -> tuple[torch.device, torch.memory_format | None]:
    """The model's device, and channels_last when its 2-D convolution weights are stored that way (inputs in
    the same format skip a conversion inside every convolution)."""
    device = next((t.device for t in model.parameters()), None)
    if device is None:
        device = next((t.device for t in model.buffers()), torch.device("cpu"))
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_contiguous() \
                and m.weight.is_contiguous(memory_format=torch.channels_last):
            return device, torch.channels_last
    return device, None


@torch.no_grad()
def layer_batches(model: nn.Module, x, layers: list[str], *,
                  batch_size: int = 512) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Run ``x`` through ``model`` in batches, in eval mode (restored after), and yield
    ``(start, {layer: outputs (B, D_layer) float64})`` per batch, each output flattened from dimension 1.

    The hook copies each output when it fires: a module's output tensor may be overwritten in place by the
    next module (``nn.ReLU(inplace=True)`` after a batch norm), and a kept view would then hold the later
    module's values. Outputs stay on the model's device.
    """
    modules = _check_layers(model, layers)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size}")
    x = as_tensor(x, "inputs")
    current: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(_module, _inputs, output):
            current[name] = output.detach().flatten(1).to(torch.float64, copy=True)
        return hook

    device, fmt = _device_and_format(model)
    dtype = model_dtype(model)  # numpy inputs are float64 by default: cast, as every entry point does
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    was = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device=device, dtype=dtype)
            if fmt is not None and xb.ndim == 4:
                xb = xb.contiguous(memory_format=fmt)
            model(xb)
            yield start, {name: current.pop(name) for name in layers}
    finally:
        for h in handles:
            h.remove()
        model.train(was)


def _split_stats(model, x, y, layers, batch_size, num_classes, reference=None) -> dict[str, SplitStats]:
    """Two passes of ``x`` through the model: the span statistics of every layer at once."""
    accs = {name: SpanStats(num_classes, reference=None if reference is None else reference[name],
                            name=f"outputs of layer {name!r}") for name in layers}
    for add in (SpanStats.add_means, SpanStats.add_projections):
        with closing(layer_batches(model, x, layers, batch_size=batch_size)) as batches:  # hooks off on error
            for start, outs in batches:
                for name, out in outs.items():
                    add(accs[name], out, y[start:start + out.shape[0]].to(out.device))
    return {name: acc.stats() for name, acc in accs.items()}


def _pair(split, name: str):
    try:
        x, y = split
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a pair (inputs, labels)") from None
    return as_tensor(x, f"{name} inputs"), as_tensor(y, f"{name} labels")


def layer_collapse(model: nn.Module, train, test=None, *, layers: list[str], batch_size: int = 512,
                   max_dim: int = 4096, seed: int = 0, global_mean: str = "classes") -> dict[str, dict]:
    """``nc1``, ``nc1_quotient``, ``cdnv`` and ``ncc_accuracy`` of named modules' flattened outputs, exact at
    any width (definitions: docs/metrics.md; the same numbers as :func:`collapse_metrics` on the outputs).

    Parameters
    ----------
    model : nn.Module
        Put in eval mode for the measurement (and restored after).
    train, test : (inputs, labels)
        Inputs in the model's input scale and integer labels (C = the largest train label + 1; every class
        must appear in each split). Each split is run through the model twice: class means, then projections.
    layers : list of str
        Names as in ``model.named_modules()``.
    batch_size : int
        Inputs per forward pass.
    max_dim, seed : int
        Accepted for compatibility and unused: 0.2 reduced outputs wider than ``max_dim`` by a seeded random
        projection (7 % off on a 32x16x16 batch-norm output). The four metrics are now exact at any width in
        O(C D) memory, so nothing is projected and ``projected_from`` is always None. ``max_dim`` must still
        be >= 1. (:func:`ncbench.features.layer_outputs`, which returns the outputs themselves, still projects.)
    global_mean : {"classes", "samples"}
        As in :func:`collapse_metrics`.

    Returns
    -------
    dict
        ``{layer: {"dim": D, "projected_from": None, "train": {key: float}, "test": {key: float}}}``, keys
        ``LAYER_KEYS``; lower means more collapse for every key but ``ncc_accuracy``. ``ncc_accuracy`` on the
        test split uses the train class means.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> x, y = torch.randn(40, 4), torch.arange(40) % 2
    >>> out = layer_collapse(model, (x, y), layers=["1"])
    >>> out["1"]["dim"], out["1"]["projected_from"], sorted(out["1"]["train"])
    (8, None, ['cdnv', 'nc1', 'nc1_quotient', 'ncc_accuracy'])
    """
    _check_layers(model, layers)
    if max_dim < 1:
        raise InputError(f"max_dim must be >= 1; got {max_dim}")
    if global_mean not in GLOBAL_MEANS:
        raise InputError(f"global_mean must be one of {GLOBAL_MEANS}; got {global_mean!r}")
    x_tr, y_tr = _pair(train, "train")
    if y_tr.ndim != 1 or y_tr.numel() == 0:
        raise InputError(f"train labels must be a non-empty 1-D array of class indices; got shape {tuple(y_tr.shape)}")
    if y_tr.is_floating_point() or y_tr.is_complex() or y_tr.dtype == torch.bool:
        raise InputError(f"train labels must be integers (class indices 0..C-1); got dtype {y_tr.dtype}")
    c = int(y_tr.max()) + 1
    y_tr = check_labels(y_tr, x_tr.shape[0], c, "train labels", torch.device("cpu"))
    check_all_classes_present(y_tr, c, "train")
    if c < 2:
        raise InputError("collapse needs at least 2 classes; the train labels hold 1")
    if test is not None:
        x_te, y_te = _pair(test, "test")
        y_te = check_labels(y_te, x_te.shape[0], c, "test labels", torch.device("cpu"))
        check_all_classes_present(y_te, c, "test")
    stats_tr = _split_stats(model, x_tr, y_tr, layers, batch_size, c)
    stats_te = None if test is None else _split_stats(model, x_te, y_te, layers, batch_size, c, stats_tr)
    out = {}
    for name in layers:
        res = _finalize(stats_tr[name], None if stats_te is None else stats_te[name], None, None, global_mean, None)
        entry = {"dim": stats_tr[name].means.shape[1], "projected_from": None}
        for split, metrics in res.items():
            entry[split] = {k: metrics[k] for k in LAYER_KEYS}
        out[name] = entry
    return out
