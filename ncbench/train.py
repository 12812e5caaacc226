"""Training into the terminal phase: train error reaches zero, then training goes on (Papyan et al. 2020).

Data sit as tensors on the training device and batches are drawn by index (no DataLoader workers). SGD with
momentum and weight decay; step decay (divide by 10 at 1/3 and 2/3 of training, the papers' schedule) or
cosine; cross-entropy, MSE on one-hot targets (Han et al. 2022) or label smoothing. CPU runs repeat exactly
for a given seed on one machine (not across CPUs: their kernels round differently; see the README).

Precision: fp32 by default on every device (TF32 is switched off on CUDA, see :mod:`ncbench.environment`),
so a GPU run is the same computation as a CPU run; ``precision: bf16`` opts in to bf16 autocast and is part
of the job's identity. Models with 2-D convolutions train in channels_last memory format (faster on the
CPU; the same function).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._coerce import coerce_dataclass, coerce_value
from ._errors import InputError

LOSSES = ("ce", "mse", "label_smoothing")
SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """One training recipe. Units: lr per step; weight_decay is the L2 coefficient (lambda) of SGD."""

    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "ce"
    label_smoothing: float = 0.1
    schedule: str = "step"
    # where the step schedule divides the lr by 10: fractions of the epochs (< 1), or epoch numbers (>= 1,
    # e.g. 116 and 233 of the PNAS recipe's 350)
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)
    precision: str = "fp32"  # "bf16": bf16 autocast for forward and backward (opt-in, on any device)

    def __post_init__(self) -> None:
        coerce_dataclass(self, "train")
        object.__setattr__(self, "milestones", tuple(coerce_value(m, "float", "train.milestones")
                                                     for m in self.milestones))
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1; got {self.epochs}, {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise InputError("need lr > 0, weight_decay >= 0 and momentum in [0, 1)")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"train precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.schedule == "step":
            self.milestone_epochs()  # validates

    def milestone_epochs(self) -> tuple[int, ...]:
        """The step schedule's milestones as epoch numbers (0-based epochs from which the lr is divided).

        A milestone in (0, 1) is a fraction of ``epochs`` (resolved to ``max(1, round(m * epochs))``, so it
        scales with ``--epochs``); one >= 1 is an epoch number and must lie in 1..epochs-1: a milestone at or
        past the last epoch would silently never apply (e.g. the PNAS milestones 116 and 233 with
        ``epochs: 100``). Milestones must be given in increasing order.
        """
        ms = list(self.milestones)
        if any(isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0 for m in ms):
            raise InputError(f"milestones must be positive numbers (fractions < 1 of the epochs, or epoch numbers "
                             f">= 1); got {ms}")
        if any(m >= 1 and int(m) != m for m in ms):
            raise InputError(f"milestones >= 1 are epoch numbers and must be integers; got {ms}")
        if ms != sorted(ms) or len(set(ms)) != len(ms):
            raise InputError(f"milestones must be strictly increasing; got {ms}")
        late = [int(m) for m in ms if m >= 1 and m >= self.epochs]
        if late:
            raise InputError(f"milestones {[int(m) if m >= 1 else m for m in ms]} resolve to epochs "
                             f"{[int(m) for m in ms if m >= 1]} with epochs={self.epochs}: epoch milestones must be "
                             f"within 1..{self.epochs - 1} ({late} would never apply); scale them with the epochs, "
                             "or give fractions such as [0.333, 0.667]")
        return tuple(int(m) if m >= 1 else max(1, round(m * self.epochs)) for m in ms)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def effective(self) -> dict:
        """Only the fields that this recipe uses (the job identity): label_smoothing only under its loss,
        milestones (as epochs) only under the step schedule."""
        d = {k: v for k, v in self.to_dict().items() if k not in ("label_smoothing", "milestones")}
        if self.loss == "label_smoothing":
            d["label_smoothing"] = self.label_smoothing
        if self.schedule == "step":
            d["milestones"] = list(self.milestone_epochs())
        return d


@dataclass
class TrainResult:
    """What training did: per-epoch history, the first epoch with zero train error, wall time (s)."""

    history: list[dict] = field(default_factory=list)
    terminal_phase_epoch: int | None = None
    wall_time_s: float = 0.0


def _loss_fn(cfg: TrainConfig, num_classes: int) -> Callable:
    if cfg.loss == "ce":
        return F.cross_entropy
    if cfg.loss == "label_smoothing":
        return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    # Han, Papyan & Donoho 2022: (1/2N) sum_i ||W h_i + b - e_{y_i}||^2 (summed over classes, not averaged)
    return lambda logits, y: 0.5 * ((logits - F.one_hot(y, num_classes).to(logits.dtype)) ** 2).sum(1).mean()


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate during epoch ``epoch`` (0-based)."""
    if cfg.schedule == "step":
        return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.milestone_epochs())
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction of correct argmax predictions, in eval mode (mode restored after)."""
    from .features import EVAL_BATCH, predict

    batch_size = batch_size or EVAL_BATCH

    was = model.training
    model.eval()
    correct = int((predict(model, x, batch_size=batch_size) == y.to(next(model.parameters()).device)).sum())
    model.train(was)
    return correct / x.shape[0]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *, seed: int = 0,
          device: torch.device | str = "cpu", callback: Callable[[int, nn.Module, dict], None] | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``model`` in place on inputs ``x`` (N, ...) in [0, 1] and labels ``y`` (N,).

    Train accuracy is measured in eval mode after every epoch; ``terminal_phase_epoch`` is the first
    (1-based) epoch at which it is 1.0 (None if never). ``callback(epoch, model, row)`` runs after each epoch
    with that epoch's history row (``loss``, ``lr``, ``train_accuracy``).
    """
    from tqdm.auto import tqdm

    from .features import as_model_input, prepare_model

    device = torch.device(device)
    num_classes = model.fc.out_features
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x, y = x.to(device), y.to(device)
    prepare_model(model, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loss_fn = _loss_fn(cfg, num_classes)
    result = TrainResult()
    n = x.shape[0]
    use_bf16 = cfg.precision == "bf16"  # bf16 needs no loss scaling
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()  # a callback may have left it in eval mode
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        perm = torch.randperm(n, generator=gen).to(device)
        total, seen = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if idx.numel() < 2 and n > 1:  # a batch of one breaks batch norm; fold it into the next epoch
                continue
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model(as_model_input(model, x[idx])).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            seen += idx.numel()
        if not math.isfinite(total):
            raise InputError(f"training diverged at epoch {epoch + 1} (loss is not finite); lower the lr")
        train_acc = accuracy(model, x, y)
        if result.terminal_phase_epoch is None and train_acc == 1.0:
            result.terminal_phase_epoch = epoch + 1
        result.history.append({"epoch": epoch + 1, "lr": lr_at(cfg, epoch), "loss": total / max(seen, 1),
                               "train_accuracy": train_acc})
        bar.set_postfix(loss=f"{total / max(seen, 1):.4f}", train_acc=f"{train_acc:.4f}")
        if callback is not None:
            callback(epoch + 1, model, result.history[-1])
    model.eval()
    result.wall_time_s = time.perf_counter() - t0
    return result
