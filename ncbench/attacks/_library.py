"""The registered attacks (AutoAttack and ``apgd`` in ``_autoattack``). Each factory returns
``attack(x, y, idx) -> (x_adv, info)`` for one eps, and is registered with the settings it uses (its identity)
and a label that says what ran."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._adapters import As4D, as_inputs, perturbation_size, to_4d
from ._config import AttackConfig, register_attack
from ._minnorm import carlini_wagner_l2, deepfool
from ._pgd import pgd, point_start
from ._seeding import attack_facts


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
def _pgd(model, eps, cfg: AttackConfig, num_classes, job, points):
    """PGD (Madry et al.) in Linf or L2, with early dropping of fooled points; ``restarts`` random restarts.

    Restart r of a point starts from noise drawn for its position from the job's seed, PGD's settings (not the
    number of restarts: a run with 5 restarts begins with the run with 1), the budget and r
    (``_seeding``): the same start whatever its batch, the grid or ``n_points``."""
    alpha = cfg.alpha_factor * eps / cfg.steps
    settings = {k: v for k, v in cfg.own_params().items() if k != "restarts"}

    def attack(x, y, idx):
        adv, fooled = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for restart in range(cfg.restarts):
            todo = (~fooled).nonzero().flatten()
            if todo.numel() == 0:
                break
            start = None
            if cfg.random_start:
                facts = attack_facts(job.seed, "pgd", cfg.norm, eps, settings, restart=restart)
                start = point_start(x[todo], idx[todo], eps, cfg.norm, facts)
            a, f = pgd(model, x[todo], y[todo], eps=eps, norm=cfg.norm, steps=cfg.steps, alpha=alpha, start=start)
            keep = f | ~fooled[todo]  # a restart's last iterate replaces only an unsuccessful earlier one
            adv[todo[keep]] = a[keep]
            fooled[todo[f]] = True
        return adv, {}

    return attack


@register_attack("fgsm", norms=("Linf",), describe=lambda cfg: "FGSM-Linf (one signed-gradient step of size eps)")
def _fgsm(model, eps, cfg, num_classes, job, points):
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
def _cw(model, eps, cfg: AttackConfig, num_classes, job, points):
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
def _deepfool(model, eps, cfg: AttackConfig, num_classes, job, points):
    """DeepFool with steps in the attack's own norm (Linf steps under Linf): the examples it finds (the curve
    counts a point at eps when its example is within eps)."""

    def attack(x, y, idx):
        return deepfool(model, x, y, num_classes, norm=cfg.norm, steps=cfg.deepfool_steps,
                        overshoot=cfg.deepfool_overshoot), {}

    return attack


def min_perturbation_fab(model, x, y, norm: str, num_classes: int, seed: int = 0):
    """Norms of the smallest adversarial perturbations untargeted FAB finds (100 steps), per point; inf where
    it finds none. FAB minimises the norm, so this is a margin measure in input space. Inputs ``x`` (N, ...) in
    [0, 1] are cast to the model's dtype and labels ``y`` (N,) to int64; torch's global random state is restored
    after (FAB seeds it)."""
    import torchattacks

    from ._seeding import preserved_global_rng

    x, y = as_inputs(model, x, y, who="min_perturbation_fab")

    big = 1.0 if norm == "Linf" else math.sqrt(float(x[0].numel()))
    run = _ta_wrap(model, x.shape)
    with preserved_global_rng(x.device):
        adv = run(torchattacks.FAB, norm=norm, eps=big, steps=100, n_restarts=1, multi_targeted=False,
                  n_classes=min(10, num_classes), seed=seed)(x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    size = perturbation_size(adv - x, norm)
    return torch.where(fooled, size, torch.full_like(size, float("inf")))
