"""Adversarial robustness through torchattacks: robust accuracy over an eps grid (a robustness curve).

Budgets ``eps`` are in the [0, 1] input scale. Points are attacked only while they are still classified
correctly: a point fooled at a smaller eps counts as fooled at every larger eps (the smaller ball lies inside
the larger one), so the curve never increases with eps and each eps only attacks the survivors.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ._errors import InputError
from ._registry import Registry

ATTACKS: Registry = Registry("attack")
NORMS = ("Linf",)


@dataclass(frozen=True)
class AttackConfig:
    """One attack over an eps grid. alpha (step size) = alpha_factor * eps / steps (Madry et al. use 2.5)."""

    name: str = "pgd"
    norm: str = "Linf"
    eps: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04)
    steps: int = 20
    alpha_factor: float = 2.5
    random_start: bool = True
    batch_size: int = 1000

    def __post_init__(self) -> None:
        ATTACKS.get(self.name)  # unknown names fail here, listing the valid ones
        if self.norm not in NORMS:
            raise InputError(f"norm must be one of {NORMS}; got {self.norm!r}")
        if not self.eps:
            raise InputError("the eps grid is empty; give at least one budget, e.g. 0.02")
        for e in self.eps:
            if not (isinstance(e, (int, float)) and math.isfinite(e) and 0.0 <= e <= 1.0):
                raise InputError(f"eps must be in [0, 1] (inputs are scaled to [0,1]); got {e}")
        if self.steps < 1 or self.batch_size < 1 or not self.alpha_factor > 0:
            raise InputError("steps and batch_size must be >= 1 and alpha_factor > 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eps"] = list(self.eps)
        return d


def register_attack(name: str):
    return ATTACKS.register(name)


def list_attacks(pattern: str = "*") -> list[str]:
    return ATTACKS.names(pattern)


@register_attack("pgd")
def _pgd(model: nn.Module, eps: float, cfg: AttackConfig):
    import torchattacks

    return torchattacks.PGD(model, eps=eps, alpha=cfg.alpha_factor * eps / cfg.steps, steps=cfg.steps,
                            random_start=cfg.random_start)


@register_attack("fgsm")
def _fgsm(model: nn.Module, eps: float, cfg: AttackConfig):
    import torchattacks

    return torchattacks.FGSM(model, eps=eps)


@torch.no_grad()
def _predict(model, x, batch_size):
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, *, seed: int = 0,
                     progress: bool = True) -> dict:
    """Robust accuracy of ``model`` on inputs ``x`` (N, ...) in [0, 1] with labels ``y`` at each eps of the grid.

    Returns a dict: ``clean_accuracy``, ``curve`` (list of ``{"eps", "robust_accuracy", "n_attacked",
    "wall_time_s"}``, eps ascending), ``robust_flags`` (per-point robust flags at the largest eps, a string of 0 and 1 in input order),
    ``max_linf`` (largest ||x_adv - x||_inf seen) and the attack's settings.
    """
    from tqdm.auto import tqdm

    if x.shape[0] != y.shape[0]:
        raise InputError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if not (float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
        raise InputError(f"inputs must lie in [0, 1]; got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    x, y = x.to(device), y.to(device)
    torch.manual_seed(seed)
    try:
        robust = _predict(model, x, cfg.batch_size) == y
        clean = float(robust.float().mean())
        curve, max_linf = [], 0.0
        grid = sorted(set(float(e) for e in cfg.eps))
        bar = tqdm(grid, desc=f"attack {cfg.name}-{cfg.norm}", unit="eps", disable=not progress, leave=False)
        for eps in bar:
            t0 = time.perf_counter()
            idx = robust.nonzero().flatten()
            if eps > 0 and idx.numel():
                attack = ATTACKS.get(cfg.name)(model, eps, cfg)
                for i in range(0, idx.numel(), cfg.batch_size):
                    b = idx[i:i + cfg.batch_size]
                    adv = attack(x[b], y[b])
                    max_linf = max(max_linf, float((adv - x[b]).abs().flatten(1).max()))
                    robust[b] &= _predict(model, adv, cfg.batch_size) == y[b]
            curve.append({"eps": eps, "robust_accuracy": float(robust.float().mean()),
                          "n_attacked": int(idx.numel()) if eps > 0 else 0,
                          "wall_time_s": time.perf_counter() - t0})
            bar.set_postfix(eps=eps, robust=f"{curve[-1]['robust_accuracy']:.3f}")
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return {**cfg.to_dict(), "n_points": int(x.shape[0]), "clean_accuracy": clean, "curve": curve,
            "max_linf": max_linf, "robust_flags": "".join("1" if r else "0" for r in robust.tolist())}
