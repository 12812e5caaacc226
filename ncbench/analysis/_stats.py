"""The statistics that say what is significant: Psi and psi_i with standard errors over the grid's lines,
paired differences, p-values with a multiple-comparison correction, Dziugaite et al.'s robust sign-error, and
the checks that a target varies above its own sampling noise.

Every function here is pure numpy on arrays that :mod:`._regress` has already checked; docs/statistics.md
describes each statistic, what is resampled and why, and the thresholds below.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

from .._errors import InputError

#: Below this many configurations no interval, p-value or ranking is given (docs/statistics.md, "Small designs").
MIN_CONFIGS = 16
#: Psi's interval (and so the ranking) needs at least this many lines (cells of the other axes) along every
#: axis; the simulation of docs/statistics.md checked the intervals' coverage down to 4.
MIN_LINES = 4
#: Pseudo-lines added to each side, +1 and -1, for psi_i's interval (Agresti and Coull's "add z^2/2 successes
#: and failures", z = 1.96): a mean of few coefficients near +-1 otherwise gets a zero-width interval.
AC_PSEUDO = 2
#: A target is ranked only when the standard deviation of its configuration means is at least this many times
#: the binomial standard error of one configuration mean (sampling noise then is at most 1/4 of its variance).
NOISE_RATIO = 2.0
#: Two-sided level of every interval and test.
ALPHA = 0.05
#: statsmodels.stats.multitest.multipletests methods offered, and how boards name them.
CORRECTIONS = {"holm": "Holm (family-wise error rate)", "fdr_bh": "Benjamini-Hochberg (false discovery rate)"}
#: Dziugaite et al.'s weights keep a pair only by how far its Hoeffding weight exceeds this: (w - 0.5)_+.
MIN_WEIGHT = 0.5


# ---------------------------------------------------------------- Psi over lines of the grid

def grid_lines(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Cell indices (C order) of every line along ``axis``: shape (n_lines, n_levels).

    A line is the set of cells that share every value of the other axes; there are prod(shape) / shape[axis].
    """
    cells = np.arange(math.prod(shape)).reshape(shape)
    return np.moveaxis(cells, axis, -1).reshape(-1, shape[axis])


def line_kendalls(m: np.ndarray, g: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Jiang et al.'s sign-Kendall along every line of every axis.

    Parameters
    ----------
    m : ndarray, shape (P, n_cells)
        Predictors over the cells of the grid (C order of ``shape``).
    g : ndarray, shape (T, n_cells)
        Targets over the same cells.
    shape : tuple of int
        The grid's shape (levels per axis).

    Returns
    -------
    list of ndarray, one per axis, shape (T, P, n_lines_i)
        ``k[t, p, l] = sum_{a != b} sign(m_a - m_b) sign(g_a - g_b) / (n_i (n_i - 1))`` over the cells a, b of
        line l; ties count 0. psi_i is the mean over lines (:func:`psi_per_axis` of ``_rank``).
    """
    out = []
    for axis in range(len(shape)):
        lines = grid_lines(shape, axis)
        n = lines.shape[1]
        mm, gg = m[:, lines], g[:, lines]  # (P, L, n), (T, L, n)
        sm = np.sign(mm[..., :, None] - mm[..., None, :]).reshape(m.shape[0], len(lines), n * n)
        sg = np.sign(gg[..., :, None] - gg[..., None, :]).reshape(g.shape[0], len(lines), n * n)
        out.append(np.einsum("tlk,plk->tpl", sg, sm) / (n * (n - 1)))
    return out


def line_summary(kendalls: list[np.ndarray], shape: tuple[int, ...]) -> dict:
    """Psi, every psi_i and their standard errors, from the lines' coefficients (docs/statistics.md).

    The sampling units are the lines: psi_i is the mean of axis i's G_i line coefficients (the population it
    estimates is the mean over contexts, the cells of the other axes), so its variance is the lines' sample
    variance over G_i. Psi = mean_i psi_i; the psi_i share cells (a cell lies on one line of every axis), and
    Cov(psi_i, psi_j) is estimated from the products of the two lines' deviations at each shared cell:

        Var(Psi) = (1/k^2) [sum_i v_i + sum_{i != j} sum_c d_i(c) d_j(c) / (G_i G_j)]

    with d_i(c) the deviation from psi_i of the coefficient of the axis-i line through cell c. Two floors keep
    a design from claiming more than it shows: v_i >= 1 / G_i^2 (as if one line of G_i differed by 1: a mean of
    G_i identical coefficients is not known exactly; not applied where every coefficient is exactly 0, as for a
    constant predictor or the difference of two identical ones), and Var(Psi) is never below the
    independent-axes value.
    Psi's intervals and tests use Student's t with (fewest lines - 1) degrees of freedom. Linear in the
    coefficients, so a difference of two predictors' (oriented) Psi is the same computation on the difference
    of their coefficients, line by line: a paired comparison. psi_i's own interval adds
    :data:`AC_PSEUDO` pseudo-lines at +1 and as many at -1 (Agresti-Coull) and uses the normal quantile:
    ``psi~ -/+ 1.96 s~ / sqrt(G_i + 4)`` with psi~, s~ the mean and standard deviation of the augmented lines.

    Parameters
    ----------
    kendalls : list of ndarray, shape (..., G_i)
        One array per axis: the coefficient of every line (:func:`line_kendalls`, or differences of them).
    shape : tuple of int
        The grid's shape.

    Returns
    -------
    dict
        ``psi`` (...), ``se`` (...), ``df`` (int), ``per_axis`` and ``per_axis_se`` (lists of (...)),
        ``per_axis_df`` (list of int), ``per_axis_lo`` and ``per_axis_hi`` (lists of (...): psi_i's 95 %
        Agresti-Coull interval, clipped to [-1, 1]). Standard errors are NaN for an axis with one line.
    """
    k = len(shape)
    n_cells = math.prod(shape)
    means, variances, dfs, los, his = [], [], [], [], []
    z = scipy.stats.norm.ppf(1 - ALPHA / 2)
    combined = None
    own = 0.0
    for axis, kk in enumerate(kendalls):
        G = kk.shape[-1]
        mean = kk.mean(axis=-1)
        if G > 1:  # the floor, except where every line is exactly 0 (a constant predictor, two identical ones)
            var = np.where(np.all(kk == 0, axis=-1), 0.0, np.maximum(kk.var(axis=-1, ddof=1) / G, 1.0 / G ** 2))
        else:
            var = np.full(mean.shape, np.nan)
        means.append(mean)
        variances.append(var)
        dfs.append(G - 1)
        m = G + 2 * AC_PSEUDO  # augmented by AC_PSEUDO lines at +1 and at -1
        centre = kk.sum(axis=-1) / m
        sd = np.sqrt(np.maximum(((kk * kk).sum(axis=-1) + 2 * AC_PSEUDO - m * centre ** 2) / (m - 1), 0.0))
        los.append(np.clip(centre - z * sd / np.sqrt(m), -1.0, 1.0))
        his.append(np.clip(centre + z * sd / np.sqrt(m), -1.0, 1.0))
        lines = grid_lines(shape, axis)
        cell_line = np.empty(n_cells, dtype=np.int64)
        cell_line[lines] = np.arange(G)[:, None]
        e = (kk - mean[..., None])[..., cell_line] / G  # (..., n_cells): d_i(c) / G_i
        combined = e if combined is None else combined + e
        own = own + (e * e).sum(axis=-1)
    cross = (combined * combined).sum(axis=-1) - own  # sum_{i != j} sum_c e_i(c) e_j(c)
    diag = np.sum(variances, axis=0)
    var_psi = np.maximum(diag, diag + cross) / k ** 2
    return {"psi": np.mean(means, axis=0), "se": np.sqrt(var_psi), "df": int(min(dfs)),
            "per_axis": means, "per_axis_se": [np.sqrt(v) for v in variances], "per_axis_df": dfs,
            "per_axis_lo": los, "per_axis_hi": his}


def t_interval(estimate, se, df: int, *, bound: float = 1.0, alpha: float = ALPHA):
    """estimate -/+ t_{1 - alpha/2, df} se, clipped to [-bound, bound]; NaN where se is NaN or df < 1."""
    estimate, se = np.asarray(estimate, np.float64), np.asarray(se, np.float64)
    if df < 1:
        nan = np.full(np.broadcast(estimate, se).shape, np.nan)
        return nan, nan.copy()
    q = scipy.stats.t.ppf(1 - alpha / 2, df)
    return np.clip(estimate - q * se, -bound, bound), np.clip(estimate + q * se, -bound, bound)


def t_p(estimate, se, df: int) -> np.ndarray:
    """Two-sided p-value of ``estimate = 0``: 2 P(T_df > |estimate| / se); 1 for a zero estimate."""
    estimate, se = np.asarray(estimate, np.float64), np.asarray(se, np.float64)
    if df < 1:
        return np.full(np.broadcast(estimate, se).shape, np.nan)
    with np.errstate(all="ignore"):
        p = 2 * scipy.stats.t.sf(np.abs(estimate) / se, df)
    p = np.where(estimate == 0, 1.0, p)
    return np.where(np.isfinite(estimate) & np.isfinite(se), p, np.nan)


# ---------------------------------------------------------------- intervals and p-values

def adjust(p, method: str = "holm") -> np.ndarray:
    """p-values corrected for multiple comparisons (statsmodels ``multipletests``) over the finite entries.

    NaN entries (comparisons not made) stay NaN and do not count towards the number of comparisons.
    """
    from statsmodels.stats.multitest import multipletests

    check_correction(method)
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method=method)[1]
    return out


def check_correction(method) -> str:
    if method not in CORRECTIONS:
        raise InputError(f"correction must be one of {sorted(CORRECTIONS)} (statsmodels multipletests methods: "
                         f"holm controls the family-wise error, fdr_bh the false discovery rate); got {method!r}")
    return method


# ---------------------------------------------------------------- targets against their sampling noise

def binomial_se(p: np.ndarray, n_points: np.ndarray, n_runs: np.ndarray) -> float:
    """Root-mean-square over configurations of the binomial standard error of a configuration mean.

    ``p`` (n_configs,) the configuration means (proportions in [0, 1]), ``n_points`` (n_configs,) the points
    behind one run's value, ``n_runs`` the runs (seeds) averaged: se_c^2 = p_c (1 - p_c) / (n_points_c n_runs_c).
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return float(np.sqrt(np.mean(p * (1 - p) / (np.asarray(n_points, np.float64) * np.asarray(n_runs)))))


def varies_above_noise(values: np.ndarray, noise_se: float, ratio: float = NOISE_RATIO) -> tuple[bool, float, float]:
    """(ok, spread, signal-to-noise): ``spread`` is the standard deviation (ddof 1) of the configuration means;
    ok when it is positive and at least ``ratio`` times ``noise_se``."""
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    snr = spread / noise_se if noise_se > 0 else (math.inf if spread > 0 else 0.0)
    return bool(spread > 0 and snr >= ratio), spread, snr


# ---------------------------------------------------------------- Dziugaite et al.'s robust sign-error

def hoeffding_weight(delta: np.ndarray, n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """How sure we are that two measured accuracies differ (Dziugaite et al., NeurIPS 2020, section 5).

    Each accuracy is a mean over n test points; by Hoeffding, P(|estimate - truth| >= delta / 2) <= phi =
    2 exp(-2 n (delta / 2)^2). The weight is the probability bound that neither estimate is off by half the
    observed difference: (1 - phi(n_a))_+ (1 - phi(n_b))_+, which is their (1 - phi)_+^2 when n_a = n_b.
    """
    delta = np.abs(np.asarray(delta, dtype=np.float64))

    def one(n):
        return np.maximum(1.0 - 2.0 * np.exp(-2.0 * np.asarray(n, np.float64) * (delta / 2) ** 2), 0.0)

    return one(n_a) * one(n_b)


def environments(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair of cells that differ in exactly one axis: (cell_a, cell_b, axis), each (n_envs,)."""
    a, b, ax = [], [], []
    for axis in range(len(shape)):
        lines = grid_lines(shape, axis)
        i, j = np.triu_indices(shape[axis], k=1)
        a.append(lines[:, i].ravel())
        b.append(lines[:, j].ravel())
        ax.append(np.full(lines.shape[0] * len(i), axis))
    return np.concatenate(a), np.concatenate(b), np.concatenate(ax)


def robust_sign_error(x: np.ndarray, g: np.ndarray, n_points: np.ndarray, row_cell: np.ndarray,
                      shape: tuple[int, ...], orientation: np.ndarray, *, min_ess: float = 1.0,
                      filter_noise: bool = True) -> dict:
    """Dziugaite et al.'s sign-error of every predictor in every one-axis environment, and its summaries.

    An environment is a pair of configurations that differ in one axis; its loss is the weighted mean, over the
    pairs of runs (one from each configuration, every seed against every seed), of the sign-error
    ``(1 - s sign(x_a - x_b) sign(g_a - g_b)) / 2`` (0: the predictor orders the two runs as the target does;
    1: reversed; 1/2: a tie in the predictor), with weight ``(w - 1/2)_+``, w the :func:`hoeffding_weight` of
    |g_a - g_b| at the runs' test-set sizes. Environments whose effective sample size
    ``(sum w)^2 / sum w^2`` is below ``min_ess`` (or whose weights are all 0) are left out.

    Parameters
    ----------
    x : ndarray (P, n_rows)
        Predictors per run (not averaged over seeds).
    g : ndarray (n_rows,)
        The target per run (an accuracy in [0, 1]).
    n_points : ndarray (n_rows,)
        Points behind each run's target value.
    row_cell : ndarray of int (n_rows,)
        Each run's configuration (cell index, C order of ``shape``).
    shape : tuple of int
        The grid of configurations.
    orientation : ndarray (P,)
        +1 when a larger predictor is meant to go with a larger target, -1 otherwise (the sign of tau).
    min_ess : float
        Smallest effective number of run pairs for an environment to count (their code: 12, with many seeds).
    filter_noise : bool
        False gives every pair weight 1 (no noise filtering).

    Returns
    -------
    dict
        ``mean``, ``p90``, ``max`` (P,): over the environments kept (NaN when none), lower is better, 0..1;
        ``n_envs`` kept and ``n_envs_total``.
    """
    ca, cb, _ = environments(shape)
    rows_of = [np.flatnonzero(row_cell == c) for c in range(math.prod(shape))]
    ra, rb, env = [], [], []
    for e, (c1, c2) in enumerate(zip(ca, cb)):
        r1, r2 = rows_of[c1], rows_of[c2]
        ra.append(np.repeat(r1, len(r2)))
        rb.append(np.tile(r2, len(r1)))
        env.append(np.full(len(r1) * len(r2), e))
    ra, rb, env = np.concatenate(ra), np.concatenate(rb), np.concatenate(env)
    n_env = len(ca)
    dg = g[ra] - g[rb]
    if filter_noise:
        w = np.maximum(hoeffding_weight(dg, n_points[ra], n_points[rb]) - MIN_WEIGHT, 0.0)
    else:
        w = np.ones_like(dg)
    sw = np.bincount(env, weights=w, minlength=n_env)
    sw2 = np.bincount(env, weights=w * w, minlength=n_env)
    with np.errstate(invalid="ignore", divide="ignore"):
        ess = np.where(sw2 > 0, sw * sw / np.where(sw2 > 0, sw2, 1.0), 0.0)
    keep = (sw > 0) & (ess >= min_ess - 1e-12)
    P = x.shape[0]
    out = {"mean": np.full(P, np.nan), "p90": np.full(P, np.nan), "max": np.full(P, np.nan),
           "n_envs": int(keep.sum()), "n_envs_total": int(n_env)}
    if not keep.any():
        return out
    sg = np.sign(dg)
    for p in range(P):
        err = (1.0 - orientation[p] * np.sign(x[p, ra] - x[p, rb]) * sg) / 2
        loss = np.bincount(env, weights=w * err, minlength=n_env)[keep] / sw[keep]
        out["mean"][p], out["p90"][p], out["max"][p] = loss.mean(), np.percentile(loss, 90), loss.max()
    return out
