"""Everything that runs a model to get numbers out of it: batched forward passes, penultimate features and
logits, the outputs of named layers, and the memory format a model runs in.

Evaluation, the training loop and its collapse callback and the attacks all come here, so one model is one
function on one device: ``features(x)`` and ``logits`` from the same forward pass. ``ncbench.collapse``
imports nothing from here: its one model-facing part, per-layer collapse (forward hooks, two passes, exact
at any width), is re-exported below as ``layer_collapse``.

Memory format: a model with 2-D convolutions runs in channels_last (its weights and its inputs). On the
CPU this measured 1.49x faster for cnn2d training, 1.78x for feature extraction and 1.47x for PGD steps
(``benchmarks/bench_train.py``, docs/performance.md) and gives the same function up to float rounding;
records do not change meaning. 1-D models are left as they are.
"""

from __future__ import annotations

import math
from contextlib import closing

import torch
from torch import nn

from ._errors import InputError
from .collapse import LAYER_KEYS, layer_collapse  # noqa: F401  (re-exported: ncbench.features.layer_collapse)
from .collapse._layers import layer_batches


def memory_format_for(model: nn.Module) -> torch.memory_format:
    """channels_last for a model with 2-D convolutions, else contiguous."""
    cached = getattr(model, "_ncbench_memory_format", None)
    if cached is None:  # decided once per model: predict() asks for every batch
        cached = (torch.channels_last if any(isinstance(m, nn.Conv2d) for m in model.modules())
                  else torch.contiguous_format)
        model._ncbench_memory_format = cached
    return cached


def memory_format_name(model: nn.Module) -> str:
    return "channels_last" if memory_format_for(model) == torch.channels_last else "contiguous"


def prepare_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``model`` to ``device`` in its memory format (in place; returns it)."""
    fmt = memory_format_for(model)
    if fmt == torch.channels_last:
        return model.to(device=device, memory_format=fmt)
    return model.to(device)


def as_model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the model's memory format (a no-op for contiguous models and non-image inputs)."""
    if x.ndim == 4 and memory_format_for(model) == torch.channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class InModelFormat(nn.Module):
    """``model`` fed its inputs in its memory format (channels_last for 2-D convolutions): attacks (at evaluation
    and inside adversarial training) keep working on plain tensors, and the model runs as fast as in training and
    evaluation. Its mode is the wrapped model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(as_model_input(self.model, x))


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, D) and logits (N, C) of one forward pass.

    Models that compute both at once (a ``torch.export`` program) provide ``features_and_logits``; for the
    others the logits are ``fc(features(x))``, which is what ``model(x)`` computes.
    """
    x = as_model_input(model, x)
    both = getattr(model, "features_and_logits", None)
    if both is not None:
        return both(x)
    f = model.features(x)
    return f, model.fc(f)


#: points per forward pass when nothing is trained: on the CPU, 512 measured 1.7x faster than 2048 for the
#: MNIST-1D CNN's eval passes (cache-sized activations), which training repeats after every epoch
EVAL_BATCH = 512


@torch.inference_mode()
def extract(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) and logits (N, C) of inputs ``x`` in one batched pass, eval mode, on the model's device.

    The mode is restored after.
    """
    was = model.training
    model.eval()
    dev = model_device(model)
    feats, logits = [], []
    try:
        for i in range(0, x.shape[0], batch_size):
            f, z = features_and_logits(model, x[i:i + batch_size].to(dev))
            feats.append(f.float())
            logits.append(z.float())
    finally:
        model.train(was)
    return torch.cat(feats), torch.cat(logits)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """argmax of ``model(x)`` in batches, on the model's device, in the model's current mode."""
    dev = model_device(model)
    return torch.cat([model(as_model_input(model, x[i:i + batch_size].to(dev))).argmax(1)
                      for i in range(0, x.shape[0], batch_size)])


def output_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per point, the true class's logit minus the largest other logit: > 0 when correctly classified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


# ----------------------------------------------------------------------------------------- named layers
# Per-layer collapse lives in ncbench.collapse (exact at any width, two passes, nothing stored); it needs
# nothing from this module, and this module re-exports it, so the two do not import each other.

def layer_outputs(model: nn.Module, x: torch.Tensor, layers: list[str], *, batch_size: int = 512,
                  max_dim: int = 4096, seed: int = 0, projections: dict | None = None) -> dict[str, torch.Tensor]:
    """Flattened float64 outputs of named modules for inputs ``x``, in eval mode (restored after), on the CPU.

    The batches come from :func:`ncbench.collapse._layers.layer_batches` (forward hooks that copy each
    output as it fires, so an in-place activation after the module cannot overwrite it). This function
    *stores* the outputs, N x D per layer; outputs wider than ``max_dim`` are therefore reduced by a fixed
    Gaussian random projection (seeded by ``seed``, scaled by 1/sqrt(max_dim)); ``projections`` (name ->
    matrix or None) is filled on the first call and reused, so train and test go through the same
    projection. For collapse metrics use :func:`layer_collapse`, which stores nothing and projects nothing.
    """
    if max_dim < 1:
        raise InputError(f"max_dim must be >= 1; got {max_dim}")
    projections = {} if projections is None else projections
    store: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with closing(layer_batches(model, x, layers, batch_size=batch_size)) as batches:  # hooks off on error
        for _, outs in batches:
            for name, f in outs.items():
                if name not in projections:  # decided once, from the first batch
                    d = f.shape[1]
                    if d > max_dim:
                        g = torch.Generator(device="cpu").manual_seed(seed)
                        p = torch.randn(d, max_dim, generator=g, dtype=torch.float64) / math.sqrt(max_dim)
                        projections[name] = p.to(f.device)
                    else:
                        projections[name] = None
                p = projections[name]
                store[name].append((f if p is None else f @ p).cpu())
    return {name: torch.cat(parts) for name, parts in store.items()}
