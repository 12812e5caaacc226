"""The registered attacks. Each factory returns ``attack(x, y) -> (x_adv, info)`` for one eps."""

from __future__ import annotations

import torch
from torch import nn

from ._adapters import As4D, to_4d
from ._config import AttackConfig, register_attack
from ._pgd import pgd, random_start


def _ta_wrap(model: nn.Module, x_shape):
    """torchattacks wants (N, C, H, W): wrap the model, reshape inputs and outputs around each call."""
    # eval mode: torchattacks restores the wrapper's mode after each call, recursively into the model
    wrapped = As4D(model, tuple(x_shape[1:])).eval()

    def run(atk_cls, **kw):
        atk = atk_cls(wrapped, **kw)
        return lambda x, y: atk(to_4d(x), y).reshape(x.shape)

    return run


@register_attack("pgd")
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


@register_attack("fgsm", norms=("Linf",))
def _fgsm(model, eps, cfg, num_classes, generator, points):
    import torchattacks

    def attack(x, y, idx):
        return _ta_wrap(model, x.shape)(torchattacks.FGSM, eps=eps)(x, y), {}

    return attack


@register_attack("cw", norms=("L2",))
def _cw(model, eps, cfg, num_classes, generator, points):
    """Carlini-Wagner L2 (minimal-norm); an example counts only if its L2 norm is within eps."""
    import torchattacks

    def attack(x, y, idx):
        adv = _ta_wrap(model, x.shape)(torchattacks.CW, c=cfg.cw_c, kappa=0, steps=cfg.cw_steps, lr=cfg.cw_lr)(x, y)
        too_far = (adv - x).flatten(1).norm(dim=1) > eps
        adv[too_far] = x[too_far]
        return adv, {}

    return attack


@register_attack("deepfool")
def _deepfool(model, eps, cfg, num_classes, generator, points):
    """DeepFool (torchattacks, L2 steps, per-sample): an example counts only if within eps in the norm."""
    import torchattacks

    def attack(x, y, idx):
        adv = _ta_wrap(model, x.shape)(torchattacks.DeepFool, steps=50, overshoot=0.02)(x, y)
        d = (adv - x).flatten(1)
        size = d.abs().amax(1) if cfg.norm == "Linf" else d.norm(dim=1)
        too_far = size > eps
        adv[too_far] = x[too_far]
        return adv, {}

    return attack


def autoattack_components(model, eps, cfg: AttackConfig, num_classes: int, x_shape, seed: int = 0):
    """AutoAttack "standard" (Croce & Hein 2020) as (name, attack) pairs, in the reference's order.

    APGD-CE (100 iterations, 1 restart); APGD-T with the targeted DLR loss (100 iterations, the 9 most likely
    wrong classes, or C-1 when fewer); FAB-T (the same targets, 100 iterations); Square (5000 queries,
    p_init 0.8, 1 restart). The targeted DLR loss needs C >= 4: with fewer classes APGD-T is left out.
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
    parts.append(("square", run(torchattacks.Square, norm=cfg.norm, eps=eps, n_queries=cfg.square_queries,
                                n_restarts=1, p_init=0.8, resc_schedule=False, seed=seed)))
    return parts


@register_attack("autoattack")
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

    big = 1.0 if norm == "Linf" else float(x[0].numel()) ** 0.5
    run = _ta_wrap(model, x.shape)
    adv = run(torchattacks.FAB, norm=norm, eps=big, steps=100, n_restarts=1, multi_targeted=False,
              n_classes=min(10, num_classes), seed=seed)(x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    return torch.where(fooled, size, torch.full_like(size, float("inf")))
