"""Minimal-perturbation attacks, batched: Carlini-Wagner L2 with a per-point search over c, and DeepFool in
L2 and Linf. Each returns, per point, the smallest adversarial example it found (or the input where it found
none); the caller counts a point as fooled at budget eps only when that example is within eps.

torchattacks' CW runs one fixed c for the whole batch (no search: not minimal-norm), and its DeepFool takes
L2 steps only and one sample at a time; these follow the papers instead.
"""

from __future__ import annotations

import torch

from ..features import output_margin
from ._adapters import perturbation_size


def carlini_wagner_l2(model, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100, lr: float = 0.01,
                      c_init: float = 1.0, search_steps: int = 5, kappa: float = 0.0) -> torch.Tensor:
    """Carlini & Wagner's L2 attack (S&P 2017) with a binary search over c for every point.

    Minimises ``||x' - x||_2^2 + c * max(Z_y - max_{j != y} Z_j, -kappa)`` over ``x' = (tanh(w) + 1) / 2``
    (which keeps x' in [0, 1]) with Adam, ``steps`` steps per c. After each round a point that was fooled
    halves its c towards the last failure (c = (lo + hi) / 2), one that was not multiplies it by 10 until a
    success brackets it. Returns the smallest fooling example found over all rounds and steps (x where none).
    """
    x = x.detach()
    n = x.shape[0]
    best = x.clone()
    best_norm = torch.full((n,), float("inf"), device=x.device)
    c = torch.full((n,), float(c_init), device=x.device)
    lo = torch.zeros(n, device=x.device)
    hi = torch.full((n,), float("inf"), device=x.device)
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    for _ in range(search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            adv = (torch.tanh(w) + 1) / 2
            logits = model(adv)
            margin = output_margin(logits, y)
            dist = perturbation_size(adv - x, "L2")
            with torch.no_grad():  # the curve's own rule: fooled iff the argmax is not the label
                fooled = logits.argmax(1) != y
                better = fooled & (dist < best_norm)
                best[better] = adv.detach()[better]
                best_norm[better] = dist[better]
                success |= fooled
            loss = (dist ** 2 + c * margin.clamp_min(-kappa)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            hi = torch.where(success, torch.minimum(hi, c), hi)
            lo = torch.where(success, lo, torch.maximum(lo, c))
            c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
    return best


def deepfool(model, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, norm: str, steps: int = 50,
             overshoot: float = 0.02) -> torch.Tensor:
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016), multi-class, in L2 or Linf (the paper's l_p variant).

    At each step, for the linearised model, the closest class boundary is the one minimising
    ``|f_k - f_y| / ||grad f_k - grad f_y||_q`` (q = 2 for L2, q = 1 for Linf, the dual norm), and the step onto
    it is ``(|f_k - f_y| + 1e-4) / ||w||_2^2 * w`` (L2) or ``(|f_k - f_y| + 1e-4) / ||w||_1 * sign(w)`` (Linf).
    Steps accumulate; the iterate is ``clamp(x + (1 + overshoot) * r, 0, 1)``. A point stops at its first
    fooling iterate. Returns that iterate (x where none fooled within ``steps``).
    """
    x = x.detach()
    out = x.clone()
    r_total = torch.zeros_like(x)
    active = torch.arange(x.shape[0], device=x.device)
    for _ in range(steps + 1):
        if active.numel() == 0:
            break
        xa = (x[active] + (1 + overshoot) * r_total[active]).clamp(0, 1).requires_grad_(True)
        logits = model(xa)
        ya = y[active]
        fooled = logits.argmax(1) != ya
        if bool(fooled.any()):
            out[active[fooled]] = xa.detach()[fooled]
        keep = ~fooled
        if not bool(keep.any()):
            break
        grads = []
        for k in range(num_classes):  # one backward per class: the rows of the Jacobian
            (g,) = torch.autograd.grad(logits[:, k].sum(), xa, retain_graph=k < num_classes - 1)
            grads.append(g)
        grad = torch.stack(grads, 1)[keep].flatten(2)  # (B, C, F)
        f = logits.detach()[keep]
        yk = ya[keep]
        w = grad - grad.gather(1, yk.view(-1, 1, 1).expand(-1, 1, grad.shape[2]))
        fdiff = (f - f.gather(1, yk[:, None])).abs()
        wnorm = w.norm(dim=2) if norm == "L2" else w.abs().sum(2)
        dist = fdiff / (wnorm + 1e-12)
        dist.scatter_(1, yk[:, None], float("inf"))
        best = dist.argmin(1)
        idx = torch.arange(best.numel(), device=x.device)
        w_l, f_l, n_l = w[idx, best], fdiff[idx, best], wnorm[idx, best]
        if norm == "L2":
            r = (f_l + 1e-4)[:, None] / (n_l[:, None] ** 2 + 1e-12) * w_l
        else:
            r = (f_l + 1e-4)[:, None] / (n_l[:, None] + 1e-12) * w_l.sign()
        todo = active[keep]
        r_total[todo] += r.view(-1, *x.shape[1:])
        active = todo
    return out
