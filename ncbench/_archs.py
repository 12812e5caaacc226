"""The registered architectures: an MLP and a 1-D CNN for vectors and signals, and the image architectures of
the neural-collapse papers for 32x32-sized inputs (any size works: global pooling).

Each factory returns a :class:`ncbench._classifier.Classifier` whose ``body`` ends in the penultimate features.
ResNet-18 with the CIFAR stem (He et al. 2016, 3x3 first conv, no max-pool); VGG-11/13 with batch norm
(Simonyan & Zisserman 2015); DenseNet-BC (Huang et al. 2017, for 32x32); WideResNet-28-k (Zagoruyko &
Komodakis 2016); a small 2-D CNN.

Dropout (``dropout``: the probability of zeroing a unit, Srivastava et al. 2014; active in training, the
identity in eval mode, so features, accuracy and the attacks see the full network): in ``mlp`` after every
block's ReLU (the hidden units, the last block's output included); in ``cnn1d`` and ``cnn2d`` on the
classifier head, before its Linear layer (on the flattened or pooled convolution features) and after its ReLU
(on the penultimate features, the input of ``fc``). With ``dropout=0`` (the default) no Dropout module is
added, so the parameter names of today's models and checkpoints are unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._classifier import Classifier, register_model
from ._errors import InputError


def _channels(input_shape) -> int:
    if len(input_shape) != 3:
        raise InputError(f"this architecture takes images (channels, height, width); got input shape "
                         f"{tuple(input_shape)}")
    return int(input_shape[0])


def _check_dropout(arch: str, dropout) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"{arch} dropout is the probability of zeroing a unit in training and must be in [0, 1); "
                         f"got {dropout!r}")
    return float(dropout)


def _dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def _conv_bn_relu(a, b, stride=1):
    return [nn.Conv2d(a, b, 3, stride, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]


def _bn_relu_linear(n_in: int, n_out: int) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU()]


@register_model("mlp")
def mlp(input_shape, num_classes, mean, std, *, width: int = 256, depth: int = 3, dropout: float = 0.0) -> Classifier:
    """Multi-layer perceptron: ``depth`` blocks of Linear -> BatchNorm -> ReLU (-> Dropout) of ``width`` units.
    Features: the last block's output (D = width)."""
    if depth < 1 or width < 1:
        raise InputError(f"mlp needs depth >= 1 and width >= 1; got depth={depth}, width={width}")
    p = _check_dropout("mlp", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    n_in = math.prod(input_shape)
    for _ in range(depth):
        layers += _bn_relu_linear(n_in, width) + _dropout(p)
        n_in = width
    return Classifier(nn.Sequential(*layers), width, num_classes, mean, std)


@register_model("cnn1d")
def cnn1d(input_shape, num_classes, mean, std, *, channels: int = 32, width: int = 128, depth: int = 3,
          dropout: float = 0.0) -> Classifier:
    """1-D CNN for sequences (channels, length), e.g. MNIST-1D (1, 40).

    ``depth`` convolution blocks, each Conv -> BatchNorm -> ReLU: the first Conv(k5, stride 1) with ``channels``
    channels; the second and third Conv(k3, stride 2) with 2x and 4x ``channels``; any further blocks
    Conv(k3, stride 1) with 4x ``channels`` (so depth beyond 3 deepens the stack without changing the head's
    input size). Then flatten (-> Dropout), Linear -> BatchNorm -> ReLU to ``width`` features (-> Dropout;
    D = width). The default depth 3 is the architecture of ncbench 0.2.
    """
    if len(input_shape) != 2:
        raise InputError(f"cnn1d takes inputs of shape (channels, length); got {tuple(input_shape)}")
    if depth < 1 or channels < 1 or width < 1:
        raise InputError(f"cnn1d needs depth >= 1, channels >= 1 and width >= 1; got depth={depth}, "
                         f"channels={channels}, width={width}")
    p = _check_dropout("cnn1d", dropout)
    c_in, length = input_shape

    def conv(a, b, k, s):
        return [nn.Conv1d(a, b, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm1d(b), nn.ReLU()]

    layers = conv(c_in, channels, 5, 1)
    c = channels
    for i in range(1, depth):
        out = channels * 2 ** min(i, 2)
        layers += conv(c, out, 3, 2 if i <= 2 else 1)
        c = out
    body = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        flat = body(torch.zeros(2, c_in, length)).shape[1]
    body.extend(_dropout(p) + _bn_relu_linear(flat, width) + _dropout(p))
    return Classifier(body, width, num_classes, mean, std)


@register_model("cnn2d")
def cnn2d(input_shape, num_classes, mean, std, *, channels: int = 32, width: int = 128,
          dropout: float = 0.0) -> Classifier:
    """Three conv blocks (``channels``, 2x, 4x; BatchNorm, ReLU, 2x2 max-pool after the last two), global average
    pooling (-> Dropout), then Linear -> BatchNorm -> ReLU to ``width`` features (-> Dropout)."""
    c, k = _channels(input_shape), channels
    p = _check_dropout("cnn2d", dropout)
    body = nn.Sequential(*_conv_bn_relu(c, k), *_conv_bn_relu(k, 2 * k), nn.MaxPool2d(2),
                         *_conv_bn_relu(2 * k, 4 * k), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         *_dropout(p), nn.Linear(4 * k, width, bias=False), nn.BatchNorm1d(width),
                         nn.ReLU(inplace=True), *_dropout(p))
    return Classifier(body, width, num_classes, mean, std)


class _BasicBlock(nn.Module):
    def __init__(self, a, b, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(a, b, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(b)
        self.conv2 = nn.Conv2d(b, b, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(b)
        self.shortcut = nn.Sequential()
        if stride != 1 or a != b:
            self.shortcut = nn.Sequential(nn.Conv2d(a, b, 1, stride, bias=False), nn.BatchNorm2d(b))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet18")
def resnet18(input_shape, num_classes, mean, std, *, width: int = 64) -> Classifier:
    """ResNet-18, CIFAR stem (3x3 conv, stride 1, no max-pool); features: the 8*width pooled channels."""
    c = _channels(input_shape)
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    a = width
    for i, b in enumerate([width, 2 * width, 4 * width, 8 * width]):
        layers += [_BasicBlock(a, b, 1 if i == 0 else 2), _BasicBlock(b, b, 1)]
        a = b
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), a, num_classes, mean, std)


_VGG = {"vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "vgg13_bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}


def _vgg(cfg, input_shape, num_classes, mean, std, width):
    c = _channels(input_shape)
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: small inputs (e.g. 28x28) keep >= 1 pixel
        else:
            layers += _conv_bn_relu(c, v)
            c = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, width, bias=False), nn.BatchNorm1d(width),
               nn.ReLU(inplace=True)]
    return Classifier(nn.Sequential(*layers), width, num_classes, mean, std)


@register_model("vgg11_bn")
def vgg11_bn(input_shape, num_classes, mean, std, *, width: int = 512) -> Classifier:
    """VGG-11 with batch norm (CIFAR variant: global pooling, one hidden layer of ``width`` features)."""
    return _vgg(_VGG["vgg11_bn"], input_shape, num_classes, mean, std, width)


@register_model("vgg13_bn")
def vgg13_bn(input_shape, num_classes, mean, std, *, width: int = 512) -> Classifier:
    """VGG-13 with batch norm (CIFAR variant: global pooling, one hidden layer of ``width`` features)."""
    return _vgg(_VGG["vgg13_bn"], input_shape, num_classes, mean, std, width)


class _DenseLayer(nn.Module):
    def __init__(self, a, growth):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm2d(a), nn.ReLU(inplace=True), nn.Conv2d(a, 4 * growth, 1, bias=False),
                                 nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
                                 nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.net(x)], 1)


@register_model("densenet_bc")
def densenet_bc(input_shape, num_classes, mean, std, *, depth: int = 100, growth: int = 12) -> Classifier:
    """DenseNet-BC for 32x32 inputs: 3 dense blocks of (depth-4)/6 bottleneck layers, compression 0.5."""
    if (depth - 4) % 6:
        raise InputError(f"densenet_bc depth must be 6n+4 (e.g. 40, 100, 190); got {depth}")
    n = (depth - 4) // 6
    c = 2 * growth
    layers: list[nn.Module] = [nn.Conv2d(_channels(input_shape), c, 3, 1, 1, bias=False)]
    for block in range(3):
        for _ in range(n):
            layers.append(_DenseLayer(c, growth))
            c += growth
        if block < 2:
            out = c // 2
            layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, out, 1, bias=False), nn.AvgPool2d(2)]
            c = out
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), c, num_classes, mean, std)


class _WideBlock(nn.Module):
    def __init__(self, a, b, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(a), nn.Conv2d(a, b, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(b), nn.Conv2d(b, b, 3, 1, 1, bias=False)
        self.shortcut = None if (a == b and stride == 1) else nn.Conv2d(a, b, 1, stride, bias=False)

    def forward(self, x):
        o = torch.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(torch.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


@register_model("wrn28")
def wrn28(input_shape, num_classes, mean, std, *, widen_factor: int = 10) -> Classifier:
    """WideResNet-28-k (k = ``widen_factor``): 3 groups of 4 pre-activation blocks, widths 16k, 32k, 64k."""
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    layers: list[nn.Module] = [nn.Conv2d(_channels(input_shape), 16, 3, 1, 1, bias=False)]
    a = 16
    for g, b in enumerate(widths[1:]):
        for i in range(4):
            layers.append(_WideBlock(a, b, (1 if g == 0 else 2) if i == 0 else 1))
            a = b
    layers += [nn.BatchNorm2d(a), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), a, num_classes, mean, std)
