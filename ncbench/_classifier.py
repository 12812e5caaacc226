"""What every ncbench model is, and the registry architectures are added to.

:class:`Classifier` (normalise -> body -> features -> ``fc``), the :class:`ModelSpec` that rebuilds one, and the
model registry. The architectures (:mod:`ncbench._archs`) and the public API (:mod:`ncbench.models`) both build
on this module, which imports neither of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ._errors import CheckpointError
from ._registry import Registry

MODELS: Registry = Registry("model")
_SPEC_KEYS = ("arch", "num_classes", "input_shape", "mean", "std", "args")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: the registered name, its arguments, and the data interface."""

    arch: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    args: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"], d["mean"], d["std"] = list(self.input_shape), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        """The spec of a checkpoint's metadata. Raises :class:`CheckpointError` saying which key is missing,
        unknown or of the wrong type (the caller prefixes the file's name)."""
        expected = "expected keys arch, num_classes, input_shape (and optionally mean, std, args), as written by " \
                   "ncbench.models.save_checkpoint"
        if not isinstance(d, dict):
            raise CheckpointError(f"the architecture spec must be a mapping; got {type(d).__name__}; {expected}")
        if not d:
            raise CheckpointError(f"the architecture spec is empty; {expected}")
        unknown = sorted(set(d) - set(_SPEC_KEYS))
        missing = [k for k in _SPEC_KEYS[:3] if k not in d]
        if unknown or missing:
            what = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                               f"unknown {unknown}" if unknown else "") if part)
            raise CheckpointError(f"malformed architecture spec ({what}); {expected}")
        try:
            args = d.get("args", {})
            if not isinstance(args, dict):
                raise TypeError(f"args must be a mapping, got {type(args).__name__}")
            return cls(str(d["arch"]), int(d["num_classes"]), tuple(int(v) for v in d["input_shape"]),
                       tuple(float(v) for v in d.get("mean", (0.0,))), tuple(float(v) for v in d.get("std", (1.0,))),
                       dict(args))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"malformed architecture spec ({' '.join(str(err).split())}): num_classes must be "
                                  "an integer, input_shape a list of integers, mean and std lists of numbers, args "
                                  "a mapping") from None


class Normalize(nn.Module):
    """(x - mean) / std per channel; inputs (N, channels, ...)."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


class Classifier(nn.Module):
    """normalise -> body -> features (N, D) -> fc (nn.Linear D -> C) -> logits."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, mean, std) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.fc = nn.Linear(feature_dim, num_classes)
        self.spec: ModelSpec | None = None
        self.trained_by: dict | None = None  # how ncbench trained it, when loaded from an ncbench checkpoint
        self.load_note: str | None = None  # what loading had to adapt (a DataParallel prefix), else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the input of ``fc``, shape (N, D)."""
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def register_model(name: str):
    """Decorator: register ``factory(input_shape, num_classes, mean, std, *, <keyword-only arguments>)``
    returning a :class:`Classifier` under ``name``."""
    return MODELS.register(name)
