"""The registered attacks. Each factory returns ``attack(x, y, idx) -> (x_adv, info)`` for one eps, and is
registered with the settings it uses (its identity) and a label that says what ran."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .._errors import InputError
from ._adapters import As4D, perturbation_size, to_4d
from ._config import AttackConfig, register_attack
from ._minnorm import carlini_wagner_l2, deepfool
from ._pgd import pgd, random_start


def _ta_wrap(model: nn.Module, x_shape):
    """torchattacks wants (N, C, H, W): wrap the model, reshape inputs and outputs around each call."""
    # eval mode: torchattacks restores the wrapper's mode after each call, recursively into the model
    wrapped = As4D(model, tuple(x_shape[1:])).eval()

    def run(atk_cls, **kw):
        atk = atk_cls(wrapped, **kw)
        return lambda x, y: atk(to_4d(x), y).reshape(x.shape)

    return run


def _describe_pgd(cfg: AttackConfig) -> str:
    start = "random start" if cfg.random_start else "no random start"
    restarts = f"{cfg.restarts} restart" + ("s" if cfg.restarts != 1 else "")
    return f"PGD-{cfg.norm}, {cfg.steps} steps, step {cfg.alpha_factor:g}·eps/{cfg.steps}, {start}, {restarts}"


@register_attack("pgd", params=("steps", "alpha_factor", "random_start", "restarts"), describe=_describe_pgd)
def _pgd(model, eps, cfg: AttackConfig, num_classes, generator, points):
    """PGD (Madry et al.) in Linf or L2, with early dropping of fooled points; ``restarts`` random restarts.

    Random starts are drawn for all ``points`` (the whole evaluation set, in order) at once, so a point's start
    does not depend on which points share its batch, and equals what torchattacks.PGD draws for it when run
    over every point in order from the same seed."""
    alpha = cfg.alpha_factor * eps / cfg.steps
    starts = [random_start(points, eps, cfg.norm, generator) if cfg.random_start else None
              for _ in range(cfg.restarts)]

    def attack(x, y, idx):
        adv, fooled = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for start in starts:
            todo = (~fooled).nonzero().flatten()
            if todo.numel() == 0:
                break
            a, f = pgd(model, x[todo], y[todo], eps=eps, norm=cfg.norm, steps=cfg.steps, alpha=alpha,
                       start=None if start is None else start[idx[todo]])
            keep = f | ~fooled[todo]  # a restart's last iterate replaces only an unsuccessful earlier one
            adv[todo[keep]] = a[keep]
            fooled[todo[f]] = True
        return adv, {}

    return attack


@register_attack("fgsm", norms=("Linf",), describe=lambda cfg: "FGSM-Linf (one signed-gradient step of size eps)")
def _fgsm(model, eps, cfg, num_classes, generator, points):
    import torchattacks

    def attack(x, y, idx):
        return _ta_wrap(model, x.shape)(torchattacks.FGSM, eps=eps)(x, y), {}

    return attack


def _describe_cw(cfg: AttackConfig) -> str:
    return (f"CW-L2 (Carlini-Wagner, minimal L2 norm: {cfg.cw_search_steps} binary-search steps over c from "
            f"{cfg.cw_c:g}, {cfg.cw_steps} Adam steps of lr {cfg.cw_lr:g} each; fooled when the smallest example "
            "found is within eps)")


@register_attack("cw", norms=("L2",), params=("cw_steps", "cw_lr", "cw_c", "cw_search_steps"), describe=_describe_cw,
                 minimal_norm=True)
def _cw(model, eps, cfg: AttackConfig, num_classes, generator, points):
    """Carlini-Wagner L2 with a per-point binary search over c: the smallest examples (the curve counts a
    point at eps when its example is within eps)."""

    def attack(x, y, idx):
        return carlini_wagner_l2(model, x, y, steps=cfg.cw_steps, lr=cfg.cw_lr, c_init=cfg.cw_c,
                                 search_steps=cfg.cw_search_steps), {}

    return attack


def _describe_deepfool(cfg: AttackConfig) -> str:
    return (f"DeepFool-{cfg.norm} ({'l-inf' if cfg.norm == 'Linf' else 'l2'} steps, up to {cfg.deepfool_steps} "
            f"steps, overshoot {cfg.deepfool_overshoot:g}; fooled when the example found is within eps)")


@register_attack("deepfool", params=("deepfool_steps", "deepfool_overshoot"), describe=_describe_deepfool,
                 minimal_norm=True)
def _deepfool(model, eps, cfg: AttackConfig, num_classes, generator, points):
    """DeepFool with steps in the attack's own norm (Linf steps under Linf): the examples it finds (the curve
    counts a point at eps when its example is within eps)."""

    def attack(x, y, idx):
        return deepfool(model, x, y, num_classes, norm=cfg.norm, steps=cfg.deepfool_steps,
                        overshoot=cfg.deepfool_overshoot), {}

    return attack


@functools.lru_cache(maxsize=None)
def capped_square():
    """torchattacks.Square with the reference's cap on the window side, ``s <= min(h, w)``.

    The reference (``autoattack/square.py``) caps the side of its square windows by the image's smaller
    side; torchattacks does not, so on a non-square image (MNIST-1D as 1x5x8) its L2 attack crashes on a
    window larger than the image and its Linf attack draws windows that stick out of it. Capping the
    schedule's p at ``m^2 c / n`` (m = min(h, w); under L2, whose window side is odd, the largest odd m) gives
    the reference's window sides; only for L2 on an even-sided image is the largest window m - 1, not m.
    Built on first use (torchattacks imports slowly).
    """
    import torchattacks

    class CappedSquare(torchattacks.Square):
        def attack_single_run(self, x, y):
            c, h, w = x.shape[1:]
            m = min(h, w)
            if self.norm == "L2" and m % 2 == 0:
                m -= 1
            if self.norm == "L2" and h < 5:  # its initial perturbation tiles the image with h // 5 windows
                raise InputError(f"L2 Square (in AutoAttack) needs images at least 5 pixels high, as the reference "
                                 f"does; inputs are arranged as {c}x{h}x{w}")
            self._p_cap = m * m / (h * w)
            return super().attack_single_run(x, y)

        def p_selection(self, it):
            return min(super().p_selection(it), self._p_cap)

    return CappedSquare


def autoattack_components(model, eps, cfg: AttackConfig, num_classes: int, x_shape, seed: int = 0):
    """AutoAttack "standard" (Croce & Hein 2020) as (name, attack) pairs, in the reference's order.

    APGD-CE (100 iterations, 1 restart); APGD-T with the targeted DLR loss (100 iterations, the 9 most likely
    wrong classes, or C-1 when fewer); FAB-T (the same targets, 100 iterations); Square (5000 queries,
    p_init 0.8, 1 restart, the reference's window cap). The targeted DLR loss needs C >= 4: with fewer
    classes APGD-T is left out.
    """
    import torchattacks

    run = _ta_wrap(model, x_shape)
    n_cls = min(10, num_classes)  # torchattacks targets n_classes - 1 classes
    parts = [("apgd-ce", run(torchattacks.APGD, norm=cfg.norm, eps=eps, steps=100, n_restarts=1, loss="ce",
                             rho=0.75, seed=seed))]
    if num_classes >= 4:
        parts.append(("apgd-t", run(torchattacks.APGDT, norm=cfg.norm, eps=eps, steps=100, n_restarts=1,
                                    n_classes=n_cls, rho=0.75, seed=seed)))
    parts.append(("fab-t", run(torchattacks.FAB, norm=cfg.norm, eps=eps, steps=100, n_restarts=1,
                               multi_targeted=True, n_classes=n_cls, seed=seed)))
    parts.append(("square", run(capped_square(), norm=cfg.norm, eps=eps, n_queries=cfg.square_queries,
                                n_restarts=1, p_init=0.8, resc_schedule=False, seed=seed)))
    return parts


def _describe_autoattack(cfg: AttackConfig) -> str:
    return (f"AutoAttack standard-{cfg.norm} (APGD-CE 100 it., APGD-T 100 it. x 9 targets, FAB-T 100 it. x 9 "
            f"targets, Square {cfg.square_queries} queries)")


@register_attack("autoattack", params=("square_queries", "batch_size"), describe=_describe_autoattack)
def _autoattack(model, eps, cfg: AttackConfig, num_classes, generator, points):
    """Each component runs only on the points still robust; the worst case per point is kept."""
    seed = int(torch.empty((), dtype=torch.int64).random_(0, 2**31, generator=generator))

    def attack(x, y, idx):
        adv = x.clone()
        robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        fooled_by = {}
        for name, comp in autoattack_components(model, eps, cfg, num_classes, x.shape, seed=seed):
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                fooled_by[name] = 0
                continue
            a = comp(x[todo], y[todo])
            with torch.no_grad():
                f = model(a).argmax(1) != y[todo]
            adv[todo[f]] = a[f]
            robust[todo[f]] = False
            fooled_by[name] = int(f.sum())
        return adv, {"fooled_by": fooled_by}

    return attack


def min_perturbation_fab(model, x, y, norm: str, num_classes: int, seed: int = 0):
    """Norms of the smallest adversarial perturbations untargeted FAB finds (100 steps), per point; inf where
    it finds none. FAB minimises the norm, so this is a margin measure in input space."""
    import torchattacks

    big = 1.0 if norm == "Linf" else math.sqrt(float(x[0].numel()))
    run = _ta_wrap(model, x.shape)
    adv = run(torchattacks.FAB, norm=norm, eps=big, steps=100, n_restarts=1, multi_targeted=False,
              n_classes=min(10, num_classes), seed=seed)(x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    size = perturbation_size(adv - x, norm)
    return torch.where(fooled, size, torch.full_like(size, float("inf")))
