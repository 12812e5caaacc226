import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from ncbench._errors import InputError, UnknownNameError
from ncbench.attacks import ATTACKS, AttackConfig, register_attack, robust_at, robustness_curve
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
    assert curve[-1] < clean - 0.2  # the attack does bite
    assert out["reliable"], out["unreliable_reasons"]
    names = {c["check"] for c in out["checks"]}
    assert {"eval_mode", "deterministic", "outputs_are_logits", "nonzero_gradients", "bounds@0.3",
            "recomputed@0.3"} <= names
    # every grid eps's number is recomputable from the per-point smallest fooling eps
    for row in out["curve"]:
        assert sum(robust_at(out, row["eps"])) == round(row["robust_accuracy"] * len(digits.y_test))
    first = out["first_fooled_eps"]
    assert all(f is None or f in (0.0, 0.05, 0.1, 0.3) for f in first)
    assert sum(f == 0.0 for f in first) == round((1 - clean) * len(first))  # misclassified clean
    assert out["label"] == "PGD-Linf, 10 steps, step 2.5·eps/10, random start, 1 restart"
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
    plain = torch.cat(robust).tolist()
    ours = robustness_curve(digits_model, x, y, AttackConfig(eps=(eps,), steps=steps), seed=seed, progress=False)
    assert robust_at(ours, eps) == plain


def test_restarts_only_make_the_attack_stronger(digits_model, digits):
    one = run(digits_model, digits.x_test, digits.y_test, eps=(0.08,), steps=5)
    five = run(digits_model, digits.x_test, digits.y_test, eps=(0.08,), steps=5, restarts=5)
    assert five["curve"][0]["robust_accuracy"] <= one["curve"][0]["robust_accuracy"]
    robust_one = np.array(robust_at(one, 0.08))
    robust_five = np.array(robust_at(five, 0.08))
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


def test_recomputed_check_fails_on_a_miscount():
    assert not C.check_recomputed(0.1, 10, 11, 100)["passed"]
    assert C.check_recomputed(0.1, 10, 10, 100)["passed"]


def test_bf16_path_really_runs_in_bf16_and_records_disagreement(digits_model, digits):
    """Autocast that did nothing would give logits equal to fp32 ones; bf16 rounding changes them."""
    from ncbench.attacks._adapters import Autocast

    x = digits.x_test
    with torch.no_grad():
        fp32, bf16 = digits_model(x), Autocast(digits_model)(x)
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().max() > 1e-4
    out = run(digits_model, x, digits.y_test, eps=(0.0, 0.05), steps=5, precision="bf16")
    sample = slice(0, out["check_points"])
    expected = float((bf16[sample].argmax(1) != fp32[sample].argmax(1)).float().mean())
    assert out["bf16_disagreement"] == expected <= 0.05


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
    with pytest.raises(InputError, match="eps must be a finite number >= 0"):
        AttackConfig(eps=(-0.1,))
    with pytest.raises(InputError, match="a fraction such as 8/255"):
        AttackConfig(eps=("8/2x5",))
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


@pytest.mark.parametrize("name,norm", [("fgsm", "Linf"), ("cw", "L2"), ("deepfool", "L2"), ("deepfool", "Linf"),
                                       ("pgd", "L2")])
def test_other_attacks_bite_and_stay_in_budget(name, norm, digits_model, digits):
    """An attack that returned its input (or nothing within eps) would leave robust accuracy at clean."""
    eps = 0.1 if norm == "Linf" else 1.0
    out = run(digits_model, digits.x_test[:60], digits.y_test[:60], name=name, norm=norm, eps=(0.0, eps),
              cw_steps=30, cw_search_steps=3)
    assert out["curve"][1]["robust_accuracy"] < out["clean_accuracy"] - 0.2
    assert out["reliable"], out["unreliable_reasons"]
    assert name.lower() in out["label"].lower() and norm in out["label"]


@pytest.mark.parametrize("name,norm,dual", [("deepfool", "L2", 2), ("deepfool", "Linf", 1), ("cw", "L2", 2)])
def test_minimal_norm_attacks_find_the_boundary_of_a_linear_model(name, norm, dual):
    """On a linear model the smallest adversarial perturbation is the distance to the boundary: a point is
    fooled within eps iff that distance is below eps. DeepFool's overshoot (2 %) and CW's stopping just past
    the boundary leave a thin band of points at distance ~eps that count as robust."""
    rng = np.random.default_rng(2)
    w, b = np.array([1.0, -2.0]), 0.5
    x = rng.uniform(0.3, 0.7, size=(1000, 2))
    y = (x @ w + b > 0).astype(np.int64)
    eps = 0.1
    dist = np.abs(x @ w + b) / np.linalg.norm(w, ord=dual)
    out = run(Linear2D(w, b), torch.tensor(x, dtype=torch.float32), torch.tensor(y), name=name, norm=norm,
              eps=(eps,), cw_steps=200, cw_lr=0.01, cw_search_steps=6)
    robust = np.array(robust_at(out, eps))
    assert not (robust & (dist < 0.95 * eps)).any()  # everything clearly inside the ball is found
    assert robust[dist > eps].all()  # nothing outside the ball is counted
    assert robust.mean() == pytest.approx((dist > eps).mean(), abs=0.03)


def test_cw_searches_over_c():
    """With c fixed at a value too small to cross the boundary, plain CW finds nothing; the search raises c."""
    rng = np.random.default_rng(3)
    w, b = np.array([1.0, -2.0]), 0.5
    x = torch.tensor(rng.uniform(0.3, 0.7, size=(200, 2)), dtype=torch.float32)
    y = torch.tensor((x.numpy() @ w + b > 0).astype(np.int64))
    one_c = run(Linear2D(w, b), x, y, name="cw", norm="L2", eps=(0.5,), cw_c=1e-3, cw_search_steps=1)
    searched = run(Linear2D(w, b), x, y, name="cw", norm="L2", eps=(0.5,), cw_c=1e-3, cw_search_steps=5)
    assert one_c["curve"][0]["robust_accuracy"] > 0.9
    assert searched["curve"][0]["robust_accuracy"] < 0.1


class Conv1D(nn.Module):
    """A small 1-D CNN on (1, 40) signals: the input shape MNIST-1D has."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(160, 3))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("norm,eps", [("L2", 1.0), ("Linf", 0.2)])
def test_autoattack_runs_on_non_square_inputs(norm, eps):
    """MNIST-1D's (1, 40) is arranged as 1x5x8 for torchattacks; its L2 Square crashed on windows larger than
    5 (the reference caps them). Three classes also leave APGD-T out."""
    model = Conv1D().eval()
    x = torch.rand(30, 1, 40)
    with torch.no_grad():
        y = model(x).argmax(1)
    out = run(model, x, y, name="autoattack", norm=norm, eps=(eps,), square_queries=100)
    assert set(out["curve"][0]["fooled_by"]) == {"apgd-ce", "fab-t", "square"}
    assert all(c["passed"] for c in out["checks"] if c["check"].startswith("bounds"))


class Unfoolable(nn.Module):
    """Logits that always favour class 0 by a wide margin: Square runs every iteration."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3)
        out[:, 0] = 100.0
        return out


def reference_side(p: float, c: int, h: int, w: int, norm: str) -> int:
    """The window side of the reference implementation (autoattack/square.py), written out independently."""
    s = max(int(round(math.sqrt(p * c * h * w / c))), 1 if norm == "Linf" else 3)
    if norm == "L2" and s % 2 == 0:
        s += 1
    return min(s, min(h, w))


@pytest.mark.parametrize("norm,h,w", [("Linf", 5, 8), ("Linf", 4, 8), ("L2", 5, 8), ("L2", 6, 8), ("L2", 8, 8)])
def test_capped_square_uses_the_reference_window_sides(norm, h, w):
    """Runs CappedSquare's real loop and records the window side of every iteration from where it places its
    windows (random_int(0, h - s)); compares with the reference's rule. Uncapped torchattacks would ask for
    a side of 7 on a 5-pixel-high image here (and crash under L2)."""
    from ncbench.attacks._library import capped_square

    queries = 60  # the schedule's first three p levels: 0.8, 0.4, 0.2
    atk = capped_square()(Unfoolable(), norm=norm, eps=0.5, n_queries=queries, p_init=0.8, resc_schedule=False)
    highs = []

    def random_int(low=0, high=1, shape=[1]):
        highs.append(int(high))
        return torch.zeros(shape, dtype=torch.long)

    atk.random_int = random_int
    x = torch.rand(2, 1, h, w)
    atk.init_hyperparam(x)  # what perturb() does before its runs
    atk.attack_single_run(x, torch.zeros(2, dtype=torch.long))
    per_iteration = 2 if norm == "Linf" else 4  # vh, vw (and vh2, vw2 under L2) per iteration
    sides = [h - highs[i] for i in range(0, len(highs), per_iteration)]
    assert len(sides) == queries
    want = [reference_side(_schedule(it), 1, h, w, norm)
            for it in range(queries)]
    if norm == "L2" and min(h, w) % 2 == 0:
        # documented deviation: torchattacks' L2 windows are odd-sided, so the largest is m - 1, not m
        assert [min(r, min(h, w) - 1) for r in want] == sides
    else:
        assert sides == want
    assert max(sides) <= min(h, w)


def test_l2_square_refuses_images_under_5_pixels_high():
    """Its initial perturbation tiles the image with h // 5 windows (the reference's too): a clear error, not a
    ZeroDivisionError from inside torchattacks."""
    from ncbench.attacks._library import capped_square

    atk = capped_square()(Unfoolable(), norm="L2", eps=0.5, n_queries=5)
    x = torch.rand(2, 1, 4, 8)
    atk.init_hyperparam(x)
    with pytest.raises(InputError, match="needs images at least 5 pixels high"):
        atk.attack_single_run(x, torch.zeros(2, dtype=torch.long))


def _schedule(it: int, p_init: float = 0.8) -> float:
    """The reference's p schedule for the first iterations (autoattack/square.py, p_selection)."""
    return p_init if it <= 10 else p_init / 2 if it <= 50 else p_init / 4


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
@pytest.mark.parametrize("norm,eps", [("Linf", AA_EPS), ("L2", 0.1)])
def test_autoattack_agrees_with_the_reference_implementation(mnist1d_default, norm, eps):
    pyautoattack = pytest.importorskip("pyautoattack")
    from ncbench.attacks._adapters import As4D, to_4d

    ds, model = mnist1d_default
    x, y = ds.x_test[:500], ds.y_test[:500]
    ours = run(model, x, y, name="autoattack", norm=norm, eps=(eps,))
    assert ours["reliable"], ours["unreliable_reasons"]
    ref = pyautoattack.AutoAttack(As4D(model, (1, 40)).eval(), eps=eps, norm=norm, version="standard", seed=0)
    adv, _ = ref.run_standard_evaluation(to_4d(x), y, batch_size=500)
    with torch.no_grad():
        theirs = int((model(adv.reshape(x.shape)).argmax(1) == y).sum()) / len(y)
    assert ours["curve"][0]["robust_accuracy"] < ours["clean_accuracy"] - 0.1  # the budget bites
    assert abs(ours["curve"][0]["robust_accuracy"] - theirs) <= 0.01


def test_minimal_norm_attacks_search_once_and_threshold_per_eps(digits_model, digits, monkeypatch):
    """DeepFool's examples do not depend on eps: a grid runs it once, and the number at each eps is the number
    of that eps alone."""
    import ncbench.attacks._library as lib

    calls = []
    real = lib.deepfool
    monkeypatch.setattr(lib, "deepfool", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = digits.x_test[:80], digits.y_test[:80]
    grid = run(digits_model, x, y, name="deepfool", norm="L2", eps=(0.0, 0.5, 1.0, 2.0))
    assert len(calls) == 1  # one batch, one search, three budgets
    for eps in (0.5, 1.0, 2.0):
        alone = run(digits_model, x, y, name="deepfool", norm="L2", eps=(eps,))
        assert robust_at(grid, eps) == robust_at(alone, eps)
    assert grid["reliable"], grid["unreliable_reasons"]
