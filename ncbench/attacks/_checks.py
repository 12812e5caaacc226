"""Checks that make a robust accuracy trustworthy. Each returns ``{"check", "passed", "detail"}``.

A failed check marks the result unreliable (``reliable: false`` with the reasons) in the record; none is ever
skipped silently. The model checks follow AutoAttack's own (``autoattack/checks.py``): randomness, softmax
outputs, zero gradients, and Square beating the white-box attacks (a sign of gradient masking).
"""

from __future__ import annotations

import torch
from torch import nn

TOL_NORM = 1e-6


def _result(name: str, passed: bool, detail: str) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail}


def check_eval_mode(model: nn.Module) -> dict:
    training = [name or "(model)" for name, m in model.named_modules() if m.training]
    return _result("eval_mode", not training,
                   "every module in eval mode" if not training else
                   f"{len(training)} module(s) stay in training mode after model.eval(): {training[:5]} "
                   "(batch norm or dropout would change the function under attack)")


@torch.no_grad()
def check_deterministic(model: nn.Module, x: torch.Tensor) -> dict:
    a, b = model(x), model(x)
    diff = float((a - b).abs().max())
    ok = torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    return _result("deterministic", ok, f"two forwards of {x.shape[0]} inputs differ by at most {diff:.3g}" +
                   ("" if ok else ": the model is randomised; gradient attacks need EOT and the numbers vary"))


@torch.no_grad()
def check_logits(model: nn.Module, x: torch.Tensor) -> dict:
    out = model(x)
    probs = bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4)
    return _result("outputs_are_logits", not probs,
                   "outputs are not probability vectors" if not probs else
                   "every output row is non-negative and sums to 1: the model returns softmax probabilities, "
                   "not logits; cross-entropy attacks lose their gradient signal")


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Input gradient of the margin (true logit minus best other): zero means the attack gets no signal."""
    from ..features import output_margin

    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(output_margin(model(x), y).sum(), x)
    zero = int((grad.flatten(1).abs().sum(1) == 0).sum())
    return _result("nonzero_gradients", zero == 0,
                   f"all {x.shape[0]} sampled inputs have a nonzero gradient" if zero == 0 else
                   f"{zero} of {x.shape[0]} sampled inputs have an exactly zero input gradient "
                   "(gradient masking, e.g. quantised inputs): gradient-based attacks are unreliable here")


def check_bounds(eps: float, norm: str, max_size: float, lo: float, hi: float, n_nan: int) -> dict:
    ok = max_size <= eps + TOL_NORM and lo >= 0.0 and hi <= 1.0 and n_nan == 0
    return _result(f"bounds@{eps:g}", ok,
                   f"max ||x_adv - x||_{norm[1:]} = {max_size:.6g} (eps {eps:g}), x_adv in [{lo:.3g}, {hi:.3g}], "
                   f"{n_nan} NaN")


def check_recomputed(eps: float, claimed: int, recomputed: int, n: int) -> dict:
    return _result(f"recomputed@{eps:g}", claimed == recomputed,
                   f"robust points: attack says {claimed}, forwarding its adversarial inputs again gives "
                   f"{recomputed} (of {n})")


def check_square(eps: float, fooled_by: dict, n: int) -> dict | None:
    """Square (black-box) runs after the white-box attacks; if it still fools > 0.2 points in 100, the
    white-box gradients were probably masked."""
    if "square" not in fooled_by:
        return None
    extra = fooled_by["square"] / n
    return _result(f"square_after_whitebox@{eps:g}", extra <= 0.002,
                   f"Square fooled {fooled_by['square']} of {n} points the white-box attacks left robust "
                   f"({100 * extra:.2f} points)" + ("" if extra <= 0.002 else ": possible gradient masking"))
