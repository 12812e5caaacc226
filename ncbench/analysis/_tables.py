"""The regression table as files and text: ``regression.csv``, ``regression.md`` and the terminal ranking."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .._errors import InputError
from .._io import write_replace

#: Columns :func:`ranked` needs.
_NEEDED = ("target", "predictor", "psi", "tau")


def check_table(table, needed=_NEEDED) -> None:
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected the table that regress returns (a DataFrame); got {type(table).__name__}")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(f"the table lacks column(s) {missing}: pass the DataFrame that ncbench.analysis.regress "
                         "returns")


def _abs_or_inf(v) -> float:
    """Sort key part: -|v|, NaN last."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(v) else -abs(v)


def ranked(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Per target (in order of first appearance), the rows ranked by |psi|, then |tau|, then predictor name."""
    check_table(table)
    out = []
    for target in dict.fromkeys(table["target"]):
        rows = table[table["target"] == target]
        order = sorted(range(len(rows)), key=lambda k: (_abs_or_inf(rows["psi"].iloc[k]),
                                                        _abs_or_inf(rows["tau"].iloc[k]),
                                                        str(rows["predictor"].iloc[k])))
        out.append((str(target), rows.iloc[order].reset_index(drop=True)))
    return out


def fmt(v, spec: str = "+.3f") -> str:
    """A number in a fixed format; "n/a" for NaN or missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "n/a"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(v):
        return "n/a"
    text = format(v, spec)
    return format(0.0, spec) if float(text) == 0 else text  # no "-0.000"


def fmt_ci(v, lo, hi, spec: str = "+.3f") -> str:
    if fmt(lo) == "n/a":
        return fmt(v, spec)
    return f"{fmt(v, spec)} [{fmt(lo, spec)}, {fmt(hi, spec)}]"


def yes_no(v) -> str:
    """True/False (also as read back from CSV) -> yes/no; missing -> n/a."""
    if isinstance(v, str):
        v = {"true": True, "false": False}.get(v.strip().lower())
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "yes" if bool(v) else "no"


def psi_axes(table: pd.DataFrame) -> list[str]:
    return [c[4:-1] for c in table.columns if c.startswith("psi[") and c.endswith("]")]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def regression_markdown(table: pd.DataFrame) -> str:
    """``regression.md``: per target, predictors ranked by |psi| with every statistic and its interval."""
    check_table(table)
    axes = psi_axes(table)
    first = table.iloc[0] if len(table) else None
    lines = ["# Does collapse predict accuracy and robustness?", ""]
    if first is not None and "n_configs" in table.columns:
        lines += [f"{int(first['n_configs'])} configurations ({int(first['n_models'])} models, seeds averaged "
                  f"within a configuration) over the axes {', '.join(axes)}. Intervals: 95 % percentile bootstrap "
                  f"over {int(first['n_boot'])} resamples of configurations. Ranked by |Ψ| (Jiang et al.'s "
                  "granulated Kendall), then |τ|.", ""]
    head = (["#", "predictor", "Ψ", *(f"ψ {a}" for a in axes), "τ [95 % CI]", "ρ [95 % CI]", "partial ρ",
             "PGDL", "PGDL (no self)", "OLS slope [95 % CI]", "R²", "x", "MAE", "beats #params (Ψ, MAE)",
             "beats margin (Ψ, MAE)", "direction"])
    for target, rows in ranked(table):
        r0 = rows.iloc[0]
        lines += [f"## {target}", ""]
        if "mae_mean" in rows.columns:
            lines += [f"MAE of predicting the mean: {fmt(r0['mae_mean'], '.4f')}; of all collapse metrics "
                      f"together ({r0.get('mae_all_collapse_model', '')}): {fmt(r0['mae_all_collapse'], '.4f')}. "
                      f"Grouped {int(r0['cv_folds'])}-fold over {r0['cv_group_axis']}.", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        notes = []
        for k, r in rows.iterrows():
            cells = [str(k + 1), f"`{r['predictor']}`", fmt(r["psi"]), *(fmt(r[f"psi[{a}]"]) for a in axes),
                     fmt_ci(r["tau"], r["tau_lo"], r["tau_hi"]), fmt_ci(r["rho"], r["rho_lo"], r["rho_hi"]),
                     fmt(r["partial_rho"]), fmt(r["pgdl"], ".1f"), fmt(r["pgdl_no_self"], ".1f"),
                     fmt_ci(r["ols_slope"], r["ols_slope_lo"], r["ols_slope_hi"], ".4g"), fmt(r["ols_r2"], ".3f"),
                     "log" if r["x_transform"] == "log" else "raw", fmt(r["mae"], ".4f"),
                     f"{yes_no(r['beats_num_parameters_psi'])}, {yes_no(r['beats_num_parameters_mae'])}",
                     f"{yes_no(r['beats_train_margin_p10_psi'])}, {yes_no(r['beats_train_margin_p10_mae'])}",
                     r["direction"]]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
            if r["note"]:
                notes.append(f"- `{r['predictor']}`: {r['note']}")
        lines.append("")
        if notes:
            lines += ["Notes:", "", *notes, ""]
    lines += ["Columns: Ψ and ψ per axis, Jiang et al. (ICLR 2020) in their sign form (ties count 0); τ (tau-b) and "
              "ρ over configurations; partial ρ controls for log(num_parameters) and final_train_loss (see the "
              "CSV's partial_controls); PGDL, the competition's conditional-mutual-information score (0-100, "
              "with and without the pairs i = j); OLS of the target on the predictor (x: log or raw values when "
              "some are <= 0); MAE, grouped K-fold of an isotonic fit on the predictor alone.", ""]
    return "\n".join(lines)


def write_regression(table: pd.DataFrame, out_dir) -> list[Path]:
    """Write ``out_dir/regression.csv`` (every column, numbers as numbers) and ``out_dir/regression.md``.

    Both are replaced atomically when they exist. Returns the two paths.
    """
    check_table(table)
    out_dir = Path(out_dir)
    csv = table.to_csv(index=False, lineterminator="\n").encode()
    return [write_replace(out_dir / "regression.csv", csv),
            write_replace(out_dir / "regression.md", regression_markdown(table).encode())]


def format_ranking(table: pd.DataFrame, top: int = 5) -> str:
    """For the terminal: per target, the ``top`` predictors by |psi| with tau's interval, PGDL and the baselines."""
    check_table(table)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"top must be a whole number >= 1; got {top!r}")
    lines = []
    for target, rows in ranked(table):
        n = int(rows["n_configs"].iloc[0]) if "n_configs" in rows.columns else len(rows)
        lines.append(f"{target} ({n} configurations): best predictors by |Psi|")
        for k, r in rows.head(top).iterrows():
            tau = fmt_ci(r["tau"], r.get("tau_lo"), r.get("tau_hi"))
            lines.append(f"  {k + 1}. {r['predictor']:<32} Psi {fmt(r['psi'])}  tau {tau}  PGDL {fmt(r.get('pgdl'), '.1f')}"
                         f"  beats #params {yes_no(r.get('beats_num_parameters_psi'))}, margin "
                         f"{yes_no(r.get('beats_train_margin_p10_psi'))}")
    return "\n".join(lines)
