import copy
import re
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


def _few_classes(digits, classes: int, split: str = "test"):
    x, y = (digits.x_test, digits.y_test) if split == "test" else (digits.x_train, digits.y_train)
    keep = y < classes
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def digits4(digits):
    """(x_test, y_test, model) on digits 0-3: AutoAttack with 3 targets costs a third of 9 (fast tests)."""
    from ncbench.models import create_model
    from ncbench.train import TrainConfig, train

    x, y = _few_classes(digits, 4, "train")
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=digits.input_shape, num_classes=4, width=32, depth=1)
    train(model, x, y, TrainConfig(epochs=5, batch_size=64), progress=False)
    return (*_few_classes(digits, 4), model.eval())


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
    """Same iterates as torchattacks.PGD in batches of 128 from the same (clean) start; a point counts as fooled
    if any iterate fools it, which the wrapper below records for torchattacks too. Catches a different step,
    projection or loss in ncbench's own loop (its random starts are tested on their own below)."""
    import torchattacks

    eps, steps = 0.1, 10
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
    for i in range(0, len(y), 128):
        xb, yb = x[i:i + 128], y[i:i + 128]
        tracker.y, tracker.ever = yb, torch.zeros(len(yb), dtype=torch.bool)
        adv = torchattacks.PGD(tracker, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=False)(xb, yb)
        tracker(adv)
        with torch.no_grad():
            tracker.ever |= digits_model(xb).argmax(1) != yb
        robust.append(~tracker.ever)
    plain = torch.cat(robust).tolist()
    ours = robustness_curve(digits_model, x, y, AttackConfig(eps=(eps,), steps=steps, random_start=False),
                            progress=False)
    assert robust_at(ours, eps) == plain
    assert sum(plain) < 0.8 * len(plain)  # the attack does something to compare


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
    from ncbench.attacks._autoattack import capped_square

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
    from ncbench.attacks._autoattack import capped_square

    atk = capped_square()(Unfoolable(), norm="L2", eps=0.5, n_queries=5)
    x = torch.rand(2, 1, 4, 8)
    atk.init_hyperparam(x)
    with pytest.raises(InputError, match="needs images at least 5 pixels high"):
        atk.attack_single_run(x, torch.zeros(2, dtype=torch.long))


def _schedule(it: int, p_init: float = 0.8) -> float:
    """The reference's p schedule for the first iterations (autoattack/square.py, p_selection)."""
    return p_init if it <= 10 else p_init / 2 if it <= 50 else p_init / 4


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.5)])
def test_autoattack_agrees_with_the_reference_and_beats_pgd_100x5(digits_model, digits, norm, eps):
    """ncbench's AutoAttack (standard) against the reference implementation (pyautoattack, seed 0) on the same
    model and points: within 1 point of 100 (catches a component dropped or run with the wrong settings), no
    weaker than PGD-100 with 5 restarts, and the budget bites.

    Sized for the suite (the digits MLP, 100 test points: about a minute per norm on 2 cores). Measured on 200
    points of the same model: Linf 0.05 ours 0.835, reference 0.835, PGD-100x5 0.835 (clean 0.975); L2 0.5 ours
    0.480, reference 0.480, PGD-100x5 0.490."""
    pyautoattack = pytest.importorskip("pyautoattack")

    x, y = digits.x_test[:100], digits.y_test[:100]
    ours = run(digits_model, x, y, name="autoattack", norm=norm, eps=(eps,))
    assert ours["reliable"], ours["unreliable_reasons"]
    pgd = run(digits_model, x, y, name="pgd", norm=norm, eps=(eps,), steps=100, restarts=5)
    ref = pyautoattack.AutoAttack(digits_model.eval(), eps=eps, norm=norm, version="standard", seed=0)
    adv, _ = ref.run_standard_evaluation(x, y, batch_size=100)
    with torch.no_grad():
        theirs = int((digits_model(adv).argmax(1) == y).sum()) / len(y)
    robust = ours["curve"][0]["robust_accuracy"]
    print(f"{norm} {eps}: clean {ours['clean_accuracy']:.3f} ours {robust:.3f} reference {theirs:.3f} "
          f"PGD-100x5 {pgd['curve'][0]['robust_accuracy']:.3f}")
    assert robust < ours["clean_accuracy"] - 0.1  # the budget bites
    assert robust <= pgd["curve"][0]["robust_accuracy"]
    assert abs(robust - theirs) <= 0.01 + 1e-9  # one point of 100 (0.84 - 0.83 is 0.0100000000000000089)


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


# ------------------------------------------------------------------------------- one job, one result

def _result_without_times(out):
    drop = {"wall_time_s"}
    return {k: ([{kk: vv for kk, vv in row.items() if kk != "wall_time_s"} for row in v] if k == "curve" else v)
            for k, v in out.items() if k not in drop}


BATCH_CASES = [
    ("pgd", "Linf", (0.0, 0.05, 0.1), {"steps": 10}),
    ("pgd", "L2", (0.0, 0.5, 1.0), {"steps": 10, "restarts": 2}),
    ("fgsm", "Linf", (0.0, 0.05, 0.1), {}),
    ("cw", "L2", (0.0, 0.5, 1.0), {"cw_steps": 30, "cw_search_steps": 3}),
    ("deepfool", "Linf", (0.0, 0.05, 0.1), {}),
    ("deepfool", "L2", (0.0, 0.5, 1.0), {}),
    ("apgd", "Linf", (0.0, 0.05), {"apgd_steps": 20, "apgd_targets": 3}),
    ("apgd", "L2", (0.0, 0.5), {"apgd_steps": 20, "apgd_targets": 3}),
]  # AutoAttack: test_autoattack_square_gives_every_point_the_same_result_at_two_batch_sizes


@pytest.mark.parametrize("name,norm,eps,kw", BATCH_CASES, ids=[f"{c[0]}-{c[1]}" for c in BATCH_CASES])
def test_each_attack_gives_every_point_the_same_result_at_two_batch_sizes(name, norm, eps, kw, digits_model, digits):
    """Batch size is not in the job's identity. Catches random starts drawn per batch (from a generator shared
    by the batches, or torchattacks' global stream), Square run on batch_size slices instead of fixed chunks,
    and a decision that depends on batch-mates."""
    x, y = digits.x_test, digits.y_test
    a = run(digits_model, x, y, name=name, norm=norm, eps=eps, batch_size=1000, **kw)
    b = run(digits_model, x, y, name=name, norm=norm, eps=eps, batch_size=37, **kw)
    assert a["first_fooled_eps"] == b["first_fooled_eps"]
    assert a["curve"][-1]["robust_accuracy"] < a["clean_accuracy"]  # the attack fooled some points
    assert a["reliable"] and b["reliable"], a["unreliable_reasons"] + b["unreliable_reasons"]


class TieJitter(nn.Module):
    """A linear model whose logits move by 1e-6 with the parity of the batch size, as batched kernels' rounding
    does: a point exactly on the boundary is class 1 in odd batches and class 0 in even ones."""

    def __init__(self, w, b):
        super().__init__()
        self.lin = Linear2D(w, b)

    def forward(self, x):
        z = self.lin(x)
        shift = torch.tensor([0.0, 1e-6 if x.shape[0] % 2 else -1e-6])
        return z + shift


def test_a_point_on_a_tie_is_decided_the_same_in_every_batch():
    """Points exactly on the decision boundary (logits tied) and 1e-7 off it, among clearly classified ones.
    Without the one decision rule (ambiguous points decided by their forward pass alone), their clean
    correctness and their fate under attack flip with the batch size's parity here."""
    rng = np.random.default_rng(4)
    w, b = np.array([1.0, -2.0]), 0.0
    x = rng.uniform(0.3, 0.7, size=(64, 2))
    x[:24, 1] = x[:24, 1] / 2
    x[:16, 0] = 2 * x[:16, 1]  # w.x + b = 0: a tie
    x[16:24, 0] = 2 * x[16:24, 1] + 1e-7
    x = torch.tensor(x, dtype=torch.float32)
    with torch.no_grad():
        y = (x @ torch.tensor([1.0, -2.0]) > 0).long()
    model = TieJitter(w, b)
    outs = [run(model, x, y, eps=(0.0, 0.01), steps=5, batch_size=bs) for bs in (9, 10, 63, 64)]
    assert all(o["first_fooled_eps"] == outs[0]["first_fooled_eps"] for o in outs)
    assert all(o["clean_accuracy"] == outs[0]["clean_accuracy"] for o in outs)
    # PGD's early stops, the count at each eps and the differently batched recount all decided alike
    assert all(o["reliable"] for o in outs), [o["unreliable_reasons"] for o in outs]


def test_the_same_job_twice_in_one_process_gives_the_same_result(digits_model, digits, digits4):
    """Catches a generator shared across calls or eps values (the leaderboard's curve and the grid's differed
    in 54 of 96 values), AutoAttack's seed drawn from a stream, and torchattacks' global seeding leaking."""
    x, y = digits.x_test[:200], digits.y_test[:200]
    job = dict(name="pgd", norm="L2", eps=(0.0, 0.5, 1.0), steps=5, restarts=2)
    first = robustness_curve(digits_model, x, y, AttackConfig(**job), seed=3, progress=False)
    x4, y4, model4 = digits4
    run(model4, x4[:20], y4[:20], name="autoattack", eps=(0.03,), square_queries=10)  # FAB-T, Square seed torch
    robustness_curve(digits_model, x, y, AttackConfig(**job), seed=4, progress=False)  # another job's draws
    torch.rand(1000)
    again = robustness_curve(digits_model, x, y, AttackConfig(**job), seed=3, progress=False)
    assert _result_without_times(again) == _result_without_times(first)
    other_seed = robustness_curve(digits_model, x, y, AttackConfig(**job), seed=4, progress=False)
    assert other_seed["first_fooled_eps"] != first["first_fooled_eps"]  # the seed does reach the starts


@pytest.mark.parametrize("name,kw", [("autoattack", {"square_queries": 10}), ("pgd", {"steps": 3}),
                                     ("apgd", {"apgd_steps": 5})])
def test_attacks_leave_torch_global_random_state_as_they_found_it(name, kw, digits4):
    """torchattacks' components call torch.random.manual_seed: without the restore, every random number drawn
    after an attack (the next training's shuffles) would depend on the attack having run."""
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    x, y, model = digits4
    run(model, x[:20], y[:20], name=name, eps=(0.0, 0.03), **kw)  # every component runs
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("name,norm,eps,below,kw", [
    ("pgd", "Linf", 0.05, 0.025, {"steps": 10}),
    ("pgd", "L2", 0.5, 0.25, {"steps": 10, "restarts": 2}),
    ("apgd", "Linf", 0.05, 0.025, {"apgd_steps": 10, "apgd_targets": 2}),
])
def test_a_point_result_depends_on_its_position_not_on_n_points_or_the_grid_below(name, norm, eps, below, kw,
                                                                                   digits_model, digits):
    """The same attack at eps on the first 200 points, with n_points 200 or 400, with or without a smaller
    budget below it: the same result for every point attacked at eps in both. Catches starts drawn for the
    whole evaluation set from one generator (they shift with n_points under L2's two draws and with every eps
    of the grid) and starts drawn per batch."""
    x, y = digits.x_test, digits.y_test
    alone = run(digits_model, x, y, name=name, norm=norm, eps=(0.0, eps), n_points=200, **kw)
    grid = run(digits_model, x, y, name=name, norm=norm, eps=(0.0, below, eps), n_points=400, **kw)
    attacked_in_both = [i for i in range(200) if alone["first_fooled_eps"][i] != 0.0
                        and grid["first_fooled_eps"][i] not in (0.0, below)]
    assert len(attacked_in_both) > 50
    assert [alone["first_fooled_eps"][i] for i in attacked_in_both] == \
        [grid["first_fooled_eps"][i] for i in attacked_in_both]
    assert any(alone["first_fooled_eps"][i] == eps for i in attacked_in_both)  # some were fooled at eps


def test_point_noise_is_a_function_of_the_position_and_the_facts():
    """Catches noise drawn only for the requested rows (a point's noise would depend on its batch-mates), a
    chunk index or fact left out of the seed."""
    from ncbench.attacks._seeding import CHUNK, point_noise

    def draw(g):
        return (torch.rand((CHUNK, 3), generator=g),)

    facts = {"seed": 0, "attack": "pgd", "eps": 0.1}
    (every,) = point_noise(facts, torch.arange(2 * CHUNK + 10), draw)
    (few,) = point_noise(facts, torch.tensor([300, 3, 2 * CHUNK + 9]), draw)
    assert torch.equal(few, every[[300, 3, 2 * CHUNK + 9]])
    assert not torch.equal(every[:CHUNK], every[CHUNK:2 * CHUNK])  # each chunk draws its own numbers
    (other,) = point_noise({**facts, "seed": 1}, torch.arange(5), draw)
    assert not torch.equal(other, every[:5])


def test_random_starts_fill_the_ball():
    """Catches a start that is not random (x itself), leaves the ball, or ignores the budget."""
    from ncbench.attacks._pgd import _flat_norm, point_start

    x = torch.full((512, 1, 40), 0.5)
    facts = {"seed": 0}
    lin = point_start(x, torch.arange(512), 0.1, "Linf", facts) - x
    assert lin.abs().max() <= 0.1 + 1e-7 and abs(float(lin.abs().mean()) - 0.05) < 0.005
    l2 = point_start(x, torch.arange(512), 0.3, "L2", facts) - x
    radius = _flat_norm(l2).flatten()
    assert radius.max() <= 0.3 + 1e-6 and abs(float(radius.mean()) - 0.15) < 0.02


def test_apgd_start_is_drawn_per_point_position(digits_model, digits):
    """AutoAttack's APGD-CE on points alone and inside a larger batch: the same adversarial example for the
    same position. Catches torchattacks' own start (torch.rand over the batch, after manual_seed), under which a
    point's start depends on its place in the batch."""
    from ncbench.attacks import autoattack_components

    x, y = digits.x_test[:40], digits.y_test[:40]
    cfg = AttackConfig(name="autoattack", eps=(0.05,))
    (_, apgd_ce), *_ = autoattack_components(digits_model, 0.05, cfg, 10, x.shape, seed=7, steps=10)
    whole = apgd_ce(x, y, torch.arange(40))
    part = apgd_ce(x[10:15], y[10:15], torch.arange(10, 15))
    assert torch.equal(whole[10:15], part)
    shifted = apgd_ce(x[10:15], y[10:15], torch.arange(0, 5))  # other positions, other starts
    assert not torch.equal(shifted, part)


def test_start_noise_refuses_draws_it_did_not_prepare():
    """If a torchattacks upgrade changed APGD's random start, the substitute must fail loudly, not silently draw
    from torch's global generator again."""
    from ncbench.attacks._autoattack import _StartNoise

    noise = _StartNoise()
    noise.set("rand", torch.zeros(2, 1, 5, 8))
    with pytest.raises(RuntimeError, match="random start changed"):
        noise.randn(torch.Size([2, 1, 5, 8]))
    noise.set("rand", torch.zeros(2, 1, 5, 8))
    with pytest.raises(RuntimeError, match="random start changed"):
        noise.rand(torch.Size([3, 1, 5, 8]))
    assert noise.zeros(2).shape == (2,)  # everything else is torch


def test_apgd_fools_exactly_what_autoattack_white_box_components_fool(digits4):
    """``apgd`` draws the same starts as AutoAttack's APGD-CE and APGD-T: its fooled points are those two
    components' (AutoAttack's FAB-T and Square only add). Catches different seeding or settings between them,
    which would make the measured gap to AutoAttack noise."""
    x, y, model = digits4
    aa = run(model, x, y, name="autoattack", eps=(0.08,), square_queries=20)
    ap = run(model, x, y, name="apgd", eps=(0.08,))
    fooled_aa = [f == 0.08 for f in aa["first_fooled_eps"]]
    fooled_ap = [f == 0.08 for f in ap["first_fooled_eps"]]
    by = aa["curve"][0]["fooled_by"]
    assert sum(fooled_ap) == by["apgd-ce"] + by["apgd-t"] > 0
    assert all(a for a, p in zip(fooled_aa, fooled_ap) if p)
    assert ap["label"].startswith("APGD-Linf: APGD-CE 100 it., then APGD-T 100 it. x 9 targets")
    assert ap["params"] == {"apgd_steps": 100, "apgd_targets": 9}


def test_autoattack_identity_no_longer_holds_the_batch_size():
    """Its components run on fixed chunks of positions: the batch size does not change the result, so two
    AutoAttack jobs differing only in batch size are one job."""
    a, b = AttackConfig(name="autoattack", batch_size=500), AttackConfig(name="autoattack", batch_size=1000)
    assert a.identity(0) == b.identity(0)
    assert a.own_params() == {"square_queries": 5000}


# ------------------------------------------------------------------------------- public API inputs

def _as(x, y, xdtype, ydtype):
    return x.to(xdtype), y.to(ydtype)


def test_robustness_curve_casts_inputs_and_labels(digits_model, digits):
    """float64 inputs crashed inside torch ("expected m1 and m2 to have the same dtype"), int32 labels too
    ("expected target dtype to be Long")."""
    x, y = digits.x_test[:80], digits.y_test[:80]
    base = run(digits_model, x, y, eps=(0.0, 0.05), steps=3)
    for xd, yd in [(torch.float64, torch.int32), (torch.float16, torch.uint8), (torch.float32, torch.int16)]:
        xx, yy = _as(x, y, xd, yd)
        out = run(digits_model, xx, yy, eps=(0.0, 0.05), steps=3)
        if xd != torch.float16:  # float16 rounds the inputs themselves
            assert out["first_fooled_eps"] == base["first_fooled_eps"]
    out = run(digits_model, x.numpy(), y.numpy().astype(np.int32), eps=(0.0, 0.05), steps=3)
    assert out["first_fooled_eps"] == base["first_fooled_eps"]


def test_robustness_curve_refuses_what_it_cannot_take_in_one_line(digits_model, digits):
    x, y = digits.x_test[:20], digits.y_test[:20]
    with pytest.raises(InputError, match=r"robustness_curve: inputs must be floating point .* got dtype torch.uint8"):
        run(digits_model, (x * 255).to(torch.uint8), y)
    with pytest.raises(InputError, match=r"robustness_curve: labels must be integer class indices; got dtype "
                                         r"torch.float32"):
        run(digits_model, x, y.float())
    with pytest.raises(InputError, match=r"labels must be one class index per input"):
        run(digits_model, x, torch.nn.functional.one_hot(y, 10))
    with pytest.raises(InputError, match=r"labels must be >= 0; got -1"):
        run(digits_model, x, y - 1 - y)


def test_autoattack_components_cast_inputs_and_labels(digits4):
    from ncbench.attacks import autoattack_components

    x, y, model = digits4
    x, y = x[:8], y[:8]
    cfg = AttackConfig(name="autoattack", eps=(0.05,), square_queries=10)
    components = autoattack_components(model, 0.05, cfg, 4, x.shape, steps=5)
    assert [name for name, _ in components] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    for name, comp in components:
        want = comp(x, y)
        got = comp(x.double(), y.int())
        assert got.dtype == torch.float32 and torch.equal(got, want), name
    with pytest.raises(InputError, match="AutoAttack component apgd-ce: labels must be integer"):
        autoattack_components(model, 0.05, cfg, 4, x.shape)[0][1](x, y.float())


def test_pgd_and_fab_margin_cast_inputs_and_labels(digits_model, digits):
    from ncbench.attacks import min_perturbation_fab, pgd

    x, y = digits.x_test[:30], digits.y_test[:30]
    a, fa = pgd(digits_model, x, y, eps=0.05, norm="Linf", steps=3, alpha=0.02)
    b, fb = pgd(digits_model, x.double(), y.int(), eps=0.05, norm="Linf", steps=3, alpha=0.02)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    s1 = min_perturbation_fab(digits_model, x, y, "Linf", 10)
    s2 = min_perturbation_fab(digits_model, x.double(), y.int(), "Linf", 10)
    assert torch.equal(s1, s2)
    with pytest.raises(InputError, match="pgd: labels must be integer class indices"):
        pgd(digits_model, x, y.float(), eps=0.05, norm="Linf", steps=3, alpha=0.02)


def test_a_float64_model_gets_float64_inputs(digits_model, digits):
    model = copy.deepcopy(digits_model).double()
    out = run(model, digits.x_test[:50], digits.y_test[:50].int(), eps=(0.0, 0.05), steps=3)
    assert out["reliable"], out["unreliable_reasons"]


# ------------------------------------------------------------------------------- settings and progress

@pytest.mark.parametrize("field,value,rule", [
    ("steps", 0, ">= 1"), ("restarts", 0, ">= 1"), ("batch_size", -5, ">= 1"), ("alpha_factor", 0.0, "> 0"),
    ("cw_steps", 0, ">= 1"), ("cw_search_steps", 0, ">= 1"), ("deepfool_steps", 0, ">= 1"),
    ("square_queries", 0, ">= 1"), ("check_points", 0, ">= 1"), ("margin_points", 0, ">= 1"),
    ("cw_c", 0.0, "> 0"), ("cw_lr", -1.0, "> 0"), ("deepfool_overshoot", -0.1, ">= 0"),
    ("apgd_steps", 0, ">= 1"), ("apgd_targets", 0, ">= 1"),
])
def test_each_bad_setting_is_named_with_its_value(field, value, rule):
    """--steps 0 said "steps, restarts and batch_size must be >= 1 and alpha_factor > 0", naming no culprit."""
    with pytest.raises(InputError, match=rf"^{field} must be {re.escape(rule)}; got {re.escape(repr(value))}$"):
        AttackConfig(**{field: value})


@pytest.mark.parametrize("name,kw,moves", [("autoattack", {"square_queries": 10}, 2 * 4), ("pgd", {"steps": 2}, 4 + 1),
                                           ("deepfool", {}, 4)])
def test_progress_counts_points_and_moves_within_a_budget(name, kw, moves, digits4, monkeypatch):
    """AutoAttack's bar sat at 0/1 for minutes: it counted eps values. Now it counts points and moves after
    every batch (every component of a composite attack), ending at its total."""
    from ncbench.attacks import _run

    seen = []

    class Recording(_run._Progress):
        def __init__(self, total, desc, enabled):
            super().__init__(total, desc, False)
            seen.append(self)
            self.total, self.updates = total, []

        def advance(self, n):
            super().advance(n)
            self.updates.append(self.done)

    monkeypatch.setattr(_run, "_Progress", Recording)
    x, y, model = digits4
    x, y = x[:100], y[:100]
    out = run(model, x, y, name=name, eps=(0.0, 0.1, 0.2), batch_size=25, **kw)
    (bar,) = seen
    n_correct = round(out["clean_accuracy"] * 100)
    budgets = 1 if name == "deepfool" else 2  # a minimal-norm attack searches once for every budget
    assert bar.total == n_correct * budgets and bar.done == pytest.approx(bar.total)
    # pgd, deepfool: 4 batches per search; AutoAttack: one chunk of positions, but a move per component
    assert len(bar.updates) >= moves


def test_autoattack_square_gives_every_point_the_same_result_at_two_batch_sizes(digits):
    """Square draws one window position per iteration for its whole batch, so its batch must not be the
    batch_size's. On a model with masked gradients Square does the fooling here. Catches Square run on
    batch_size slices (or seeded once per call) instead of fixed chunks of positions seeded by chunk index."""
    torch.manual_seed(0)
    x, y = _few_classes(digits, 3, "train")  # 3 classes: no APGD-T, FAB-T with 2 targets (cheap)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    opt = torch.optim.Adam(linear.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(linear(x), y).backward()
        opt.step()
    model = Quantised(linear.eval())
    x, y = x[:300], y[:300]  # two chunks of positions
    kw = dict(name="autoattack", eps=(0.15,), square_queries=30)
    a = run(model, x, y, batch_size=1000, **kw)
    b = run(model, x, y, batch_size=50, **kw)
    assert a["curve"][0]["fooled_by"]["square"] > 10
    assert a["first_fooled_eps"] == b["first_fooled_eps"]
