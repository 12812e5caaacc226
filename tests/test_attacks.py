import numpy as np
import pytest
import torch
from torch import nn

from ncbench._errors import InputError, UnknownNameError
from ncbench.attacks import AttackConfig, robustness_curve


def test_eps_zero_is_clean_accuracy_and_curve_never_rises(digits_model, digits):
    cfg = AttackConfig(eps=(0.0, 0.05, 0.1, 0.3), steps=10)
    out = robustness_curve(digits_model, digits.x_test, digits.y_test, cfg, progress=False)
    with torch.no_grad():
        clean = float((digits_model(digits.x_test).argmax(1) == digits.y_test).float().mean())
    curve = [row["robust_accuracy"] for row in out["curve"]]
    assert out["clean_accuracy"] == clean == curve[0]
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[-1] < clean - 0.2  # the attack does bite
    assert out["max_linf"] <= 0.3 + 1e-6
    assert len(out["robust_flags"]) == digits.x_test.shape[0]
    assert out["robust_flags"].count("1") == round(curve[-1] * digits.x_test.shape[0])
    assert not digits_model.training and all(p.requires_grad for p in digits_model.parameters())


class Linear2D(nn.Module):
    """Two logits +-(w.x + b): class 1 iff w.x + b > 0."""

    def __init__(self, w, b):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor(np.asarray(w)[None], dtype=torch.float32))
            self.lin.bias.fill_(b)

    def forward(self, x):
        s = self.lin(x.flatten(1))
        return torch.cat([-s, s], dim=1)


@pytest.mark.parametrize("eps", [0.02, 0.05, 0.1])
def test_linear_model_gives_the_analytic_linf_robust_accuracy(eps):
    rng = np.random.default_rng(0)
    w, b = np.array([1.0, -2.0]), 0.3
    x = rng.uniform(0, 1, size=(2000, 2))
    y = (x @ w + b > 0).astype(np.int64)
    # the worst case in the Linf ball intersected with the [0,1] box moves each coordinate against the margin
    direction = np.where(y[:, None] == 1, -np.sign(w), np.sign(w))
    x_worst = np.clip(x + eps * direction, 0, 1)
    analytic = np.mean((x_worst @ w + b > 0).astype(np.int64) == y)
    model = Linear2D(w, b)
    out = robustness_curve(model, torch.tensor(x, dtype=torch.float32), torch.tensor(y),
                           AttackConfig(eps=(eps,), steps=20), progress=False)
    assert out["curve"][0]["robust_accuracy"] == pytest.approx(analytic, abs=2 / 2000)


def test_bad_attack_input(digits_model, digits):
    with pytest.raises(InputError, match=r"eps must be in \[0, 1\] \(inputs are scaled to \[0,1\]\); got 8"):
        AttackConfig(eps=(8,))
    with pytest.raises(InputError, match="eps must be in"):
        AttackConfig(eps=(-0.1,))
    with pytest.raises(InputError, match="norm must be one of"):
        AttackConfig(norm="L3")
    with pytest.raises(UnknownNameError, match="unknown attack 'pdg'; did you mean 'pgd'"):
        AttackConfig(name="pdg")
    with pytest.raises(InputError, match=r"inputs must lie in \[0, 1\]"):
        robustness_curve(digits_model, digits.x_test * 2, digits.y_test, AttackConfig(), progress=False)
