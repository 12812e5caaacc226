"""The regression table as files and text: ``regression.csv``, ``regression.md`` and the terminal ranking."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .._errors import InputError
from .._io import write_replace
from ._stats import ALPHA

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


def _family_index(name) -> int:
    from ._frame import FAMILIES

    order = {f.name: k for k, f in enumerate(FAMILIES)}
    return order.get(str(name), len(order))


def _rank_or_inf(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(v) else v


def ranked(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Per target (in order of first appearance), its rows in display order.

    With a ``rank`` column (:func:`regress`'s tables): ranked rows by rank (equal ranks are ties, shown by
    family then name, never by a hidden tie-break), then unranked rows (the test-label family, or every row
    of a target whose ranking is withheld) by family, then name. Without one (older tables): by |psi|, then
    |tau|, then predictor name.
    """
    check_table(table)
    out = []
    for target in dict.fromkeys(table["target"]):
        rows = table[table["target"] == target]
        if "rank" in rows.columns:
            fam = rows["family"] if "family" in rows.columns else pd.Series([""] * len(rows), index=rows.index)
            order = sorted(range(len(rows)), key=lambda k: (_rank_or_inf(rows["rank"].iloc[k]),
                                                            _family_index(fam.iloc[k]),
                                                            str(rows["predictor"].iloc[k])))
        else:
            order = sorted(range(len(rows)), key=lambda k: (_abs_or_inf(rows["psi"].iloc[k]),
                                                            _abs_or_inf(rows["tau"].iloc[k]),
                                                            str(rows["predictor"].iloc[k])))
        out.append((str(target), rows.iloc[order].reset_index(drop=True)))
    return out


def fmt_p(v) -> str:
    """A p-value: "< 0.001" below 0.001, else three significant digits (0.0496, not a rounded 0.050);
    "n/a" when missing."""
    text = fmt(v, "#.3g")  # trailing zeros kept: 0.0500 is not 0.05
    if text == "n/a":
        return text
    return "< 0.001" if float(v) < 0.001 else text


def p_is(v) -> str:
    """"p = 0.0468", "p < 0.001" or "p n/a", for sentences."""
    text = fmt_p(v)
    return f"p {text}" if text.startswith("<") or text == "n/a" else f"p = {text}"


def rank_text(v) -> str:
    """A rank as text, "–" when the row is not ranked."""
    text = fmt(v, ".0f")
    return "–" if text == "n/a" else text


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
    """``regression.md``: per target, every predictor in rank order with every statistic and its interval."""
    check_table(table)
    axes = psi_axes(table)
    first = table.iloc[0] if len(table) else None
    lines = ["# Does collapse predict accuracy and robustness?", ""]
    if first is not None and "n_configs" in table.columns:
        corr = table["correction"].iloc[0] if "correction" in table.columns else ""
        lines += [f"{int(first['n_configs'])} configurations ({int(first['n_models'])} models, seeds averaged "
                  f"within a configuration) over the axes {', '.join(axes)}. Ψ's intervals: Student's t over the "
                  f"grid's lines; τ's and ρ's: 95 % percentile bootstrap over {int(first['n_boot'])} resamples of "
                  "configurations. Predictors that read no test label are ranked by |Ψ| (equal |Ψ|: equal rank); "
                  f"the test-label family (`test.*`, `test_adv.*`) is described, not ranked. p-values are "
                  f"corrected ({corr or 'n/a'}) over every predictor × target.", ""]
    for w in table.attrs.get("warnings", []):
        lines.append(f"- Warning: {w}")
    if table.attrs.get("warnings"):
        lines.append("")
    has = set(table.columns)
    head = (["rank", "predictor", "family", "Ψ [95 % CI]", "p (corr.)", *(f"ψ {a}" for a in axes), "τ [95 % CI]",
             "ρ [95 % CI]", "partial ρ", "partial ρ | clean", "PGDL", "PGDL (no self)", "sign-error mean/p90/max",
             "Δ|Ψ| vs baseline [95 % CI]", "p (corr.)", "OLS slope [95 % CI]", "R²", "x", "MAE", "direction"])
    for target, rows in ranked(table):
        r0 = rows.iloc[0]
        lines += [f"## {target}", ""]
        if "withheld" in has and r0["withheld"]:
            lines += [f"Not ranked, no intervals: {r0['withheld']}.", ""]
        if "mae_mean" in has:
            lines += [f"MAE of predicting the mean: {fmt(r0['mae_mean'], '.4f')}; of all collapse metrics "
                      f"together ({r0.get('mae_all_collapse_model', '')}): {fmt(r0['mae_all_collapse'], '.4f')}. "
                      f"Grouped {int(r0['cv_folds'])}-fold over {r0['cv_group_axis']}.", ""]
        if "baseline" in has and r0.get("baseline"):
            lines += [f"Best baseline (family measures, by |Ψ|): `{r0['baseline']}`.", ""]
        lines += ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
        notes = []
        for _, r in rows.iterrows():
            g = r.get
            cells = [rank_text(g("rank")), f"`{r['predictor']}`", str(g("family", "")),
                     fmt_ci(r["psi"], g("psi_lo"), g("psi_hi")), fmt_p(g("psi_p_adj")),
                     *(fmt(r[f"psi[{a}]"]) for a in axes),
                     fmt_ci(r["tau"], g("tau_lo"), g("tau_hi")), fmt_ci(g("rho"), g("rho_lo"), g("rho_hi")),
                     fmt(g("partial_rho")), fmt_ci(g("partial_rho_clean"), g("partial_rho_clean_lo"),
                                                  g("partial_rho_clean_hi")),
                     fmt(g("pgdl"), ".1f"), fmt(g("pgdl_no_self"), ".1f"),
                     "/".join(fmt(g(k), ".2f") for k in ("sign_error_mean", "sign_error_p90", "sign_error_max")),
                     fmt_ci(g("vs_baseline"), g("vs_baseline_lo"), g("vs_baseline_hi")),
                     fmt_p(g("vs_baseline_p_adj")),
                     fmt_ci(g("ols_slope"), g("ols_slope_lo"), g("ols_slope_hi"), ".4g"), fmt(g("ols_r2"), ".3f"),
                     "log" if g("x_transform") == "log" else "raw", fmt(g("mae"), ".4f"), str(g("direction", ""))]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
            if r["note"]:
                notes.append(f"- `{r['predictor']}`: {r['note']}")
        lines.append("")
        if notes:
            lines += ["Notes:", "", *notes, ""]
    lines += ["Columns: docs/statistics.md. Ψ and ψ per axis, Jiang et al. (ICLR 2020) in their sign form (ties "
              "count 0); τ (tau-b) and ρ over configurations; partial ρ controls for log(num_parameters) and "
              "final_train_loss (the CSV's partial_controls), partial ρ | clean for test_accuracy; PGDL, the "
              "competition's conditional-mutual-information score of the measure oriented by the sign of its τ "
              "(0-100, with and without the pairs i = i); the sign-error, Dziugaite et al.'s over one-axis "
              "environments (0 best); Δ|Ψ| vs baseline, paired over the grid's lines; OLS of the target on the "
              "predictor (x: log, or raw when some values are <= 0); MAE, grouped K-fold of an isotonic fit.", ""]
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
    """For the terminal: the table's warnings, then per target the ``top`` ranked predictors by |Psi| with
    Psi's interval and corrected p-value, tau, PGDL and whether the best's margin over the best baseline is
    significant; a target whose ranking is withheld says why instead. Equal ranks are ties."""
    check_table(table)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"top must be a whole number >= 1; got {top!r}")
    lines = [f"warning: {w}" for w in table.attrs.get("warnings", [])]
    for target, rows in ranked(table):
        n = int(rows["n_configs"].iloc[0]) if "n_configs" in rows.columns else len(rows)
        withheld = str(rows["withheld"].iloc[0]) if "withheld" in rows.columns else ""
        if withheld:
            rest = withheld
            for w in table.attrs.get("warnings", []):
                rest = rest.replace(w, "")
            why = "see the warnings above" if not rest.strip("; ") else withheld
            lines.append(f"{target} ({n} configurations): not ranked, no intervals ({why})")
            continue
        if "rank" in rows.columns:
            shown = rows[rows["rank"].notna()].head(top)
            lines.append(f"{target} ({n} configurations): predictors that read no test label, by |Psi| "
                         "(equal ranks are ties)")
        else:
            shown = rows.head(top)
            lines.append(f"{target} ({n} configurations): best predictors by |Psi|")
        for k, r in shown.iterrows():
            rank = rank_text(r["rank"]) if "rank" in rows.columns else str(k + 1)
            psi = fmt_ci(r["psi"], r.get("psi_lo"), r.get("psi_hi"))
            tau = fmt_ci(r["tau"], r.get("tau_lo"), r.get("tau_hi"))
            tie = "  (tied with the best)" if yes_no(r.get("tied_with_best")) == "yes" and rank != "1" else ""
            lines.append(f"  {rank}. {r['predictor']:<32} Psi {psi}  p {fmt_p(r.get('psi_p_adj'))}  tau {tau}  "
                         f"PGDL {fmt(r.get('pgdl'), '.1f')}{tie}")
        if "vs_baseline" in rows.columns and len(shown):
            lead = next((r for _, r in shown.iterrows() if fmt(r.get("vs_baseline")) != "n/a"), None)
            if lead is not None:
                sig = "significant" if _float(lead.get("vs_baseline_p_adj")) < ALPHA else "not significant"
                lines.append(f"  {lead['predictor']} vs the best baseline {lead['baseline']}: |Psi| "
                             f"{fmt_ci(lead['vs_baseline'], lead.get('vs_baseline_lo'), lead.get('vs_baseline_hi'))}"
                             f", corrected p {fmt_p(lead.get('vs_baseline_p_adj'))} ({sig})")
    return "\n".join(lines)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
