"""``regress``: every statistic of issue 10 for every target x predictor, as one table."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.stats

from .._errors import InputError
from ._frame import (BASELINES, build_grid, capacity_axis, check_columns, check_frame, default_predictors,
                     default_targets, is_collapse_column, is_complete, names_arg, resolve_axes)
from ._pgdl import cmi_ratios, pair_bins, score_from_ratios
from ._rank import bootstrap_rank_correlations, psi_per_axis

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


def psi_column(axis: str) -> str:
    """The table's column of psi_i for one axis: ``psi[<axis>]``."""
    return f"psi[{axis}]"


def beats_column(baseline: str, by: str) -> str:
    return f"beats_{baseline}_{by}"


def columns(config_axes) -> list[str]:
    """The columns of :func:`regress`'s table, in order."""
    return [
        "target", "predictor", "role", "n_configs", "n_models",
        "psi", *(psi_column(a) for a in config_axes),
        "tau", "tau_lo", "tau_hi", "tau_ci_excludes_0", "rho", "rho_lo", "rho_hi", "n_boot", "direction",
        "pgdl", "pgdl_no_self",
        "x_transform", "ols_intercept", "ols_slope", "ols_slope_lo", "ols_slope_hi", "ols_r2", "ols_p", "ols_n",
        "partial_rho", "partial_controls",
        "mae", "mae_mean", "mae_all_collapse", "mae_all_collapse_model", "cv_group_axis", "cv_folds",
        *(beats_column(b, by) for b in COMPARED for by in ("psi", "mae")),
        "note",
    ]


def _role(name: str) -> str:
    return "collapse" if is_collapse_column(name) else "baseline" if name in BASELINES else "other"


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


def _check_options(n_boot, seed) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise InputError(f"n_boot must be a whole number >= 0 (bootstrap resamples; 1000 is usual); got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer; got {seed!r}")


def regress(frame, targets=None, predictors=None, axes=None, *, group_axis: str | None = None,
            n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Does each predictor (collapse metric or baseline) predict each target? One row per target x predictor.

    Every statistic is computed over **configurations**: the cells of the grid of ``axes`` without ``seed``,
    with the seeds (all rows of a cell) averaged first. The grid must be full.

    Parameters
    ----------
    frame : DataFrame
        One row per job (docs/records.md, "the frame").
    targets : list of str, optional
        Default: ``test_accuracy``, ``generalization_gap``, every ``robust_accuracy@*`` and other
        ``*_accuracy@*`` (extra attacks) and ``fab_margin`` that the frame holds. A constant target named here is
        refused; a constant default target gets rows of NaN that say why.
    predictors : list of str, optional
        Default: every numeric ``train.*`` / ``test.*`` collapse column that is not an axis, then the baselines
        ``num_parameters``, ``final_train_loss``, ``sum_squared_weights``, ``train_margin_p10`` (each where the
        frame has it with at least one value; a column with some values missing is refused, naming the jobs).
    axes : list of str, optional
        The sweep's axes (dotted keys); default ``frame.attrs["axes"]``.
    group_axis : str, optional
        Groups of the grouped K-fold. Default: the capacity axis, the first whose name contains "channels",
        "width" or "depth", else the first axis.
    n_boot : int
        Bootstrap resamples of configurations for the intervals (0: no intervals).
    seed : int
        Seed of the resampling (one set of resamples serves every pair, so intervals are paired).

    Returns
    -------
    DataFrame
        Columns (:func:`columns`), one statistic each; NaN only where a statistic is undefined, and then
        ``note`` says why:

        - ``psi``, ``psi[<axis>]``: Jiang et al.'s granulated Kendall and its per-axis terms (sign form).
        - ``tau``, ``rho`` (scipy, tau-b) with 95 % percentile bootstrap intervals ``*_lo``, ``*_hi``;
          ``tau_ci_excludes_0``; ``direction`` in words ("lower train.nc1 goes with higher test_accuracy").
        - ``pgdl`` (self-pairs included, as the competition) and ``pgdl_no_self``: 0..100; NaN with fewer than 3
          configuration axes.
        - ``ols_*``: OLS (statsmodels) of the target on the predictor transformed as ``x_transform`` says:
          log when every value is positive, else the values themselves. Intercept, slope with its 95 % CI,
          R^2, the slope's p-value, n.
        - ``partial_rho``: Spearman correlation of predictor and target with the ranks of
          ``partial_controls`` (num_parameters, i.e. log(num_parameters), and final_train_loss, whichever are
          present and vary; a control predictor is not controlled for itself) regressed out.
        - ``mae``: grouped K-fold (sklearn GroupKFold, groups ``cv_group_axis``, ``cv_folds`` folds) mean
          absolute error, pooled over every configuration's out-of-fold prediction, of an isotonic fit of the
          target on the transformed predictor (direction chosen on each training fold); ``mae_mean``:
          predicting the training folds' mean; ``mae_all_collapse``: ``mae_all_collapse_model`` on every
          collapse predictor together.
        - ``beats_num_parameters_psi`` / ``_mae``, ``beats_train_margin_p10_psi`` / ``_mae``: larger |psi|,
          smaller MAE than the baseline (NA where the frame lacks it).

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
    _check_options(n_boot, seed)
    axes = resolve_axes(frame, axes)
    check_columns(frame, axes, "axis")
    config_axes = [a for a in axes if a != "seed"]
    if not config_axes:
        raise InputError("the only axis is 'seed': there is one configuration, nothing to rank; pass the sweep's "
                         "other axes")
    explicit_targets = targets is not None
    targets = names_arg(targets, "targets") if explicit_targets else default_targets(frame)
    if not targets:
        raise InputError("the frame has none of the default targets (test_accuracy, generalization_gap, "
                         "robust_accuracy@*, fab_margin); pass targets=[...]")
    check_columns(frame, targets, "target")
    predictors = names_arg(predictors, "predictors") if predictors is not None else default_predictors(frame, axes)
    if not predictors:
        raise InputError("the frame has no train.* / test.* collapse column and no baseline; pass predictors=[...]")
    check_columns(frame, predictors, "predictor")
    if group_axis is None:
        group_axis = capacity_axis(config_axes)
    elif group_axis not in config_axes:
        raise InputError(f"group_axis must be one of the configuration axes {config_axes}; got {group_axis!r}")

    extras = [c for c in (*COMPARED, *CONTROLS)
              if c not in predictors and c not in axes and is_complete(frame, c)]
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
    tau_boot, rho_boot = bootstrap_rank_correlations(xs, ys, idx)
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
    collapse_preds = [p for p in predictors if _role(p) == "collapse"]

    rows = []
    for ti, t in enumerate(targets):
        y = col[t]
        base = {"target": t, "n_configs": n, "ols_n": n, "n_models": int(grid.n_rows.sum()), "n_boot": int(n_boot),
                "cv_group_axis": group_axis, "cv_folds": len(folds), "mae_all_collapse_model": ALL_COLLAPSE_MODEL}
        if np.ptp(y) == 0:
            for p in predictors:
                rows.append({**base, "predictor": p, "role": _role(p), "x_transform": trans[p][1],
                             "direction": "undefined", "note": f"target {t!r} is constant ({float(y[0]):g}) over the "
                                                               f"{n} configurations: nothing to predict"})
            continue
        target_notes = []
        if folds:
            mae_mean = _mean_mae(y, folds)
            if collapse_preds:
                mae_all = _ridge_mae(np.column_stack([trans[p][0] for p in collapse_preds]), y, folds)
            else:
                mae_all = np.nan
                target_notes.append("mae_all_collapse: no collapse predictor")
        else:
            mae_mean = mae_all = np.nan
            target_notes.append(f"mae: the group axis {group_axis!r} has one value, no grouped K-fold")
        psi = {m: psi_per_axis(grids[m], grids[t]) for m in measured}
        mae = {m: (_isotonic_mae(trans[m][0], y, folds) if folds else np.nan) for m in measured}
        for pi, p in enumerate(predictors):
            x = col[p]
            notes = list(target_notes)
            row = {**base, "predictor": p, "role": _role(p), "mae_mean": mae_mean, "mae_all_collapse": mae_all,
                   "psi": float(psi[p].mean()), "mae": mae[p], "x_transform": trans[p][1]}
            row.update({psi_column(a): float(v) for a, v in zip(config_axes, psi[p])})
            if np.ptp(x) == 0:
                notes.append(f"predictor is constant ({float(x[0]):g}) over the configurations: tau, rho, the OLS "
                             "and the partial correlation are undefined (psi counts its ties as 0)")
            else:
                row["tau"] = float(scipy.stats.kendalltau(x, y).statistic)
                row["rho"] = float(scipy.stats.spearmanr(x, y).statistic)
                if n_boot:
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
            row["direction"] = _direction(row.get("tau", np.nan), p, t)
            if bins:
                for key, self_pairs in (("pgdl", True), ("pgdl_no_self", False)):
                    row[key], why = score_from_ratios(cmi_ratios(x, y, bins[self_pairs]))
                    if why:
                        notes.append(f"{key}: {why}")
            else:
                notes.append(f"pgdl: needs at least 3 configuration axes; there are {len(config_axes)} "
                             "(with 2 the score is 0/0)")
            for b in COMPARED:
                if b in psi:
                    row[beats_column(b, "psi")] = bool(abs(row["psi"]) > abs(float(psi[b].mean())))
                    if folds:
                        row[beats_column(b, "mae")] = bool(mae[p] < mae[b])
            row["note"] = "; ".join(notes)
            rows.append(row)
    return _typed(pd.DataFrame(rows), config_axes)


_INT_COLUMNS = ("n_configs", "n_models", "n_boot", "ols_n", "cv_folds")
_STR_COLUMNS = ("target", "predictor", "role", "direction", "x_transform", "partial_controls",
                "mae_all_collapse_model", "cv_group_axis", "note")


def _typed(table: pd.DataFrame, config_axes) -> pd.DataFrame:
    """Every column present, in order: counts int64, flags nullable boolean, text str, the rest float64."""
    out = {}
    for c in columns(config_axes):
        v = table[c] if c in table.columns else pd.Series([None] * len(table), dtype=object)
        if c in _INT_COLUMNS:
            out[c] = v.astype("int64")
        elif c in _STR_COLUMNS:
            out[c] = v.where(v.notna(), "").astype(str)
        elif c == "tau_ci_excludes_0" or c.startswith("beats_"):
            out[c] = v.astype("boolean")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # object -> float of all-None columns
                out[c] = pd.to_numeric(v, errors="raise").astype("float64")
    return pd.DataFrame(out, index=range(len(table)))
