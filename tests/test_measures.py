"""Generalization measures (ncbench.measures): each test names the wrong implementation it catches."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm
from torch import nn

from ncbench._errors import InputError
from ncbench.measures import (INIT_MEASURES, MEASURE_NAMES, conv_operator_norm, fold_network,
                              generalization_measures, path_norm)
from ncbench.measures._perturb import StackedRunner, _draws, error_rise_fn, log_bisection
from ncbench.models import Classifier, create_model

# ------------------------------------------------------------------------------------------------ fixtures


def _classifier(body: nn.Module, feature_dim: int, num_classes: int, mean=(0.3,), std=(0.5,)) -> Classifier:
    return Classifier(body, feature_dim, num_classes, mean, std).eval()


def _mlp(seed=0, d=12, h=16, h2=12, c=4) -> Classifier:
    """Linear -> ReLU -> Linear -> ReLU -> fc, no batch norm: rescaling a layer is a plain symmetry."""
    torch.manual_seed(seed)
    return _classifier(nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h2), nn.ReLU()), h2, c)


def _self_labelled(model, n=300, shape=(1, 12), seed=1):
    """Inputs in [0, 1] labelled by the model itself: training accuracy 1 and a positive margin. The fc bias is
    first shifted so that every class's mean logit is 0 (a random network often predicts one class everywhere,
    and then one draw of noise flips every point at once), and of 3n random inputs the n farthest from the
    decision boundary are kept (a random network's margins are small next to its logits' spread)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3 * n, *shape, generator=g)
    with torch.no_grad():
        model.fc.bias.sub_(model(x).mean(0))
        z = model(x)
        y = z.argmax(1)
        margin = z.gather(1, y[:, None])[:, 0] - z.scatter(1, y[:, None], float("-inf")).amax(1)
    keep = margin.argsort(descending=True)[:n].sort().values
    return x[keep], y[keep]


def _randomise_bn(model, seed=0):
    """Non-trivial running statistics and affine parameters, so that folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(0.2 + torch.rand(n, generator=g))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
    return model


FAST = dict(n_points=300, mc_draws=20)

# ------------------------------------------------------------------------------------------------ path norm


def test_path_norm_equals_closed_form_on_two_layer_relu_net():
    # Catches: |w| instead of w^2 (the l1 path norm), dropping the bias paths, evaluating the ReLUs with the
    # unsquared weights, and feeding the ones through the input normalisation (mean 0.3, std 0.5 here).
    torch.manual_seed(0)
    d, h, c = 5, 7, 3
    model = _classifier(nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU()), h, c)
    x, y = _self_labelled(model, shape=(1, d))
    W, b = model.body[1].weight.detach().double().numpy(), model.body[1].bias.detach().double().numpy()
    V, cb = model.fc.weight.detach().double().numpy(), model.fc.bias.detach().double().numpy()
    expected = float(((V ** 2) @ ((W ** 2).sum(1) + b ** 2)).sum() + (cb ** 2).sum())
    assert path_norm(fold_network(model, input_shape=(1, d))) == pytest.approx(expected, rel=1e-12)
    out = generalization_measures(model, x, y, only=["path_norm"])
    assert out["values"]["path_norm"] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------------ rescaling

INVARIANT = ("path_norm", "path_norm_over_margin", "log_prod_spec_over_margin", "log_sum_frob_over_margin",
             "inverse_margin", "pacbayes_mag_flatness", "mag_sharpness")
NOT_INVARIANT = ("pacbayes_flatness", "pacbayes_bound", "pacbayes_mag_bound", "dist_from_init")


def test_measures_invariant_to_relu_rescaling_are_and_the_others_are_not():
    # Rescaling one ReLU layer by a and the next by 1/a leaves the function unchanged. Catches, for the
    # invariant ones: spectral/Frobenius products or path norm computed with a non-homogeneous ingredient (e.g.
    # biases in the spectral norms), magnitude-aware noise or boxes that are not relative to |w| (absolute
    # noise), a margin from something other than the logits. For the others: an implementation that silently
    # normalises the weights (absolute noise made relative; distances measured after rescaling).
    model = _mlp()
    x, y = _self_labelled(model)
    init = _mlp(seed=7).state_dict()
    a = 3.0
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.body[1].weight.mul_(a)
        scaled.body[1].bias.mul_(a)
        scaled.body[3].weight.div_(a)
    assert torch.allclose(model(x), scaled(x), atol=1e-5)
    kw = dict(init_state=init, mag_eps=0.0, **FAST)
    v0 = generalization_measures(model, x, y, **kw)["values"]
    v1 = generalization_measures(scaled, x, y, **kw)["values"]
    for name in INVARIANT:
        assert v1[name] == pytest.approx(v0[name], rel=1e-5), name
    for name in NOT_INVARIANT:
        assert abs(v1[name] - v0[name]) > 0.05 * abs(v0[name]), name


# ------------------------------------------------------------------------------------------------ sigma search

def _linear_fixture(n=400, d=6, seed=3):
    """A 2-class linear classifier (the chain is fc alone) on points it classifies itself: its expected accuracy
    under Gaussian weight noise has a closed form."""
    torch.manual_seed(seed)
    model = _classifier(nn.Sequential(nn.Flatten()), d, 2, mean=(0.5,), std=(0.25,))
    x, y = _self_labelled(model, n=n, shape=(1, d), seed=seed)
    xn = ((x.reshape(n, d).double() - 0.5) / 0.25).numpy()
    W = model.fc.weight.detach().double().numpy()
    b = model.fc.bias.detach().double().numpy()
    yy = y.numpy()
    z = xn @ W.T + b
    margin = z[np.arange(n), yy] - z[np.arange(n), 1 - yy]
    return model, x, y, xn, W, yy, margin


def _expected_drop(std_w, std_b, xn, yy, margin):
    """1 - E[accuracy] when logit k gets noise of std std_w[k, j] on W[k, j] and std_b[k] on b[k], independent:
    the margin's noise is N(0, sum_j (s_yj^2 + s_oj^2) x_j^2 + s_by^2 + s_bo^2)."""
    n = len(yy)
    sw2 = std_w ** 2
    var = (xn ** 2 * (sw2[yy] + sw2[1 - yy])).sum(1) + std_b[yy] ** 2 + std_b[1 - yy] ** 2
    return 1.0 - float(norm.cdf(margin / np.sqrt(var)).mean()) if n else 0.0


def _drop_plain(s, fx):
    _, _, _, xn, W, yy, margin = fx
    return _expected_drop(np.full_like(W, s), np.full(2, s), xn, yy, margin)


def test_sigma_search_lands_within_tolerance_of_the_target_drop():
    # Catches: a search that stops outside the tolerance or on the wrong side; noise whose standard deviation is
    # not sigma (e.g. sigma^2, or sigma as the variance); a drop measured on something other than the
    # perturbed chain. The closed-form expected drop at the returned sigma' must be 0.1 up to the tolerance
    # plus the Monte Carlo error of 200 draws.
    fx = _linear_fixture()
    model, x, y = fx[:3]
    out = generalization_measures(model, x, y, only=["pacbayes_flatness"], n_points=400, mc_draws=200)
    info = out["info"]["sigma"]
    assert info["converged"] and abs(info["achieved"] - 0.1) <= 0.01
    s = info["value"]
    assert out["values"]["pacbayes_flatness"] == pytest.approx(1 / s ** 2)
    assert 0.07 <= _drop_plain(s, fx) <= 0.13
    assert _drop_plain(s ** 2, fx) < 0.05  # the reference's convention at our sigma' would barely move accuracy


def _reference_bisection_on(f, target=0.1, tol=0.01, upper=2.0, depth=15):
    lo, hi, x = 0.0, upper, upper / 2
    for _ in range(depth):
        x = (lo + hi) / 2
        d = f(x)
        if abs(d - target) < tol:
            break
        lo, hi = (lo, x) if d > target else (x, hi)
    return x


def test_reference_switch_reproduces_the_reference_sigma_on_a_closed_form_fixture():
    # The reference draws noise with standard deviation sigma^2 (torch.normal(0, sigma**2, ...)) and
    # sigma^2 w^2 + eps^2 (magnitude-aware), bisecting [0, 2] for 15 steps. Here its sigma is computed
    # independently: that bisection run on the closed-form expected drop. Catches: a switch that changes the
    # noise law but not the search (or the reverse), sqrt(sigma^2 w^2 + eps^2) instead of the reference's
    # sigma^2 w^2 + eps^2, and flatness/bounds not computed from the reference's sigma.
    fx = _linear_fixture()
    model, x, y, xn, W, yy, margin = fx
    eps = 1e-3
    ref_plain = _reference_bisection_on(lambda s: _drop_plain(s ** 2, fx))
    ref_mag = _reference_bisection_on(
        lambda s: _expected_drop(s ** 2 * W ** 2 + eps ** 2,
                                 s ** 2 * model.fc.bias.detach().double().numpy() ** 2 + eps ** 2, xn, yy, margin))
    init = {k: v + 0.1 for k, v in model.state_dict().items()}
    out = generalization_measures(model, x, y, init_state=init, reference_sigma=True, n_points=400, mc_draws=200,
                                  only=["pacbayes_flatness", "pacbayes_bound", "pacbayes_mag_flatness"])
    got, got_mag = out["info"]["sigma"]["value"], out["info"]["mag_sigma"]["value"]
    # the same dyadic grid as the reference, and the same midpoint up to a Monte Carlo flip of the last steps
    assert (got * 2 ** 15) == pytest.approx(round(got * 2 ** 15), abs=1e-9)
    assert got == pytest.approx(ref_plain, abs=2 * 2 ** -6)
    assert got_mag == pytest.approx(ref_mag, abs=2 * 2 ** -6)
    assert abs(_drop_plain(got ** 2, fx) - 0.1) <= 0.03
    v = out["values"]
    assert v["pacbayes_flatness"] == pytest.approx(1 / got ** 2)
    m = x.shape[0]
    dist = float(sum(((model.fc.weight.detach().double() - init["fc.weight"].double()) ** 2).sum() for _ in [0]))
    assert v["pacbayes_bound"] == pytest.approx(dist / (4 * got ** 2) + math.log(m / got) + 10, rel=1e-9)
    # ours on the same fixture: noise of standard deviation sigma, so sigma' is the reference's sigma^2, both
    # near the closed-form root of E[drop](s) = 0.1
    s_star = brentq(lambda s: _drop_plain(s, fx) - 0.1, 1e-4, 10.0)
    ours = generalization_measures(model, x, y, n_points=400, mc_draws=200, only=["pacbayes_flatness"])
    assert ours["info"]["sigma"]["value"] == pytest.approx(s_star, rel=0.1)
    assert got ** 2 == pytest.approx(s_star, rel=0.25)


def test_search_recovers_from_misleading_partial_decisions():
    # With common random numbers the same first draws decide at every scale: when they are benign, every early
    # decision says "below" where all draws say "above". Catches a search that trusts partial decisions for
    # good (it never lands in the window, or lands on a partial value) and one that re-evaluates only the
    # endpoint it stalled on (the other partial points keep misleading the bracket).
    def drop(x):  # the all-draw curve: crosses 0.1 at x = 0.05
        return min(max(0.1 + 0.3 * math.log(x / 0.05), 0.0), 1.0)

    calls = []

    def f(x, full=False):
        partial = drop(x) - 0.06  # the first draws' mean, biased low
        decided = abs(partial - 0.1) > 0.04
        calls.append(full or not decided)
        return (drop(x), 0.005, True) if full or not decided else (partial, 0.02, False)

    res = log_bisection(f, target=0.1, tol=0.01, start=0.2, factor=8.0)
    assert res.converged and abs(drop(res.bisection) - 0.1) <= 0.01
    assert res.scale == pytest.approx(0.05, rel=0.02)
    assert not all(calls)  # partial decisions were used, and then abandoned


# ------------------------------------------------------------------------------------------------ weights


def _small_cnn(seed=0):
    """A tiny 1-D CNN with batch norm (random running statistics) and logits scaled up to margins of about 1."""
    torch.manual_seed(seed)
    model = _randomise_bn(create_model("cnn1d", input_shape=(1, 16), num_classes=3, channels=2, width=8), seed).eval()
    with torch.no_grad():
        model.fc.weight.mul_(10.0)
    return model


def test_every_measure_changes_when_the_weights_change_and_distance_is_zero_at_init(digits, digits_model):
    # Catches: a measure computed from the initial weights or a cached copy instead of the model, a distance
    # that is not zero at initialisation (e.g. comparing folded with unfolded weights, or init batch-norm
    # statistics folded into the current weights), and a bound that ignores the distance. The change (noise of
    # 30% of each layer's mean |w|) is large enough to move every search past its resolution: bisection values
    # are quantized (docs/measures.md).
    model = copy.deepcopy(digits_model)  # an MLP with batch norm trained a few epochs on digits
    x, y = digits.x_train, digits.y_train
    init = {k: v.clone() for k, v in model.state_dict().items()}
    out0 = generalization_measures(model, x, y, init_state=init, **FAST)
    v0 = out0["values"]
    assert all(v0[k] is not None for k in MEASURE_NAMES), out0["info"]["reasons"]
    assert v0["dist_from_init"] == 0.0
    s = out0["info"]["sigma"]["value"]
    assert v0["pacbayes_bound"] == pytest.approx(math.log(x.shape[0] / s) + 10)
    changed = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in changed.parameters():
            if p.ndim >= 2:
                p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=g))
    out1 = generalization_measures(changed, x, y, init_state=init, **FAST)
    v1 = out1["values"]
    for name in MEASURE_NAMES:
        assert v1[name] is not None and v1[name] != v0[name], (name, out1["info"]["reasons"])
    assert v1["dist_from_init"] > 0


def test_init_measures_are_none_with_a_reason_without_initial_weights(digits, digits_model):
    # Catches: a bound silently computed from the origin (w0 = 0) or from the current weights when the
    # initial weights are unknown.
    out = generalization_measures(digits_model, digits.x_train, digits.y_train, **FAST)
    for name in INIT_MEASURES:
        assert out["values"][name] is None
        assert "init_state" in out["info"]["reasons"][name]
    others = [n for n in MEASURE_NAMES if n not in INIT_MEASURES]
    assert all(out["values"][n] is not None for n in others), out["info"]["reasons"]


def test_a_wrong_init_state_is_refused():
    model = _small_cnn()
    x, y = _self_labelled(model, n=50, shape=(1, 16))
    init = {k: v for k, v in model.state_dict().items() if "running_var" not in k}
    with pytest.raises(InputError, match="init_state lacks 'body.1.running_var'"):
        generalization_measures(model, x, y, init_state=init, only=["dist_from_init"])


# ------------------------------------------------------------------------------------------------ folding

def _fold_case(kind):
    torch.manual_seed(0)
    if kind == "conv1d":
        body = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2, padding=1, bias=True), nn.BatchNorm1d(4), nn.ReLU(),
                             nn.Dropout(0.5), nn.Conv1d(4, 3, 3, padding=1, bias=False), nn.BatchNorm1d(3), nn.ReLU(),
                             nn.MaxPool1d(2), nn.Flatten())
        return _classifier(body, 3 * 4, 5, mean=(0.2, 0.4), std=(0.5, 0.3)), (2, 16)
    if kind == "conv2d":
        body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return _classifier(body, 4, 5, mean=(0.2, 0.4, 0.5), std=(0.5, 0.3, 0.2)), (3, 8, 8)
    body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Linear(8, 6), nn.Dropout(0.2), nn.BatchNorm1d(6), nn.ReLU())
    return _classifier(body, 6, 5), (1, 12)


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "linear"])
def test_batch_norm_folding_computes_the_same_function_in_eval_mode(kind):
    # Catches: folding with batch statistics or the wrong variance (std vs var, missing eps), scaling the
    # input instead of the output channels of a kernel, forgetting the preceding layer's bias or the shift
    # beta, and a dropout kept in the chain.
    model, shape = _fold_case(kind)
    _randomise_bn(model)
    model.double()
    folded = fold_network(model, input_shape=shape)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.net.modules())
    x = torch.rand(32, *shape, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        got = folded.net(model.normalize(x))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert model.training is False  # folding does not touch the model


def test_unsupported_layers_give_none_with_the_reason():
    # Catches: a measure computed on a network the chain does not describe (a residual block's skip path would be
    # lost), i.e. a wrong number instead of None.
    torch.manual_seed(0)
    model = create_model("resnet18", input_shape=(3, 8, 8), num_classes=3, width=2).eval()
    x = torch.rand(40, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    out = generalization_measures(model, x, y, init_state=model.state_dict(), **FAST)
    assert out["values"]["inverse_margin"] is not None
    for name in MEASURE_NAMES:
        if name != "inverse_margin":
            assert out["values"][name] is None
            assert "_BasicBlock" in out["info"]["reasons"][name]


def test_batch_norm_after_relu_is_not_folded_into_a_wrong_layer():
    model = _classifier(nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.BatchNorm1d(4)), 4, 2)
    x, y = _self_labelled(model, n=40, shape=(1, 6))
    out = generalization_measures(model, x, y, only=["path_norm"])
    assert out["values"]["path_norm"] is None
    assert "body.3 (BatchNorm1d) follows body.2" in out["info"]["reasons"]["path_norm"]


# ------------------------------------------------------------------------------------------------ spectral norm

def _explicit_conv1d_matrix(w, length, stride, padding, dilation):
    """The convolution as a matrix, written from its definition: out[o, t] = sum_c,k w[o, c, k] in[c, s] with
    s = t * stride - padding + k * dilation (positions outside the input read the zero padding)."""
    c_out, c_in, k = w.shape
    l_out = (length + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    m = np.zeros((c_out * l_out, c_in * length))
    for o in range(c_out):
        for t in range(l_out):
            for c in range(c_in):
                for j in range(k):
                    s = t * stride - padding + j * dilation
                    if 0 <= s < length:
                        m[o * l_out + t, c * length + s] += w[o, c, j]
    return m


@pytest.mark.parametrize("c_in,c_out,k,stride,padding,dilation,length", [
    (1, 4, 5, 1, 2, 1, 40),      # small input: the dense route
    (8, 16, 3, 2, 1, 1, 100),    # 800 values: the Lanczos route
    (6, 5, 3, 1, 2, 2, 120),     # dilated, 720 values
])
def test_conv_spectral_norm_matches_the_explicit_matrix(c_in, c_out, k, stride, padding, dilation, length):
    # Catches: the spectral norm of the reshaped kernel (out x in*k), of the circular convolution (FFT), or at
    # another input size, and a power iteration stopped too early.
    torch.manual_seed(1)
    conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation).double()
    w = conv.weight.detach().numpy()
    expected = np.linalg.norm(_explicit_conv1d_matrix(w, length, stride, padding, dilation), 2)
    got = conv_operator_norm(conv, (c_in, length))
    assert got == pytest.approx(expected, rel=1e-8)
    assert abs(np.linalg.norm(w.reshape(c_out, -1), 2) - expected) > 1e-3 * expected


def test_conv2d_spectral_norm_matches_the_matrix_of_basis_responses():
    # Catches the same as above for 2-D convolutions (stride 2, zero padding, 9x7 input).
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1).double()
    shape = (3, 9, 7)
    n = int(np.prod(shape))
    with torch.no_grad():
        cols = torch.nn.functional.conv2d(torch.eye(n, dtype=torch.float64).reshape(n, *shape), conv.weight,
                                          stride=2, padding=1).reshape(n, -1)
    expected = float(torch.linalg.matrix_norm(cols.T, 2))
    assert conv_operator_norm(conv, shape) == pytest.approx(expected, rel=1e-8)


def test_spectral_measure_uses_each_layers_own_input_size():
    # Catches: every convolution measured at the model's input size, or the reshaped kernel, inside the measure.
    model = _small_cnn()
    x, y = _self_labelled(model, n=100, shape=(1, 16))
    info = generalization_measures(model, x, y, only=["log_prod_spec_over_margin"])["info"]
    shapes = [tuple(e["input_shape"]) for e in info["layers"]]
    assert shapes[:3] == [(1, 16), (2, 16), (4, 8)]
    folded = fold_network(model, input_shape=(1, 16))
    for entry, layer in zip(info["layers"][:3], folded.layers[:3]):
        assert entry["spectral_norm"] == pytest.approx(conv_operator_norm(folded.net[layer.index], layer.input_shape))
    gamma = info["margin"]
    expected = sum(2 * math.log(e["spectral_norm"]) for e in info["layers"]) - 2 * math.log(gamma)
    out = generalization_measures(model, x, y, only=["log_prod_spec_over_margin"])
    assert out["values"]["log_prod_spec_over_margin"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------ sharpness

def test_sharpness_ascends_the_loss():
    # Catches gradient *descent* inside the box (one reading of the PGDL baseline's sharpness code). Signed steps
    # of half the box drive any iterate to a corner, whose larger perturbation raises the error whichever way
    # it went; so the ascent is compared with random corners of the same box: on this fixture the ascent's rise
    # is 0.33, a descent's 0.08 and the random corners' 0.003 (alpha = 0.05).
    model = _mlp()
    x, y = _self_labelled(model)
    folded = fold_network(model, input_shape=(1, 12))
    runner = StackedRunner(folded, model.normalize(x).detach(), y, folded.act_per_point)
    alpha, restarts = 0.05, 3
    rise = error_rise_fn(runner, restarts=restarts, steps=5, batch=128, seed=11, target=1.0, tol=0.0)(alpha)[0]
    w = runner.params
    u = _draws(w, restarts, 11, "uniform")
    corners = runner.errors({k: w[k] + alpha * w[k].abs() * u[k].sign() for k in w}) - runner.base_errors()
    assert rise > float(corners.max()) + 0.15


# ------------------------------------------------------------------------------------------------ contract

def test_model_global_rng_and_determinism(digits, digits_model):
    # Catches: a model left in another mode, with changed weights or requires_grad flags; draws from the global
    # RNG (the state would move and results would depend on earlier calls; e.g. building the folded layers with
    # nn.Linear's own random initialisation); a seed that is ignored.
    model = copy.deepcopy(digits_model)
    x, y = digits.x_train, digits.y_train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fc.weight.requires_grad_(False)
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    rng = torch.get_rng_state()
    a = generalization_measures(model, x, y, seed=3, **FAST)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training is False
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    b = generalization_measures(model, x, y, seed=3, **FAST)
    assert a["values"] == b["values"]
    c = generalization_measures(model, x, y, seed=4, **FAST)
    assert c["values"]["mag_sharpness"] != a["values"]["mag_sharpness"] or \
        c["values"]["pacbayes_flatness"] != a["values"]["pacbayes_flatness"]


def test_info_is_strict_json():
    # Catches a NaN (e.g. the spread of a single sharpness restart) or a tensor left in the info that records
    # carry: ncbench._io.dumps refuses both.
    from ncbench._io import dumps

    model = _mlp()
    x, y = _self_labelled(model)
    out = generalization_measures(model, x, y, init_state=model.state_dict(), sharpness_restarts=1, **FAST)
    assert out["info"]["alpha"]["se"] is None
    assert b'"pacbayes_flatness"' in dumps(out)


def test_non_positive_margin_gives_none_for_the_margin_measures():
    # Catches dividing by a negative or zero margin (or its absolute value, as the reference does).
    model = _mlp()
    x, y = _self_labelled(model)
    y = (y + 1) % 4  # every point misclassified
    out = generalization_measures(model, x, y, only=["inverse_margin", "path_norm_over_margin", "path_norm"])
    assert out["info"]["margin"] < 0
    assert out["values"]["inverse_margin"] is None and out["values"]["path_norm_over_margin"] is None
    assert out["values"]["path_norm"] is not None
    assert "margin" in out["info"]["reasons"]["inverse_margin"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(only=["pac_bayes"]), "unknown measure"),
    (dict(mc_draws=1), "mc_draws must be an integer >= 2"),
    (dict(tolerance=0.2), "need 0 < tolerance < target"),
])
def test_bad_options_are_refused(kwargs, match):
    model = _mlp()
    x, y = _self_labelled(model, n=20)
    with pytest.raises(InputError, match=match):
        generalization_measures(model, x, y, **kwargs)


def test_bad_labels_are_refused():
    model = _mlp()
    x, y = _self_labelled(model, n=20)
    with pytest.raises(InputError, match="y_train must be int64"):
        generalization_measures(model, x, y.int())
    with pytest.raises(InputError, match=r"labels must be in 0\.\.3"):
        generalization_measures(model, x, y + 4)


@pytest.mark.slow
def test_all_measures_on_the_default_mnist1d_model(mnist1d_default):
    # End to end on the trained default CNN: every search converges and every measure that does not need the
    # initial weights is a finite number; the margin is evaluate's train_margin_p10.
    from ncbench.evaluate import baseline_measures
    from ncbench.features import extract

    ds, model = mnist1d_default
    out = generalization_measures(model, ds.x_train, ds.y_train)
    info = out["info"]
    for key in ("sigma", "mag_sigma", "alpha"):
        assert info[key]["converged"] and abs(info[key]["achieved"] - 0.1) <= 0.01
    for name in MEASURE_NAMES:
        if name not in INIT_MEASURES:
            assert out["values"][name] is not None and math.isfinite(out["values"][name]), name
    _, z = extract(model, ds.x_train)
    assert info["margin"] == pytest.approx(baseline_measures(model, z, ds.y_train)["train_margin_p10"])


def test_reference_mode_takes_the_absolute_value_of_the_mean_displacement():
    # The reference's search compares abs(mean(accuracies) - accuracy) with the target. Catches the mean of the
    # absolute per-draw drops (0.15 here), which differs whenever a draw raises accuracy.
    from ncbench.measures._perturb import _mean_drop

    drops = torch.tensor([-0.2, 0.1], dtype=torch.float64)
    assert _mean_drop(drops, True) == pytest.approx(0.05)
    assert _mean_drop(drops, False) == pytest.approx(-0.05)
