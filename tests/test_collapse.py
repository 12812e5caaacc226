import math
import warnings

import numpy as np
import pytest
import torch

from ncbench._errors import InputError
from ncbench.collapse import (LAYER_KEYS, TEST_KEYS, TRAIN_KEYS, CollapseAccumulator, CollapseWarning,
                              collapse_metrics, collapse_metrics_streaming, layer_collapse)
from ncbench.features import layer_outputs
from reference import exact_ridge, reference_metrics

NC_KEYS = [k for k in TRAIN_KEYS if k not in ("ncc_accuracy", "ls_gap")]


def simplex_etf(C, D, rng, scale=3.0):
    """C unit-norm-times-scale vectors in R^D forming a simplex ETF (random orientation)."""
    centring = np.eye(C) - 1.0 / C
    u = np.linalg.eigh(centring)[1][:, 1:]  # (C, C-1): the rank C-1 range of the centring projector
    q, _ = np.linalg.qr(rng.standard_normal((D, C - 1)))  # needs D >= C-1
    return scale * math.sqrt(C / (C - 1)) * u @ q.T


def gaussian_clusters(C, D, n_per, rng, sigma=1.0, spread=4.0):
    mu = spread * rng.standard_normal((C, D))
    y = np.repeat(np.arange(C), n_per)
    return mu[y] + sigma * rng.standard_normal((len(y), D)), y, mu


@pytest.mark.parametrize("C,D", [(2, 5), (10, 32), (4, 3)])
def test_exact_collapse_gives_zero(C, D):
    rng = np.random.default_rng(0)
    M = simplex_etf(C, D, rng)
    y = np.repeat(np.arange(C), 7)
    offset = np.full(D, 5.0)  # any global offset: the means are centred first
    h = M[y] + offset
    # W = the centred means, and the bias that undoes the offset: the NC3/NC4 optimum
    out = collapse_metrics((h, y), (h, y), weight=M, bias=-M @ offset)
    for split in ("train", "test"):
        for key in NC_KEYS + (["nc1_test_on_train_means"] if split == "test" else []):
            if key == "ls_gap":
                continue
            assert abs(out[split][key]) < 1e-10, (split, key, out[split][key])
        assert out[split]["ncc_accuracy"] == 1.0
        assert out[split]["nc4_ncc_mismatch"] == 0.0


def test_every_key_present():
    rng = np.random.default_rng(1)
    h, y, mu = gaussian_clusters(5, 12, 20, rng)
    W = rng.standard_normal((5, 12))
    out = collapse_metrics((h, y), (h[::2], y[::2]), weight=W, bias=np.zeros(5))
    assert set(out["train"]) == set(TRAIN_KEYS)
    assert set(out["test"]) == set(TEST_KEYS)
    assert all(isinstance(v, float) and math.isfinite(v) for s in out.values() for v in s.values())
    no_w = collapse_metrics((h, y))
    assert set(no_w["train"]) == {"nc1", "nc1_quotient", "cdnv", "nc2_equinorm_means", "nc2_equiangle_means",
                                  "nc2_maxangle_means", "nc2_etf_error_means", "ncc_accuracy"}


def test_isotropic_gaussian_matches_closed_form():
    rng = np.random.default_rng(2)
    C, D, sigma = 6, 10, 0.7
    mu = 3 * rng.standard_normal((C, D))
    y = np.repeat(np.arange(C), 20000)
    h = mu[y] + sigma * rng.standard_normal((len(y), D))
    got = collapse_metrics((h, y))["train"]["nc1"]
    # population value with the *true* means: sigma^2 * sum_k 1/lambda_k(Sigma_B) / C
    mt = mu - mu.mean(0)
    lam = np.linalg.eigvalsh(mt.T @ mt / C)
    lam = lam[lam > lam.max() * 1e-10]
    expected = sigma**2 * np.sum(1 / lam) / C
    assert got == pytest.approx(expected, rel=0.02)


def test_nc1_invariances():
    rng = np.random.default_rng(3)
    h, y, _ = gaussian_clusters(5, 8, 40, rng)
    base = collapse_metrics((h, y))["train"]["nc1"]
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert collapse_metrics((h @ q, y))["train"]["nc1"] == pytest.approx(base, rel=1e-10)
    assert collapse_metrics((h + 17.0, y))["train"]["nc1"] == pytest.approx(base, rel=1e-10)
    assert collapse_metrics((h * 1e-3, y))["train"]["nc1"] == pytest.approx(base, rel=1e-10)
    perm = rng.permutation(5)
    assert collapse_metrics((h, perm[y]))["train"]["nc1"] == pytest.approx(base, rel=1e-10)


@pytest.mark.parametrize("global_mean", ["classes", "samples"])
@pytest.mark.parametrize("C,D", [(2, 4), (7, 16), (10, 5)])
def test_agrees_with_plain_reference(C, D, global_mean):
    rng = np.random.default_rng(C * 100 + D)
    n = rng.integers(5, 40, size=C)  # imbalanced
    y = rng.permutation(np.repeat(np.arange(C), n))
    mu = 2 * rng.standard_normal((C, D))
    h = mu[y] + rng.standard_normal((len(y), D))
    W, b = rng.standard_normal((C, D)), rng.standard_normal(C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # D < C-1 for (10, 5): said once, tested below
        got = collapse_metrics((h, y), weight=W, bias=b, global_mean=global_mean)["train"]
    ref = reference_metrics(h, y, W, b, global_mean=global_mean)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-8, abs=1e-12), key


def test_global_mean_options_differ_on_imbalanced_data_only():
    rng = np.random.default_rng(4)
    mu = 3 * rng.standard_normal((3, 6))
    y_bal = np.repeat(np.arange(3), 30)
    y_imb = np.repeat(np.arange(3), [10, 30, 80])
    for y, same in ((y_bal, True), (y_imb, False)):
        h = mu[y] + rng.standard_normal((len(y), 6))
        a = collapse_metrics((h, y), global_mean="classes")["train"]["nc1"]
        s = collapse_metrics((h, y), global_mean="samples")["train"]["nc1"]
        assert (a == pytest.approx(s, rel=1e-12)) is same


def test_test_split_uses_train_means_where_spec_says():
    rng = np.random.default_rng(5)
    h, y, mu = gaussian_clusters(4, 6, 50, rng)
    ht, yt, _ = gaussian_clusters(4, 6, 30, np.random.default_rng(6))  # different means: far from train ones
    W = rng.standard_normal((4, 6))
    b = np.zeros(4)
    out = collapse_metrics((h, y), (ht, yt), weight=W, bias=b)
    train_means = np.stack([h[y == c].mean(0) for c in range(4)])
    ref = reference_metrics(ht, yt, W, b, ref_means=train_means)
    own = reference_metrics(ht, yt, W, b)
    assert out["test"]["nc1"] == pytest.approx(own["nc1"], rel=1e-9)  # own means
    assert out["test"]["ncc_accuracy"] == pytest.approx(ref["ncc_accuracy"])  # train means
    assert out["test"]["nc4_ncc_mismatch"] == pytest.approx(ref["nc4_ncc_mismatch"])
    # nc1_test_on_train_means: explicit Sigma_W of test features around train means
    z = ht - train_means[yt]
    sw = z.T @ z / len(yt)
    mt = train_means - train_means.mean(0)
    expected = np.trace(sw @ np.linalg.pinv(mt.T @ mt / 4)) / 4
    assert out["test"]["nc1_test_on_train_means"] == pytest.approx(expected, rel=1e-8)
    assert out["test"]["nc1_test_on_train_means"] > out["test"]["nc1"]


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_ls_gap_against_direct_solve(wd):
    rng = np.random.default_rng(7)
    h, y, _ = gaussian_clusters(4, 6, 25, rng)
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    got = collapse_metrics((h, y), weight=W, bias=b, weight_decay=wd)["train"]["ls_gap"]
    X = np.hstack([h, np.ones((len(y), 1))])
    Y = np.eye(4)[y]
    n = len(y)
    if wd == 0:
        theta = np.linalg.pinv(X) @ Y
    else:
        theta = np.linalg.solve(X.T @ X / n + wd * np.eye(7), X.T @ Y / n)
    theta = theta.T
    expected = np.linalg.norm(np.hstack([W, b[:, None]]) - theta) / np.linalg.norm(theta)
    assert got == pytest.approx(expected, rel=1e-8)
    # the fit itself is what ls_gap measures from: at [W_LS b_LS] the gap is zero
    assert collapse_metrics((h, y), weight=theta[:, :6], bias=theta[:, 6], weight_decay=wd)["train"]["ls_gap"] < 1e-10


def test_batched_equals_one_shot():
    rng = np.random.default_rng(8)
    C, D = 7, 24
    h, y, mu = gaussian_clusters(C, D, 60, rng, sigma=0.05)  # nearly collapsed: cancellation would show
    idx = rng.permutation(len(y))
    h, y = h[idx] + 100.0, y[idx]  # large offset: the naive E[hh^T] formula loses digits here
    ht, yt, _ = gaussian_clusters(C, D, 20, rng)
    ht = ht + 100.0
    W, b = rng.standard_normal((C, D)), rng.standard_normal(C)
    one = collapse_metrics((h, y), (ht, yt), weight=W, bias=b, weight_decay=1e-3)

    def batches(a, bb, size):
        return lambda: ((a[i:i + size], bb[i:i + size]) for i in range(0, len(bb), size))

    streamed = collapse_metrics_streaming(batches(h, y, 37), batches(ht, yt, 11), num_classes=C,
                                          weight=W, bias=b, weight_decay=1e-3)
    for split in one:
        assert set(streamed[split]) == set(one[split])
        for key in one[split]:
            assert streamed[split][key] == pytest.approx(one[split][key], rel=1e-9, abs=1e-14), (split, key)


def test_ls_gap_without_weight_decay_is_stable_near_collapse():
    """lambda = 0 (min-norm least squares) on nearly collapsed features: the in-memory and streaming routes
    agree to 1e-9 at every spread, the value converges as the spread shrinks (the exact solution moves by
    O(sigma): the class means do), and it matches LAPACK's gelsd where gelsd is accurate (sigma = 1e-2; at
    sigma = 1e-8 gelsd on [H 1] itself is off by orders of magnitude).
    The 0.1 code solved the streaming route through the pseudo-inverse of X^T X and the in-memory one with
    gelsd: they disagreed by 5x at sigma = 1e-4 and both drifted."""
    rng = np.random.default_rng(21)
    C, D = 10, 64
    y = np.repeat(np.arange(C), 50)
    mu, xi = 3 * rng.standard_normal((C, D)) + 100.0, rng.standard_normal((len(y), D))
    W, b = rng.standard_normal((C, D)), rng.standard_normal(C)
    values = {}
    for sigma in (1e-2, 1e-4, 1e-6, 1e-8):
        h = mu[y] + sigma * xi
        one = collapse_metrics((h, y), weight=W, bias=b)["train"]["ls_gap"]
        streamed = collapse_metrics_streaming(lambda: ((h[i:i + 64], y[i:i + 64]) for i in range(0, len(y), 64)),
                                              num_classes=C, weight=W, bias=b)["train"]["ls_gap"]
        assert streamed == pytest.approx(one, rel=1e-9), sigma
        values[sigma] = one
    x = np.hstack([mu[y] + 1e-2 * xi, np.ones((len(y), 1))])
    theta = np.linalg.lstsq(x, np.eye(C)[y], rcond=None)[0].T
    assert values[1e-2] == pytest.approx(np.linalg.norm(np.hstack([W, b[:, None]]) - theta) / np.linalg.norm(theta),
                                         rel=1e-9)
    assert values[1e-6] == pytest.approx(values[1e-4], rel=1e-4)
    assert values[1e-8] == pytest.approx(values[1e-6], rel=1e-6)


def test_ls_gap_gives_dead_features_no_weight():
    """A feature that is 0 for every sample (a dead ReLU) gets a zero coefficient: the minimum-norm fit."""
    rng = np.random.default_rng(22)
    h, y, _ = gaussian_clusters(4, 6, 30, rng)
    h = np.hstack([h, np.zeros((len(y), 1))])
    W, b = rng.standard_normal((4, 7)), rng.standard_normal(4)
    x = np.hstack([h, np.ones((len(y), 1))])
    theta = (np.linalg.pinv(x) @ np.eye(4)[y]).T
    assert np.abs(theta[:, 6]).max() < 1e-12
    got = collapse_metrics((h, y), weight=W, bias=b)["train"]["ls_gap"]
    assert got == pytest.approx(np.linalg.norm(np.hstack([W, b[:, None]]) - theta) / np.linalg.norm(theta), rel=1e-9)


def test_equiangle_counts_every_off_diagonal_entry():
    """The authors' code behind PNAS Fig. 3 takes the std over the C(C-1) off-diagonal cosines (each pair twice);
    over the C(C-1)/2 unordered pairs the std is sqrt((2P-1)/(2(P-1))) larger (0.57 % at C = 10)."""
    rng = np.random.default_rng(23)
    h, y, _ = gaussian_clusters(10, 16, 10, rng)
    got = collapse_metrics((h, y))["train"]["nc2_equiangle_means"]
    means = np.stack([h[y == c].mean(0) for c in range(10)])
    m = means - means.mean(0)
    unit = m / np.linalg.norm(m, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert got == pytest.approx(np.std(cos[~np.eye(10, dtype=bool)], ddof=1), rel=1e-12)
    pairs = cos[np.triu_indices(10, 1)]
    p = len(pairs)
    assert np.std(pairs, ddof=1) == pytest.approx(got * np.sqrt((2 * p - 1) / (2 * (p - 1))), rel=1e-12)
    assert np.std(pairs, ddof=1) / got - 1 == pytest.approx(0.00567, abs=1e-4)


def test_accumulator_batch_size_does_not_matter():
    rng = np.random.default_rng(9)
    h, y, _ = gaussian_clusters(3, 5, 30, rng)
    stats = []
    for size in (1, 7, 90):
        acc = CollapseAccumulator(3)
        for i in range(0, 90, size):
            acc.update(torch.as_tensor(h[i:i + size]), torch.as_tensor(y[i:i + size]))
        stats.append(acc.stats())
    for s in stats[1:]:
        torch.testing.assert_close(s.means, stats[0].means, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s.class_sq, stats[0].class_sq, rtol=1e-10, atol=1e-12)


def test_float32_and_torch_inputs_give_float64_results():
    rng = np.random.default_rng(10)
    h, y, _ = gaussian_clusters(4, 8, 20, rng)
    a = collapse_metrics((h.astype(np.float32), y))["train"]["nc1"]
    t = collapse_metrics((torch.tensor(h, dtype=torch.float32), torch.tensor(y)))["train"]["nc1"]
    assert a == t
    ref = reference_metrics(h.astype(np.float32).astype(np.float64), y)["nc1"]
    assert a == pytest.approx(ref, rel=1e-9)


def test_dimension_below_c_minus_1_warns_once_and_degenerate_means_warn():
    rng = np.random.default_rng(11)
    h, y, _ = gaussian_clusters(6, 3, 10, rng)
    with pytest.warns(CollapseWarning, match="no simplex ETF fits"):
        out = collapse_metrics((h, y))
    assert out["train"]["nc2_etf_error_means"] > 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        collapse_metrics((h, y))  # said once per (C, D)
    # three classes whose means lie on a line: rank 1 < C - 1 = 2
    mu = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    y = np.repeat(np.arange(3), 10)
    h = mu[y] + 0.1 * rng.standard_normal((30, 3)) * np.array([1, 0, 0])
    with pytest.warns(CollapseWarning, match="degenerate"):
        collapse_metrics((h, y))


def test_two_classes():
    rng = np.random.default_rng(12)
    h, y, _ = gaussian_clusters(2, 4, 50, rng)
    out = collapse_metrics((h, y), weight=rng.standard_normal((2, 4)), bias=np.zeros(2))["train"]
    assert out["nc2_equiangle_means"] == 0.0  # one angle: nothing varies
    assert out["nc2_maxangle_means"] == pytest.approx(0.0, abs=1e-12)  # two centred means are antipodal
    assert out["nc1"] > 0


# --------------------------------------------------------------------------------- offsets and scales

def _batches(h, y, size):
    return lambda: ((h[i:i + size], y[i:i + size]) for i in range(0, len(y), size))


def _both_routes(train, test, weight, bias, **kw):
    """{route: result} of the in-memory and the streaming route on the same data."""
    one = collapse_metrics(train, test, weight=weight, bias=bias, **kw)
    streamed = collapse_metrics_streaming(_batches(*train, 37), None if test is None else _batches(*test, 11),
                                          num_classes=weight.shape[0], weight=weight, bias=bias, **kw)
    return {"in-memory": one, "streaming": streamed}


def _on_grid(a, bits):
    """Round to multiples of 2^-bits: sums with integers below 2^(53 - bits) are then exact in float64."""
    return np.round(np.asarray(a) * 2.0**bits) / 2.0**bits


def _grid_case(seed=30, C=10, D=32, n_train=40, n_test=15, sigma=0.05):
    """Nearly collapsed features (spread of the class means ~1, within-class ~sigma) and a classifier, on a
    grid fine enough for nc1 and coarse enough that h + t and b - W t are exact for integer offsets t up to
    about 8e9: a translated copy is then *exactly* the same data, and any difference is the code's."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((C, D))
    y, yt = np.repeat(np.arange(C), n_train), np.repeat(np.arange(C), n_test)
    h = _on_grid(mu[y] + sigma * rng.standard_normal((len(y), D)), 20)
    ht = _on_grid(mu[yt] + 2 * sigma * rng.standard_normal((len(yt), D)), 20)
    w = _on_grid(rng.standard_normal((C, D)), 10)
    b = _on_grid(rng.standard_normal(C), 10)
    return h, y, ht, yt, w, b


COUNT_KEYS = ("ncc_accuracy", "nc4_ncc_mismatch")


def _assert_same_metrics(got, expected, rel, what):
    for route in expected:
        for split in expected[route]:
            assert set(got[route][split]) == set(expected[route][split])
            for key, value in expected[route][split].items():
                if key == "ls_gap":  # not translation invariant by definition: tested on its own below
                    continue
                if key in COUNT_KEYS:
                    assert got[route][split][key] == value, (what, route, split, key)
                else:
                    assert got[route][split][key] == pytest.approx(value, rel=rel, abs=1e-15), (what, route, split, key)


@pytest.mark.parametrize("direction", ["every coordinate", "random direction"])
@pytest.mark.parametrize("offset", [1e3, 1e6, 1e9, -1e9])
def test_every_metric_is_translation_invariant_in_both_routes(offset, direction):
    """Translating all features by t (and the bias by -W t, so that the logits stay the same) changes no
    metric, in either route, up to offsets 1e9 times the spread of the class means. The data are exactly
    translated (grid), so the tolerance is the code's rounding. Catches: keeping a C-th singular value of
    M~ (0.2: nc1 = 1e19 at 1e3, the streaming route and nc1_test_on_train_means likewise); nearest-centre
    distances as ||m||^2 - 2 h.m on unshifted features (their rounding, ~eps t^2 D, swamps the gaps at
    1e9); class means, centring or CDNV differences formed from absolute means (error ~eps t / spread, 1e-7
    at 1e9); a streaming shift that is not applied before the sums."""
    h, y, ht, yt, w, b = _grid_case()
    d = h.shape[1]
    unit = np.ones(d) if direction == "every coordinate" else np.random.default_rng(31).integers(-3, 4, d)
    t = offset * unit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a spurious CollapseWarning (degenerate means) would fail here
        base = _both_routes((h, y), (ht, yt), w, b)
        moved = _both_routes((h + t, y), (ht + t, yt), w, b - w @ t)
    assert (h + t - t == h).all() and (b - w @ t + w @ t == b).all()  # the translation is exact
    _assert_same_metrics(moved, base, 1e-9, offset)


@pytest.mark.parametrize("scale", [1e-6, 1e6, 2.0**-40, 2.0**40])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_every_metric_is_scale_invariant_in_both_routes(scale, offset):
    """Scaling all features by s (and W by 1/s, so that the logits stay the same) changes no metric but
    ls_gap, with or without a large offset; the relative rank cut and the relative pseudo-inverse cut of
    the ridge fit carry no absolute threshold that a scale could cross. Catches an absolute tolerance."""
    h, y, ht, yt, w, b = _grid_case(seed=32)
    t = np.full(h.shape[1], offset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = _both_routes((h, y), (ht, yt), w, b)
        scaled = _both_routes((scale * (h + t), y), (scale * (ht + t), yt), w / scale, b - w @ t)
    _assert_same_metrics(scaled, base, 1e-9, scale)


def test_issue_17_offset_of_1000_leaves_nc1_alone():
    """The issue's case: 10 classes, 32 dimensions, every coordinate offset by 1,000. nc1 = 4.03e-4 (the
    independent reference on the unshifted features); 0.2 gave 6.0e19 in memory, 4.2e20 streamed and 4.7e20
    for nc1_test_on_train_means, with no warning."""
    rng = np.random.default_rng(0)
    C, D = 10, 32
    mu = rng.standard_normal((C, D))
    y = np.repeat(np.arange(C), 50)
    h = mu[y] + 0.033 * rng.standard_normal((len(y), D))
    expected = reference_metrics(h, y)["nc1"]
    assert expected == pytest.approx(4.03e-4, rel=1e-3)
    one = collapse_metrics((h + 1000, y), (h + 1000, y))
    streamed = collapse_metrics_streaming(_batches(h + 1000, y, 64), _batches(h + 1000, y, 64), num_classes=C)
    for out in (one, streamed):
        assert out["train"]["nc1"] == pytest.approx(expected, rel=1e-9)
        assert out["test"]["nc1_test_on_train_means"] == pytest.approx(expected, rel=1e-9)  # same split


def test_degenerate_means_still_warn_at_a_large_offset():
    """The rank cap (at most C - 1 singular values) must not hide a real degeneracy: three classes whose
    means lie on a line have rank 1 < 2 at any offset. Catches a fix that keeps C - 1 values regardless of
    the relative cut, which would also divide nc1 by a rounding-sized value."""
    rng = np.random.default_rng(33)
    mu = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    y = np.repeat(np.arange(3), 10)
    h = mu[y] + 0.1 * rng.standard_normal((30, 3)) * np.array([1, 0, 0])
    for offset in (0.0, 1e6):
        with pytest.warns(CollapseWarning, match="rank 1 < min"):
            out = collapse_metrics((h + offset, y))
        assert out["train"]["nc1"] == pytest.approx(reference_metrics(h, y)["nc1"], rel=1e-8)


@pytest.mark.parametrize("route", ["in-memory", "streaming"])
def test_a_test_split_far_from_the_train_split_keeps_its_own_nc1(route):
    """Test features translated by 1e3 away from the train features (a shifted domain) are measured around
    the train origin, so their own class means sit 1e3 from it: the computed M~ of the test split then
    has a C-th singular value of ~1e-13, above the relative cut. Sigma_B has rank <= C - 1, so it is never
    kept, and the test split's nc1 is that of the test features alone. Catches a missing rank cap."""
    h, y, ht, yt, w, b = _grid_case(seed=36)
    far = ht + 1e3
    alone = collapse_metrics((ht, yt))["train"]["nc1"]
    out = _both_routes((h, y), (far, yt), w, b)[route]
    assert out["test"]["nc1"] == pytest.approx(alone, rel=1e-9)


def test_sigma_b_keeps_at_most_c_minus_1_singular_values():
    """The spec's rank rule, on statistics whose means carry an offset of 1e3 with no origin to remove it
    (a SplitStats built by hand): the C-th singular value of M~ is rounding (~1e-13) and passes the relative
    cut s_1 max(C, D) eps, but at most min(C - 1, D) values are kept."""
    from ncbench.collapse import SplitStats
    from ncbench.collapse._metrics import EPS64, between

    rng = np.random.default_rng(37)
    C, D = 10, 32
    means = torch.tensor(rng.standard_normal((C, D)) + 1e3)
    stats = SplitStats(torch.full((C,), 5.0, dtype=torch.float64), means, torch.ones(C, dtype=torch.float64),
                       lambda v: torch.ones(v.shape[1], dtype=torch.float64))
    centred = means - means.mean(0)
    s = torch.linalg.svdvals(centred)
    assert s[C - 1] > s[0] * max(C, D) * EPS64  # the trap: rounding above the relative cut
    geom = between(stats, "classes")
    assert geom.s.numel() == C - 1
    torch.testing.assert_close(geom.s, s[:C - 1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("wd", [0.0, 1e-3])
def test_ls_gap_is_exact_at_large_offsets(wd):
    """ls_gap is *not* translation invariant (the ridge penalises ||b||^2, and translating h moves the bias
    that fits), so it is tested for accuracy instead: against the exact rational solution of the normal
    equations (tests/reference.py) at offsets up to 1e9, in both routes. float64 solvers of the augmented
    problem fail here: numpy's lstsq on [h 1] truncates a singular value at 1e6 (cond 1e14) and is off by
    1e6x; 0.2's fit (an SVD of the stacked [mu_c; 1]) was off by 9e-9 at 1e3, 0.5 % at 1e6 and 1e9x at 1e9
    with lambda = 0."""
    rng = np.random.default_rng(34)
    C, D = 4, 6
    y = np.repeat(np.arange(C), 15)
    x = rng.standard_normal((C, D))[y] + 0.3 * rng.standard_normal((len(y), D))
    w, b = rng.standard_normal((C, D)), rng.standard_normal(C)
    values = []
    for offset in (0.0, 1e3, 1e6, 1e9):
        h, bb = x + offset, b - w @ np.full(D, offset)
        theta = exact_ridge(h, y, C, wd)
        expected = np.linalg.norm(np.hstack([w, bb[:, None]]) - theta) / np.linalg.norm(theta)
        for route, out in _both_routes((h, y), None, w, bb, weight_decay=wd).items():
            assert out["train"]["ls_gap"] == pytest.approx(expected, rel=1e-10), (offset, route)
        values.append(expected)
    assert abs(values[2] / values[0] - 1) > 0.01  # by its definition ls_gap moves with the offset


def test_ls_gap_gives_a_constant_feature_the_minimum_norm_share_of_the_bias():
    """A feature that is the same non-zero constant for every sample is collinear with the bias: the
    minimum-norm least-squares solution splits the weight between them (numpy's pinv, exact here)."""
    rng = np.random.default_rng(35)
    h, y, _ = gaussian_clusters(4, 6, 30, rng)
    h = np.hstack([h, np.full((len(y), 1), 5.0)])
    w, b = rng.standard_normal((4, 7)), rng.standard_normal(4)
    x = np.hstack([h, np.ones((len(y), 1))])
    theta = (np.linalg.pinv(x) @ np.eye(4)[y]).T
    assert np.abs(theta[:, 6]).min() > 1e-3  # the constant feature does carry weight
    expected = np.linalg.norm(np.hstack([w, b[:, None]]) - theta) / np.linalg.norm(theta)
    for route, out in _both_routes((h, y), None, w, b).items():
        assert out["train"]["ls_gap"] == pytest.approx(expected, rel=1e-9), route


# --------------------------------------------------------------------------------------------- bad input

def _data():
    rng = np.random.default_rng(13)
    h, y, _ = gaussian_clusters(3, 4, 10, rng)
    return h, y


def test_nan_features_are_named_with_count():
    h, y = _data()
    h[[1, 5, 7], 2] = np.nan
    h[9, 0] = np.inf
    with pytest.raises(InputError, match=r"NaN or infinite values in 4 of 30 samples"):
        collapse_metrics((h, y))


def test_label_out_of_range():
    h, y = _data()
    y[[0, 3]] = 5
    with pytest.raises(InputError, match=r"2 of 30 samples have a label outside 0\.\.2"):
        collapse_metrics((h, y), weight=np.ones((3, 4)))
    y[[0, 3]] = -1
    with pytest.raises(InputError, match="label outside"):
        collapse_metrics((h, y), weight=np.ones((3, 4)))


def test_missing_class_in_a_split():
    h, y = _data()
    with pytest.raises(InputError, match=r"1 class\(es\) have no sample in the test split: \[2\]"):
        collapse_metrics((h, y), (h[y < 2], y[y < 2]))
    with pytest.raises(InputError, match="no sample in the train split"):
        collapse_metrics((h[y != 1], y[y != 1]), weight=np.ones((3, 4)))


def test_weight_and_bias_shapes():
    h, y = _data()
    with pytest.raises(InputError, match=r"weight has shape \(3, 5\).*expected \(C, 4\)"):
        collapse_metrics((h, y), weight=np.ones((3, 5)))
    with pytest.raises(InputError, match=r"bias has shape \(2,\); expected \(3,\)"):
        collapse_metrics((h, y), weight=np.ones((3, 4)), bias=np.zeros(2))
    with pytest.raises(InputError, match="bias was given without weight"):
        collapse_metrics((h, y), bias=np.zeros(3))


def test_shape_and_option_errors():
    h, y = _data()
    with pytest.raises(InputError, match="2-D array"):
        collapse_metrics((h[:, 0], y))
    with pytest.raises(InputError, match="has 29 entries but the features have 30"):
        collapse_metrics((h, y[:-1]))
    with pytest.raises(InputError, match="must be integers"):
        collapse_metrics((h, y.astype(float)))
    with pytest.raises(InputError, match="global_mean must be one of"):
        collapse_metrics((h, y), global_mean="median")
    with pytest.raises(InputError, match="weight_decay must be >= 0"):
        collapse_metrics((h, y), weight_decay=-1)
    with pytest.raises(InputError, match="test features have D = 3"):
        collapse_metrics((h, y), (h[:, :3], y))
    with pytest.raises(InputError, match="all class means coincide"):
        collapse_metrics((np.ones((30, 4)), y))


# --------------------------------------------------------------------------------------------- per layer

def test_layer_collapse_matches_direct_features_at_any_max_dim():
    """layer_collapse gives collapse_metrics of the layer's outputs, train and test; max_dim is accepted and
    changes nothing (0.2 projected the 40-wide layer to 16 dimensions here), while layer_outputs, which stores
    the outputs, still projects with its seeded map."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 40), torch.nn.ReLU(), torch.nn.Linear(40, 3))
    rng = np.random.default_rng(14)
    x = torch.tensor(rng.standard_normal((60, 12)), dtype=torch.float32)
    y = torch.arange(60) % 3
    out = layer_collapse(model, (x, y), (x[:30], y[:30]), layers=["1", "2"], batch_size=16)
    with torch.no_grad():
        direct = model[1](x).double()
    expected = collapse_metrics((direct, y), (direct[:30], y[:30]), ls_gap=False)
    for split in ("train", "test"):
        for key in LAYER_KEYS:
            assert out["1"][split][key] == pytest.approx(expected[split][key], rel=1e-9), (split, key)
    assert out["1"]["dim"] == 40 and out["1"]["projected_from"] is None
    assert set(out["2"]["test"]) == set(LAYER_KEYS)
    small = layer_collapse(model, (x, y), layers=["1"], max_dim=16, seed=3)
    assert small["1"]["dim"] == 40 and small["1"]["projected_from"] is None
    assert small["1"]["train"] == pytest.approx(out["1"]["train"], rel=1e-12)
    assert not model[1]._forward_hooks and model.training  # hooks removed, mode restored
    stored = layer_outputs(model, x, ["1"], max_dim=16, seed=3)["1"]
    assert stored.shape == (60, 16)
    torch.testing.assert_close(layer_outputs(model, x, ["1"], max_dim=16, seed=3)["1"], stored, rtol=0, atol=0)
    with pytest.raises(InputError, match="unknown layer"):
        layer_collapse(model, (x, y), layers=["fc9"])
    with pytest.raises(InputError, match="max_dim must be >= 1"):
        layer_collapse(model, (x, y), layers=["1"], max_dim=0)
    with pytest.raises(InputError, match=r"1 class\(es\) have no sample in the test split"):
        layer_collapse(model, (x, y), (x[y < 2], y[y < 2]), layers=["1"])


def _bn_conv_model_and_data(n_train=300, n_test=100, seed=0):
    """A small conv model whose batch norm outputs 32 x 16 x 16 = 8,192 values per input (wider than 0.2's
    max_dim of 4,096), with non-trivial running statistics, and inputs with class structure (10 classes)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10)).eval()
    model[1].running_mean.normal_(generator=g)
    model[1].running_var.uniform_(0.5, 2.0, generator=g)
    templates = torch.randn(10, 3, 16, 16, generator=g)
    y, yt = torch.arange(n_train) % 10, torch.arange(n_test) % 10
    x = templates[y] + 1.5 * torch.randn(n_train, 3, 16, 16, generator=g)
    xt = templates[yt] + 1.5 * torch.randn(n_test, 3, 16, 16, generator=g)
    return model, (x, y), (xt, yt)


@pytest.mark.parametrize("global_mean", ["classes", "samples"])
def test_layer_collapse_is_exact_above_4096_dimensions(global_mean):
    """The issue's case: a 32x16x16 batch-norm output. layer_collapse equals collapse_metrics on the full
    8,192-wide outputs (train and test, every per-layer key). 0.2 reduced it to 4,096 dimensions by a random
    projection, which moves nc1 by several per cent (7 % in the issue); that route is shown here to differ,
    so a return to it fails the first assertion."""
    model, (x, y), (xt, yt) = _bn_conv_model_and_data()
    out = layer_collapse(model, (x, y), (xt, yt), layers=["1"], batch_size=64, global_mean=global_mean)["1"]
    with torch.no_grad():
        full, full_t = model[:2](x).flatten(1).double(), model[:2](xt).flatten(1).double()
    assert full.shape[1] == 8192 and out["dim"] == 8192 and out["projected_from"] is None
    expected = collapse_metrics((full, y), (full_t, yt), ls_gap=False, global_mean=global_mean)
    for split in ("train", "test"):
        for key in LAYER_KEYS:
            assert out[split][key] == pytest.approx(expected[split][key], rel=1e-9), (split, key)
    if global_mean == "classes":
        projected = layer_outputs(model, x, ["1"], max_dim=4096)["1"]
        old = collapse_metrics((projected, y), ls_gap=False)["train"]["nc1"]
        assert abs(old / out["train"]["nc1"] - 1) > 0.01


def test_layer_collapse_never_holds_a_d_by_d_or_n_by_d_tensor():
    """Memory does not grow with D^2 (or with N D): every tensor that any torch operation produces while
    layer_collapse runs on the 8,192-wide layer is at most one batch of outputs (B x D). A D x D scatter
    (67 M values), a D x 4096 projection (34 M) or the stored N x D outputs (2.5 M) would all exceed it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            for t in (result if isinstance(result, (tuple, list)) else [result]):
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return result

    model, train, test = _bn_conv_model_and_data()
    batch, d = 32, 32 * 16 * 16
    with Largest():
        out = layer_collapse(model, train, test, layers=["1"], batch_size=batch)
    assert out["1"]["dim"] == d
    assert batch * d / 2 < Largest.numel <= batch * d  # the outputs of one batch, and nothing larger


def test_collapse_does_not_import_features():
    """No import circle: ncbench.collapse (layer_collapse included, called) never imports ncbench.features,
    and both public names are the same function. 0.2's ncbench.collapse.layer_collapse imported
    ncbench.features lazily, which imported ncbench.collapse."""
    import subprocess
    import sys

    code = (
        "import sys, torch, ncbench.collapse as c\n"
        "m = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))\n"
        "c.layer_collapse(m, (torch.randn(20, 3), torch.arange(20) % 2), layers=['1'])\n"
        "assert 'ncbench.features' not in sys.modules, 'ncbench.collapse imported ncbench.features'\n"
        "import ncbench.features as f\n"
        "assert f.layer_collapse is c.layer_collapse and f.LAYER_KEYS is c.LAYER_KEYS\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_layer_collapse_measures_the_layer_not_the_inplace_activation_after_it():
    """BatchNorm followed by ReLU(inplace=True), as in cnn2d: the ReLU overwrites the batch norm's output
    tensor, so a hook that kept a view would measure the ReLU's output instead (0.1 did: cnn2d body.1)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(inplace=True),
                                torch.nn.Linear(8, 3)).eval()
    model[1].running_mean.normal_()
    x, y = torch.randn(90, 6), torch.arange(90) % 3
    with torch.no_grad():
        bn = model[1](model[0](x)).double()
    assert (bn < 0).any()  # the ReLU would change these values
    out = layer_collapse(model, (x, y), layers=["1"])
    expected = collapse_metrics((bn, y), ls_gap=False)["train"]["nc1"]
    after_relu = collapse_metrics((bn.clamp_min(0), y), ls_gap=False)["train"]["nc1"]
    assert out["1"]["train"]["nc1"] == pytest.approx(expected, rel=1e-9)
    assert abs(after_relu - expected) > 1e-3 * expected


def test_layer_collapse_takes_float64_numpy_inputs():
    # catches: batches handed to a float32 model as float64 ("mat1 and mat2 must have the same dtype"); numpy
    # arrays are float64 by default, and docs/metrics.md shows exactly this call
    import numpy as np
    from torch import nn

    from ncbench.collapse import layer_collapse

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = np.random.default_rng(0).standard_normal((40, 4))
    y = np.arange(40, dtype=np.int32) % 2
    a = layer_collapse(net, (x, y), layers=["1"])
    b = layer_collapse(net, (x.astype(np.float32), y.astype(np.int64)), layers=["1"])
    assert a["1"]["train"]["nc1"] == pytest.approx(b["1"]["train"]["nc1"], rel=1e-12)
