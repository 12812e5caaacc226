"""Training-time adversaries: the inner maximisation of adversarial training, and the robust training accuracy
measured after it.

Inputs are in [0, 1] and every example stays there (clamped). The random starts come from
:func:`ncbench.attacks._pgd.random_start` and the final measurement runs :func:`ncbench.attacks._pgd.pgd`, the
same batched code that evaluates models; each function draws its randomness from the ``generator`` it is given
(on the CPU, in input order), so a training run repeats exactly on one machine.

- :func:`pgd_at_examples`: PGD adversarial training (Madry et al., ICLR 2018): a uniform random start in the
  eps-ball, ``steps`` ascent steps on the training loss (signed for Linf; for L2 along the gradient scaled to
  unit norm), each followed by projection onto the ball and onto [0, 1].
- FGSM with a random start (Wong, Rice & Kolter, ICLR 2020, ``locuslab/fast_adversarial``): the same with one
  step of ``1.25 * eps`` (``alpha = 10/255`` at ``eps = 8/255``); after the step the perturbation is clipped to
  [-eps, eps] and the input to [0, 1], as their code does. Defined for Linf only.
- :func:`trades_examples` and :func:`trades_loss`: TRADES (Zhang et al., ICML 2019, ``yaodongyu/TRADES``):
  the inner maximisation of KL(f(x) || f(x')) from ``x + 0.001 * N(0, I)``, and the loss
  ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``.

The caller chooses the model's mode, as the authors' code does: PGD-AT and FGSM-RS generate their examples in
train mode (BatchNorm on batch statistics, as Madry et al.'s and Wong et al.'s code), TRADES in eval mode.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..features import InModelFormat  # noqa: F401  (re-exported: the wrapper adversarial training runs through)
from ._pgd import _flat_norm, pgd, random_start

#: FGSM-RS's step as a multiple of eps (Wong, Rice & Kolter 2020: alpha = 10/255 at eps = 8/255)
FGSM_RS_STEP = 1.25
#: the default PGD-AT / TRADES step as a multiple of eps / steps (2/255 at 8/255 with 10 steps, as Rice et al.
#: 2020; TRADES' CIFAR-10 setting, 0.007 at 0.031 with 10 steps, is 2.26)
PGD_STEP_FACTOR = 2.5
#: the standard deviation of TRADES' starting noise (Zhang et al. 2019's code)
TRADES_START_STD = 0.001


def project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``adv`` projected onto the ``norm`` ball of radius ``eps`` around ``x``, then clamped to [0, 1].

    Shapes (N, ...). Linf: each coordinate of ``adv - x`` clipped to [-eps, eps]; L2: ``adv - x`` scaled down
    to norm eps where it is longer (per point).
    """
    delta = adv - x
    if norm == "Linf":
        delta = torch.clamp(delta, -eps, eps)
    else:
        delta = delta * torch.clamp(eps / (_flat_norm(delta) + 1e-12), max=1.0)
    return torch.clamp(x + delta, 0, 1)


def _ascent(grad: torch.Tensor, step: float, norm: str) -> torch.Tensor:
    """One ascent step of length ``step``: ``step * sign(grad)`` (Linf) or ``step * grad / ||grad||_2`` (L2)."""
    if norm == "Linf":
        return step * grad.sign()
    return step * grad / (_flat_norm(grad) + 1e-12)


def pgd_at_examples(model: Callable, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int,
                    step_size: float, generator: torch.Generator,
                    loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
    """Adversarial examples of PGD adversarial training (Madry et al. 2018); FGSM-RS with ``steps=1`` and
    ``step_size = 1.25 * eps``.

    Parameters
    ----------
    model : nn.Module or callable
        Maps inputs (N, ...) to logits (N, C); used in the mode it is in.
    x, y : tensors (N, ...) in [0, 1] and (N,) int64 labels.
    eps, norm : the ball (``"Linf"`` or ``"L2"``), in the [0, 1] input scale.
    steps, step_size : number of ascent steps and the length of each (in input units).
    generator : CPU generator of the uniform random start.
    loss_fn : the loss ascended, ``loss_fn(logits, y)`` (default cross-entropy, as Madry et al.).

    Returns
    -------
    tensor (N, ...)
        Examples within eps of ``x`` and in [0, 1], detached. Only input gradients are computed (the
        parameters' are not), so the attack costs ``steps`` forward and input-backward passes.
    """
    adv = random_start(x, eps, norm, generator)
    for _ in range(steps):
        adv.requires_grad_(True)
        grad = torch.autograd.grad(loss_fn(model(adv).float(), y), adv)[0]
        adv = project(adv.detach() + _ascent(grad, step_size, norm), x, eps, norm)
    return adv.detach()


def _kl_sum(log_p_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """sum over points and classes of KL(p_clean || p_adv) (``nn.KLDivLoss(size_average=False)``)."""
    return F.kl_div(log_p_adv, p_clean, reduction="sum")


def trades_examples(model: Callable, x: torch.Tensor, *, eps: float, norm: str, steps: int, step_size: float,
                    generator: torch.Generator) -> torch.Tensor:
    """TRADES' inner maximisation (Zhang et al. 2019): ``max_{x' in ball} KL(f(x) || f(x'))``.

    Starts from ``x + 0.001 * N(0, I)``. Linf: ``steps`` signed steps of ``step_size``, each projected onto the
    ball and [0, 1]. L2 (the authors' ``l_2`` branch): steps of ``step_size`` along the gradient scaled to unit
    norm (a random direction where the gradient is zero), then clamp to [0, 1] and rescale to norm eps. Call
    it with the model in eval mode, as the authors' code does. ``f(x)`` is computed once (without gradient: it
    is the fixed target of the maximisation). Returns detached examples (N, ...) in [0, 1].
    """
    with torch.no_grad():
        p_clean = F.softmax(model(x).float(), dim=1)
    noise = torch.empty(x.shape, device="cpu").normal_(generator=generator).to(x.device) * TRADES_START_STD
    if norm == "Linf":
        adv = x + noise  # not clamped before the first step, as the authors' code
        for _ in range(steps):
            adv.requires_grad_(True)
            grad = torch.autograd.grad(_kl_sum(F.log_softmax(model(adv).float(), dim=1), p_clean), adv)[0]
            adv = project(adv.detach() + step_size * grad.sign(), x, eps, norm)
        return adv.detach()
    delta = noise
    for _ in range(steps):
        delta.requires_grad_(True)
        grad = torch.autograd.grad(_kl_sum(F.log_softmax(model(x + delta).float(), dim=1), p_clean), delta)[0]
        norms = _flat_norm(grad)
        zero = norms.flatten() == 0
        if bool(zero.any()):
            grad[zero] = torch.empty(grad[zero].shape, device="cpu").normal_(generator=generator).to(grad.device)
            norms = _flat_norm(grad)
        delta = delta.detach() + step_size * grad / norms
        delta = torch.clamp(x + delta, 0, 1) - x
        delta = delta * torch.clamp(eps / (_flat_norm(delta) + 1e-12), max=1.0)
    return torch.clamp(x + delta.detach(), 0, 1)


def trades_loss(model: Callable, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float) -> tuple:
    """TRADES' training loss ``CE(f(x), y) + beta * (1/N) * sum KL(f(x) || f(x_adv))``; call in train mode.

    As the authors' code: three forward passes (``x``, ``x_adv``, ``x`` again for the KL target, through
    which the gradient also flows), so BatchNorm's running statistics see the same batches as theirs. Returns
    ``(loss, clean_logits)``.
    """
    logits = model(x).float()
    loss_natural = F.cross_entropy(logits, y)
    log_p_adv = F.log_softmax(model(x_adv).float(), dim=1)
    p_clean = F.softmax(model(x).float(), dim=1)
    return loss_natural + beta * _kl_sum(log_p_adv, p_clean) / x.shape[0], logits


def pgd_robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str,
                        steps: int = 10, generator: torch.Generator, batch_size: int = 500) -> float:
    """Fraction of points (x, y) classified correctly and not fooled by PGD-``steps`` within eps (higher is
    more robust).

    PGD with a random start and step ``2.5 * eps / steps`` (Madry et al.'s ratio), run by
    :func:`ncbench.attacks._pgd.pgd` (a point counts as fooled if any iterate fools it). ``model`` is used in
    the mode it is in (call it in eval mode). ``x`` (N, ...) in [0, 1], ``y`` (N,) int64, on the model's
    device. Batches of ``batch_size`` points; the starts are drawn from ``generator`` in input order.
    """
    robust = 0
    alpha = PGD_STEP_FACTOR * eps / steps
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        with torch.no_grad():
            clean = model(xb).argmax(1) == yb
        _, fooled = pgd(model, xb, yb, eps=eps, norm=norm, steps=steps, alpha=alpha,
                        start=random_start(xb, eps, norm, generator))
        robust += int((clean & ~fooled).sum())
    return robust / x.shape[0]
