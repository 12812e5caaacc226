"""The statistics of issue 16 (ncbench.analysis._stats, ._targets and their use in regress and the board).

Each test names, in its docstring, the wrong implementation it catches. Reference implementations here are
written from the definitions (loops over pairs and cells), independently of the vectorised code under test.
"""

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ncbench._errors import InputError
from ncbench.analysis import format_ranking, regress, render_measures_board
from ncbench.analysis._stats import (MIN_CONFIGS, adjust, grid_lines, hoeffding_weight, line_kendalls, line_summary,
                                     robust_sign_error, t_interval)

AXES = ["width", "wd", "lr"]


def grid_frame(levels, seeds=(0, 1), n_test=5000, rng_seed=0, noise=0.01):
    """Accuracy rises with each axis' level; nc1 = exp(-5 acc) + noise (a good reversed predictor), ``anti`` a
    weak one, ``rand`` independent noise, ``ssw`` a baseline that tracks width only."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for k, cell in enumerate(itertools.product(*levels.values())):
        a = dict(zip(levels, cell))
        base = 0.5 + sum(0.08 * i / max(len(v) - 1, 1) for i, v in zip(
            (list(levels[ax]).index(a[ax]) for ax in levels), levels.values())) + rng.normal(0, noise)
        for s in seeds:
            acc = float(np.clip(base + rng.normal(0, noise), 0, 1))
            rows.append({**a, "seed": s, "job_id": f"job{k}-{s}", "dataset": "mnist1d", "train_accuracy": 1.0,
                         "test_accuracy": acc, "generalization_gap": 1 - acc, "n_test": n_test,
                         "robust_accuracy@0.1": acc - 0.3 + rng.normal(0, 0.02), "robust_n_points": n_test,
                         "train.nc1": math.exp(-5 * acc) * rng.lognormal(0, 0.05),
                         "train.anti": float(rng.normal() - 3 * acc), "train.rand": float(rng.normal()),
                         "test.nc1": math.exp(-5 * acc), "sum_squared_weights": float(a["width"] + rng.normal(0, 1)),
                         "num_parameters": 100 * a["width"]})
    frame = pd.DataFrame(rows)
    frame.attrs["axes"] = [*levels, "seed"]
    return frame


LEVELS = {"width": (8, 16, 32, 64), "wd": (1e-4, 1e-3, 1e-2), "lr": (0.01, 0.1)}


@pytest.fixture(scope="module")
def frame():
    return grid_frame(LEVELS)


@pytest.fixture(scope="module")
def table(frame):
    return regress(frame, n_boot=200)


# ---------------------------------------------------------------- Psi's standard error over lines

def psi_se_reference(kendalls, shape):
    """Var(Psi) from the definition: per-axis variance of the mean of its lines (floored at 1/G^2), plus for every
    ordered pair of axes the sum over cells of the product of the two lines' deviations / (G_i G_j)."""
    k = len(shape)
    G = [len(x) for x in kendalls]
    dev = []
    for i, x in enumerate(kendalls):
        d = np.empty(math.prod(shape))
        for line, cells in enumerate(grid_lines(shape, i)):
            for c in cells:
                d[c] = x[line] - np.mean(x)
        dev.append(d)
    var = [0.0 if np.all(x == 0) else max(np.var(x, ddof=1) / len(x), 1 / len(x) ** 2) for x in kendalls]
    cross = sum(float(dev[i] @ dev[j]) / (G[i] * G[j]) for i in range(k) for j in range(k) if i != j)
    return math.sqrt(max(sum(var), sum(var) + cross) / k ** 2)


def test_line_summary_matches_the_definition_with_the_cross_axis_term():
    """Catches a Psi standard error that treats the axes as independent (drops the shared-cell covariance) or
    forgets the floor, on a random 4 x 2 x 3 grid where the cross term is not zero."""
    rng = np.random.default_rng(6)  # a draw whose cross-axis term is positive (about half of them are)
    shape = (4, 2, 3)
    g = rng.normal(size=(1, 24))
    m = np.stack([rng.normal(size=24), g[0] + rng.normal(0, 0.8, 24), np.zeros(24)])  # noise, correlated, constant
    ks = line_kendalls(m, g, shape)
    got = line_summary(ks, shape)
    for p in range(3):
        per = [x[0, p] for x in ks]
        assert got["psi"][0, p] == pytest.approx(np.mean([x.mean() for x in per]))
        assert got["se"][0, p] == pytest.approx(psi_se_reference(per, shape), rel=1e-12)
    independent = math.sqrt(sum(max(np.var(x[0, 1], ddof=1) / x.shape[-1], x.shape[-1] ** -2) for x in ks) / 9)
    assert got["se"][0, 1] > 1.05 * independent  # the shared cells add covariance here
    assert got["se"][0, 2] == 0  # a constant predictor's psi is exactly 0: no floor
    assert got["df"] == min(len(grid_lines(shape, i)) for i in range(3)) - 1


def _population_psi(shape, betas, su, sv, rng, n_lines=100_000):
    """psi_i of the population: the mean over many independent lines of the sign-Kendall along axis i."""
    out = []
    for i, n in enumerate(shape):
        mean = betas[i] * np.arange(n) / max(n - 1, 1)
        g = mean + rng.normal(0, su, (n_lines, n))
        m = -(g + rng.normal(0, sv, g.shape))
        a, b = np.triu_indices(n, 1)
        out.append(float((np.sign(m[:, a] - m[:, b]) * np.sign(g[:, a] - g[:, b])).mean()))
    return np.array(out)


def coverage(shape, betas, su, sv, reps, rng):
    """Coverage of Psi's and every psi_i's 95 % interval over ``reps`` simulated grids (cells
    g = sum_i beta_i level_i / (n_i - 1) + N(0, su^2), m = -(g + N(0, sv^2))), against the population values."""
    betas = np.asarray(betas[:len(shape)], dtype=np.float64)
    truth = _population_psi(shape, betas, su, sv, rng)
    levels = np.stack(np.unravel_index(np.arange(math.prod(shape)), shape), axis=1)
    mean = (levels / np.maximum(np.array(shape) - 1, 1) * betas).sum(axis=1)
    hits, hits_axis = 0, np.zeros(len(shape))
    for _ in range(reps):
        g = mean + rng.normal(0, su, mean.size)
        m = -(g + rng.normal(0, sv, g.size))
        s = line_summary(line_kendalls(m[None], g[None], shape), shape)
        lo, hi = t_interval(s["psi"][0, 0], s["se"][0, 0], s["df"])
        hits += lo <= truth.mean() <= hi
        hits_axis += [s["per_axis_lo"][i][0, 0] <= truth[i] <= s["per_axis_hi"][i][0, 0] for i in range(len(shape))]
    return hits / reps, hits_axis / reps


def test_psi_intervals_cover_the_population_value():
    """On a 3^5 factorial (81 lines per axis) with noisy cells, where the population psi_i are known, the 95 %
    intervals of Psi and of every psi_i cover them at roughly the nominal rate. Catches intervals that ignore
    that the psi_i share cells (without the cross-axis covariance Psi's covers 0.87 here; resampling each
    axis' lines independently, about the same) and intervals that are far too wide (coverage 1)."""
    psi, per_axis = coverage((3, 3, 3, 3, 3), (1.0, 0.3, 0.2, 0.1, 0.5), 0.3, 0.4, 300, np.random.default_rng(7))
    assert 0.90 <= psi <= 0.99, psi
    assert np.all((per_axis >= 0.90) & (per_axis <= 0.995)), per_axis


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(4, 3, 2), (3, 2, 2), (4, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4)])
@pytest.mark.parametrize("setting", [((1.0, 0.3, 0.2, 0.1, 0.5), 0.3, 0.4), ((2.0, 0.1, 0.1, 0.0, 0.0), 0.2, 0.3)])
def test_coverage_table_of_docs_statistics(shape, setting):
    """The simulation table of docs/statistics.md (600 grids a design): Psi's intervals cover at least
    nominally (conservative in small designs), psi_i's Agresti-Coull intervals at least 0.92."""
    betas, su, sv = setting
    psi, per_axis = coverage(shape, betas, su, sv, 600, np.random.default_rng(11))
    assert 0.925 <= psi <= 1.0, psi
    assert np.all(per_axis >= 0.92), per_axis


def test_psi_axis_interval_is_not_a_point_when_every_line_agrees():
    """Catches a plain standard error that gives psi_i = -1 an interval [-1, -1] when all 8 lines say -1 (the
    population value may well be -0.85): the Agresti-Coull pseudo-lines keep it open."""
    ks = [np.full((1, 1, 8), -1.0), np.full((1, 1, 2), -1.0)]
    s = line_summary(ks, (2, 8))
    assert s["per_axis"][0][0, 0] == -1.0
    assert s["per_axis_lo"][0][0, 0] == -1.0 and s["per_axis_hi"][0][0, 0] > -0.8
    assert s["se"][0, 0] > 0  # the floor: a mean of identical lines is not known exactly


# ---------------------------------------------------------------- multiple comparisons

def holm_by_hand(p):
    """Holm's step-down adjustment written out: sort, multiply the k-th smallest by (m - k + 1), running max."""
    order = np.argsort(p)
    m = len(p)
    out, running = np.empty(m), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def test_holm_against_statsmodels_and_by_hand_with_missing_comparisons():
    """Catches counting NaN (comparisons not made) as tests, Bonferroni in place of Holm, and a missing running
    maximum."""
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, np.nan, 0.04, 0.03, 0.005, 0.5])
    got = adjust(p, "holm")
    finite = p[np.isfinite(p)]
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[np.isfinite(p)], multipletests(finite, method="holm")[1], rtol=1e-15)
    np.testing.assert_allclose(got[np.isfinite(p)], holm_by_hand(finite), rtol=1e-15)
    np.testing.assert_allclose(got[np.isfinite(p)], [0.04, 0.09, 0.09, 0.025, 0.5], rtol=1e-12)
    np.testing.assert_allclose(adjust(p, "fdr_bh")[np.isfinite(p)], multipletests(finite, method="fdr_bh")[1])
    with pytest.raises(InputError, match=r"correction must be one of \['fdr_bh', 'holm'\].*got 'bonferroni'"):
        adjust(p, "bonferroni")


def test_regress_corrects_over_every_predictor_and_target(frame, table):
    """The table's corrected p-values are the chosen method applied once over all its (predictor, target)
    tests, the test-label family left out. Catches a correction per target (fewer tests, smaller p)."""
    from statsmodels.stats.multitest import multipletests

    assert table["psi_p"][table["reads_test_labels"]].isna().all()
    ok = table["psi_p"].notna()
    assert ok.sum() >= 10 and table["target"][ok].nunique() >= 2
    np.testing.assert_allclose(table["psi_p_adj"][ok], multipletests(table["psi_p"][ok], method="holm")[1])
    bh = regress(frame, ["test_accuracy"], ["train.nc1", "train.rand", "sum_squared_weights"], n_boot=0,
                 correction="fdr_bh")
    assert (bh["correction"] == "fdr_bh").all()
    np.testing.assert_allclose(bh["psi_p_adj"], multipletests(bh["psi_p"], method="fdr_bh")[1])
    with pytest.raises(InputError, match="correction must be one of"):
        regress(frame, n_boot=0, correction="bonf")


def test_one_comparison_has_one_corrected_p_value(table):
    """The best predictor against the best baseline is both a "best over the rest" test and a "margin over the
    baseline" test: it must get one corrected p-value, the paired tests being corrected as one family with each
    pair counted once. Catches the two families corrected apart (different sizes, different p-values: a board
    said "significantly better than every other" and "not significantly better than the baseline" of one
    pair)."""
    from statsmodels.stats.multitest import multipletests

    checked = 0
    for _, rows in table.groupby("target"):
        best, base = rows["best_predictor"].iloc[0], rows["baseline"].iloc[0]
        if not isinstance(best, str) or not isinstance(base, str) or best == base:
            continue
        as_margin = rows.loc[rows["predictor"] == best, "vs_baseline_p_adj"].item()
        as_tie = rows.loc[rows["predictor"] == base, "best_p_adj"].item()
        assert as_margin == as_tie < 1
        checked += 1
    assert checked >= 2
    pairs = {}
    for col, other in (("best_p", "best_predictor"), ("vs_baseline_p", "baseline")):
        for _, r in table[table[col].notna()].iterrows():
            pairs.setdefault((r["target"], frozenset((r["predictor"], r[other]))), r[col])
    keys = list(pairs)
    expected = dict(zip(keys, multipletests([pairs[k] for k in keys], method="holm")[1]))
    for col, other in (("best_p", "best_predictor"), ("vs_baseline_p", "baseline")):
        for _, r in table[table[col].notna()].iterrows():
            assert r[col + "_adj"] == pytest.approx(expected[(r["target"], frozenset((r["predictor"], r[other])))])


# ---------------------------------------------------------------- ranks, ties and comparisons

def test_equal_psi_share_a_rank_and_print_as_ties(frame):
    """Two predictors with the same |Psi| (a predictor and its negation, a monotone transform) share a rank,
    in the table and on the terminal. Catches the old output that ranked ties alphabetically."""
    f = frame.assign(**{"train.neg": -frame["train.nc1"], "train.log": np.log(frame["train.nc1"])})
    t = regress(f, ["test_accuracy"], ["train.rand", "train.nc1", "train.neg", "train.log"], n_boot=0)
    r = t.set_index("predictor")
    assert r.loc["train.nc1", "rank"] == r.loc["train.neg", "rank"] == r.loc["train.log", "rank"] == 1
    assert r.loc["train.rand", "rank"] == 4  # competition ranking: 1, 1, 1, 4
    assert r.loc["train.neg", "best_diff"] == 0 and r.loc["train.neg", "best_p"] == 1
    assert r.loc["train.neg", "tied_with_best"]
    lines = format_ranking(t, top=4).splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["1.", "1.", "1.", "4."]


def test_a_margin_is_paired_and_sign_free(frame):
    """|Psi| margins over the best baseline use the oriented coefficients line by line. Catches comparing
    signed Psi (a reversed predictor would look worse than the baseline) and unpaired differences (the margin
    of a predictor over an exact copy of itself would get a non-zero interval)."""
    f = frame.assign(**{"measures.copy": -frame["train.nc1"]})
    t = regress(f, ["test_accuracy"], ["train.nc1", "train.rand", "measures.copy"], n_boot=0).set_index("predictor")
    assert (t["baseline"] == "measures.copy").all()
    r = t.loc["train.nc1"]
    assert r["vs_baseline"] == 0 and r["vs_baseline_lo"] == 0 and r["vs_baseline_hi"] == 0  # identical lines
    assert r["vs_baseline_p"] == 1
    rand = t.loc["train.rand"]
    assert rand["vs_baseline"] == pytest.approx(abs(rand["psi"]) - abs(t.loc["measures.copy", "psi"]))
    assert rand["vs_baseline"] < 0 and rand["vs_baseline_hi"] < 0 and rand["vs_baseline_p_adj"] < 0.05
    assert not rand["tied_with_best"]


def test_negating_a_measure_changes_no_score_but_the_sign(frame):
    """Catches a PGDL score or rank that moves when a measure is negated (the competition's self-pairs). The
    sign-error keeps the direction the hypothesis states (both columns are collapse metrics: lower should go
    with higher accuracy), so negating the measure turns each environment's error into its complement."""
    f = frame.assign(**{"train.neg": -frame["train.anti"]})
    t = regress(f, ["test_accuracy"], ["train.anti", "train.neg", "train.rand"], n_boot=0).set_index("predictor")
    a, b = t.loc["train.anti"], t.loc["train.neg"]
    assert 0 < a["pgdl"] < 100 and 0 < a["pgdl_no_self"] < 100
    for col in ("pgdl", "pgdl_no_self", "rank"):
        assert a[col] == b[col], col
    assert a["psi"] == -b["psi"] and a["tau"] == -b["tau"]
    assert a["sign_error_mean"] + b["sign_error_mean"] == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------- Dziugaite et al.'s robust sign-error

def sign_error_reference(rows, axes, measure, target, n, orientation, min_ess=1.0):
    """Their create_environments + get_all_losses, in loops: every ordered pair of runs whose configurations
    differ in exactly one axis, weight (hoeffding - 1/2)_+, summed per (configuration, configuration)."""
    losses, weights, squares = {}, {}, {}
    for (_, r1), (_, r2) in itertools.product(rows.iterrows(), rows.iterrows()):
        h1, h2 = tuple(r1[a] for a in axes), tuple(r2[a] for a in axes)
        if sum(x != y for x, y in zip(h1, h2)) != 1:
            continue
        d = abs(r1[target] - r2[target])
        w = max(0.0, 1 - 2 * math.exp(-2 * n * (d / 2) ** 2)) ** 2
        w = w - 0.5 if w > 0.5 else 0.0
        err = (1 - orientation * np.sign(r1[measure] - r2[measure]) * np.sign(r1[target] - r2[target])) / 2
        key = (h1, h2)
        losses[key] = losses.get(key, 0.0) + w * err
        weights[key] = weights.get(key, 0.0) + w
        squares[key] = squares.get(key, 0.0) + w * w
    env = [losses[k] / weights[k] for k in losses
           if weights[k] > 0 and weights[k] ** 2 / squares[k] >= min_ess - 1e-12 and k[0] < k[1]]
    return env


def test_robust_sign_error_by_hand_on_a_two_axis_grid():
    """2 x 2 grid, n = 1000 test points, cell (1,0) with two runs. Environments: a-axis (00,10) with two run
    pairs and (01,11); b-axis (00,01), whose difference (0.02) is inside the noise (weight 0: left out), and
    (10,11) with two run pairs. Pair weights (1 - 2 exp(-n d^2 / 2))^2 - 1/2: d = 0.10 -> 0.4732298,
    d = 0.08 -> 0.3435974, d >= 0.3 -> 0.5. Losses: (00,10): the d = 0.08 pair is reversed (m 1 -> 0.5 while g
    rises), so 0.3435974 / (0.4732298 + 0.3435974) = 0.42065; (01,11): reversed, 1; (10,11): both pairs
    reversed, 1. Catches an unweighted mean over pairs, the weight without its square or its 1/2 shift, and a
    noisy environment left in."""
    rows = pd.DataFrame([
        {"a": 0, "b": 0, "g": 0.50, "m": 1.0},
        {"a": 1, "b": 0, "g": 0.60, "m": 2.0},
        {"a": 1, "b": 0, "g": 0.58, "m": 0.5},
        {"a": 0, "b": 1, "g": 0.52, "m": 3.0},
        {"a": 1, "b": 1, "g": 0.90, "m": 0.0},
    ])
    w10, w08 = (1 - 2 * math.exp(-500 * 0.10 ** 2)) ** 2 - 0.5, (1 - 2 * math.exp(-500 * 0.08 ** 2)) ** 2 - 0.5
    assert w10 == pytest.approx(0.4732298, abs=1e-7) and w08 == pytest.approx(0.3435974, abs=1e-7)
    assert w08 / (w10 + w08) == pytest.approx(0.42065, abs=1e-5)
    env_00_10 = w08 / (w10 + w08)  # the pair (0.50, 0.58) has m 1 -> 0.5: reversed
    env_01_11 = 1.0  # g up, m 3 -> 0 down
    env_10_11 = 1.0  # both runs of (1,0) have m above 0 and g below 0.90: reversed, weights 0.5 each
    expected = [env_00_10, env_01_11, env_10_11]
    cell = (rows["a"] * 2 + rows["b"]).to_numpy()
    hw = hoeffding_weight(np.array([0.10, 0.08]), np.array([1000, 1000]), np.array([1000, 1000])) - 0.5
    np.testing.assert_allclose(hw, [w10, w08])
    out = robust_sign_error(rows[["m"]].to_numpy().T, rows["g"].to_numpy(), np.full(5, 1000.0), cell, (2, 2),
                            np.array([1.0]))
    assert out["n_envs"] == 3 and out["n_envs_total"] == 4
    assert out["mean"][0] == pytest.approx(np.mean(expected))
    assert out["p90"][0] == pytest.approx(np.percentile(expected, 90))
    assert out["max"][0] == pytest.approx(1.0)
    assert sorted(sign_error_reference(rows, ["a", "b"], "m", "g", 1000, 1.0)) == pytest.approx(sorted(expected))
    # an effective sample size of 2 keeps only environments with two comparable run pairs: (00,10), ESS 1.96
    strict = robust_sign_error(rows[["m"]].to_numpy().T, rows["g"].to_numpy(), np.full(5, 1000.0), cell, (2, 2),
                               np.array([1.0]), min_ess=1.9)
    assert strict["n_envs"] == 2  # (00,10) with 1.96 and (10,11) with two equal weights: 2
    # without the noise filter every pair weighs 1, and the (00,01) environment (m 1 -> 3, g up) counts
    raw = robust_sign_error(rows[["m"]].to_numpy().T, rows["g"].to_numpy(), np.full(5, 1000.0), cell, (2, 2),
                            np.array([1.0]), filter_noise=False)
    assert raw["n_envs"] == 4 and raw["mean"][0] == pytest.approx((0.5 + 1 + 0 + 1) / 4)


def test_regress_sign_error_matches_the_reference_on_runs(frame):
    """regress compares runs (every seed against every seed), orients by the sign of tau, and uses n_test.
    Catches a sign-error on seed-averaged configurations and one that ignores the frame's n_test."""
    f = frame.assign(n_test=800)
    t = regress(f, ["test_accuracy"], ["train.anti"], n_boot=0).iloc[0]
    ref = sign_error_reference(f, list(LEVELS), "train.anti", "test_accuracy", 800, np.sign(t["tau"]))
    assert t["sign_error_envs"] == len(ref) > 0
    assert t["sign_error_mean"] == pytest.approx(np.mean(ref))
    assert t["sign_error_p90"] == pytest.approx(np.percentile(ref, 90))
    assert t["sign_error_max"] == pytest.approx(np.max(ref))
    small = regress(f.assign(n_test=100), ["test_accuracy"], ["train.anti"], n_boot=0).iloc[0]
    assert small["sign_error_envs"] < t["sign_error_envs"]  # fewer differences stand above the larger noise


# ---------------------------------------------------------------- robustness given clean accuracy

def test_partial_spearman_given_clean_accuracy_by_hand(frame, table):
    """partial_rho_clean is the first-order partial correlation of the Spearman coefficients with clean test
    accuracy (seed-averaged configurations). Catches a partial on Pearson correlations, one controlling for
    the wrong column, and a clean_share that is not partial / raw."""
    cells = frame.groupby(list(LEVELS), as_index=False)[["train.anti", "robust_accuracy@0.1", "test_accuracy"]].mean()
    s = lambda a, b: scipy.stats.spearmanr(cells[a], cells[b]).statistic  # noqa: E731
    rxy, rxc, ryc = s("train.anti", "robust_accuracy@0.1"), s("train.anti", "test_accuracy"), s(
        "robust_accuracy@0.1", "test_accuracy")
    expected = (rxy - rxc * ryc) / math.sqrt((1 - rxc ** 2) * (1 - ryc ** 2))
    r = table.set_index(["target", "predictor"]).loc[("robust_accuracy@0.1", "train.anti")]
    assert r["partial_rho_clean"] == pytest.approx(expected)
    assert r["clean_share"] == pytest.approx(expected / rxy)
    assert r["partial_rho_clean_lo"] <= r["partial_rho_clean"] <= r["partial_rho_clean_hi"]
    assert table.set_index(["target", "predictor"])["partial_rho_clean"].loc["test_accuracy"].isna().all()


# ---------------------------------------------------------------- small designs and noisy targets

def readme_grid():
    """The README's grid: 2 widths x 2 weight decays x 2 seeds on digits (450 test points); test accuracies
    within 2 test points of each other, so every predictor ties at a few values of |Psi|."""
    rows = []
    correct = {(64, 5e-4): (440, 441), (64, 5e-3): (441, 442), (256, 5e-4): (440, 440), (256, 5e-3): (442, 441)}
    rng = np.random.default_rng(3)
    for (w, wd), counts in correct.items():
        for s, c in enumerate(counts):
            acc = c / 450
            rows.append({"model_args.width": w, "train.weight_decay": wd, "seed": s, "job_id": f"{w}-{wd}-{s}",
                         "dataset": "digits", "train_accuracy": 1.0, "test_accuracy": acc,
                         "generalization_gap": 1 - acc, **{f"train.m{k}": float(rng.normal()) for k in range(6)},
                         "test.nc1": -acc, "num_parameters": 10 * w})
    f = pd.DataFrame(rows)
    f.attrs["axes"] = ["model_args.width", "train.weight_decay", "seed"]
    return f


def test_a_small_design_prints_no_interval_and_no_ranking():
    """Catches the old output on the README's 8-model grid: 'tau +0.913 [+0.775, +1.000]' marked as
    excluding 0, and 13 predictors tied at one |Psi| listed as a ranking."""
    t = regress(readme_grid(), n_boot=200)
    text = format_ranking(t)
    import re

    assert not re.search(r"\[[+-]\d", text)  # no interval anywhere
    assert not any(line.lstrip().startswith("1.") for line in text.splitlines())  # and no ranking
    assert text.startswith(f"warning: only 4 configurations (fewer than {MIN_CONFIGS}): intervals, p-values and "
                           "rankings are withheld")
    assert "warning: the frame has no n_test column: took the test set size of each dataset's default split " \
           "(digits: 450)" in text
    assert "test_accuracy sits inside its sampling noise" in text
    assert t["rank"].isna().all() and t["tau_lo"].isna().all() and t["psi_lo"].isna().all()
    assert t["psi_p_adj"].isna().all() and t["tau_ci_excludes_0"].isna().all()
    assert t["psi"].notna().any()  # the point estimates are still there, described


def test_a_target_inside_its_noise_is_not_ranked_but_one_above_it_is(frame):
    """Same grid and values, two test-set sizes. Catches a noise check that ignores n_test."""
    big = regress(frame.assign(n_test=100_000), ["test_accuracy"], ["train.nc1", "train.rand"], n_boot=0)
    tiny = regress(frame.assign(n_test=20), ["test_accuracy"], ["train.nc1", "train.rand"], n_boot=0)
    assert big["target_ok"].all() and big["rank"].notna().all() and (big["withheld"] == "").all()
    assert not tiny["target_ok"].any() and tiny["rank"].isna().all()
    assert tiny["withheld"].iloc[0].startswith("test_accuracy sits inside its sampling noise")
    assert tiny["target_snr"].iloc[0] < 2 <= big["target_snr"].iloc[0]
    se = tiny["target_noise_se"].iloc[0]
    cells = frame.groupby(list(LEVELS))["test_accuracy"].mean()
    assert se == pytest.approx(math.sqrt(np.mean(cells * (1 - cells) / (20 * 2))))


def test_the_gap_is_ranked_only_where_training_accuracy_varies(frame):
    """Training accuracy 1 everywhere: the gap is 1 - test accuracy, and its 'ranking' would copy test
    accuracy's (issue 16: Spearman -0.9999). With training accuracy that varies as much as test accuracy, it
    is ranked. Catches a gap ranked regardless, and a rule that looks only at train accuracy's own noise
    (near 1 a binomial error is about 0, so a spread of 0.002 would pass)."""
    flat = regress(frame.assign(train_accuracy=np.where(frame.index % 7 == 0, 0.998, 1.0)), n_boot=0)
    gap = flat[flat["target"] == "generalization_gap"]
    assert gap["rank"].isna().all() and not gap["target_ok"].any()
    assert gap["withheld"].iloc[0].startswith("generalization_gap is not ranked: training accuracy varies too little")
    rng = np.random.default_rng(0)
    train = np.clip(frame["test_accuracy"] + 0.3 + rng.normal(0, 0.08, len(frame)), 0, 1)
    varied = frame.assign(train_accuracy=train, generalization_gap=train - frame["test_accuracy"], n_train=4000)
    gap = regress(varied, ["generalization_gap"], ["train.nc1", "train.rand"], n_boot=0)
    assert gap["target_ok"].all() and gap["rank"].notna().all()


def test_old_frames_fall_back_and_say_so(frame):
    """No n_test / robust_n_points columns: the counts come from the dataset's default split, with a warning.
    Catches a regress that fails on an old frame, or that falls back silently."""
    old = frame.drop(columns=["n_test", "robust_n_points"])
    t = regress(old, ["test_accuracy", "robust_accuracy@0.1"], ["train.nc1"], n_boot=0)
    assert (t["target_n_points"] == 1000).all()  # mnist1d's default test split
    assert any("no n_test column" in w for w in t.attrs["warnings"])
    assert any("no robust_n_points column" in w for w in t.attrs["warnings"])


# ---------------------------------------------------------------- the board and the figure

def test_board_of_the_statistics_rerenders_identically(table, tmp_path):
    """Catches a README that cannot be rebuilt from measures.csv + board.json byte for byte, and one that
    loses the table's warnings."""
    from ncbench.analysis import write_measures_board

    t = table.copy()
    t.attrs = {"warnings": ["a warning"]}
    paths = write_measures_board(t, tmp_path, sweep="g", command="ncbench regress --sweep g", n_models=48,
                                 source_note="")
    first = (tmp_path / "README.md").read_bytes()
    render_measures_board(tmp_path)
    assert (tmp_path / "README.md").read_bytes() == first and len(paths) == 3
    text = first.decode()
    assert "- a warning" in text and "### test-labels: reads the test labels (descriptive, not ranked)" in text
    assert "What is resampled." in text and "Holm (family-wise error rate)" in text


def test_a_format_1_board_still_renders(tmp_path):
    """The committed boards were written before this format: rendering them must not fail (the leaderboard
    renderer walks every measures board) and must say they are old."""
    src = Path(__file__).resolve().parents[1] / "leaderboards" / "measures" / "mnist1d-grid"
    if not (src / "board.json").is_file():
        pytest.skip("no committed measures board")
    import json

    if json.loads((src / "board.json").read_text()).get("format") != 1:
        pytest.skip("the committed board is already in the new format")
    for name in ("board.json", "measures.csv"):
        shutil.copy(src / name, tmp_path / name)
    render_measures_board(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "written by an older ncbench (format 1)" in text
    # it had no paired tests: the board must not word a ranking as if they had been made
    assert "no paired test on this board" in text and "margin the corrected paired test supports" not in text


def test_psi_figure_legend_covers_no_bar(table):
    """Issue 18: the legend of the psi figures covered the bars. Catches a legend placed inside the axes."""
    from ncbench.analysis._figures import psi_figure
    from ncbench.analysis._tables import psi_axes
    from ncbench.plot import _pyplot

    plt = _pyplot()
    rows = table[table["predictor"] == "train.nc1"]
    fig = psi_figure(plt, rows, psi_axes(table), "train.nc1")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches]
    assert len(bars) == len(rows) * len(psi_axes(table))
    assert not any(legend.overlaps(b) for b in bars)
    assert fig.bbox.contains(legend.x1 - 1, legend.y0 + 1)  # and it is on the figure, not cut off
    plt.close(fig)


def test_the_best_predictor_is_not_tested_against_itself():
    # catches: a p-value of 1 for each target's best-vs-itself row entering the correction (it adds one fake test
    # per target and inflates every adjusted p-value of the paired comparisons)
    frame = grid_frame(LEVELS)
    table = regress(frame, ["test_accuracy"], None, list(frame.attrs["axes"]), n_boot=50)
    ranked = table[table["rank"].notna()]
    best = ranked[ranked["predictor"] == ranked["best_predictor"]]
    assert len(best) == 1 and best["best_p"].isna().all() and bool(best["tied_with_best"].iloc[0])
    assert table["best_p"].notna().sum() == len(ranked) - 1


def test_sign_error_orients_by_the_stated_hypothesis_not_by_the_data():
    # catches: the sign-error oriented by the data's own tau (optimistic for weak predictors): a collapse metric
    # whose association runs against its hypothesis (more collapse, lower accuracy) must score badly, not well
    from ncbench.analysis._frame import a_priori_sign

    assert a_priori_sign("train.nc1", "test_accuracy") == -1
    assert a_priori_sign("test_pred.ncc_accuracy", "test_accuracy") == 1
    assert a_priori_sign("measures.path_norm", "robust_accuracy@0.01") == -1
    assert a_priori_sign("train_margin_p10", "test_accuracy") == 1
    assert a_priori_sign("estimators.atc", "test_accuracy") == 1
    assert a_priori_sign("train.nc1", "generalization_gap") == 1
    assert a_priori_sign("something_else", "test_accuracy") == 0
    frame = grid_frame(LEVELS).copy()
    frame["train.backwards"] = -frame["train.nc1"]  # higher value, more accuracy: against the collapse hypothesis
    table = regress(frame, ["test_accuracy"], ["train.nc1", "train.backwards"], list(frame.attrs["axes"]),
                    n_boot=20)
    row = table.set_index("predictor")
    assert row.loc["train.nc1", "sign_error_mean"] < 0.2 < row.loc["train.backwards", "sign_error_mean"]
