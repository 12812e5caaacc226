"""ncbench.analysis on hand-made frames with known answers, against second implementations written from the
definitions (issue 10), plus bad input, output files and the ``regress`` command's handler."""

import argparse
import hashlib
import itertools
import json
import math
import sys
import types
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ncbench._errors import InputError
from ncbench.analysis import (draw_figures, format_ranking, granulated_kendall, kendall, pgdl_score, regress,
                              render_measures_board, write_measures_board, write_regression)
from ncbench.analysis._rank import bootstrap_rank_correlations
from ncbench.analysis._regress import _interval, columns

AXES = ["model_args.width", "train.weight_decay", "train.lr"]
LEVELS = {"model_args.width": (8, 16, 32, 64), "train.weight_decay": (1e-4, 5e-4, 1e-3), "train.lr": (0.01, 0.1)}


def job_id(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def make_frame(seeds=(0,), rng_seed=0, levels=LEVELS):
    """A sweep over width x weight decay x lr (x seeds): accuracy rises with width and lr, falls with decay.

    ``train.nc1 = exp(-5 test_accuracy)`` row by row (a perfect, reversed, log-linear predictor of accuracy with
    one seed), ``test.nc1`` independent noise, ``train.nc2_equiangle_means`` constant, the four baselines.
    """
    rng = np.random.default_rng(rng_seed)
    rows = []
    for cell in itertools.product(*levels.values()):
        a = dict(zip(levels, cell))
        base = 0.55 + 0.04 * np.log2(a["model_args.width"]) - 60 * a["train.weight_decay"] + 0.5 * a["train.lr"]
        base += rng.normal(0, 0.01)
        for s in seeds:
            acc = base + rng.normal(0, 0.01)
            rows.append({
                **a, "seed": s, "job_id": job_id(cell, s), "sweep": "grid", "train_accuracy": 1.0,
                "test_accuracy": acc, "generalization_gap": 1.0 - acc,
                "robust_accuracy@8/255": acc - 0.4 + rng.normal(0, 0.02),
                "train.nc1": math.exp(-5 * acc), "test.nc1": float(rng.lognormal()),
                "train.nc2_equiangle_means": 0.0,
                "num_parameters": 1000 * a["model_args.width"] + 10, "final_train_loss": float(rng.lognormal(-4, 1)),
                "sum_squared_weights": float(rng.uniform(10, 20)), "train_margin_p10": acc + rng.normal(0, 0.05),
                "n_test": 5000, "robust_n_points": 1000,
            })
    frame = pd.DataFrame(rows)
    frame.attrs["axes"] = [*levels, "seed"]
    return frame


def averaged(frame, axes):
    """Seeds averaged with pandas (independent of the grid code under test)."""
    num = [c for c in frame.columns if c not in axes and pd.api.types.is_numeric_dtype(frame[c]) and c != "seed"]
    return frame.groupby(axes, as_index=False)[num].mean()


# ---------------------------------------------------------------- second implementations, from the definitions

def granulated_reference(cells, measure, target, axes):
    """Jiang et al. eq. 4 with loops: per axis, per cell of the other axes, sign-Kendall over ordered pairs."""
    per_axis = {}
    for axis in axes:
        others = [a for a in axes if a != axis]
        taus = []
        for _, block in cells.groupby(others):
            m, g = block[measure].to_numpy(), block[target].to_numpy()
            n = len(m)
            total = sum(np.sign(m[a] - m[b]) * np.sign(g[a] - g[b]) for a in range(n) for b in range(n) if a != b)
            taus.append(total / (n * (n - 1)))
        per_axis[axis] = float(np.mean(taus))
    return float(np.mean(list(per_axis.values()))), per_axis


def pgdl_reference(cells, measure, target, axes, self_pairs=True, key=tuple):
    """PGDL's score with loops over ordered pairs and dict bins keyed by ``key`` of the four axis values."""
    models = [(tuple(r[a] for a in axes), r[measure], r[target]) for _, r in cells.iterrows()]
    ratios = []
    for h1, h2 in itertools.permutations(range(len(axes)), 2):
        bins = defaultdict(Counter)
        for (ti, mi, gi), (tj, mj, gj) in itertools.product(models, models):
            if ti == tj and not self_pairs:
                continue
            bins[key((ti[h1], tj[h1], ti[h2], tj[h2]))][(int(mi > mj), int(gi > gj))] += 1
        total = sum(sum(c.values()) for c in bins.values())
        info = ent = 0.0
        for c in bins.values():
            n_u = sum(c.values())
            p = {k: v / n_u for k, v in c.items()}
            pm = {a: sum(v for (x, _), v in p.items() if x == a) for a in (0, 1)}
            pg = {b: sum(v for (_, y), v in p.items() if y == b) for b in (0, 1)}
            ent += n_u / total * -sum(v * math.log2(v) for v in pg.values() if v > 0)
            info += n_u / total * sum(v * math.log2(v / (pm[x] * pg[y])) for (x, y), v in p.items() if v > 0)
        ratios.append(info / ent)
    return 100 * min(ratios)


def joined(values) -> str:
    """The competition's bin key: values joined as strings (collides: (1, 11, ...) and (11, 1, ...))."""
    return "".join(str(v) for v in values)


# ---------------------------------------------------------------- known answers

@pytest.fixture(scope="module")
def one_seed():
    return make_frame()


def with_measure(frame, values):
    out = frame.copy()
    out["m"] = values
    return out


def test_identity_predictor_scores_one_and_100(one_seed):
    f = with_measure(one_seed, one_seed["test_accuracy"])
    assert kendall(f, "m", "test_accuracy") == pytest.approx(1.0)
    gk = granulated_kendall(f, "m", "test_accuracy", AXES)
    assert gk["psi"] == pytest.approx(1.0)
    assert gk["per_axis"] == pytest.approx(dict.fromkeys(AXES, 1.0))
    assert pgdl_score(f, "m", "test_accuracy", AXES) == pytest.approx(100.0)
    assert pgdl_score(f, "m", "test_accuracy", AXES, self_pairs=False) == pytest.approx(100.0)


def test_monotone_transform_changes_nothing(one_seed):
    rng = np.random.default_rng(1)
    noisy = one_seed["test_accuracy"] + rng.normal(0, 0.03, len(one_seed))  # a non-trivial measure
    a, b = with_measure(one_seed, noisy), with_measure(one_seed, np.exp(7 * noisy) + 3)
    assert kendall(a, "m", "test_accuracy") == kendall(b, "m", "test_accuracy")
    assert 0.2 < kendall(a, "m", "test_accuracy") < 0.95  # really non-trivial
    assert granulated_kendall(a, "m", "test_accuracy", AXES) == granulated_kendall(b, "m", "test_accuracy", AXES)
    for self_pairs in (True, False):
        assert (pgdl_score(a, "m", "test_accuracy", AXES, self_pairs=self_pairs)
                == pgdl_score(b, "m", "test_accuracy", AXES, self_pairs=self_pairs))


def test_independent_predictor_scores_near_zero():
    levels = {"a": (1, 2, 3, 4, 5), "b": (1, 2, 3, 4, 5), "c": (1, 2, 3, 4), "d": (1, 2, 3)}
    rng = np.random.default_rng(2)
    cells = pd.DataFrame(list(itertools.product(*levels.values())), columns=list(levels))
    cells["g"], cells["m"] = rng.normal(size=len(cells)), rng.normal(size=len(cells))
    assert abs(kendall(cells, "m", "g")) < 0.1  # sd about 0.04 at n = 300
    gk = granulated_kendall(cells, "m", "g", list(levels))
    assert abs(gk["psi"]) < 0.1
    assert all(abs(v) < 0.2 for v in gk["per_axis"].values())
    # the plug-in CMI is biased upwards in small bins, but nowhere near the 100 of a perfect measure
    assert pgdl_score(cells, "m", "g", list(levels)) < 3


def test_reversed_predictor(one_seed):
    f = with_measure(one_seed, -one_seed["test_accuracy"])
    assert kendall(f, "m", "test_accuracy") == pytest.approx(-1.0)
    gk = granulated_kendall(f, "m", "test_accuracy", AXES)
    assert gk["psi"] == pytest.approx(-1.0)
    assert gk["per_axis"] == pytest.approx(dict.fromkeys(AXES, -1.0))
    # Oriented by the sign of tau (the default), a reversed measure scores as the measure itself (issue 16).
    assert pgdl_score(f, "m", "test_accuracy", AXES) == pytest.approx(100.0)
    # As given (the competition's convention), without self-pairs the score ignores the sign; with them it does
    # not: a pair (i, i) has V_mu = V_g = 0, which a reversed measure's pairs (i, j) contradict.
    assert pgdl_score(f, "m", "test_accuracy", AXES, self_pairs=False, orient=False) == pytest.approx(100.0)
    with_self = pgdl_score(f, "m", "test_accuracy", AXES, orient=False)
    assert with_self == pytest.approx(pgdl_reference(f, "m", "test_accuracy", AXES))
    assert 0 < with_self < 100


@pytest.fixture(scope="module")
def colliding_grid():
    """4 axes; a and b take 1 and 11, so the joined-string keys of (1, 11, x, y) and (11, 1, x, y) collide. Two
    seeds per cell, ties in the measure (rounded) and in the target."""
    levels = {"a": (1, 11), "b": (1, 11), "c": (0.1, 0.2, 0.3), "d": ("x", "y")}
    rng = np.random.default_rng(5)
    rows = []
    for cell in itertools.product(*levels.values()):
        g = rng.normal()
        for s in (0, 1):
            gs = round(g + rng.normal(0, 0.2), 1)
            rows.append({**dict(zip(levels, cell)), "seed": s, "job_id": job_id(cell, s), "g": gs,
                         "m": round(gs + rng.normal(0, 0.7), 0)})
    return pd.DataFrame(rows), list(levels)


@pytest.mark.parametrize("self_pairs", [True, False])
def test_pgdl_matches_reference_and_bins_do_not_collide(colliding_grid, self_pairs):
    frame, axes = colliding_grid
    cells = averaged(frame, axes)
    ours = pgdl_score(frame, "m", "g", axes, self_pairs=self_pairs)
    assert ours == pytest.approx(pgdl_reference(cells, "m", "g", axes, self_pairs), rel=1e-12)
    # the grid is sensitive to the bug: string-joined bins give another number
    assert ours != pytest.approx(pgdl_reference(cells, "m", "g", axes, self_pairs, key=joined), rel=1e-6)
    assert 0 < ours < 100


def test_granulated_kendall_matches_reference_with_ties_and_seeds(colliding_grid):
    frame, axes = colliding_grid
    psi, per_axis = granulated_reference(averaged(frame, axes), "m", "g", axes)
    got = granulated_kendall(frame, "m", "g", axes)  # averages the two seeds itself
    assert got["psi"] == pytest.approx(psi)
    assert got["per_axis"] == pytest.approx(per_axis)
    assert list(got["per_axis"]) == axes
    # with seed as an axis, nothing is averaged: psi_seed compares the two seeds of each configuration
    with_seed = granulated_kendall(frame, "m", "g", [*axes, "seed"])["per_axis"]["seed"]
    assert with_seed == pytest.approx(granulated_reference(frame, "m", "g", [*axes, "seed"])[1]["seed"])


def test_kendall_is_tau_b(colliding_grid):
    frame, _ = colliding_grid
    x, y = frame["m"].to_numpy(), frame["g"].to_numpy()
    conc = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(len(x)) for j in range(i))
    tx = sum(x[i] != x[j] for i in range(len(x)) for j in range(i))
    ty = sum(y[i] != y[j] for i in range(len(x)) for j in range(i))
    assert kendall(frame, "m", "g") == pytest.approx(conc / math.sqrt(tx * ty))


# ---------------------------------------------------------------- bootstrap intervals

def test_bootstrap_intervals_cover_the_population_value():
    """200 bivariate normal samples (n = 40, r = 0.6): the 95 % intervals cover Kendall's and Spearman's
    population values (2/pi asin r, 6/pi asin(r/2)) at about the nominal rate."""
    r, n, reps, n_boot = 0.6, 40, 200, 400
    truth_tau, truth_rho = 2 / math.pi * math.asin(r), 6 / math.pi * math.asin(r / 2)
    rng = np.random.default_rng(10)
    hits = np.zeros(2)
    for _ in range(reps):
        xy = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n)
        idx = rng.integers(0, n, size=(n_boot, n))
        tau, rho = bootstrap_rank_correlations(xy[None, :, 0], xy[None, :, 1], idx)
        for k, (samples, truth) in enumerate(((tau[0, 0], truth_tau), (rho[0, 0], truth_rho))):
            lo, hi = _interval(samples, "x", [])
            hits[k] += lo <= truth <= hi
    coverage = hits / reps
    assert np.all((coverage >= 0.88) & (coverage <= 0.99)), coverage


def test_bootstrap_tau_and_rho_equal_scipy_on_each_resample():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3, 15)).round(1), rng.normal(size=(2, 15)).round(1)  # ties, and resampled ties
    idx = rng.integers(0, 15, size=(7, 15))
    tau, rho = bootstrap_rank_correlations(x, y, idx)
    for t, p, b in itertools.product(range(2), range(3), range(7)):
        xb, yb = x[p, idx[b]], y[t, idx[b]]
        assert tau[t, p, b] == pytest.approx(scipy.stats.kendalltau(xb, yb).statistic)
        assert rho[t, p, b] == pytest.approx(scipy.stats.spearmanr(xb, yb).statistic)


# ---------------------------------------------------------------- regress

@pytest.fixture(scope="module")
def one_seed_table(one_seed):
    return regress(one_seed, n_boot=200)


def test_regress_columns_types_and_defaults(one_seed, one_seed_table):
    t = one_seed_table
    assert list(t.columns) == columns(AXES)
    assert list(dict.fromkeys(t["target"])) == ["test_accuracy", "generalization_gap", "robust_accuracy@8/255"]
    # train.weight_decay is an axis, not a collapse metric
    assert list(dict.fromkeys(t["predictor"])) == ["train.nc1", "test.nc1", "train.nc2_equiangle_means",
                                                   "num_parameters", "final_train_loss", "sum_squared_weights",
                                                   "train_margin_p10", "train_accuracy"]
    assert len(t) == 3 * 8
    for c in ("psi", "psi[train.lr]", "tau", "tau_lo", "rho_hi", "pgdl", "pgdl_no_self", "ols_slope", "ols_r2",
              "partial_rho", "mae", "mae_mean", "mae_all_collapse"):
        assert t[c].dtype == np.float64, c
    for c in ("n_configs", "n_models", "n_boot", "ols_n", "cv_folds"):
        assert t[c].dtype == np.int64, c
    assert str(t["beats_num_parameters_psi"].dtype) == "boolean"
    assert (t["n_configs"] == 24).all() and (t["cv_folds"] == 4).all() and (t["cv_group_axis"] == AXES[0]).all()


def test_regress_known_answers(one_seed, one_seed_table):
    r = one_seed_table.set_index(["target", "predictor"]).loc[("test_accuracy", "train.nc1")]
    assert r["tau"] == pytest.approx(-1) and r["rho"] == pytest.approx(-1) and r["psi"] == pytest.approx(-1)
    assert r["tau_lo"] == pytest.approx(-1) and r["tau_ci_excludes_0"]
    assert r["pgdl_no_self"] == pytest.approx(100)
    assert r["direction"] == "lower train.nc1 goes with higher test_accuracy"
    # log(train.nc1) = -5 accuracy exactly: slope -1/5, R^2 = 1
    assert r["x_transform"] == "log"
    assert r["ols_slope"] == pytest.approx(-0.2) and r["ols_r2"] == pytest.approx(1)
    assert r["ols_slope_lo"] <= -0.2 <= r["ols_slope_hi"]
    assert r["partial_rho"] == pytest.approx(-1)
    assert r["mae"] < 0.5 * r["mae_mean"]
    assert r["beats_num_parameters_psi"] and r["beats_train_margin_p10_psi"]
    assert r["note"] == ""


def test_regress_agrees_with_the_single_statistics(one_seed, one_seed_table):
    t = one_seed_table.set_index(["target", "predictor"])
    for target, pred in (("test_accuracy", "test.nc1"), ("robust_accuracy@8/255", "sum_squared_weights")):
        r = t.loc[(target, pred)]
        assert r["tau"] == pytest.approx(kendall(one_seed, pred, target))
        gk = granulated_kendall(one_seed, pred, target, AXES)
        assert r["psi"] == pytest.approx(gk["psi"])
        assert [r[f"psi[{a}]"] for a in AXES] == pytest.approx(list(gk["per_axis"].values()))
        assert r["pgdl"] == pytest.approx(pgdl_score(one_seed, pred, target, AXES))
        assert r["pgdl_no_self"] == pytest.approx(pgdl_score(one_seed, pred, target, AXES, self_pairs=False))
        x, y = one_seed[pred].to_numpy(), one_seed[target].to_numpy()
        assert r["rho"] == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
        assert r["tau_lo"] <= r["tau"] <= r["tau_hi"] and r["rho_lo"] <= r["rho"] <= r["rho_hi"]
        slope, intercept = np.polyfit(np.log(x), y, 1)
        assert r["ols_slope"] == pytest.approx(slope) and r["ols_intercept"] == pytest.approx(intercept)


def test_partial_spearman_first_order_formula(one_seed):
    """With one control varying (num_parameters constant), the partial is the textbook first-order formula."""
    f = one_seed[one_seed["model_args.width"] == 16].copy()
    t = regress(f, ["test_accuracy"], ["test.nc1"], ["train.weight_decay", "train.lr"], n_boot=0)
    r = t.iloc[0]
    assert r["partial_controls"] == "final_train_loss"
    s = lambda a, b: scipy.stats.spearmanr(f[a], f[b]).statistic  # noqa: E731
    rxy, rxz, ryz = s("test.nc1", "test_accuracy"), s("test.nc1", "final_train_loss"), s("test_accuracy",
                                                                                        "final_train_loss")
    assert r["partial_rho"] == pytest.approx((rxy - rxz * ryz) / math.sqrt((1 - rxz ** 2) * (1 - ryz ** 2)))
    assert "at least 3 configuration axes" in r["note"] and math.isnan(r["pgdl"])
    assert math.isnan(r["tau_lo"])  # n_boot = 0: no intervals


def test_regress_constant_predictor_and_default_constant_target(one_seed):
    f = one_seed.assign(**{"robust_accuracy@8/255": 0.0})
    t = regress(f, predictors=["train.nc2_equiangle_means", "train.nc1"], n_boot=50).set_index(
        ["target", "predictor"])
    r = t.loc[("test_accuracy", "train.nc2_equiangle_means")]
    assert math.isnan(r["tau"]) and math.isnan(r["ols_slope"]) and "constant" in r["note"]
    assert r["psi"] == 0.0 and r["x_transform"].startswith("identity")
    dead = t.loc["robust_accuracy@8/255"]
    assert dead["psi"].isna().all() and dead["note"].str.contains("target 'robust_accuracy@8/255' is constant").all()


def test_regress_averages_seeds_within_configurations():
    two = make_frame(seeds=(0, 1, 2))
    mean = averaged(two, AXES)
    mean["job_id"] = [job_id(k) for k in range(len(mean))]
    a = regress(two, ["test_accuracy"], ["test.nc1", "train.nc1"], [*AXES, "seed"], n_boot=100, seed=4)
    b = regress(mean, ["test_accuracy"], ["test.nc1", "train.nc1"], AXES, n_boot=100, seed=4)
    assert (a["n_models"] == 72).all() and (b["n_models"] == 24).all()
    stats = ["psi", "tau", "tau_lo", "tau_hi", "rho", "pgdl", "pgdl_no_self", "ols_slope", "partial_rho", "mae"]
    pd.testing.assert_frame_equal(a[stats], b[stats])


def test_regress_is_deterministic_and_the_seed_moves_only_intervals(one_seed):
    a = regress(one_seed, ["test_accuracy"], ["test.nc1"], AXES, n_boot=100, seed=1)
    b = regress(one_seed, ["test_accuracy"], ["test.nc1"], AXES, n_boot=100, seed=1)
    c = regress(one_seed, ["test_accuracy"], ["test.nc1"], AXES, n_boot=100, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert a["tau"].iloc[0] == c["tau"].iloc[0] and a["tau_lo"].iloc[0] != c["tau_lo"].iloc[0]


def test_regress_speed_48_rows_tens_of_predictors():
    """1000 resamples x 30 predictors x 3 targets on 48 rows (24 configurations): seconds on 2 cores."""
    import time

    f = make_frame(seeds=(0, 1))
    rng = np.random.default_rng(0)
    for k in range(23):
        f[f"train.extra{k}"] = rng.lognormal(size=len(f))
    start = time.perf_counter()
    t = regress(f, n_boot=1000)
    assert len(t) == 3 * 31  # 26 collapse columns and 5 baselines (train_accuracy among them)
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------- bad input

def drop_cell(frame):
    keep = ~((frame["model_args.width"] == 16) & (frame["train.weight_decay"] == 5e-4) & (frame["train.lr"] == 0.1))
    return frame[keep]


@pytest.mark.parametrize("call", [
    lambda f: granulated_kendall(f, "train.nc1", "test_accuracy", AXES),
    lambda f: pgdl_score(f, "train.nc1", "test_accuracy", AXES),
    lambda f: regress(f, n_boot=10),
])
def test_incomplete_grid_names_the_missing_cells(one_seed, call):
    with pytest.raises(InputError, match=r"incomplete grid .*1 of 24 cells have no finished job: "
                                         r"\(model_args.width=16, train.weight_decay=0.0005, train.lr=0.1\)"):
        call(drop_cell(one_seed))


def test_pgdl_needs_three_axes(one_seed):
    with pytest.raises(InputError, match=r"PGDL score needs at least 3 axes; got 2 .*0/0"):
        pgdl_score(one_seed, "train.nc1", "test_accuracy", AXES[:2])


@pytest.mark.parametrize("call", [
    lambda f: kendall(f, "train.nc1", "flat"),
    lambda f: granulated_kendall(f, "train.nc1", "flat", AXES),
    lambda f: pgdl_score(f, "train.nc1", "flat", AXES),
    lambda f: regress(f, ["flat"], ["train.nc1"], AXES, n_boot=10),
])
def test_constant_target_is_refused(one_seed, call):
    with pytest.raises(InputError, match=r"target 'flat' is constant \(0.5\)"):
        call(one_seed.assign(flat=0.5))


@pytest.mark.parametrize("value", [np.nan, None, np.inf])
@pytest.mark.parametrize("call", [
    lambda f: kendall(f, "train.nc1", "test_accuracy"),
    lambda f: granulated_kendall(f, "train.nc1", "test_accuracy", AXES),
    lambda f: pgdl_score(f, "train.nc1", "test_accuracy", AXES),
    lambda f: regress(f, predictors=["train.nc1", "test.nc1"], n_boot=10),
])
def test_missing_values_name_the_jobs(one_seed, call, value):
    f = one_seed.copy()
    f["train.nc1"] = f["train.nc1"].astype(object)
    f.loc[[3, 7], "train.nc1"] = value
    ids = f["job_id"]
    with pytest.raises(InputError, match=rf"column 'train.nc1' has 2 missing, NaN or infinite value\(s\) "
                                         rf"\(jobs: {ids[3]}, {ids[7]}\)"):
        call(f)


def test_default_predictors_leave_out_an_incomplete_column_and_say_so(one_seed):
    """An old frame's jobs lack the new columns: by default such a column is left out with a warning naming
    the jobs (a regress that refused the whole frame, or one that dropped it silently, fails here)."""
    f = one_seed.copy()
    f["val.nc1"] = f["train.nc1"].where(f.index >= 3)
    t = regress(f, ["test_accuracy"], axes=AXES, n_boot=0)
    assert "val.nc1" not in set(t["predictor"]) and "train.nc1" in set(t["predictor"])
    ids = f["job_id"]
    assert any(w.startswith(f"predictor val.nc1 left out: 3 of 24 jobs have no value ({ids[0]}, {ids[1]}, {ids[2]})")
               for w in t.attrs["warnings"])


def test_non_numbers_are_refused(one_seed):
    f = one_seed.assign(**{"train.nc1": "high"})
    with pytest.raises(InputError, match=r"column 'train.nc1' must hold numbers; got 'high' in [0-9a-f]{64}"):
        kendall(f, "train.nc1", "test_accuracy")


@pytest.mark.parametrize("call,pattern", [
    (lambda f: kendall(f, "train.nc", "test_accuracy"), r"unknown column 'train.nc'; did you mean 'train.nc1'"),
    (lambda f: kendall(f, "train.nc1", "test_acuracy"), r"did you mean 'test_accuracy'"),
    (lambda f: granulated_kendall(f, "train.nc1", "test_accuracy", ["model_args.widht"]),
     r"unknown axis 'model_args.widht'; did you mean 'model_args.width'"),
    (lambda f: regress(f, ["test_accuracy"], ["train.nc1", "zzz"], AXES), r"unknown predictor 'zzz'; no close "
                                                                          r"match among the frame's columns \("),
    (lambda f: regress(f, ["robust_accuracy@8/256"], None, AXES), r"did you mean 'robust_accuracy@8/255'"),
])
def test_unknown_columns_list_close_matches(one_seed, call, pattern):
    with pytest.raises(InputError, match=pattern):
        call(one_seed)


@pytest.mark.parametrize("call,pattern", [
    (lambda f: regress(f, n_boot=10), r"frame.attrs\['axes'\]"),
    (lambda f: regress(f, axes=AXES, group_axis="seed", n_boot=10), r"group_axis must be one of"),
    (lambda f: regress(f, axes=AXES, n_boot=-1), r"n_boot must be a whole number >= 0"),
    (lambda f: regress(f, axes=["seed"]), r"the only axis is 'seed'"),
    (lambda f: granulated_kendall(f[f["train.lr"] == 0.1], "train.nc1", "test_accuracy", AXES),
     r"axis 'train.lr' takes 1 value\(s\) \[0.1\]"),
    (lambda f: granulated_kendall(f, "train.lr", "test_accuracy", AXES), r"'train.lr' is both an axis and"),
    (lambda f: kendall(f, "train.nc2_equiangle_means", "test_accuracy"), r"measure .* is constant"),
    (lambda f: kendall(f.iloc[:0], "train.nc1", "test_accuracy"), r"no rows"),
    (lambda f: kendall(f.to_dict(), "train.nc1", "test_accuracy"), r"expected a pandas DataFrame"),
])
def test_other_bad_input(one_seed, call, pattern):
    f = one_seed.copy()
    f.attrs = {}
    with pytest.raises(InputError, match=pattern):
        call(f)


def test_pgdl_refuses_a_target_fixed_by_two_axes(one_seed):
    f = one_seed.assign(g=one_seed["model_args.width"] * 10.0 + one_seed["train.lr"])
    with pytest.raises(InputError, match=r"H\(V_g \| U\) = 0 for axes"):
        pgdl_score(f, "train.nc1", "g", AXES)


# ---------------------------------------------------------------- files

def test_write_regression_and_ranking(one_seed_table, tmp_path):
    paths = write_regression(one_seed_table, tmp_path / "out")
    assert [p.name for p in paths] == ["regression.csv", "regression.md"]
    back = pd.read_csv(paths[0])
    assert back["psi"].dtype == np.float64 and back["n_configs"].dtype == np.int64
    np.testing.assert_allclose(back["tau_lo"], one_seed_table["tau_lo"], rtol=1e-15)
    md = paths[1].read_text()
    assert "## test_accuracy" in md and "## robust_accuracy@8/255" in md
    # ranked by |psi|: train.nc1 (|psi| = 1) heads the test_accuracy table
    section = md.split("## test_accuracy")[1]
    assert section.index("`train.nc1`") < section.index("`test.nc1`")
    assert "-1.000 [-1.000, -1.000]" in section
    text = format_ranking(one_seed_table, top=2)
    body = [line for line in text.splitlines() if not line.startswith("warning: ")]
    assert body[0].startswith("test_accuracy (24 configurations): predictors that read no test label")
    assert body[1].split()[:2] == ["1.", "train.nc1"]
    # the gap is not ranked (train accuracy is 1 everywhere): one line that says so, no ranking under it
    assert any(line.startswith("generalization_gap (24 configurations): not ranked") for line in body)


def test_measures_board_files_and_identical_rerender(one_seed_table, tmp_path):
    board = tmp_path / "leaderboards" / "measures" / "grid"
    meta = dict(sweep="grid", command="ncbench regress --sweep grid --board leaderboards/measures/grid",
                n_models=24, source_note="Hand-made frame.")
    paths = write_measures_board(one_seed_table, board, **meta)
    assert sorted(p.name for p in paths) == ["README.md", "board.json", "measures.csv"]
    first = {p.name: p.read_bytes() for p in paths}
    assert render_measures_board(board) == [board / "README.md"]
    assert (board / "README.md").read_bytes() == first["README.md"]
    render_measures_board(board)
    assert (board / "README.md").read_bytes() == first["README.md"]
    write_measures_board(one_seed_table, board, **meta)
    assert {p.name: p.read_bytes() for p in paths} == first
    csv = pd.read_csv(board / "measures.csv")
    for target, rows in csv.groupby("target", sort=False):
        ranked_rows = rows[rows["rank"].notna()]
        if target == "generalization_gap":  # train accuracy is 1 everywhere: not ranked
            assert ranked_rows.empty
            continue
        # the test-label family is never ranked; the others are, by |psi|, ties sharing a rank
        assert set(rows.loc[rows["rank"].isna(), "predictor"]) == {"test.nc1"}
        psi = ranked_rows["psi"].abs().to_numpy()
        assert np.all(np.diff(psi) <= 0) and ranked_rows["rank"].iloc[0] == 1
    readme = first["README.md"].decode()
    assert "# Measures board: grid" in readme and meta["command"] in readme and "Hand-made frame." in readme
    assert ("Ranked by |Ψ| among the 7 predictors that read no test label, `train.nc1` (train) comes first: "
            "Ψ = -1.000 [") in readme


def test_board_bad_input(one_seed_table, tmp_path):
    with pytest.raises(InputError, match=r"board.json does not exist"):
        render_measures_board(tmp_path)
    with pytest.raises(InputError, match=r"n_models must be a whole number >= 0"):
        write_measures_board(one_seed_table, tmp_path, sweep="g", command="c", n_models=-1, source_note="")
    with pytest.raises(InputError, match=r"the table lacks column"):
        write_measures_board(one_seed_table[["target", "predictor"]], tmp_path, sweep="g", command="c",
                             n_models=1, source_note="")


GAP_COLUMNS = ["job_id", "axes", "norm", "eps", "n_points", "clean", "autoattack", "target", "target_recorded",
               "target_recorded_gap", "target_alone_gap", "pgd20_gap"]


def _gap_csv(path, gaps):
    """An attack-gap.csv with one row per gap (target as recorded minus AutoAttack, in points)."""
    rows = []
    for k, g in enumerate(gaps):
        aa = 0.30 + 0.01 * k
        rows.append({"sweep": "grid", "job_id": f"{k:064x}", "axes": json.dumps({"model_args.width": 64, "seed": k}),
                     "norm": "Linf", "eps": [0.005, 0.01][k % 2], "n_points": 1000, "seed": k, "clean": 0.8,
                     "autoattack": aa, "target": "apgd 100 it. x 3 targets", "target_recorded": aa + g / 100,
                     "target_recorded_gap": g, "target_alone": aa, "target_alone_gap": 0.0, "pgd20": aa + 0.04,
                     "pgd20_gap": 4.0, "autoattack_cpu_s": 1.0})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_board_prints_the_targets_gap_to_autoattack_and_keeps_it_on_rebuild(one_seed_table, tmp_path):
    board = tmp_path / "grid"
    meta = dict(sweep="grid", command="c", n_models=24, source_note="")
    write_measures_board(one_seed_table, board, **meta)
    assert "against full AutoAttack" not in (board / "README.md").read_text()  # no file, no section
    _gap_csv(board / "attack-gap.csv", [0.2, -0.1, 0.6, 0.9])
    render_measures_board(board)
    text = (board / "README.md").read_text()
    assert "## The robustness target against full AutoAttack" in text
    assert "On 4 of this grid's models" in text and "at Linf 0.005, Linf 0.01" in text
    assert "mean +0.40, from -0.10 to +0.90 points; within 1 point of AutoAttack in all 4 rows" in text
    assert "| `" + "0" * 12 + "` | width 64, seed 0 | Linf 0.005 | 0.800 | 0.300 | 0.302 | +0.2 |" in text
    # a rebuild of the board (new statistics) keeps the gap file and its section
    write_measures_board(one_seed_table, board, **meta)
    assert "mean +0.40, from -0.10 to +0.90 points" in (board / "README.md").read_text()
    # a row beyond the bar is said, not hidden behind the mean, and in its direction
    _gap_csv(board / "attack-gap.csv", [0.2, 1.5, 0.1, 0.0])
    render_measures_board(board)
    text = (board / "README.md").read_text()
    assert ("within 1 point in 3 of 4 rows; above AutoAttack by more than 1 point in 1 (there the target "
            "overstates robustness)") in text and "in all 4 rows" not in text and "below it by more" not in text
    _gap_csv(board / "attack-gap.csv", [-1.6, -0.2, 0.3])
    render_measures_board(board)
    text = (board / "README.md").read_text()
    assert "from -1.60 to +0.30 points; within 1 point in 2 of 3 rows; below it by more than 1 point in 1" in text
    assert "overstates" not in text


def test_board_refuses_a_gap_file_it_cannot_print(one_seed_table, tmp_path):
    write_measures_board(one_seed_table, tmp_path, sweep="g", command="c", n_models=1, source_note="")
    pd.DataFrame({"job_id": ["a"], "norm": ["Linf"]}).to_csv(tmp_path / "attack-gap.csv", index=False)
    with pytest.raises(InputError, match=r"attack-gap.csv lacks the columns \['axes', 'eps'"):
        render_measures_board(tmp_path)
    (tmp_path / "attack-gap.csv").write_text(",".join(GAP_COLUMNS) + "\n")
    with pytest.raises(InputError, match=r"attack-gap.csv holds no row"):
        render_measures_board(tmp_path)
    _gap_csv(tmp_path / "attack-gap.csv", [0.1, 0.2])
    gap = pd.read_csv(tmp_path / "attack-gap.csv")
    gap.loc[1, "n_points"] = 500
    gap.to_csv(tmp_path / "attack-gap.csv", index=False)
    with pytest.raises(InputError, match=r"every row must have one n_points; got \['1000', '500'\]"):
        render_measures_board(tmp_path)


def _bench_attack_gap():
    """benchmarks/bench_attack_gap.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_attack_gap.py"
    spec = importlib.util.spec_from_file_location("bench_attack_gap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gap_benchmarks_rows_are_what_the_board_reads(one_seed_table, tmp_path):
    """The writer (bench_attack_gap.py --out) and the reader (the board) agree on columns and formats: the
    axes' JSON survives CSV quoting and a gap that is float noise away from 0 prints as +0.0."""
    bench = _bench_attack_gap()
    row = {"sweep": "grid", "job_id": "ab" * 32, "axes": json.dumps({"model_args.width": 64, "seed": 1}),
           "norm": "Linf", "eps": 0.01, "n_points": 1000, "seed": 1, "clean": 0.81, "autoattack": 0.412,
           "target": "apgd 100 it. x 3 targets", "target_recorded": 0.413, "target_recorded_gap": round(41.3 - 41.2, 6),
           "target_alone": 0.412, "target_alone_gap": 0.0, "pgd20": 0.45, "pgd20_gap": 3.8, "autoattack_cpu_s": 81.25}
    assert list(row) == bench.GAP_COLUMNS
    write_measures_board(one_seed_table, tmp_path, sweep="grid", command="c", n_models=24, source_note="")
    bench._write_rows(tmp_path / "attack-gap.csv", [row])
    assert "e-1" not in (tmp_path / "attack-gap.csv").read_text()  # no 0.09999999999999432
    render_measures_board(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| `abababababab` | width 64, seed 1 | Linf 0.01 | 0.810 | 0.412 | 0.413 | +0.1 | +0.0 | +3.8 |" in text


def test_the_gap_benchmark_draws_every_stratum_before_any_twice():
    """sample_jobs spreads the draw over the strata (training method x capacity by default) and repeats with
    its seed. Catches a draw that takes the first k jobs of one stratum, and one that takes dropout (the first
    model_args axis) for the capacity."""
    bench = _bench_attack_gap()

    class Store:
        path = "fake"

        def records(self, sweep):
            out = []
            grid = itertools.product(["none", "pgd"], [0.0, 0.3], [64, 128, 256], range(4))
            for k, (method, dropout, width, seed) in enumerate(grid):
                # model_args.dropout sorts before model_args.width: the capacity axis is found by name
                axes = {"model_args.dropout": dropout, "model_args.width": width, "train.adversarial": method,
                        "seed": seed}
                out.append({"provenance": {"job_id": f"{k:064x}", "sweep": {"axes": axes}}})
            return out

    def strata(picked):
        return [(r["provenance"]["sweep"]["axes"]["train.adversarial"],
                 r["provenance"]["sweep"]["axes"]["model_args.width"]) for r in picked]

    six = bench.sample_jobs(Store(), "grid", 6, 0, None)
    assert len(set(strata(six))) == 6
    assert bench.sample_jobs(Store(), "grid", 6, 0, None) == six
    assert [r["provenance"]["job_id"] for r in bench.sample_jobs(Store(), "grid", 6, 1, None)] != \
        [r["provenance"]["job_id"] for r in six]
    eight = bench.sample_jobs(Store(), "grid", 8, 0, None)
    assert len(set(strata(eight))) == 6 and len({r["provenance"]["job_id"] for r in eight}) == 8
    assert len(bench.sample_jobs(Store(), "grid", 48, 0, None)) == 48  # all of them, each once
    with pytest.raises(SystemExit, match=r"--strata \['depth'\] are not axes"):
        bench.sample_jobs(Store(), "grid", 2, 0, ["depth"])


def test_figures_are_written(one_seed, tmp_path):
    t = regress(one_seed, ["test_accuracy", "robust_accuracy@8/255"],
                ["train.nc1", "train_margin_p10", "test.nc1"], AXES, n_boot=20)
    paths = draw_figures(one_seed, t, tmp_path / "fig", axes=AXES)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{ext}" for ext in ("png", "pdf") for stem in (
        "scatter_test_accuracy", "scatter_robust_accuracy_at_8_255", "psi_train_nc1", "psi_train_margin_p10",
        "psi_test_nc1"))
    assert all(p.stat().st_size > 1000 for p in paths)


# ---------------------------------------------------------------- the command's handler

@pytest.fixture
def fake_store(monkeypatch, one_seed):
    """``ncbench.store.load_frame`` answering with ``state["frame"]`` (the store is written elsewhere)."""
    frame = one_seed.copy()
    frame.attrs = {"axes": [*AXES, "seed"]}
    state = {"frame": frame, "calls": []}

    def load_frame(store, *, sweep):
        state["calls"].append((store, sweep))
        return state["frame"]

    try:
        import ncbench.store as store
        monkeypatch.setattr(store, "load_frame", load_frame)
    except ImportError:
        monkeypatch.setitem(sys.modules, "ncbench.store", types.SimpleNamespace(load_frame=load_frame))
    return state


def parse(*argv):
    from ncbench.analysis._cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["regress", *argv])


def test_regress_command(fake_store, tmp_path, capsys):
    args = parse("--sweep", "grid", "--targets", "test_accuracy", "--bootstrap", "30", "--out",
                 str(tmp_path / "out"), "--board", str(tmp_path / "board"), "--no-figures")
    assert args.func(args) == 0
    assert fake_store["calls"] == [("ncbench-results/results.sqlite", "grid")]
    out = capsys.readouterr().out
    body = [line for line in out.splitlines() if not line.startswith("warning: ")]
    assert body[0] == ("test_accuracy (24 configurations): predictors that read no test label, by |Psi| (equal ranks "
                       "are ties)")
    assert (tmp_path / "out" / "regression.csv").is_file() and (tmp_path / "board" / "README.md").is_file()
    readme = (tmp_path / "board" / "README.md").read_text()
    assert "ncbench regress --store ncbench-results/results.sqlite --sweep grid --targets test_accuracy" in readme


def test_regress_command_asks_for_axes(fake_store):
    fake_store["frame"] = make_frame()  # attrs without "axes"
    fake_store["frame"].attrs = {}
    args = parse("--sweep", "grid")
    with pytest.raises(InputError, match=r"does not say the axes of sweep 'grid'; pass --axes"):
        args.func(args)


def test_list_valued_axis_is_a_grid_axis():
    """A list-valued setting (say, per-stage channels) is an axis like any other."""
    rng = np.random.default_rng(6)
    cells = pd.DataFrame([{"channels": list(c), "wd": w, "lr": lr} for c in ((8, 16), (16, 32), (16, 8))
                          for w in (0.1, 0.2) for lr in (1, 2)])
    cells["g"] = rng.normal(size=len(cells))
    got = granulated_kendall(cells, "g", "g", ["channels", "wd", "lr"])
    assert got["per_axis"] == pytest.approx({"channels": 1.0, "wd": 1.0, "lr": 1.0})


def test_default_predictors_take_classifier_metrics_once():
    """nc2_*_classifier depends on W only: test.* repeats train.*, and would be ranked twice."""
    import pandas as pd

    from ncbench.analysis._frame import default_predictors

    frame = pd.DataFrame({"a": [1, 2], "train.nc1": [0.1, 0.2], "test.nc1": [0.3, 0.4],
                          "train.nc2_equinorm_classifier": [0.5, 0.6], "test.nc2_equinorm_classifier": [0.5, 0.6],
                          "num_parameters": [10, 20]})
    assert default_predictors(frame, ["a"]) == ["train.nc1", "test.nc1", "train.nc2_equinorm_classifier",
                                                "num_parameters"]


def _board_rows(*specs, correction="holm"):
    """Rows as the board reads them back: (predictor, family, rank, psi, tied, vs_baseline, p_adj)."""
    out = []
    for pred, fam, rank, psi, tied, d, p in specs:
        out.append({"target": "test_accuracy", "predictor": pred, "family": fam, "rank": rank, "psi": psi,
                    "psi_lo": psi - 0.1, "psi_hi": psi + 0.1, "psi_p_adj": 0.01, "tied_with_best": tied,
                    "reads_test_labels": fam == "test-labels", "baseline": "sum_squared_weights",
                    "vs_baseline": d, "vs_baseline_lo": d - 0.2, "vs_baseline_hi": d + 0.2, "vs_baseline_p_adj": p,
                    "withheld": "", "correction": correction, "rho": np.nan, "partial_rho_clean": np.nan})
    return pd.DataFrame(out)


def test_board_sentences_come_from_the_statistics():
    """The verdict names the tie the corrected test cannot break, and calls a margin significant only by its
    corrected p-value. Catches: a board that crowns the first rank alone, that reads 'beats the baseline' off
    a positive point estimate, or that ranks a test-label metric."""
    from ncbench.analysis._board import _verdict

    rows = _board_rows(
        ("train.cdnv", "train", 1, -0.8, True, 0.5, 0.2),
        ("val.nc1", "val", 2, -0.7, True, 0.4, 0.01),
        ("sum_squared_weights", "measures", 3, -0.3, False, np.nan, np.nan),
        ("test.ncc_accuracy", "test-labels", np.nan, 0.99, None, np.nan, np.nan))
    text = _verdict("test_accuracy", rows)
    assert "`train.cdnv` (train) comes first" in text
    assert "cannot tell 1 other(s) from it, so the best is a tie among them: `val.nc1`." in text
    assert ("The best collapse predictor is `train.cdnv` (train), Ψ = -0.800 [-0.900, -0.700]. Against the best "
            "baseline, `sum_squared_weights`: its |Ψ| minus the baseline's is +0.500 [+0.300, +0.700] (paired over "
            "the grid's lines), not significant after the holm correction (p = 0.200)") in text
    assert ("The best held-out collapse predictor is `val.nc1` (val), Ψ = -0.700 [-0.800, -0.600]. Against the best "
            "baseline, `sum_squared_weights`: its |Ψ| minus the baseline's is +0.400 [+0.200, +0.600] (paired over "
            "the grid's lines), significant at 0.05 after the holm correction (p = 0.0100)") in text
    assert "Of the metrics that read the test labels (described, not ranked), `test.ncc_accuracy`" in text
    withheld = rows.assign(withheld="only 4 configurations (fewer than 16)")
    assert _verdict("test_accuracy", withheld) == ("Not ranked, no intervals or p-values: only 4 configurations "
                                                   "(fewer than 16).")
