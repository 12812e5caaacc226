"""``regress``: every statistic of issues 10, 14 and 16 for every target x predictor, as one table."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.stats

from .._errors import InputError
from ._frame import (BASELINE_FAMILY, FAMILIES, a_priori_sign, build_grid, capacity_axis, check_columns, check_frame,
                     default_predictors, default_targets, family_of, incomplete_predictors, is_collapse_column,
                     is_complete, is_robustness_target, names_arg, numeric_column, reads_test_labels, resolve_axes)
from ._pgdl import cmi_ratios, pair_bins, score_from_ratios
from ._rank import _standardised, bootstrap_rank_correlations, psi_per_axis
from ._stats import (ALPHA, MIN_CONFIGS, MIN_LINES, adjust, check_correction, line_kendalls, line_summary,
                     robust_sign_error, t_interval, t_p)
from ._targets import check_target, target_points

#: Baselines that every predictor is compared with (by |psi| and by grouped K-fold MAE).
COMPARED = ("num_parameters", "train_margin_p10")
#: Controls of the partial Spearman correlation (ranks, so log(num_parameters) and num_parameters agree).
CONTROLS = ("num_parameters", "final_train_loss")
#: Ridge penalties searched (efficient leave-one-out) for the model of all collapse metrics together.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))
ALL_COLLAPSE_MODEL = ("ridge regression (RidgeCV, alpha in 1e-3..1e3 by leave-one-out on the training folds) on "
                      "standardised transformed collapse metrics")
#: Grouped K-fold uses min(MAX_FOLDS, number of groups) folds.
MAX_FOLDS = 5
#: Bootstrap intervals need this share of resamples on which the statistic is defined.
MIN_DEFINED = 0.5
#: A residual spread below this fraction of the original one means the controls explain the ranks.
RESIDUAL_TINY = 1e-9
LOG = "log"
IDENTITY = "identity (values <= 0, no log)"


def psi_column(axis: str, part: str = "") -> str:
    """The table's column of psi_i for one axis: ``psi[<axis>]``; with ``part`` "lo" or "hi" its interval's
    ends, ``psi_lo[<axis>]``, ``psi_hi[<axis>]``."""
    return f"psi_{part}[{axis}]" if part else f"psi[{axis}]"


def beats_column(baseline: str, by: str) -> str:
    return f"beats_{baseline}_{by}"


def columns(config_axes) -> list[str]:
    """The columns of :func:`regress`'s table, in order."""
    return [
        "target", "predictor", "family", "role", "reads_test_labels", "rank", "tied_with_best",
        "n_configs", "n_models",
        "psi", "psi_lo", "psi_hi", "psi_se", "psi_p", "psi_p_adj",
        *(psi_column(a) for a in config_axes), *(psi_column(a, "lo") for a in config_axes),
        *(psi_column(a, "hi") for a in config_axes),
        "tau", "tau_lo", "tau_hi", "tau_ci_excludes_0", "rho", "rho_lo", "rho_hi", "n_boot", "direction",
        "best_predictor", "best_diff", "best_diff_lo", "best_diff_hi", "best_p", "best_p_adj",
        "baseline", "vs_baseline", "vs_baseline_lo", "vs_baseline_hi", "vs_baseline_p", "vs_baseline_p_adj",
        "pgdl", "pgdl_no_self",
        "sign_error_mean", "sign_error_p90", "sign_error_max", "sign_error_envs", "sign_error_envs_total",
        "partial_rho_clean", "partial_rho_clean_lo", "partial_rho_clean_hi", "clean_share",
        "x_transform", "ols_intercept", "ols_slope", "ols_slope_lo", "ols_slope_hi", "ols_r2", "ols_p", "ols_n",
        "partial_rho", "partial_controls",
        "mae", "mae_mean", "mae_all_collapse", "mae_all_collapse_model", "cv_group_axis", "cv_folds",
        *(beats_column(b, by) for b in COMPARED for by in ("psi", "mae")),
        "target_ok", "target_n_points", "target_noise_se", "target_spread", "target_snr", "withheld",
        "correction", "note",
    ]


def _role(name: str) -> str:
    """collapse (any split), baseline (family measures), estimator, or other."""
    fam = family_of(name)
    if is_collapse_column(name):
        return "collapse"
    return {BASELINE_FAMILY: "baseline", "estimators": "estimator"}.get(fam, "other")


def _transform(x: np.ndarray) -> tuple[np.ndarray, str]:
    """log(x) when every value is positive, else x unchanged (said in the ``x_transform`` column)."""
    if np.all(x > 0):
        return np.log(x), LOG
    return x.astype(np.float64), IDENTITY


def _interval(samples: np.ndarray, what: str, notes: list[str]) -> tuple[float, float]:
    """95 % percentile interval of the defined bootstrap values."""
    ok = np.isfinite(samples)
    if samples.size == 0:
        return np.nan, np.nan
    if ok.mean() < MIN_DEFINED:
        notes.append(f"{what} interval: the statistic is undefined on {int((~ok).sum())} of {samples.size} "
                     "resamples (constant values)")
        return np.nan, np.nan
    if not ok.all():
        notes.append(f"{what} interval over the {int(ok.sum())} of {samples.size} resamples where it is defined")
    lo, hi = np.percentile(samples[ok], [2.5, 97.5])
    return float(lo), float(hi)


def _ols(z: np.ndarray, y: np.ndarray) -> dict:
    import statsmodels.api as sm

    fit = sm.OLS(y, sm.add_constant(z, has_constant="add")).fit()
    lo, hi = fit.conf_int(alpha=0.05)[1]
    return {"ols_intercept": float(fit.params[0]), "ols_slope": float(fit.params[1]), "ols_slope_lo": float(lo),
            "ols_slope_hi": float(hi), "ols_r2": float(fit.rsquared), "ols_p": float(fit.pvalues[1])}


def _residual_ranks(v: np.ndarray, basis: np.ndarray) -> np.ndarray:
    r = scipy.stats.rankdata(v)
    coef, *_ = np.linalg.lstsq(basis, r, rcond=None)
    return r - basis @ coef


def _partial_spearman(x: np.ndarray, y: np.ndarray, controls: dict[str, np.ndarray]) -> tuple[float, str]:
    """Pearson correlation of the ranks of x and y after regressing out the controls' ranks (and a constant)."""
    if not controls:
        return np.nan, "partial_rho: no control varies (num_parameters, final_train_loss missing or constant)"
    basis = np.column_stack([np.ones_like(x)] + [scipy.stats.rankdata(c) for c in controls.values()])
    rx, ry = _residual_ranks(x, basis), _residual_ranks(y, basis)
    for res, v, name in ((rx, x, "the predictor"), (ry, y, "the target")):
        if np.std(res) <= RESIDUAL_TINY * max(np.std(scipy.stats.rankdata(v)), 1.0):
            return np.nan, f"partial_rho: the controls' ranks explain {name}'s ranks exactly"
    return float(np.corrcoef(rx, ry)[0, 1]), ""


def _spearman_sign(z: np.ndarray, y: np.ndarray) -> bool:
    """True when z and y rise together on these points (ties or constants: True)."""
    if np.ptp(z) == 0 or np.ptp(y) == 0:
        return True
    return bool(scipy.stats.spearmanr(z, y).statistic >= 0)


def _isotonic_mae(z: np.ndarray, y: np.ndarray, folds) -> float:
    """Out-of-fold MAE of a monotone (isotonic) fit of y on z, direction chosen on each training fold."""
    from sklearn.isotonic import IsotonicRegression

    err = np.empty_like(y)
    for train, test in folds:
        iso = IsotonicRegression(increasing=_spearman_sign(z[train], y[train]), out_of_bounds="clip")
        err[test] = np.abs(iso.fit(z[train], y[train]).predict(z[test]) - y[test])
    return float(err.mean())


def _mean_mae(y: np.ndarray, folds) -> float:
    err = np.empty_like(y)
    for train, test in folds:
        err[test] = np.abs(y[train].mean() - y[test])
    return float(err.mean())


def _ridge_mae(z: np.ndarray, y: np.ndarray, folds) -> float:
    """Out-of-fold MAE of ridge on all columns of z (n, k), standardised on each training fold."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    err = np.empty_like(y)
    for train, test in folds:
        keep = np.ptp(z[train], axis=0) > 0
        if not keep.any():
            err[test] = np.abs(y[train].mean() - y[test])
            continue
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        model.fit(z[train][:, keep], y[train])
        err[test] = np.abs(model.predict(z[test][:, keep]) - y[test])
    return float(err.mean())


def _direction(tau: float, predictor: str, target: str) -> str:
    if not np.isfinite(tau):
        return "undefined"
    if tau == 0:
        return f"no monotone association between {predictor} and {target}"
    return f"{'higher' if tau > 0 else 'lower'} {predictor} goes with higher {target}"


def _check_options(n_boot, seed, min_ess) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise InputError(f"n_boot must be a whole number >= 0 (bootstrap resamples; 1000 is usual); got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer; got {seed!r}")
    if isinstance(min_ess, bool) or not isinstance(min_ess, (int, float, np.integer, np.floating)) or not (
            np.isfinite(min_ess) and min_ess >= 1):
        raise InputError(f"min_ess must be a number >= 1 (the effective number of run pairs an environment of the "
                         f"sign-error needs); got {min_ess!r}")


def _spearman_partial_draws(r_xy: np.ndarray, r_xc: np.ndarray, y: np.ndarray, zc: np.ndarray,
                            idx: np.ndarray) -> np.ndarray:
    """Partial Spearman of each predictor with y given c on every resample: (P, B).

    ``r_xy``, ``r_xc`` (P, B): the predictors' Spearman coefficients with y and with c on each resample (from
    :func:`bootstrap_rank_correlations`); ``zc`` (B, n): c's standardised ranks on each resample idx (B, n).
    First-order partial correlation of the Spearman coefficients: (r_xy - r_xc r_yc) / sqrt((1 - r_xc^2)
    (1 - r_yc^2)); NaN where undefined.
    """
    zy = _standardised(scipy.stats.rankdata(y[idx], axis=-1))  # (B, n)
    r_yc = (zy * zc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt((1 - r_xc ** 2) * (1 - r_yc ** 2))
        return np.where(den > RESIDUAL_TINY, (r_xy - r_xc * r_yc) / np.where(den > 0, den, 1.0), np.nan)


def _sign(v: float) -> float:
    return -1.0 if np.isfinite(v) and v < 0 else 1.0


def _ranks(abs_psi: np.ndarray) -> np.ndarray:
    """Competition ranks of |Psi|, largest first; equal values (to 1e-12) share a rank ("1, 2, 2, 4")."""
    key = np.round(abs_psi, 12)
    return np.array([1 + int(np.sum(key > k)) for k in key])


def _design_reasons(n: int, shape, config_axes) -> list[str]:
    reasons = []
    if n < MIN_CONFIGS:
        reasons.append(f"only {n} configurations (fewer than {MIN_CONFIGS}): intervals, p-values and rankings are "
                       "withheld; add levels or axes to the grid")
    few = [(a, int(np.prod(shape) // shape[i])) for i, a in enumerate(config_axes)
           if np.prod(shape) // shape[i] < MIN_LINES]
    if few and n >= MIN_CONFIGS:
        shown = ", ".join(f"{a} has {g}" for a, g in few)
        reasons.append(f"too few lines (cells of the other axes) along some axes ({shown}; each needs {MIN_LINES}): "
                       "Psi's interval, and the ranking that rests on it, are withheld")
    return reasons


def regress(frame, targets=None, predictors=None, axes=None, *, group_axis: str | None = None,
            n_boot: int = 1000, seed: int = 0, correction: str = "holm", min_ess: float = 1.0) -> pd.DataFrame:
    """Does each predictor (collapse metric, measure or estimator) predict each target? One row per pair.

    Every statistic is computed over **configurations**: the cells of the grid of ``axes`` without ``seed``,
    with the seeds (all rows of a cell) averaged first (the sign-error alone compares runs). The grid must be
    full. docs/statistics.md describes every statistic, what is resampled and why, and the thresholds.

    Parameters
    ----------
    frame : DataFrame
        One row per job (docs/records.md, "the frame").
    targets : list of str, optional
        Default: ``test_accuracy``, ``generalization_gap``, every ``robust_accuracy@*``, other attacks'
        ``*_accuracy@*``, every ``conditional_robust_accuracy@*`` and ``fab_margin`` that the frame holds. A
        constant target named here is refused; a constant default target gets rows of NaN that say why.
    predictors : list of str, optional
        Default: every column of a predictor family (``train.*``, ``val.*``, ``val_pred.*``, ``test_pred.*``,
        ``train_adv.*``, ``test.*``, ``test_adv.*``, ``measures.*``, ``estimators.*`` and the baselines
        ``num_parameters``, ``final_train_loss``, ``sum_squared_weights``, ``train_margin_p10``,
        ``train_accuracy``, ``val_accuracy``, ``train_robust_accuracy``) that is not an axis and has a value in
        every row; a family column with some values missing is left out with a warning (named here, it is refused, naming the jobs).
    axes : list of str, optional
        The sweep's axes (dotted keys); default ``frame.attrs["axes"]``.
    group_axis : str, optional
        Groups of the grouped K-fold. Default: the capacity axis, the first whose name contains "channels",
        "width" or "depth", else the first axis.
    n_boot : int
        Bootstrap resamples of configurations for the intervals on tau, rho and the partial rho given clean
        accuracy (0: none of those intervals). Psi's intervals need no resampling.
    seed : int
        Seed of the resampling (one set of resamples serves every pair, so intervals are paired).
    correction : {"holm", "fdr_bh"}
        Multiple-comparison correction (statsmodels ``multipletests``) over every predictor x target of the
        table, applied to two families of tests: Psi = 0; and the paired |Psi| differences (the margin over the
        best baseline and the margin of the best predictor over each other, every pair of predictors of a
        target counted once, so one comparison has one corrected p-value).
    min_ess : float
        Effective number of run pairs an environment of the robust sign-error needs (>= 1).

    Returns
    -------
    DataFrame
        Columns (:func:`columns`); NaN only where a statistic is undefined or withheld, and ``note`` or
        ``withheld`` says why. ``table.attrs["warnings"]`` lists what concerns the whole table (a small design,
        a target inside its noise, a fallback for a missing column, predictors left out). Per row:

        - ``family`` (:data:`ncbench.analysis._frame.FAMILIES`), ``role``, ``reads_test_labels`` (``test.*``,
          ``test_adv.*``: described, never ranked); ``rank`` by |Psi| among the predictors that read no test
          label (equal |Psi| share a rank; NA when the target's ranking is withheld), ``tied_with_best``: the
          corrected paired test cannot tell it from the top-ranked predictor.
        - ``psi``, ``psi[<axis>]`` (Jiang et al.'s granulated Kendall, sign form) with ``psi_lo``/``psi_hi``,
          ``psi_lo[<axis>]``/``psi_hi[<axis>]`` (95 %, Student's t over the grid's lines), ``psi_se``, ``psi_p``
          (Psi = 0) and ``psi_p_adj`` (corrected).
        - ``tau``, ``rho`` (tau-b, Spearman) with 95 % percentile bootstrap intervals over configurations;
          ``tau_ci_excludes_0``; ``direction`` in words.
        - ``best_predictor``, ``best_diff`` = |Psi_best| - |Psi| (paired) with its interval, ``best_p``,
          ``best_p_adj``; ``baseline`` (the family-measures predictor with the largest |Psi|),
          ``vs_baseline`` = |Psi| - |Psi_baseline| (paired) with its interval, ``vs_baseline_p``,
          ``vs_baseline_p_adj`` (for predictors of the other ranked families).
        - ``pgdl``, ``pgdl_no_self``: the PGDL score of the measure oriented by the sign of its tau, with and
          without the pairs i = i (0..100; NaN with fewer than 3 configuration axes).
        - ``sign_error_mean``, ``_p90``, ``_max``: Dziugaite et al.'s robust sign-error over one-axis
          environments (0 best, 1 worst), ``sign_error_envs`` of ``sign_error_envs_total`` environments kept.
        - ``partial_rho_clean`` with its bootstrap interval: Spearman with a robustness target with the ranks of
          ``test_accuracy`` regressed out; ``clean_share`` = partial_rho_clean / rho.
        - ``ols_*``, ``partial_rho`` (controls ``partial_controls``), ``mae*``, ``beats_*``: as before (OLS on
          ``x_transform`` of the predictor, partial Spearman given size and final loss, grouped K-fold MAE).
        - ``target_ok`` (the target varies above its sampling noise), ``target_n_points``,
          ``target_noise_se``, ``target_spread``, ``target_snr``; ``withheld``: why intervals, p-values and
          ranks are withheld for this target ("" when they are given); ``correction``.

    Raises
    ------
    InputError
        An incomplete grid (cells named), an unknown column (close matches listed), missing or NaN values
        (jobs named), a constant target named in ``targets``, fewer than 3 configurations, bad options.

    Examples
    --------
    >>> table = regress(frame, ["test_accuracy"], ["train.nc1"], ["model_args.width", "train.weight_decay",
    ...                 "train.lr", "seed"], n_boot=1000)  # doctest: +SKIP
    """
    check_frame(frame)
    _check_options(n_boot, seed, min_ess)
    check_correction(correction)
    axes = resolve_axes(frame, axes)
    check_columns(frame, axes, "axis")
    config_axes = [a for a in axes if a != "seed"]
    if not config_axes:
        raise InputError("the only axis is 'seed': there is one configuration, nothing to rank; pass the sweep's "
                         "other axes")
    table_warnings: list[str] = []
    explicit_targets = targets is not None
    targets = names_arg(targets, "targets") if explicit_targets else default_targets(frame)
    if not targets:
        raise InputError("the frame has none of the default targets (test_accuracy, generalization_gap, "
                         "robust_accuracy@*, fab_margin); pass targets=[...]")
    check_columns(frame, targets, "target")
    if predictors is not None:
        predictors = names_arg(predictors, "predictors")
    else:
        predictors = default_predictors(frame, axes)
        for name, missing, jobs in incomplete_predictors(frame, axes):
            table_warnings.append(f"predictor {name} left out: {missing} of {len(frame)} jobs have no value "
                                  f"({jobs}); pass it in predictors=[...] to see the error, or re-run those jobs")
    if not predictors:
        raise InputError("the frame has no predictor column (train.*, val.*, measures.*, ... or a baseline) with a "
                         "value in every row; pass predictors=[...]")
    check_columns(frame, predictors, "predictor")
    if group_axis is None:
        group_axis = capacity_axis(config_axes)
    elif group_axis not in config_axes:
        raise InputError(f"group_axis must be one of the configuration axes {config_axes}; got {group_axis!r}")

    extras = [c for c in (*COMPARED, *CONTROLS, "test_accuracy", "train_accuracy")
              if c not in predictors and c not in targets and c not in axes and is_complete(frame, c)]
    grid = build_grid(frame, config_axes, [*targets, *predictors, *extras])
    n = len(grid.values)
    if n < 3:
        raise InputError(f"{n} configurations: at least 3 are needed to rank anything; add values to the axes")
    col = {c: grid.values[c].to_numpy(np.float64) for c in grid.values.columns}
    if explicit_targets:
        for t in targets:
            if np.ptp(col[t]) == 0:
                raise InputError(f"target {t!r} is constant ({float(col[t][0]):g}) over the {n} configurations: "
                                 "nothing to predict; leave it out of the targets")

    # Everything computed once and shared by the rows.
    measured = list(dict.fromkeys([*predictors, *extras]))
    trans = {c: _transform(col[c]) for c in measured}
    grids = {c: grid.array(c) for c in (*targets, *measured)}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    xs = np.stack([col[p] for p in predictors])
    ys = np.stack([col[t] for t in targets])
    clean = col.get("test_accuracy")
    clean_varies = clean is not None and np.ptp(clean) > 0
    boot_targets = list(targets)
    if clean_varies and "test_accuracy" not in targets and any(is_robustness_target(t) for t in targets):
        boot_targets.append("test_accuracy")  # the control of the partial Spearman given clean accuracy
    tau_boot, rho_boot = bootstrap_rank_correlations(xs, np.stack([col[t] for t in boot_targets]), idx)
    zc = _standardised(scipy.stats.rankdata(clean[idx], axis=-1)) if clean_varies and n_boot else None
    kendalls = line_kendalls(xs, ys, grid.shape)  # per axis (T, P, G_i)
    lines = line_summary(kendalls, grid.shape)
    bins = {}
    if len(config_axes) >= 3:
        for self_pairs in (True, False):
            bins[self_pairs] = pair_bins(grid.codes, grid.shape, grid.axes, self_pairs=self_pairs)
    groups = grid.codes[:, config_axes.index(group_axis)]
    n_groups = len(np.unique(groups))
    folds = []
    if n_groups >= 2:
        from sklearn.model_selection import GroupKFold

        folds = list(GroupKFold(n_splits=min(MAX_FOLDS, n_groups)).split(np.zeros((n, 1)), groups=groups))
    controls_all = {c: col[c] for c in CONTROLS if c in col and np.ptp(col[c]) > 0}
    collapse_preds = [p for p in predictors if _role(p) == "collapse" and not reads_test_labels(p)]
    families = [family_of(p) for p in predictors]
    test_labels = np.array([reads_test_labels(p) for p in predictors])
    row_x = np.stack([numeric_column(frame, p) for p in predictors])
    design = _design_reasons(n, grid.shape, config_axes)
    table_warnings += design

    rows = []
    for ti, t in enumerate(targets):
        y = col[t]
        base = {"target": t, "n_configs": n, "ols_n": n, "n_models": int(grid.n_rows.sum()), "n_boot": int(n_boot),
                "cv_group_axis": group_axis, "cv_folds": len(folds), "mae_all_collapse_model": ALL_COLLAPSE_MODEL,
                "correction": correction}
        if np.ptp(y) == 0:
            for p in predictors:
                rows.append({**base, "predictor": p, "family": family_of(p), "role": _role(p),
                             "reads_test_labels": reads_test_labels(p), "x_transform": trans[p][1],
                             "direction": "undefined", "target_ok": False,
                             "withheld": f"target {t!r} is constant",
                             "note": f"target {t!r} is constant ({float(y[0]):g}) over the {n} configurations: "
                                     "nothing to predict"})
            continue
        check = check_target(frame, grid, t)
        table_warnings += check.notes + check.reasons
        withheld = design + check.reasons
        base.update({"target_ok": check.ok, "target_n_points": check.n_points, "target_noise_se": check.noise_se,
                     "target_spread": check.spread, "target_snr": check.snr, "withheld": "; ".join(withheld)})
        target_notes = []
        if folds:
            mae_mean = _mean_mae(y, folds)
            if collapse_preds:
                mae_all = _ridge_mae(np.column_stack([trans[p][0] for p in collapse_preds]), y, folds)
            else:
                mae_all = np.nan
                target_notes.append("mae_all_collapse: no collapse predictor that reads no test label")
        else:
            mae_mean = mae_all = np.nan
            target_notes.append(f"mae: the group axis {group_axis!r} has one value, no grouped K-fold")
        psi_extra = {m: psi_per_axis(grids[m], grids[t]) for m in COMPARED if m in measured and m not in predictors}
        mae = {m: (_isotonic_mae(trans[m][0], y, folds) if folds else np.nan) for m in measured}

        # Psi with its standard error over lines; orientation by the sign of Psi for the |Psi| comparisons.
        psi_t = lines["psi"][ti]
        se_t = lines["se"][ti]
        orient_psi = np.array([_sign(v) for v in psi_t])
        k_t = [k[ti] for k in kendalls]  # per axis (P, G_i)
        ok_t = not withheld
        tau_t = np.array([scipy.stats.kendalltau(xs[p], y).statistic if np.ptp(xs[p]) > 0 else np.nan
                          for p in range(len(predictors))])
        orient_tau = np.array([_sign(v) for v in tau_t])
        rank = np.full(len(predictors), np.nan)
        eligible = np.flatnonzero(~test_labels)
        best = baseline = None
        comp = {}
        if ok_t and eligible.size:
            rank[eligible] = _ranks(np.abs(psi_t[eligible]))
            order = sorted(eligible, key=lambda p: (rank[p], _FAMILY_ORDER.get(families[p], 99), predictors[p]))
            best = order[0]
            oriented = [orient_psi[:, None] * k for k in k_t]
            comp["best"] = line_summary([o[best][None, :] - o for o in oriented], grid.shape)
            base_idx = [p for p in order if families[p] == BASELINE_FAMILY]
            if base_idx:
                baseline = base_idx[0]
                comp["baseline"] = line_summary([o - o[baseline][None, :] for o in oriented], grid.shape)

        # Dziugaite et al.'s sign-error (runs, not configurations), when the target has a noise model. Each measure
        # is oriented by the sign its hypothesis states before the data are seen (a_priori_sign), as theirs are:
        # orienting by the data's own tau would make a weak predictor's sign-error optimistic. Only a predictor
        # with no stated direction falls back to its tau.
        n_rows_points, _, _ = target_points(frame, t)
        orient_prior = np.array([a_priori_sign(p, t) or orient_tau[k] for k, p in enumerate(predictors)])
        if n_rows_points is not None:
            se_out = robust_sign_error(row_x, numeric_column(frame, t), n_rows_points, grid.row_cells, grid.shape,
                                       orient_prior, min_ess=float(min_ess))
        else:
            se_out = None
            target_notes.append("sign-error: no point count for this target (no binomial noise model), so no "
                                "Hoeffding weights")

        # Partial Spearman given clean accuracy, for robustness targets.
        partial_clean = partial_draws = None
        if is_robustness_target(t) and clean_varies:
            partial_clean = [_partial_spearman(xs[p], y, {"test_accuracy": clean}) for p in range(len(predictors))]
            if n_boot and ok_t:
                ci = boot_targets.index("test_accuracy")
                partial_draws = _spearman_partial_draws(rho_boot[ti], rho_boot[ci], y, zc, idx)
        elif is_robustness_target(t):
            target_notes.append("partial_rho_clean: test_accuracy is missing or constant")

        for pi, p in enumerate(predictors):
            x = col[p]
            notes = list(target_notes)
            row = {**base, "predictor": p, "family": families[pi], "role": _role(p),
                   "reads_test_labels": bool(test_labels[pi]), "mae_mean": mae_mean, "mae_all_collapse": mae_all,
                   "psi": float(psi_t[pi]), "psi_se": float(se_t[pi]), "mae": mae[p], "x_transform": trans[p][1]}
            row.update({psi_column(a): float(lines["per_axis"][i][ti, pi]) for i, a in enumerate(config_axes)})
            if np.isfinite(rank[pi]):
                row["rank"] = int(rank[pi])
            if not withheld:
                lo, hi = t_interval(psi_t[pi], se_t[pi], lines["df"])
                row["psi_lo"], row["psi_hi"] = float(lo), float(hi)
                if not test_labels[pi]:  # the test-label family is described, not tested
                    row["psi_p"] = float(t_p(psi_t[pi], se_t[pi], lines["df"]))
                for i, a in enumerate(config_axes):
                    row[psi_column(a, "lo")] = float(lines["per_axis_lo"][i][ti, pi])
                    row[psi_column(a, "hi")] = float(lines["per_axis_hi"][i][ti, pi])
            if best is not None and not test_labels[pi]:
                c = comp["best"]
                row["best_predictor"] = predictors[best]
                row["best_diff"] = float(c["psi"][pi])
                lo, hi = t_interval(c["psi"][pi], c["se"][pi], c["df"], bound=2.0)
                row["best_diff_lo"], row["best_diff_hi"] = float(lo), float(hi)
                if pi != best:  # the best against itself is no test: it would inflate the correction's count
                    row["best_p"] = float(t_p(c["psi"][pi], c["se"][pi], c["df"]))
            if baseline is not None:
                row["baseline"] = predictors[baseline]
                if not test_labels[pi] and families[pi] != BASELINE_FAMILY:
                    c = comp["baseline"]
                    row["vs_baseline"] = float(c["psi"][pi])
                    lo, hi = t_interval(c["psi"][pi], c["se"][pi], c["df"], bound=2.0)
                    row["vs_baseline_lo"], row["vs_baseline_hi"] = float(lo), float(hi)
                    row["vs_baseline_p"] = float(t_p(c["psi"][pi], c["se"][pi], c["df"]))
            if se_out is not None:
                row["sign_error_mean"] = float(se_out["mean"][pi])
                row["sign_error_p90"] = float(se_out["p90"][pi])
                row["sign_error_max"] = float(se_out["max"][pi])
                row["sign_error_envs"] = se_out["n_envs"]
                row["sign_error_envs_total"] = se_out["n_envs_total"]
                if se_out["n_envs"] == 0 and pi == 0:
                    notes.append("sign-error: no environment has a pair of runs whose target difference stands "
                                 "above the test set's sampling noise")
            if np.ptp(x) == 0:
                notes.append(f"predictor is constant ({float(x[0]):g}) over the configurations: tau, rho, the OLS "
                             "and the partial correlation are undefined (psi counts its ties as 0)")
            else:
                row["tau"] = float(tau_t[pi])
                row["rho"] = float(scipy.stats.spearmanr(x, y).statistic)
                if n_boot and not withheld:
                    row["tau_lo"], row["tau_hi"] = _interval(tau_boot[ti, pi], "tau", notes)
                    row["rho_lo"], row["rho_hi"] = _interval(rho_boot[ti, pi], "rho", notes)
                    if np.isfinite(row["tau_lo"]):
                        row["tau_ci_excludes_0"] = bool(row["tau_lo"] > 0 or row["tau_hi"] < 0)
                row.update(_ols(trans[p][0], y))
                controls = {c: v for c, v in controls_all.items() if c != p}
                row["partial_controls"] = ", ".join(controls)
                row["partial_rho"], why = _partial_spearman(x, y, controls)
                if why:
                    notes.append(why)
                if partial_clean is not None and p != "test_accuracy":
                    row["partial_rho_clean"], why = partial_clean[pi]
                    if why:
                        notes.append(why.replace("partial_rho", "partial_rho_clean"))
                    if partial_draws is not None and np.isfinite(row["partial_rho_clean"]):
                        row["partial_rho_clean_lo"], row["partial_rho_clean_hi"] = _interval(
                            partial_draws[pi], "partial_rho_clean", notes)
                    if np.isfinite(row["partial_rho_clean"]) and row["rho"] != 0:
                        row["clean_share"] = row["partial_rho_clean"] / row["rho"]
            row["direction"] = _direction(row.get("tau", np.nan), p, t)
            if bins:
                mu = orient_tau[pi] * x
                for key, self_pairs in (("pgdl", True), ("pgdl_no_self", False)):
                    row[key], why = score_from_ratios(cmi_ratios(mu, y, bins[self_pairs]))
                    if why:
                        notes.append(f"{key}: {why}")
            else:
                notes.append(f"pgdl: needs at least 3 configuration axes; there are {len(config_axes)} "
                             "(with 2 the score is 0/0)")
            for b in COMPARED:
                ref = psi_t[predictors.index(b)] if b in predictors else (
                    float(psi_extra[b].mean()) if b in psi_extra else None)
                if ref is not None:
                    row[beats_column(b, "psi")] = bool(abs(row["psi"]) > abs(float(ref)))
                    if folds:
                        row[beats_column(b, "mae")] = bool(mae[p] < mae[b])
            row["note"] = "; ".join(notes)
            rows.append(row)
    table = pd.DataFrame(rows)
    if "psi_p" in table.columns:
        table["psi_p_adj"] = adjust(table["psi_p"].to_numpy(np.float64, na_value=np.nan), correction)
    _adjust_pairs(table, correction)
    if "best_p_adj" in table.columns:
        table["tied_with_best"] = pd.Series(
            [None if not np.isfinite(p) else bool(p >= ALPHA) for p in table["best_p_adj"]], dtype=object)
        top = table["best_predictor"].astype(object).eq(table["predictor"]) if "best_predictor" in table else False
        table.loc[top, "tied_with_best"] = True
    out = _typed(table, config_axes)
    out.attrs["warnings"] = list(dict.fromkeys(table_warnings))
    out.attrs["correction"] = correction
    return out


def paired_tests(table: pd.DataFrame, columns=("best_p", "vs_baseline_p")):
    """The paired |Psi| tests of a table: ``(column, row index, (target, {predictor, other}), p)`` for each
    finite p-value in ``columns`` (``best_p``/``vs_baseline_p`` or their ``_adj``), ``other`` being the row's
    best predictor or best baseline. One pair of predictors of a target is one test, whichever column holds it."""
    for col in columns:
        if col not in table.columns:
            continue
        other = "best_predictor" if col.startswith("best_p") else "baseline"
        for i, (t, pred, ref, pv) in enumerate(zip(table["target"], table["predictor"], table[other], table[col])):
            try:
                pv = float(pv)
            except (TypeError, ValueError):
                continue
            if np.isfinite(pv):
                yield col, i, (t, frozenset((pred, ref))), pv


def _adjust_pairs(table: pd.DataFrame, correction: str) -> None:
    """Correct the paired |Psi| tests (``best_p``: the first-ranked predictor against each other one;
    ``vs_baseline_p``: each predictor against the best baseline) as **one** family, each pair of predictors of a
    target counted once. The two kinds share tests (the best against the best baseline is both), and corrected
    apart they gave one comparison two corrected p-values: a board could call the best predictor significantly
    better than every other one in one sentence and not significantly better than the baseline in the next."""
    keys, raw, where = {}, [], []  # where: (column, row index, key)
    for col, i, key, pv in paired_tests(table, ("best_p", "vs_baseline_p")):
        if key not in keys:
            keys[key] = len(raw)
            raw.append(pv)
        where.append((col, i, key))
    adjusted = adjust(np.asarray(raw, dtype=np.float64), correction) if raw else np.array([])
    for col in ("best_p", "vs_baseline_p"):
        if col in table.columns:
            table[col + "_adj"] = np.nan
    for col, i, key in where:
        table.iloc[i, table.columns.get_loc(col + "_adj")] = adjusted[keys[key]]


_FAMILY_ORDER = {f.name: k for k, f in enumerate(FAMILIES)}
_INT_COLUMNS = ("n_configs", "n_models", "n_boot", "ols_n", "cv_folds")
_NULLABLE_INT_COLUMNS = ("rank", "sign_error_envs", "sign_error_envs_total")
_BOOL_COLUMNS = ("tau_ci_excludes_0", "reads_test_labels", "tied_with_best", "target_ok")
_STR_COLUMNS = ("target", "predictor", "family", "role", "direction", "x_transform", "partial_controls",
                "mae_all_collapse_model", "cv_group_axis", "best_predictor", "baseline", "withheld", "correction",
                "note")


def _typed(table: pd.DataFrame, config_axes) -> pd.DataFrame:
    """Every column present, in order: counts int64 (nullable Int64 where NA), flags nullable boolean, text
    str, the rest float64."""
    out = {}
    for c in columns(config_axes):
        v = table[c] if c in table.columns else pd.Series([None] * len(table), dtype=object)
        if c in _INT_COLUMNS:
            out[c] = v.astype("int64")
        elif c in _NULLABLE_INT_COLUMNS:
            out[c] = pd.array([None if x is None or (isinstance(x, float) and np.isnan(x)) else int(x) for x in v],
                              dtype="Int64")
        elif c in _STR_COLUMNS:
            out[c] = v.where(v.notna(), "").astype(str)
        elif c in _BOOL_COLUMNS or c.startswith("beats_"):
            out[c] = pd.array([None if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x))
                               else bool(x) for x in v], dtype="boolean")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # object -> float of all-None columns
                out[c] = pd.to_numeric(v, errors="raise").astype("float64")
    return pd.DataFrame(out, index=range(len(table)))
