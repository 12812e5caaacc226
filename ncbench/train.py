"""Training into the terminal phase: train error reaches zero, then training goes on (Papyan et al. 2020).

Data sit as tensors on the training device and batches are drawn by index (no DataLoader workers). SGD with
momentum, Adam or AdamW (``torch.optim``), with weight decay; step decay (divide by 10 at 1/3 and 2/3 of
training, the papers' schedule), cosine or constant learning rate, for every optimizer; cross-entropy, MSE on
one-hot targets (Han et al. 2022) or label smoothing. Optional augmentation (random shifts of 1-D signals,
padded random crops and flips of images) and adversarial training (PGD-AT, FGSM-RS, TRADES;
:mod:`ncbench.attacks._training`). CPU runs repeat exactly for a given seed on one machine (not across CPUs:
their kernels round differently; see the README): batch order, augmentation and the attacks' random starts
each draw from a generator of their own, seeded from the job's seed.

Precision: fp32 by default on every device (TF32 is switched off on CUDA, see :mod:`ncbench.environment`),
so a GPU run is the same computation as a CPU run; ``precision: bf16`` opts in to bf16 autocast and is part
of the job's identity. Models with 2-D convolutions train in channels_last memory format (faster on the
CPU; the same function).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._budget import canonical_eps
from ._coerce import PRECISIONS, coerce_dataclass, coerce_value  # noqa: F401  (PRECISIONS re-exported)
from ._errors import InputError

LOSSES = ("ce", "mse", "label_smoothing")
SCHEDULES = ("step", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTS = ("none", "shift", "crop_flip")
ADVERSARIAL = ("none", "fgsm_rs", "pgd", "trades")
ADV_NORMS = ("Linf", "L2")
#: padding (pixels) of the crop_flip augmentation: the CIFAR standard, RandomCrop(32, padding=4)
CROP_PADDING = 4
#: training points (a seeded subset) on which the robust training accuracy of an adversarially trained model is
#: measured at the end (PGD-10 at the training budget)
ADV_EVAL_POINTS = 1000
ADV_EVAL_STEPS = 10
_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "pgd": "PGD-AT", "fgsm_rs": "FGSM-RS", "trades": "TRADES"}


@dataclass(frozen=True)
class TrainConfig:
    """One training recipe.

    Optimisation: ``optimizer`` is ``sgd`` (with ``momentum``), ``adam`` or ``adamw`` (with ``betas``);
    ``lr`` is the learning rate per step, scheduled by ``schedule`` (``step``: divided by 10 at ``milestones``;
    ``cosine``; ``constant``) for every optimizer. ``weight_decay`` is the L2 coefficient lambda: added to the
    gradient (lambda * w) by SGD and Adam, decoupled by AdamW (w <- w - lr * lambda * w; Loshchilov & Hutter
    2019). Adam and AdamW usually want a far smaller ``lr`` than SGD's default 0.05 (e.g. 1e-3).

    ``augment``: ``none``; ``shift`` for 1-D signals (N, channels, length): each training batch is translated
    by a whole number of samples drawn uniformly from [-augment_shift, augment_shift], zero-padded; or
    ``crop_flip`` for images (N, channels, H, W): a random H x W crop of the image zero-padded by 4 pixels,
    then a horizontal flip with probability 1/2 (the CIFAR standard). Accuracy and collapse are measured on
    the unaugmented data.

    ``adversarial``: ``none``; ``pgd`` (PGD-AT, Madry et al. 2018: the training loss on PGD examples from a
    uniform random start, the examples ascending that same loss: cross-entropy for ``loss: ce``, as in their
    paper; the recipe's MSE or smoothed loss otherwise, the saddle-point problem of that loss); ``fgsm_rs`` (Wong, Rice & Kolter 2020: one signed step of ``1.25 * adv_eps`` from a
    uniform start; Linf only); ``trades`` (Zhang et al. 2019: ``CE + trades_beta * KL`` with KL-maximising
    examples from ``x + 0.001 N(0, I)``, found in eval mode). ``adv_eps`` is the budget in the [0, 1] input
    scale under ``adv_norm``, required with adversarial training (a number or a fraction such as ``8/255``);
    ``adv_steps`` and ``adv_step_size`` the inner attack's steps and step length (default step:
    ``2.5 * adv_eps / adv_steps`` for pgd and trades, ``1.25 * adv_eps`` for fgsm_rs, which takes one step;
    TRADES' authors use ``2 * eps / steps`` under L2 and their CIFAR setting is ``2.26 * eps / steps`` under
    Linf: set ``adv_step_size`` to reproduce them).
    See :mod:`ncbench.attacks._training`.
    """

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
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's and AdamW's moment decay rates
    augment: str = "none"
    augment_shift: int = 5  # largest shift (samples) of augment: shift
    adversarial: str = "none"
    adv_norm: str = "Linf"
    adv_eps: float | None = None
    adv_steps: int = 10
    adv_step_size: float | None = None
    trades_beta: float = 6.0

    def __post_init__(self) -> None:
        if self.adv_eps is not None and not isinstance(self.adv_eps, bool):
            try:  # 8/255 and 0.0313725... are one budget
                object.__setattr__(self, "adv_eps", canonical_eps(self.adv_eps))
            except InputError as err:
                raise InputError(f"train.adv_eps: {err}") from None
        coerce_dataclass(self, "train")
        object.__setattr__(self, "milestones", tuple(coerce_value(m, "float", "train.milestones")
                                                     for m in self.milestones))
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise InputError(f"train.betas must be two numbers, e.g. [0.9, 0.999]; got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(coerce_value(b, "float", "train.betas") for b in self.betas))
        for ok, rule, value in ((self.epochs >= 1, "train.epochs must be >= 1", self.epochs),
                                (self.batch_size >= 1, "train.batch_size must be >= 1", self.batch_size),
                                (self.lr > 0, "train.lr must be > 0", self.lr),
                                (self.weight_decay >= 0, "train.weight_decay must be >= 0", self.weight_decay),
                                (0 <= self.momentum < 1, "train.momentum must be in [0, 1)", self.momentum)):
            if not ok:
                raise InputError(f"{rule}; got {value!r}")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"train precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.schedule == "step":
            self.milestone_epochs()  # validates
        self._check_recipe()

    def _check_recipe(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"train.optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"train.betas must both lie in [0, 1); got {list(self.betas)}")
        if self.augment not in AUGMENTS:
            raise InputError(f"train.augment must be one of {AUGMENTS}; got {self.augment!r}")
        if self.augment_shift < 1:
            raise InputError(f"train.augment_shift (the largest shift, in samples) must be >= 1; got "
                             f"{self.augment_shift}")
        if self.adversarial not in ADVERSARIAL:
            raise InputError(f"train.adversarial must be one of {ADVERSARIAL}; got {self.adversarial!r}")
        if self.adv_norm not in ADV_NORMS:
            raise InputError(f"train.adv_norm must be one of {ADV_NORMS}; got {self.adv_norm!r}")
        if self.adv_steps < 1:
            raise InputError(f"train.adv_steps must be >= 1; got {self.adv_steps}")
        if self.adv_step_size is not None and not self.adv_step_size > 0:
            raise InputError(f"train.adv_step_size must be > 0 (or left out for the method's default); got "
                             f"{self.adv_step_size}")
        if not self.trades_beta >= 0:
            raise InputError(f"train.trades_beta must be >= 0; got {self.trades_beta}")
        if self.adversarial == "none":
            return
        if self.adv_eps is None or not self.adv_eps > 0:
            raise InputError(f"train.adversarial: {self.adversarial} needs train.adv_eps > 0, the training budget in "
                             f"the [0, 1] input scale (e.g. 0.01 for MNIST-1D under Linf, 8/255 for CIFAR-10); got "
                             f"{self.adv_eps}")
        if self.adv_norm == "Linf" and self.adv_eps > 1:
            raise InputError(f"train.adv_eps must be <= 1 under Linf (inputs are scaled to [0, 1]); got {self.adv_eps:g}")
        if self.adversarial == "fgsm_rs" and self.adv_norm != "Linf":
            raise InputError("train.adversarial: fgsm_rs is defined for adv_norm Linf (Wong, Rice & Kolter 2020); "
                             f"got {self.adv_norm}; use adversarial: pgd for L2")
        if self.adversarial == "trades" and self.loss != "ce":
            raise InputError(f"train.adversarial: trades is cross-entropy plus beta times KL (Zhang et al. 2019) and "
                             f"takes loss: ce; got loss {self.loss!r}")

    def adv_step(self) -> float | None:
        """The inner attack's step length (input units): ``adv_step_size``, or the method's default; None without
        adversarial training."""
        if self.adversarial == "none":
            return None
        if self.adv_step_size is not None:
            return self.adv_step_size
        from .attacks._training import FGSM_RS_STEP, PGD_STEP_FACTOR

        if self.adversarial == "fgsm_rs":
            return canonical_eps(FGSM_RS_STEP * self.adv_eps)
        return canonical_eps(PGD_STEP_FACTOR * self.adv_eps / self.adv_steps)

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
        d["betas"] = list(self.betas)
        return d

    def effective(self) -> dict:
        """Only the fields that this recipe uses (the job identity).

        Always: epochs, batch_size, lr, weight_decay, loss, schedule, precision. label_smoothing only under its
        loss; milestones (as epochs) only under the step schedule; momentum only for SGD; optimizer and betas
        only for Adam and AdamW; augment only when on, augment_shift only for shift; adversarial, adv_norm,
        adv_eps and the resolved step (``adv_step_size``) only with adversarial training, adv_steps only for
        the multi-step methods (pgd, trades), trades_beta only for trades. A plain SGD recipe therefore has
        the same identity as in ncbench 0.2.
        """
        d = {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "loss",
                                             "schedule", "precision")}
        if self.optimizer != "sgd":
            del d["momentum"]
            d["optimizer"] = self.optimizer
            d["betas"] = list(self.betas)
        if self.loss == "label_smoothing":
            d["label_smoothing"] = self.label_smoothing
        if self.schedule == "step":
            d["milestones"] = list(self.milestone_epochs())
        if self.augment != "none":
            d["augment"] = self.augment
            if self.augment == "shift":
                d["augment_shift"] = self.augment_shift
        if self.adversarial != "none":
            d.update(adversarial=self.adversarial, adv_norm=self.adv_norm, adv_eps=self.adv_eps,
                     adv_step_size=self.adv_step())
            if self.adversarial in ("pgd", "trades"):
                d["adv_steps"] = self.adv_steps
            if self.adversarial == "trades":
                d["trades_beta"] = self.trades_beta
        return d

    def describe(self) -> str:
        """The recipe in one line, e.g. ``"AdamW (betas 0.9, 0.999), lr 0.001 cosine, wd 5e-4, 60 epochs, batch
        128; PGD-AT Linf eps 0.01, 10 steps of 0.0025; shift ±5"``. Names only what :meth:`effective` holds."""
        e = self.effective()
        opt = (f"SGD (momentum {_num(self.momentum)})" if self.optimizer == "sgd" else
               f"{_NAMES[self.optimizer]} (betas {_num(self.betas[0])}, {_num(self.betas[1])})")
        schedule = {"step": f"step at epochs {', '.join(map(str, e.get('milestones', [])))}", "cosine": "cosine",
                    "constant": "constant"}[self.schedule]
        parts = [f"{opt}, lr {_num(self.lr)} {schedule}, wd {_num(self.weight_decay)}, {self.epochs} epochs, "
                 f"batch {self.batch_size}"]
        if self.loss != "ce":
            parts.append(f"loss {self.loss}" + (f" {_num(self.label_smoothing)}" if self.loss == "label_smoothing"
                                                else ""))
        if self.precision != "fp32":
            parts.append(self.precision)
        if self.adversarial != "none":
            from ._budget import eps_label

            step = eps_label(self.adv_step())
            attack = (f"1 step of {step}" if self.adversarial == "fgsm_rs" else f"{self.adv_steps} steps of {step}")
            beta = f", beta {_num(self.trades_beta)}" if self.adversarial == "trades" else ""
            parts.append(f"{_NAMES[self.adversarial]} {self.adv_norm} eps {eps_label(self.adv_eps)}, {attack}{beta}")
        if self.augment == "shift":
            parts.append(f"shift ±{self.augment_shift}")
        elif self.augment == "crop_flip":
            parts.append(f"crop ({CROP_PADDING}-pixel padding) and flip")
        return "; ".join(parts)


def _num(v: float) -> str:
    """A number as people write it: 0.05, 0.001, 5e-4, 0.999, 60."""
    if v and abs(v) < 1e-3:
        mantissa, exponent = f"{v:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:g}"


@dataclass
class TrainResult:
    """What training did: per-epoch history, the first epoch with zero (clean) train error, wall time (s).

    ``adv_train_accuracy``: for an adversarially trained model, the robust training accuracy at the end (the
    fraction of ``adv_train_points`` training points, a subset drawn from the job's seed, classified correctly
    and not fooled by PGD-10 with a random start at the training budget ``adv_eps`` under ``adv_norm``; higher
    is more robust); None without adversarial training. Adversarially trained models rarely reach zero
    training error, and FGSM-RS's catastrophic overfitting shows as a collapse of this number.
    """

    history: list[dict] = field(default_factory=list)
    terminal_phase_epoch: int | None = None
    wall_time_s: float = 0.0
    adv_train_accuracy: float | None = None
    adv_train_points: int | None = None


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


def derived_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose of a job (``"augment"``, ``"adversarial"``, ...) from the job's seed: each
    source of randomness gets a generator of its own, so turning one on does not move the others' draws."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()[:8], "little") >> 1


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` from ``torch.optim`` over ``params``, with ``cfg``'s lr, weight decay and momentum (SGD)
    or betas (Adam, AdamW)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def shift_1d(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each signal of ``x`` (N, channels, length) translated by its own whole number of samples s, drawn
    uniformly from [-max_shift, max_shift] by ``generator`` (on the CPU): ``out[..., t] = x[..., t - s]``, and 0
    where ``t - s`` falls outside the signal. Returns a new tensor of ``x``'s shape."""
    n, _, length = x.shape
    s = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).to(x.device)
    src = torch.arange(length, device=x.device)[None, :] - s[:, None]  # (N, length)
    inside = (src >= 0) & (src < length)
    moved = x.gather(2, src.clamp(0, length - 1)[:, None, :].expand_as(x))
    return torch.where(inside[:, None, :], moved, torch.zeros((), dtype=x.dtype, device=x.device))


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """Each image of ``x`` (N, channels, H, W) zero-padded by ``padding`` pixels on every side, cropped back to
    H x W at a uniformly drawn offset, then flipped left-right with probability 1/2 (torchvision's
    ``RandomCrop(padding=4)`` and ``RandomHorizontalFlip()``, per image, drawn by ``generator`` on the CPU)."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _augmenter(cfg: TrainConfig, shape: tuple) -> Callable | None:
    """``augment(batch, generator)`` for the recipe, after checking it fits inputs of ``shape`` (N, ...)."""
    if cfg.augment == "none":
        return None
    if cfg.augment == "shift":
        if len(shape) != 3:
            raise InputError(f"train.augment: shift translates 1-D signals (inputs of shape (channels, length)); the "
                             f"dataset's inputs have shape {tuple(shape[1:])}" +
                             ("; use augment: crop_flip for images" if len(shape) == 4 else ""))
        if cfg.augment_shift >= shape[2]:
            raise InputError(f"train.augment_shift {cfg.augment_shift} must be smaller than the signal length "
                             f"{shape[2]}")
        return lambda xb, gen: shift_1d(xb, cfg.augment_shift, gen)
    if len(shape) != 4:
        raise InputError(f"train.augment: crop_flip crops and flips images (inputs of shape (channels, height, "
                         f"width)); the dataset's inputs have shape {tuple(shape[1:])}" +
                         ("; use augment: shift for 1-D signals" if len(shape) == 3 else ""))
    return crop_flip


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *, seed: int = 0,
          device: torch.device | str = "cpu", callback: Callable[[int, nn.Module, dict], None] | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``model`` in place on inputs ``x`` (N, ...) in [0, 1] and labels ``y`` (N,).

    Train accuracy is measured on the clean, unaugmented data in eval mode after every epoch;
    ``terminal_phase_epoch`` is the first (1-based) epoch at which it is 1.0 (None if never). The history's
    ``loss`` is the objective trained on (under adversarial training, the loss on the adversarial examples, or
    TRADES' loss). ``callback(epoch, model, row)`` runs after each epoch with that epoch's history row
    (``loss``, ``lr``, ``train_accuracy``). With adversarial training, ``adv_train_accuracy`` is measured at the
    end (see :class:`TrainResult`).

    Randomness: the batch order draws from a generator seeded with ``seed`` (as in ncbench 0.2), augmentation
    and the attacks' starts from generators of their own (:func:`derived_seed`); dropout draws from torch's
    global generator (seed it before calling, as ``ncbench evaluate`` does).
    """
    from tqdm.auto import tqdm

    from ._inputs import as_inputs
    from .features import as_model_input, prepare_model

    x, y = as_inputs(model, x, y, who="train")  # float64 inputs, int32 labels: cast, not a crash inside torch
    device = torch.device(device)
    num_classes = model.fc.out_features
    gen = torch.Generator(device="cpu").manual_seed(seed)
    augment = _augmenter(cfg, tuple(x.shape))
    aug_gen = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "augment"))
    adv_gen = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "adversarial"))
    x, y = x.to(device), y.to(device)
    prepare_model(model, device).train()
    opt = make_optimizer(model.parameters(), cfg)
    loss_fn = _loss_fn(cfg, num_classes)
    step = _step_fn(model, cfg, loss_fn, adv_gen)
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
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, aug_gen)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = step(as_model_input(model, xb), yb)
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
    if cfg.adversarial != "none":
        result.adv_train_accuracy, result.adv_train_points = adv_train_accuracy(model, x, y, cfg, seed=seed)
    result.wall_time_s = time.perf_counter() - t0
    return result


def _step_fn(model: nn.Module, cfg: TrainConfig, loss_fn: Callable, generator: torch.Generator) -> Callable:
    """``step(x_batch, y_batch) -> loss`` of the recipe: the loss on the clean batch, or the adversarial
    training objective (the model is in train mode on entry and on return)."""
    if cfg.adversarial == "none":
        return lambda xb, yb: loss_fn(model(xb).float(), yb)
    from .attacks._training import InModelFormat, pgd_at_examples, trades_examples, trades_loss

    forward = InModelFormat(model)  # the attacks' iterates are plain tensors; the model may run channels_last

    eps, norm, step_size = cfg.adv_eps, cfg.adv_norm, cfg.adv_step()
    steps = 1 if cfg.adversarial == "fgsm_rs" else cfg.adv_steps
    if cfg.adversarial in ("pgd", "fgsm_rs"):
        def adversarial_step(xb, yb):  # examples found in train mode, as Madry et al.'s and Wong et al.'s code
            adv = pgd_at_examples(forward, xb, yb, eps=eps, norm=norm, steps=steps, step_size=step_size,
                                  generator=generator, loss_fn=loss_fn)
            return loss_fn(forward(adv).float(), yb)
        return adversarial_step

    def trades_step(xb, yb):  # examples found in eval mode, the update in train mode, as Zhang et al.'s code
        model.eval()
        adv = trades_examples(forward, xb, eps=eps, norm=norm, steps=steps, step_size=step_size, generator=generator)
        model.train()
        return trades_loss(forward, xb, adv, yb, cfg.trades_beta)[0]
    return trades_step


def adv_train_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *,
                       seed: int = 0) -> tuple[float, int]:
    """Robust training accuracy of ``model`` at the recipe's budget: PGD-10 (random start, step 2.5 * eps / 10)
    at ``cfg.adv_eps`` under ``cfg.adv_norm``, in eval mode, on ``ADV_EVAL_POINTS`` training points drawn from
    ``seed`` (all of them when there are fewer). Returns ``(accuracy, points)``; higher is more robust."""
    from .attacks._training import InModelFormat, pgd_robust_accuracy
    from .features import model_device

    gen = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "adv-train-accuracy"))
    n = x.shape[0]
    pick = torch.randperm(n, generator=gen)[:ADV_EVAL_POINTS].sort().values
    dev = model_device(model)
    xs, ys = x[pick.to(x.device)].to(dev), y[pick.to(y.device)].to(dev)
    was = model.training
    model.eval()
    try:
        acc = pgd_robust_accuracy(InModelFormat(model), xs, ys, eps=cfg.adv_eps,
                                  norm=cfg.adv_norm, steps=ADV_EVAL_STEPS, generator=gen)
    finally:
        model.train(was)
    return acc, int(pick.numel())
