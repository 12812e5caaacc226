"""Projected gradient descent that drops each point from the batch as soon as it is fooled.

The same iterates as ``torchattacks.PGD`` / ``torchattacks.PGDL2`` from the same start (same step and
projection; the loss of a point does not depend on the other points of its batch), evaluated on fewer points.
A point counts as fooled if any iterate fools it (AutoAttack's convention); its first adversarial iterate is
kept. ``tests/test_attacks.py`` checks the flags against torchattacks' own loop.

Random starts: :func:`random_start` draws for a batch from one generator (adversarial training uses it);
:func:`point_start` draws each point's start from its position and the job's facts (``_seeding``), which is
what ``robustness_curve`` uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._seeding import CHUNK, point_noise


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A start in the eps-ball, drawn for all points in input order from ``generator``."""
    if norm == "Linf":
        delta = torch.empty(x.shape, device="cpu").uniform_(-eps, eps, generator=generator).to(x.device)
    else:  # as torchattacks.PGDL2: a Gaussian direction, radius uniform in [0, eps]
        delta = torch.empty(x.shape, device="cpu").normal_(generator=generator)
        n = _flat_norm(delta)
        r = torch.empty(n.shape).uniform_(0, 1, generator=generator)
        delta = (delta / n * r * eps).to(x.device)
    return torch.clamp(x + delta, 0, 1)


def point_start(x: torch.Tensor, positions: torch.Tensor, eps: float, norm: str, facts: dict) -> torch.Tensor:
    """Random starts in the eps-ball for the points ``x`` (B, ...) at ``positions`` (B,) of the evaluation set,
    each a function of its position and ``facts`` only (``_seeding.point_noise``): Linf uniform in the cube
    (``-eps + 2 eps u``), L2 as torchattacks.PGDL2 (a Gaussian direction, radius uniform in [0, eps]); clamped
    to [0, 1]."""
    shape = tuple(x.shape[1:])
    if norm == "Linf":
        (u,) = point_noise(facts, positions, lambda g: (torch.rand((CHUNK, *shape), generator=g),))
        delta = (u * 2 - 1) * eps
    else:
        d, r = point_noise(facts, positions, lambda g: (torch.randn((CHUNK, *shape), generator=g),
                                                         torch.rand(CHUNK, generator=g)))
        delta = d / _flat_norm(d) * r.view(-1, *([1] * len(shape))) * eps
    return torch.clamp(x + delta.to(device=x.device, dtype=x.dtype), 0, 1)


def pgd(model, x, y, *, eps: float, norm: str, steps: int, alpha: float, start: torch.Tensor | None = None):
    """PGD on inputs ``x`` (N, ...) in [0, 1] with labels ``y`` (N,); returns ``(x_adv, fooled)``.

    ``eps`` and ``alpha`` (step size) in the norm ``norm`` ("Linf" or "L2"); ``steps`` gradient steps of the
    cross-entropy; ``start``: the first iterate (default ``x``). ``fooled[i]``: some iterate was misclassified
    (``argmax model(x_adv) != y``); ``x_adv[i]`` is the first such iterate, else the last. Inputs are cast to
    the model's dtype and labels to int64.
    """
    from ._adapters import as_inputs

    x, y = as_inputs(model, x, y, who="pgd")
    adv_out = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    idx = torch.arange(x.shape[0], device=x.device)
    adv = (x if start is None else start.to(x.dtype)).clone()
    xs, ys = x, y
    for t in range(steps + 1):
        adv.requires_grad_(True)
        logits = model(adv)
        wrong = logits.argmax(1) != ys
        if bool(wrong.any()):
            adv_out[idx[wrong]] = adv.detach()[wrong]
            fooled[idx[wrong]] = True
        keep = ~wrong
        if t == steps or not bool(keep.any()):
            adv_out[idx[keep]] = adv.detach()[keep]
            break
        loss = F.cross_entropy(logits[keep], ys[keep], reduction="sum")
        grad = torch.autograd.grad(loss, adv)[0][keep]
        adv, xs, ys, idx = adv.detach()[keep], xs[keep], ys[keep], idx[keep]
        if norm == "Linf":
            adv = adv + alpha * grad.sign()
            adv = torch.clamp(xs + torch.clamp(adv - xs, -eps, eps), 0, 1)
        else:
            adv = adv + alpha * grad / (_flat_norm(grad) + 1e-10)
            delta = adv - xs
            delta = delta * torch.clamp(eps / _flat_norm(delta), max=1.0)
            adv = torch.clamp(xs + delta, 0, 1)
    return adv_out, fooled
