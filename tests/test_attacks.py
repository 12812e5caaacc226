import copy

import numpy as np
import pytest
import torch
from torch import nn

from ncbench._errors import InputError, UnknownNameError
from ncbench.attacks import ATTACKS, AttackConfig, register_attack, robustness_curve
from ncbench.attacks import _checks as C


def run(model, x, y, **kw):
    return robustness_curve(model, x, y, AttackConfig(**kw), progress=False)


def failed(out):
    return {c["check"].split("@")[0] for c in out["checks"] if not c["passed"]}


def test_eps_zero_is_clean_accuracy_curve_never_rises_and_checks_pass(digits_model, digits):
    out = run(digits_model, digits.x_test, digits.y_test, eps=(0.0, 0.05, 0.1, 0.3), steps=10)
    with torch.no_grad():
        clean = int((digits_model(digits.x_test).argmax(1) == digits.y_test).sum()) / len(digits.y_test)
    curve = [row["robust_accuracy"] for row in out["curve"]]
    assert out["clean_accuracy"] == clean == curve[0]
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[-1] < clean - 0.2  # the attack does bite
    assert out["reliable"], out["unreliable_reasons"]
    names = {c["check"] for c in out["checks"]}
    assert {"eval_mode", "deterministic", "outputs_are_logits", "nonzero_gradients", "bounds@0.3",
            "recomputed@0.3", "robust_le_clean", "monotone_in_eps"} <= names
    assert out["robust_flags"].count("1") == round(curve[-1] * len(digits.y_test))
    assert not digits_model.training and all(p.requires_grad for p in digits_model.parameters())


class Linear2D(nn.Module):
    """Two logits -+(w.x + b): class 1 iff w.x + b > 0."""

    def __init__(self, w, b):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor(np.asarray(w)[None], dtype=torch.float32))
            self.lin.bias.fill_(b)

    def forward(self, x):
        s = self.lin(x.flatten(1))
        return torch.cat([-s, s], dim=1)


@pytest.mark.parametrize("norm,dual", [("Linf", 1), ("L2", 2)])
@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_linear_model_gives_the_analytic_robust_accuracy(norm, dual, eps):
    # points away from the box edges, so the optimal perturbation (against w, of size eps) is never clipped
    rng = np.random.default_rng(0)
    w, b = np.array([1.0, -2.0]), 0.5
    x = rng.uniform(0.2, 0.8, size=(2000, 2))
    y = (x @ w + b > 0).astype(np.int64)
    # robust iff the margin exceeds eps times the dual norm of w (L1 for Linf, L2 for L2)
    analytic = np.mean(np.abs(x @ w + b) > eps * np.linalg.norm(w, ord=dual))
    out = run(Linear2D(w, b), torch.tensor(x, dtype=torch.float32), torch.tensor(y), norm=norm, eps=(eps,),
              steps=100, random_start=False)  # from x straight along -w: the exact optimum
    assert out["curve"][0]["robust_accuracy"] == pytest.approx(analytic, abs=3 / 2000)
    assert out["reliable"], out["unreliable_reasons"]


def test_ncbench_pgd_matches_torchattacks_point_by_point(digits_model, digits):
    """Same random starts and iterates as torchattacks.PGD in batches of 128; a point counts as fooled if any
    iterate fools it, which the wrapper below records for torchattacks too."""
    import torchattacks

    eps, steps, seed = 0.1, 10, 3
    x, y = digits.x_test, digits.y_test

    class Tracker(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m, self.ever = m, None

        def forward(self, a):
            out = self.m(a)
            self.ever |= out.argmax(1) != self.y
            return out

    tracker = Tracker(digits_model).eval()  # torchattacks restores the mode it found, recursively
    robust = []
    torch.manual_seed(seed)
    for i in range(0, len(y), 128):
        xb, yb = x[i:i + 128], y[i:i + 128]
        tracker.y, tracker.ever = yb, torch.zeros(len(yb), dtype=torch.bool)
        adv = torchattacks.PGD(tracker, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)(xb, yb)
        tracker(adv)
        with torch.no_grad():
            tracker.ever |= digits_model(xb).argmax(1) != yb
        robust.append(~tracker.ever)
    plain = "".join("1" if r else "0" for r in torch.cat(robust).tolist())
    ours = robustness_curve(digits_model, x, y, AttackConfig(eps=(eps,), steps=steps), seed=seed, progress=False)
    assert ours["robust_flags"] == plain


def test_restarts_only_make_the_attack_stronger(digits_model, digits):
    one = run(digits_model, digits.x_test, digits.y_test, eps=(0.08,), steps=5)
    five = run(digits_model, digits.x_test, digits.y_test, eps=(0.08,), steps=5, restarts=5)
    assert five["curve"][0]["robust_accuracy"] <= one["curve"][0]["robust_accuracy"]
    robust_one = np.array(list(one["robust_flags"])) == "1"
    robust_five = np.array(list(five["robust_flags"])) == "1"
    assert not (robust_five & ~robust_one).any()  # the first restart is the same attack


# ------------------------------------------------------------------------------- models that fail checks

class Randomised(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x) + 0.5 * torch.randn(x.shape[0], 10)


class Softmax(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x).softmax(1)


class StuckInTraining(nn.Module):
    """A model whose train() ignores eval(): its batch norm keeps using batch statistics."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def train(self, mode=True):
        return super().train(True)

    def forward(self, x):
        return self.m(x)


class Quantised(nn.Module):
    """Rounds inputs to 8 levels: the input gradient is zero almost everywhere (masked gradients)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(torch.round(x * 8) / 8)


@pytest.mark.parametrize("wrapper,check", [
    (Randomised, "deterministic"), (Softmax, "outputs_are_logits"), (StuckInTraining, "eval_mode"),
    (Quantised, "nonzero_gradients"),
])
def test_each_model_check_can_fail(wrapper, check, digits_model, digits):
    torch.manual_seed(0)
    # a copy: StuckInTraining switches the wrapped model to training mode for good
    out = run(wrapper(copy.deepcopy(digits_model)), digits.x_test[:200], digits.y_test[:200], eps=(0.0, 0.1), steps=5)
    assert check in failed(out)
    assert not out["reliable"]
    assert any(r.startswith(check) for r in out["unreliable_reasons"])


def test_stuck_in_training_model_also_fails_recomputation(digits_model, digits):
    out = run(StuckInTraining(copy.deepcopy(digits_model)), digits.x_test, digits.y_test, eps=(0.0, 0.1), steps=5)
    assert "recomputed" in failed(out)  # batch statistics make predictions depend on the batch


def test_square_beating_whitebox_flags_gradient_masking(digits_model, digits):
    out = run(Quantised(copy.deepcopy(digits_model)), digits.x_test[:100], digits.y_test[:100], name="autoattack",
              eps=(0.15,), square_queries=300)
    assert "square_after_whitebox" in failed(out)
    assert out["curve"][0]["fooled_by"]["square"] > 0


def test_an_attack_that_breaks_the_budget_is_caught(digits_model, digits):
    name = "broken-for-test"
    if name not in ATTACKS:
        @register_attack(name)
        def broken(model, eps, cfg, num_classes, generator, points):
            return lambda x, y, idx: (torch.clamp(x + 2 * eps, 0, 1), {})
    out = run(digits_model, digits.x_test[:100], digits.y_test[:100], name=name, eps=(0.0, 0.2))
    assert "bounds" in failed(out)


def test_curve_checks_fail_on_bad_curves():
    above, rising = C.check_curve(0.9, [0.9, 0.95, 0.5], [0.0, 0.1, 0.2])
    assert not above["passed"] and not rising["passed"]
    ok = C.check_curve(0.9, [0.9, 0.5, 0.5], [0.0, 0.1, 0.2])
    assert all(c["passed"] for c in ok)
    assert not C.check_recomputed(0.1, 10, 11, 100)["passed"]


def test_bf16_path_records_disagreement(digits_model, digits):
    out = run(digits_model, digits.x_test, digits.y_test, eps=(0.0, 0.05), steps=5, precision="bf16")
    assert 0.0 <= out["bf16_disagreement"] <= 0.05


def test_fab_margin_on_linear_model_matches_distance_to_boundary():
    rng = np.random.default_rng(1)
    w, b = np.array([1.0, -2.0]), 0.5
    x = rng.uniform(0.3, 0.7, size=(200, 2))
    y = (x @ w + b > 0).astype(np.int64)
    out = run(Linear2D(w, b), torch.tensor(x, dtype=torch.float32), torch.tensor(y), eps=(0.0,), margin="fab",
              margin_points=200)
    dist = np.abs(x @ w + b) / np.abs(w).sum()  # Linf distance to the decision boundary
    reachable = dist < np.minimum(x, 1 - x).min(1)  # the boundary point lies inside the box
    assert out["margin"]["n_found"] >= reachable.sum() - 2
    assert out["margin"]["median_min_perturbation"] == pytest.approx(np.median(dist), rel=0.05)


def test_bad_attack_input(digits_model, digits):
    with pytest.raises(InputError, match=r"eps must be in \[0, 1\] \(inputs are scaled to \[0,1\]\); got 8"):
        AttackConfig(eps=(8,))
    with pytest.raises(InputError, match="eps must be a number >= 0"):
        AttackConfig(eps=(-0.1,))
    with pytest.raises(InputError, match="norm must be one of"):
        AttackConfig(norm="L3")
    with pytest.raises(InputError, match="supports norm"):
        AttackConfig(name="fgsm", norm="L2")
    with pytest.raises(UnknownNameError, match="unknown attack 'pdg'; did you mean 'pgd'"):
        AttackConfig(name="pdg")
    with pytest.raises(InputError, match=r"inputs must lie in \[0, 1\]"):
        run(digits_model, digits.x_test * 2, digits.y_test)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Flatten(0))
    with pytest.raises(InputError, match=r"must return logits of shape \(N, C\)"):
        run(flat, digits.x_test, digits.y_test)


@pytest.mark.parametrize("name,norm", [("fgsm", "Linf"), ("cw", "L2"), ("deepfool", "L2"), ("pgd", "L2")])
def test_other_attacks_run_and_stay_in_budget(name, norm, digits_model, digits):
    eps = 0.1 if norm == "Linf" else 1.0
    out = run(digits_model, digits.x_test[:40], digits.y_test[:40], name=name, norm=norm, eps=(0.0, eps),
              cw_steps=20)
    assert out["curve"][1]["robust_accuracy"] <= out["clean_accuracy"]
    assert all(c["passed"] for c in out["checks"] if c["check"].startswith(("bounds", "recomputed")))


AA_EPS = 0.01  # on the default MNIST-1D CNN, robust accuracy is about 0.6 here: the attacks have work to do


@pytest.mark.slow
def test_autoattack_is_no_weaker_than_pgd_100_with_5_restarts(mnist1d_default):
    ds, model = mnist1d_default
    x, y = ds.x_test[:500], ds.y_test[:500]
    aa = run(model, x, y, name="autoattack", eps=(AA_EPS,))
    pgd = run(model, x, y, name="pgd", eps=(AA_EPS,), steps=100, restarts=5)
    assert aa["reliable"], aa["unreliable_reasons"]
    assert aa["curve"][0]["robust_accuracy"] <= pgd["curve"][0]["robust_accuracy"]
    assert aa["curve"][0]["robust_accuracy"] < aa["clean_accuracy"] - 0.2


@pytest.mark.slow
def test_autoattack_agrees_with_the_reference_implementation(mnist1d_default):
    pyautoattack = pytest.importorskip("pyautoattack")
    from ncbench.attacks._adapters import As4D, to_4d

    ds, model = mnist1d_default
    x, y = ds.x_test[:500], ds.y_test[:500]
    ours = run(model, x, y, name="autoattack", eps=(AA_EPS,))["curve"][0]["robust_accuracy"]
    ref = pyautoattack.AutoAttack(As4D(model, (1, 40)).eval(), eps=AA_EPS, norm="Linf", version="standard", seed=0)
    adv, _ = ref.run_standard_evaluation(to_4d(x), y, batch_size=500)
    with torch.no_grad():
        theirs = int((model(adv.reshape(x.shape)).argmax(1) == y).sum()) / len(y)
    assert abs(ours - theirs) <= 0.01
