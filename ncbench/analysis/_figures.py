"""Figures of the regression table: the best predictors of each target, and psi_i per axis of each predictor."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError
from ..plot import _pyplot, _save
from ._frame import build_grid, capacity_axis, names_arg
from ._tables import check_table, psi_axes, ranked

#: Predictors drawn per target.
TOP = 3


def slug(name: str) -> str:
    """A file-name-safe form of a column name without dots (the figure writer adds the suffix):
    ``robust_accuracy@8/255`` -> ``robust_accuracy_at_8_255``, ``train.nc1`` -> ``train_nc1``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name.replace("@", "_at_")).strip("_") or "column"


def _best(rows: pd.DataFrame, top: int) -> pd.DataFrame:
    """The first ``top`` rows by |psi| (``ranked`` order); by |tau| when psi is undefined for all of them."""
    rows = rows[rows["psi"].notna() | rows["tau"].notna()]
    if rows["psi"].notna().any():
        return rows[rows["psi"].notna()].head(top)
    return rows.assign(_a=rows["tau"].abs()).sort_values(["_a", "predictor"], ascending=[False, True],
                                                         kind="mergesort").head(top)


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def _log_x(ax) -> None:
    """Log x axis labelled at 1, 2 and 5 times powers of ten, as plain numbers (narrow ranges included)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def draw_figures(frame, table: pd.DataFrame, out_dir, *, axes, color_axis: str | None = None) -> list[Path]:
    """Draw, as PNG and PDF into ``out_dir``:

    - ``scatter_<target>``: per target, the configurations (seeds averaged) of its best predictors (top 3 by
      |psi|, or by |tau| when psi is undefined), target against predictor on a log x axis (linear when the
      predictor has values <= 0), coloured by ``color_axis`` (default: the table's ``cv_group_axis``, else the
      capacity axis), with the OLS fit of the table drawn;
    - ``psi_<predictor>``: per predictor, bars of psi_i per axis, one bar per target (targets where psi is
      undefined, e.g. constant ones, left out).

    Parameters
    ----------
    frame : DataFrame
        The frame the table was computed from.
    table : DataFrame
        What :func:`regress` returns.
    axes : list of str
        The grid axes given to :func:`regress` (``seed`` is dropped: configurations are drawn).

    Returns
    -------
    list of Path
        Every file written, PNG then PDF for each figure.
    """
    check_table(table, ["target", "predictor", "psi", "tau", "x_transform", "ols_intercept", "ols_slope"])
    config_axes = [a for a in names_arg(axes, "axes") if a != "seed"]
    if color_axis is None:
        groups = table["cv_group_axis"] if "cv_group_axis" in table.columns else []
        color_axis = next((g for g in groups if g in config_axes), capacity_axis(config_axes))
    elif color_axis not in config_axes:
        raise InputError(f"color_axis must be one of the configuration axes {config_axes}; got {color_axis!r}")
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = list(dict.fromkeys(table["target"]))
    predictors = list(dict.fromkeys(table["predictor"]))
    grid = build_grid(frame, config_axes, [*targets, *predictors])
    colour_codes = grid.codes[:, config_axes.index(color_axis)]
    levels = grid.levels[config_axes.index(color_axis)]
    cmap = plt.get_cmap("viridis", max(len(levels), 2))
    paths: list[Path] = []
    used: set[str] = set()

    def stem(kind: str, name: str) -> Path:
        s, k = f"{kind}_{slug(name)}", 2
        while s in used:
            s, k = f"{kind}_{slug(name)}-{k}", k + 1
        used.add(s)
        return out_dir / s

    for target, rows in ranked(table):
        best = _best(rows, TOP)
        if best.empty:
            continue
        fig, panels = plt.subplots(1, len(best), figsize=(4.2 * len(best), 3.6), squeeze=False)
        y = grid.values[target].to_numpy()
        for ax, (_, r) in zip(panels[0], best.iterrows()):
            x = grid.values[r["predictor"]].to_numpy()
            log = r["x_transform"] == "log"
            for code, level in enumerate(levels):
                sel = colour_codes == code
                ax.scatter(x[sel], y[sel], s=22, color=cmap(code), label=_label(level))
            if np.isfinite(r["ols_slope"]):
                xs = np.geomspace(x.min(), x.max(), 100) if log else np.linspace(x.min(), x.max(), 100)
                zs = np.log(xs) if log else xs
                ax.plot(xs, r["ols_intercept"] + r["ols_slope"] * zs, color="black", lw=1,
                        label=f"OLS, R²={r['ols_r2']:.2f}")
            if log:
                _log_x(ax)
            ax.set_xlabel(r["predictor"] + ("" if log else " (linear: values <= 0)"))
            ax.set_ylabel(target)
            psi = f"Ψ={r['psi']:+.2f}" if np.isfinite(r["psi"]) else "Ψ n/a"
            tau = f"τ={r['tau']:+.2f}" if np.isfinite(r["tau"]) else "τ n/a"
            ax.set_title(f"{psi}  {tau}", fontsize=10)
        panels[0][0].legend(title=color_axis, fontsize=7, title_fontsize=7)
        fig.suptitle(f"{target}: best predictors ({len(grid.values)} configurations)", fontsize=11)
        fig.tight_layout()
        paths += _save(fig, stem("scatter", target))

    axes_shown = psi_axes(table)
    for predictor in predictors:
        rows = table[(table["predictor"] == predictor) & table["psi"].notna()]
        if rows.empty:
            continue
        paths += _save(psi_figure(plt, rows, axes_shown, predictor), stem("psi", predictor))
    return paths


def psi_figure(plt, rows: pd.DataFrame, axes_shown, predictor: str):
    """Bars of psi_i per axis (one bar per target, with its 95 % interval where the table has one); the legend
    sits to the right of the axes, outside them, so it never covers a bar (issue 18)."""
    fig, ax = plt.subplots(figsize=(2.6 + 1.1 * len(axes_shown) * max(1, len(rows)) ** 0.5, 3.4))
    width = 0.8 / max(len(rows), 1)
    pos = np.arange(len(axes_shown))
    for k, (_, r) in enumerate(rows.iterrows()):
        vals = np.array([r[f"psi[{a}]"] for a in axes_shown], dtype=np.float64)
        lo = np.array([r.get(f"psi_lo[{a}]", np.nan) for a in axes_shown], dtype=np.float64)
        hi = np.array([r.get(f"psi_hi[{a}]", np.nan) for a in axes_shown], dtype=np.float64)
        err = None
        if np.isfinite(lo).all() and np.isfinite(hi).all():
            err = np.vstack([np.maximum(vals - lo, 0), np.maximum(hi - vals, 0)])
        ax.bar(pos + (k - (len(rows) - 1) / 2) * width, np.nan_to_num(vals), width, label=r["target"], yerr=err,
               error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(pos, axes_shown, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("ψ_i (granulated Kendall)")
    ax.set_title(predictor, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title="target",
              title_fontsize=7)
    fig.tight_layout()
    return fig
