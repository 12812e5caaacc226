"""The network as a chain of layers with batch norm folded in: what the generalization measures act on.

A :class:`~ncbench.models.Classifier` computes ``fc(body(normalize(x)))``. The measures see the eval-mode
function of ``body`` and ``fc`` on *normalised* inputs:

- ``normalize`` (a fixed per-channel affine map with no trained parameters) is treated as data preprocessing:
  inputs are normalised once and the measures never perturb, square or count it. Folding it into the first
  layer would not be exact for a zero-padded convolution (the padded zeros of the normalised input are the
  value ``mean`` of the raw input, not 0), and it carries no trained weights.
- every ``BatchNorm1d``/``BatchNorm2d`` is folded, with its running statistics (eval mode), into the
  ``Linear``/``Conv1d``/``Conv2d`` right before it: ``W' = s W`` and ``b' = s (b - mu) + beta`` per output
  channel, ``s = gamma / sqrt(var + eps)``.
- dropout (and ``nn.Identity``) is the identity in eval mode and is dropped.

Anything else the chain cannot represent exactly (residual or dense blocks, a batch norm that does not follow a
weight layer, other activations, non-zero padding modes, ``torch.export`` programs) makes :func:`fold_network`
raise :class:`Unsupported` with the module's name and the reason; the measures that need the chain are then
None and say why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
#: identity in eval mode: dropped from the chain
EVAL_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
#: parameter-free and positively homogeneous on non-negative inputs (what the path norm needs): kept as they are
PASSTHROUGH = (nn.ReLU, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
               nn.AdaptiveAvgPool2d)


class Unsupported(Exception):
    """The model cannot be written as a chain of foldable layers; the message names the module and why."""


@dataclass
class WeightLayer:
    """One ``Linear``/``Conv`` of the folded chain.

    ``sources``: the original modules folded into it (e.g. ``["body.0", "body.1"]``); ``index``: its position in
    :attr:`FoldedNetwork.net`; ``input_shape``: the shape (without batch) of its input.
    """

    index: int
    kind: str
    sources: list[str]
    input_shape: tuple[int, ...] = ()


@dataclass
class FoldedNetwork:
    """``net``: an ``nn.Sequential`` (no batch norm, no dropout, every weight layer with a bias) computing the
    model's eval-mode logits from normalised inputs; ``layers``: its weight layers in order;
    ``input_shape``: the model's input shape (without batch)."""

    net: nn.Sequential
    layers: list[WeightLayer] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    #: floats of input and activations per input point (sizes the vectorised passes)
    act_per_point: int = 0

    def params(self, dtype=None) -> dict[str, torch.Tensor]:
        """The chain's parameters by name (detached copies), e.g. ``{"0.weight": ..., "0.bias": ...}``."""
        return {k: v.detach().to(dtype or v.dtype).clone() for k, v in self.net.named_parameters()}

    def weight_names(self) -> list[str]:
        """Names of the weight matrices and kernels (biases excluded), in layer order."""
        return [f"{layer.index}.weight" for layer in self.layers]


def _chain(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Leaf modules of nested ``nn.Sequential`` containers, in order, with their names in the model."""
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += _chain(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix, module)]


def _value(module: nn.Module, name: str, attr: str, state: dict | None) -> torch.Tensor | None:
    t = getattr(module, attr)
    if t is None:
        return None
    if state is None:
        return t.detach()
    key = f"{name}.{attr}"
    if key not in state:
        raise KeyError(key)
    return torch.as_tensor(state[key]).detach()


def _new_weight_layer(m: nn.Module) -> nn.Module:
    """An uninitialised float64 copy of ``m``'s layer type with a bias (``skip_init``: no draw from the global RNG)."""
    from torch.nn.utils import skip_init

    if isinstance(m, nn.Linear):
        return skip_init(nn.Linear, m.in_features, m.out_features, bias=True, dtype=torch.float64)
    cls = nn.Conv1d if isinstance(m, nn.Conv1d) else nn.Conv2d
    return skip_init(cls, m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                     dilation=m.dilation, groups=m.groups, bias=True, dtype=torch.float64)


def fold_network(model: nn.Module, state: dict | None = None, *,
                 input_shape: tuple[int, ...] | None = None) -> FoldedNetwork:
    """The eval-mode chain ``body -> fc`` of ``model`` with batch norm folded into the preceding layer.

    Parameters
    ----------
    model : Classifier
        Read only: neither its weights nor its mode change.
    state : dict, optional
        A state dict of ``model`` (e.g. its weights at initialisation) to fold instead of the model's current
        weights and running statistics.
    input_shape : tuple of int, optional
        The model's input shape without the batch (default ``model.spec.input_shape``): each weight layer's
        input shape is recorded from one forward pass (the spectral norms of convolutions need it).

    Returns
    -------
    FoldedNetwork
        Float64 weights; inputs are normalised inputs (``model.normalize(x)``).

    Raises
    ------
    Unsupported
        When the model is not a chain of the layers this module can fold exactly (message: which module, why).
    KeyError
        When ``state`` lacks a tensor the chain needs (the key).
    """
    body, fc = getattr(model, "body", None), getattr(model, "fc", None)
    if not isinstance(body, nn.Module) or not isinstance(fc, nn.Linear) or not hasattr(model, "normalize"):
        raise Unsupported(f"{type(model).__name__} is not an ncbench Classifier (normalize -> body -> fc); the "
                          "measures need the layer chain")
    leaves = _chain(body, "body") + [("fc", fc)]
    modules: list[nn.Module] = []
    layers: list[WeightLayer] = []
    pending = None  # the last weight layer, still foldable: (name, module, W float64, b float64)

    def flush():
        nonlocal pending
        if pending is None:
            return
        name_, m_, w_, b_ = pending
        new = _new_weight_layer(m_)
        with torch.no_grad():
            new.weight.copy_(w_)
            new.bias.copy_(b_)
        layers.append(WeightLayer(len(modules), type(m_).__name__.lower(), sources=list(name_)))
        modules.append(new)
        pending = None

    prev_name = None  # the last module before this one that is not the identity in eval mode
    for name, m in leaves:
        if isinstance(m, EVAL_IDENTITY):
            continue
        if isinstance(m, WEIGHT_LAYERS):
            if getattr(m, "padding_mode", "zeros") != "zeros":
                raise Unsupported(f"{name} ({type(m).__name__}) uses padding_mode={m.padding_mode!r}; only zero "
                                  "padding is supported")
            flush()
            w = _value(m, name, "weight", state).to(torch.float64)
            b = _value(m, name, "bias", state)
            b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.to(torch.float64)
            pending = ([name], m, w, b)
        elif isinstance(m, BATCH_NORMS):
            if pending is None:
                raise Unsupported(f"{name} ({type(m).__name__}) follows {prev_name or 'the input'}, not a "
                                  "Linear/Conv: it cannot be folded into a preceding layer")
            if m.running_mean is None or m.running_var is None:
                raise Unsupported(f"{name} has no running statistics (track_running_stats=False): its eval-mode "
                                  "output depends on the batch, so it cannot be folded")
            names_, wm, w, b = pending
            if m.num_features != w.shape[0]:
                raise Unsupported(f"{name} has {m.num_features} features but {names_[-1]} has {w.shape[0]} outputs")
            mean = _value(m, name, "running_mean", state).to(torch.float64)
            var = _value(m, name, "running_var", state).to(torch.float64)
            gamma = _value(m, name, "weight", state) if m.affine else None
            beta = _value(m, name, "bias", state) if m.affine else None
            gamma = torch.ones_like(mean) if gamma is None else gamma.to(torch.float64)
            beta = torch.zeros_like(mean) if beta is None else beta.to(torch.float64)
            s = gamma / torch.sqrt(var + m.eps)
            w = w * s.view(-1, *([1] * (w.ndim - 1)))
            b = s * (b - mean) + beta
            pending = (names_ + [name], wm, w, b)
        elif isinstance(m, PASSTHROUGH):
            flush()
            new = copy.deepcopy(m)
            if isinstance(new, nn.ReLU):
                new = nn.ReLU()  # never in place: the chain runs under vmap and autograd
            modules.append(new)
        else:
            raise Unsupported(f"{name} is a {type(m).__name__}, which the measures cannot fold into a chain of "
                              "Linear/Conv1d/Conv2d layers (supported: Linear, Conv1d, Conv2d, BatchNorm1d/2d after "
                              "them, ReLU, Flatten, max/average pooling, dropout)")
        prev_name = name
    flush()
    net = nn.Sequential(*modules).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if input_shape is None and getattr(model, "spec", None) is not None:
        input_shape = model.spec.input_shape
    shape = tuple(int(v) for v in (input_shape or ()))
    folded = FoldedNetwork(net, layers, shape)
    if shape:
        _record_input_shapes(folded)
    return folded


@torch.no_grad()
def _record_input_shapes(folded: FoldedNetwork) -> None:
    shapes, sizes = {}, []

    def hook(k):
        def fn(_m, i, o):
            shapes[k] = tuple(i[0].shape[1:])
            sizes.append(o.numel())
        return fn

    hooks = [m.register_forward_hook(hook(k)) for k, m in enumerate(folded.net)]
    try:
        x = torch.zeros(1, *folded.input_shape, dtype=torch.float64)
        folded.net(x)
    finally:
        for h in hooks:
            h.remove()
    for layer in folded.layers:
        layer.input_shape = shapes[layer.index]
    folded.act_per_point = x.numel() + sum(sizes)
