"""The measures board, ``leaderboards/measures/<sweep>/``: which measures predict each target, what is significant.

``measures.csv`` holds the numbers, ``board.json`` the metadata (sweep, command, number of models, source, the
table's warnings), and ``README.md`` is rendered from those two alone, byte for byte the same every time (no
timestamps, fixed float formats, a stable order with tie-breakers), so a renderer can rebuild every board from
the committed files. Every sentence of the README is worded from the statistics (intervals, corrected
p-values), never from a rank alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError
from .._io import dumps, write_replace
from ._frame import BASELINE_FAMILY, COLLAPSE_FAMILIES, FAMILIES, HELD_OUT_FAMILIES, family_of, is_robustness_target
from ._regress import COMPARED, beats_column, paired_tests
from ._stats import ALPHA, CORRECTIONS, MIN_CONFIGS, MIN_LINES, NOISE_RATIO
from ._tables import check_table, fmt, fmt_ci, fmt_p, p_is, psi_axes, rank_text, ranked, yes_no

CSV_NAME, META_NAME, README_NAME = "measures.csv", "board.json", "README.md"
#: Optional: the robustness target's gap to full AutoAttack on a sample of the sweep's own models
#: (``benchmarks/bench_attack_gap.py --store ... --out``); printed on the board when present.
GAP_NAME = "attack-gap.csv"
#: Its columns that the board reads (robust accuracies as fractions; gaps in points).
GAP_COLUMNS = ("job_id", "axes", "norm", "eps", "n_points", "clean", "autoattack", "target", "target_recorded",
               "target_recorded_gap", "target_alone_gap", "pgd20_gap")
#: How far (in points) a target may lie from AutoAttack, either way, to count as "within a point" (issue 16's bar).
GAP_BAR = 1.0
BOARD_FORMAT = 2
#: Formats this ncbench renders (1: before families, intervals on Psi and corrected p-values).
READ_FORMATS = (1, 2)
#: Significant digits of the numbers in measures.csv (a committed file: machine-level float noise stays out).
CSV_FLOAT = "%.6g"
_META_KEYS = ("command", "format", "n_models", "source_note", "sweep", "warnings")
_TEXT = ("target", "predictor", "family", "role", "direction", "note", "withheld", "baseline", "best_predictor",
         "correction")


def board_columns(axes) -> list[str]:
    """The columns of ``measures.csv``, in order."""
    return ["target", "rank", "predictor", "family", "role", "reads_test_labels", "tied_with_best",
            "psi", "psi_lo", "psi_hi", "psi_p", "psi_p_adj", *(f"psi[{a}]" for a in axes),
            *(f"psi_lo[{a}]" for a in axes), *(f"psi_hi[{a}]" for a in axes),
            "tau", "tau_lo", "tau_hi", "rho", "rho_lo", "rho_hi", "partial_rho",
            "partial_rho_clean", "partial_rho_clean_lo", "partial_rho_clean_hi", "clean_share",
            "pgdl", "pgdl_no_self", "sign_error_mean", "sign_error_p90", "sign_error_max", "sign_error_envs",
            "sign_error_envs_total", "best_predictor", "best_diff", "best_diff_lo", "best_diff_hi", "best_p_adj",
            "baseline", "vs_baseline", "vs_baseline_lo", "vs_baseline_hi", "vs_baseline_p", "vs_baseline_p_adj",
            "mae", "mae_mean", "mae_all_collapse", *(beats_column(b, by) for b in COMPARED for by in ("psi", "mae")),
            "n_configs", "target_ok", "target_n_points", "target_noise_se", "target_spread", "target_snr",
            "withheld", "correction", "direction", "note"]


def _board_frame(table: pd.DataFrame) -> pd.DataFrame:
    axes = psi_axes(table)
    cols = board_columns(axes)
    check_table(table, cols)
    return pd.concat([rows[cols] for _, rows in ranked(table)], ignore_index=True)


def write_measures_board(table: pd.DataFrame, board_dir, *, sweep: str, command: str, n_models: int,
                         source_note: str) -> list[Path]:
    """Write ``measures.csv``, ``board.json`` and ``README.md`` into ``board_dir`` (replacing them).

    Parameters
    ----------
    table : DataFrame
        What :func:`regress` returns (its ``attrs["warnings"]`` go into board.json).
    board_dir : path
        Usually ``leaderboards/measures/<sweep>/``.
    sweep : str
        The sweep's name, shown as the board's title.
    command : str
        The command that regenerates the board (shown verbatim).
    n_models : int
        Models (jobs) behind the numbers.
    source_note : str
        Where the results come from (store, commit, hardware), one paragraph.

    Returns
    -------
    list of Path
        measures.csv, board.json, README.md.
    """
    meta = _check_meta({"sweep": sweep, "command": command, "n_models": n_models, "source_note": source_note,
                        "format": BOARD_FORMAT, "warnings": [str(w) for w in table.attrs.get("warnings", [])]})
    board = _board_frame(table)
    board_dir = Path(board_dir)
    csv = board.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT).encode()
    paths = [write_replace(board_dir / CSV_NAME, csv), write_replace(board_dir / META_NAME, dumps(meta))]
    return paths + render_measures_board(board_dir)


def _check_meta(meta) -> dict:
    if not isinstance(meta, dict):
        raise InputError(f"board metadata must be a JSON object; got {type(meta).__name__}")
    if meta.get("format") == 1 and "warnings" not in meta:
        meta = {**meta, "warnings": []}
    if sorted(meta) != sorted(_META_KEYS):
        raise InputError(f"board metadata must have exactly the keys {list(_META_KEYS)}; got {sorted(meta)}")
    for key in ("sweep", "command", "source_note"):
        if not isinstance(meta[key], str) or (key != "source_note" and not meta[key].strip()):
            raise InputError(f"board {key} must be a non-empty string; got {meta[key]!r}")
    n = meta["n_models"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"n_models must be a whole number >= 0; got {n!r}")
    if not isinstance(meta["warnings"], list) or not all(isinstance(w, str) for w in meta["warnings"]):
        raise InputError(f"board warnings must be a list of strings; got {meta['warnings']!r}")
    if meta["format"] not in READ_FORMATS:
        raise InputError(f"board format {meta['format']!r} is not one this ncbench renders {list(READ_FORMATS)}; "
                         "regenerate the board with ncbench regress --board")
    return meta


def _read(board_dir: Path) -> tuple[dict, pd.DataFrame]:
    meta_path, csv_path = board_dir / META_NAME, board_dir / CSV_NAME
    for p in (meta_path, csv_path):
        if not p.is_file():
            raise InputError(f"{p} does not exist: a measures board needs {CSV_NAME} and {META_NAME} "
                             "(ncbench regress --board writes them)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{meta_path}: not JSON ({err})") from None
    meta = _check_meta(meta)
    board = pd.read_csv(csv_path, dtype={c: str for c in _TEXT}, keep_default_na=False, na_values=[""])
    check_table(board, ["target", "rank", "predictor", "psi", "tau", "n_configs"])
    for c in _TEXT:
        board[c] = board[c].fillna("").astype(str) if c in board.columns else ""
    if "family" not in board.columns or not board["family"].str.len().all():
        board["family"] = board["predictor"].map(family_of)
    if "reads_test_labels" not in board.columns:  # format 1 ranked the test-label family too
        board["reads_test_labels"] = board["family"] == "test-labels"
        board.loc[board["reads_test_labels"], "rank"] = np.nan
    for c in board_columns(psi_axes(board)):
        if c not in board.columns:
            board[c] = np.nan
    return meta, board


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _num(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def _significant(p) -> bool:
    return _num(p) < ALPHA


def _correction_name(rows: pd.DataFrame) -> str:
    c = str(rows["correction"].iloc[0]) if len(rows) else ""
    return c if c else "no"


def _psi_text(r) -> str:
    return f"Ψ = {fmt_ci(r['psi'], r['psi_lo'], r['psi_hi'])}"


def _margin_sentence(label: str, r, corr: str) -> str:
    """The best predictor of a group against the best baseline, worded from the paired interval and p-value."""
    d, lo, hi, p = _num(r["vs_baseline"]), r["vs_baseline_lo"], r["vs_baseline_hi"], r["vs_baseline_p_adj"]
    base = f"{label} is `{r['predictor']}` ({r['family']}), {_psi_text(r)}"
    if not r["baseline"] or math.isnan(d):
        return base + "; there is no baseline to compare it with."
    if _significant(p):
        verdict = f"significant at {ALPHA:g} after the {corr} correction ({p_is(p)})"
        if d < 0:
            verdict += "; the baseline is the better predictor"
    else:
        verdict = (f"not significant after the {corr} correction ({p_is(p)}): on this grid the two cannot be "
                   "told apart")
    return (f"{base}. Against the best baseline, `{r['baseline']}`: its |Ψ| minus the baseline's is "
            f"{fmt_ci(d, lo, hi)} (paired over the grid's lines), {verdict}.")


def _clean_sentence(target: str, r) -> str:
    rho, part = _num(r["rho"]), _num(r["partial_rho_clean"])
    if math.isnan(part):
        return ""
    lo, hi = _num(r["partial_rho_clean_lo"]), _num(r["partial_rho_clean_hi"])
    share = _num(r["clean_share"])
    if math.isnan(share):
        kept = ""
    elif share < 0:
        kept = "; the association reverses"
    elif share > 1:
        kept = f"; it is stronger given clean accuracy (partial / raw = {share:.2f})"
    else:
        kept = f"; {share:.0%} of it survives"
    zero = "" if math.isnan(lo) else ("; the interval includes 0" if lo <= 0 <= hi else "; the interval excludes 0")
    partial = fmt_ci(part, r["partial_rho_clean_lo"], r["partial_rho_clean_hi"])
    return (f"`{r['predictor']}`: Spearman ρ = {fmt(rho)} with `{target}`, {partial} with clean accuracy held "
            f"fixed{kept}{zero}.")


def _verdict(target: str, rows: pd.DataFrame) -> str:
    """The sentences of one target, from its rows (display order): the first rank and what the corrected
    paired test ties with it, the best collapse predictor and the best held-out one against the best
    baseline, robustness given clean accuracy, and the test-label family described apart."""
    r0 = rows.iloc[0]
    if r0["withheld"]:
        return f"Not ranked, no intervals or p-values: {r0['withheld']}."
    corr = _correction_name(rows)
    ranked_rows = rows[rows["rank"].notna()]
    out = []
    if ranked_rows.empty:
        out.append(f"No predictor that reads no test label has a defined Ψ for `{target}`.")
    else:
        first = ranked_rows[ranked_rows["rank"] == ranked_rows["rank"].min()]
        lead = first.iloc[0]
        if len(first) > 1:
            names = ", ".join(f"`{p}`" for p in first["predictor"])
            out.append(f"Ranked by |Ψ| among the {len(ranked_rows)} predictors that read no test label, {names} share "
                       f"the first rank (equal |Ψ|, {fmt(abs(_num(lead['psi'])), '.3f')}).")
        else:
            out.append(f"Ranked by |Ψ| among the {len(ranked_rows)} predictors that read no test label, "
                       f"`{lead['predictor']}` ({lead['family']}) comes first: {_psi_text(lead)}, corrected "
                       f"{p_is(lead['psi_p_adj'])} for Ψ = 0.")
        others = ranked_rows[ranked_rows["rank"] > ranked_rows["rank"].min()]
        verdicts = others["tied_with_best"].map(yes_no)
        tied = others[verdicts == "yes"]
        if (verdicts == "n/a").any():
            out.append("Whether the others differ from it was not tested (no paired test on this board).")
        elif len(tied):
            out.append(f"The corrected paired test of the |Ψ| difference cannot tell {len(tied)} other(s) from it, "
                       f"so the best is a tie among them: " + ", ".join(f"`{p}`" for p in tied["predictor"]) + ".")
        elif len(others):
            out.append("Every other predictor's |Ψ| is below it by a margin the corrected paired test supports.")
    collapse = ranked_rows[ranked_rows["family"].isin(COLLAPSE_FAMILIES)]
    if collapse.empty:
        out.append("No collapse predictor that reads no test label is in the results.")
    else:
        out.append(_margin_sentence("The best collapse predictor", collapse.iloc[0], corr))
    held = ranked_rows[ranked_rows["family"].isin(HELD_OUT_FAMILIES)]
    if held.empty:
        out.append("No held-out collapse predictor (`val.*`, `val_pred.*`, `test_pred.*`) is in the results.")
    else:
        out.append(_margin_sentence("The best held-out collapse predictor", held.iloc[0], corr))
    if is_robustness_target(target):
        picks = [g.iloc[0] for g in (collapse, ranked_rows[ranked_rows["family"] == BASELINE_FAMILY]) if len(g)]
        clean = [s for s in (_clean_sentence(target, r) for r in picks) if s]
        if clean:
            out.append("Robustness given clean accuracy (partial Spearman controlling for `test_accuracy`): "
                       + " ".join(clean))
    labels = rows[rows["reads_test_labels"].map(lambda v: yes_no(v) == "yes") & rows["psi"].notna()]
    if len(labels):
        top = labels.iloc[int(np.argmax(labels["psi"].abs().to_numpy()))]
        out.append(f"Of the metrics that read the test labels (described, not ranked), `{top['predictor']}` has the "
                   f"largest |Ψ|: {_psi_text(top)}.")
    return " ".join(out)


def _target_line(rows: pd.DataFrame) -> str:
    r0 = rows.iloc[0]
    n, se, spread, snr = (_num(r0[c]) for c in ("target_n_points", "target_noise_se", "target_spread", "target_snr"))
    if math.isnan(se):
        return (f"Spread of the configuration means: {fmt(spread, '.4f')} (no binomial noise model for this target, "
                "so its noise is not checked).")
    return (f"{fmt(n, '.0f')} points behind each value; binomial standard error of a configuration mean "
            f"{fmt(se, '.4f')}, standard deviation of the configuration means {fmt(spread, '.4f')} "
            f"({fmt(snr, '.1f')} times the noise; ranked from {NOISE_RATIO:g}).")


def _table(rows: pd.DataFrame, axes, robust: bool, ranked_table: bool) -> list[str]:
    head = (["rank"] if ranked_table else []) + ["predictor", "Ψ [95 % CI]"] + (["p (corr.)"] if ranked_table else [])
    head += [f"ψ {a}" for a in axes] + ["τ [95 % CI]", "partial ρ"] + (["partial ρ \\| clean [95 % CI]"] if robust
                                                                       else [])
    head += ["PGDL", "PGDL (no self)", "sign-error mean / p90 / max"]
    if ranked_table:
        head += ["Δ\\|Ψ\\| vs best baseline [95 % CI]", "p (corr.)", "tied with the best"]
    head += ["MAE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in rows.iterrows():
        cells = ([rank_text(r["rank"])] if ranked_table else []) + [f"`{r['predictor']}`",
                                                                    fmt_ci(r["psi"], r["psi_lo"], r["psi_hi"])]
        if ranked_table:
            cells.append(fmt_p(r["psi_p_adj"]))
        cells += [fmt(r[f"psi[{a}]"]) for a in axes]
        cells += [fmt_ci(r["tau"], r["tau_lo"], r["tau_hi"]), fmt(r["partial_rho"])]
        if robust:
            cells.append(fmt_ci(r["partial_rho_clean"], r["partial_rho_clean_lo"], r["partial_rho_clean_hi"]))
        cells += [fmt(r["pgdl"], ".1f"), fmt(r["pgdl_no_self"], ".1f"),
                  " / ".join(fmt(r[k], ".2f") for k in ("sign_error_mean", "sign_error_p90", "sign_error_max"))]
        if ranked_table:
            is_base = r["baseline"] and r["predictor"] == r["baseline"]
            cells += ["(the baseline)" if is_base else fmt_ci(r["vs_baseline"], r["vs_baseline_lo"],
                                                               r["vs_baseline_hi"]),
                      fmt_p(r["vs_baseline_p_adj"]), yes_no(r["tied_with_best"])]
        cells.append(fmt(r["mae"], ".4f"))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _how_to_read(board: pd.DataFrame, axes) -> list[str]:
    corr = str(board["correction"].iloc[0]) if len(board) and board["correction"].iloc[0] else ""
    n_tests = int(board["psi_p_adj"].notna().sum())
    pairs = {key for _, _, key, _ in paired_tests(board, ("best_p_adj", "vs_baseline_p_adj"))}
    fams = ["| family | columns | ranked |", "|---|---|---|"]
    for f in FAMILIES:
        cols = ", ".join(f"`{p}*`" for p in f.prefixes) + ("".join(f", `{n}`" for n in f.names))
        fams.append(f"| {f.name}: {f.title} | {cols} | {'yes' if f.ranked else 'no: described apart'} |")
    return [
        "## How to read it", "",
        "Predictors come in families (by column prefix). Every family but the test-label one reads no label of a "
        "test point, and only those families are ranked; `test.*` and `test_adv.*` use the labels of the very "
        "points whose accuracy is the target, so they are shown apart, as description (`test.ncc_accuracy` is "
        "itself an accuracy on the test set).", "", *fams, "",
        "- **Ψ**, **ψ axis**: Jiang et al.'s granulated Kendall (ICLR 2020), sign form: for each axis, the mean "
        "over the cells of the other axes (the *lines* along the axis) of the Kendall coefficient along the "
        "line; Ψ is the mean over axes. Signed: lower nc1 going with higher accuracy is negative. Predictors are "
        "ranked by |Ψ|; equal |Ψ| share a rank.",
        "- **What is resampled.** Ψ's and ψ's intervals resample nothing: the lines are the sampling units (ψ_i "
        "estimates the mean over contexts of the other axes), so ψ_i's standard error is the lines' spread; Ψ's "
        "adds the covariance of the ψ_i from the cells their lines share (a cell lies on a line of every axis), "
        "and intervals use Student's t with (fewest lines − 1) degrees of freedom. A difference of two "
        "predictors' |Ψ| is computed line by line, so it is paired. τ's, ρ's and the partial ρ's intervals are "
        "percentile bootstraps over configurations (one set of resamples for every pair). docs/statistics.md "
        "gives the formulas and the simulation behind this choice.",
        f"- **p (corr.)**: p-values corrected by the {CORRECTIONS.get(corr, corr or 'n/a')} method "
        f"(statsmodels `multipletests`, `{corr or 'n/a'}`) over every predictor × target of the board, in two "
        f"families: the {n_tests} tests of Ψ = 0, and the {len(pairs)} paired |Ψ| differences (the margins over the "
        "best baseline and of the best over the rest, each pair of predictors once). **Tied with the best**: the "
        f"corrected paired test of the |Ψ| difference from the first-ranked predictor does not reject at {ALPHA:g}.",
        "- **Δ|Ψ| vs best baseline**: |Ψ| minus that of the family-measures predictor with the largest |Ψ| "
        "(choosing the best baseline on the same data favours the baseline).",
        "- **τ**, **ρ**: Kendall tau-b and Spearman over configurations. **partial ρ**: Spearman with the ranks "
        "of log(parameter count) and final training loss regressed out; **partial ρ | clean**: with the ranks of "
        "clean test accuracy regressed out (robustness targets: how much of the robustness signal is not just "
        "accuracy).",
        "- **PGDL**: the PGDL competition's conditional-mutual-information score (0-100) of the measure oriented "
        "by the sign of its τ, so a measure and its negation score the same; with and without the pairs i = i "
        "(the competition counted them).",
        "- **sign-error**: Dziugaite et al.'s (NeurIPS 2020) over one-axis environments (pairs of configurations "
        "that differ in one axis; every seed against every seed), each pair of runs weighted by how far its "
        "target difference stands above the test set's sampling noise (their Hoeffding weight minus 1/2): mean, "
        "90th percentile and maximum over environments; 0 is best.",
        "- **MAE**: grouped K-fold mean absolute error (groups: a grid axis) of an isotonic fit on the predictor "
        "alone.",
        f"- **Small designs and noisy targets**: below {MIN_CONFIGS} configurations, with fewer than {MIN_LINES} "
        f"lines along an axis, or when a target's spread over configurations is under {NOISE_RATIO:g} times its "
        "binomial standard error, no interval, p-value or rank is given; the generalization gap is ranked only "
        "where training accuracy varies (docs/statistics.md).", ""]


def read_attack_gap(board_dir) -> pd.DataFrame | None:
    """``board_dir/attack-gap.csv`` as a frame, or None where the board has none.

    Raises
    ------
    InputError
        The file lacks a column the board prints, or holds no row.
    """
    path = Path(board_dir) / GAP_NAME
    if not path.is_file():
        return None
    gap = pd.read_csv(path, dtype={"job_id": str, "axes": str, "norm": str, "target": str})
    missing = [c for c in GAP_COLUMNS if c not in gap.columns]
    if missing:
        raise InputError(f"{path} lacks the columns {missing} (benchmarks/bench_attack_gap.py --store ... --out "
                         "writes them)")
    if gap.empty:
        raise InputError(f"{path} holds no row: delete it or rerun benchmarks/bench_attack_gap.py --out")
    for col in ("target", "n_points"):
        if gap[col].nunique(dropna=False) != 1:
            raise InputError(f"{path}: every row must have one {col}; got {sorted(map(str, gap[col].unique()))} "
                             "(one attack-gap.csv per target attack and point count)")
    return gap


def _short_axes(text: str) -> str:
    try:
        axes = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return str(text)
    return ", ".join(f"{k.split('.')[-1]} {v}" for k, v in axes.items() if k != "seed") + (
        f", seed {axes['seed']}" if "seed" in axes else "")


def _gap_section(gap: pd.DataFrame) -> list[str]:
    """The robustness target against full AutoAttack, worded from the measured rows: a target above AutoAttack
    by more than the bar overstates robustness; one below it by more than the bar found what AutoAttack did not
    (possible, since the two draw different random starts, but a sign to check the rows: wrong model or points)."""
    g = gap["target_recorded_gap"].astype(float)
    over, under = int((g > GAP_BAR + 1e-9).sum()), int((g < -GAP_BAR - 1e-9).sum())
    within = len(g) - over - under
    budgets = ", ".join(f"{n} {e:g}" for n, e in dict.fromkeys(zip(gap["norm"], gap["eps"].astype(float))))
    models = gap["job_id"].nunique()
    pgd = gap["pgd20_gap"].astype(float)
    if within == len(g):
        verdict = f"within {GAP_BAR:g} point of AutoAttack in all {len(g)} rows"
    else:
        parts = [f"within {GAP_BAR:g} point in {within} of {len(g)} rows"]
        if over:
            parts.append(f"above AutoAttack by more than {GAP_BAR:g} point in {over} (there the target overstates "
                         "robustness)")
        if under:
            parts.append(f"below it by more than {GAP_BAR:g} point in {under} (the target found adversarial "
                         "examples AutoAttack missed: check those rows)")
        verdict = "; ".join(parts)
    lines = [
        "## The robustness target against full AutoAttack", "",
        f"The robustness targets come from `{gap['target'].iloc[0]}` (`apgd`: APGD-CE, then APGD-T on the points "
        f"still robust; docs/attacks.md). On {models} of this grid's models (drawn with a fixed seed by "
        "`benchmarks/bench_attack_gap.py --store ... --sweep ... --out`; their axes are in the table), full "
        "AutoAttack (APGD-CE, APGD-T, FAB-T, Square; each budget alone, the same first "
        f"{int(gap['n_points'].iloc[0]):,} test points and the job's seed) was run at {budgets}. The target as the "
        f"records hold it minus AutoAttack's robust accuracy: mean {g.mean():+.2f}, from {g.min():+.2f} to "
        f"{g.max():+.2f} points; "
        f"{verdict}. PGD-20 at the same budgets: mean {pgd.mean():+.2f}, max {pgd.max():+.2f} points.", "",
        "| job | axes | budget | clean | AutoAttack | target (recorded) | its gap | target alone, gap | "
        "PGD-20 gap |", "|---|---|---|---|---|---|---|---|---|"]
    for _, r in gap.iterrows():
        lines.append("| " + " | ".join(_cell(c) for c in (
            f"`{str(r['job_id'])[:12]}`", _short_axes(r["axes"]), f"{r['norm']} {float(r['eps']):g}",
            fmt(r["clean"], ".3f"), fmt(r["autoattack"], ".3f"), fmt(r["target_recorded"], ".3f"),
            fmt(r["target_recorded_gap"], "+.1f"), fmt(r["target_alone_gap"], "+.1f"), fmt(r["pgd20_gap"], "+.1f"))) +
            " |")
    lines += ["", f"Accuracies are fractions of the {int(gap['n_points'].iloc[0]):,} points; gaps are in points "
              "(percent of them), a positive gap meaning the weaker attack left more points robust. \"target "
              "alone\" runs the target's attack at that one budget, as AutoAttack does; the recorded target ran "
              f"over the whole budget grid. The rows are in [`{GAP_NAME}`]({GAP_NAME}).", ""]
    return lines


def render_board_readme(meta: dict, board: pd.DataFrame, gap: pd.DataFrame | None = None) -> str:
    axes = psi_axes(board)
    n_configs = int(board["n_configs"].iloc[0]) if len(board) else 0
    lines = [f"# Measures board: {meta['sweep']}", "",
             f"Which measures predict accuracy and robustness across the {meta['n_models']} models "
             f"({n_configs} configurations, seeds averaged) of sweep `{meta['sweep']}`? Grid axes: "
             f"{', '.join(axes)}. Per target: what the statistics support, then every predictor by family.", ""]
    if meta["source_note"].strip():
        lines += [meta["source_note"].strip(), ""]
    lines += ["Regenerate with:", "", "```", meta["command"], "```", "",
              f"The numbers are in [`{CSV_NAME}`]({CSV_NAME}); this page is rendered from it and "
              f"[`{META_NAME}`]({META_NAME}).", ""]
    if meta["format"] == 1:
        lines += ["This board was written by an older ncbench (format 1): it has no intervals on Ψ, no corrected "
                  "p-values and no families; regenerate it.", ""]
    if meta["warnings"]:
        lines += ["**Warnings**", "", *(f"- {_cell(w)}" for w in meta["warnings"]), ""]
    if gap is not None:
        lines += _gap_section(gap)
    lines += _how_to_read(board, axes)
    order = {t: k for k, t in enumerate(dict.fromkeys(board["target"]))}
    for _, rows in ranked(board.assign(_t=board["target"].map(order)).sort_values("_t", kind="mergesort")):
        name = str(rows["target"].iloc[0])
        lines += [f"## {name}", "", _target_line(rows), "", _verdict(name, rows), ""]
        if rows["withheld"].iloc[0].startswith("generalization_gap is not ranked"):
            lines += ["(Its table would repeat test accuracy's, reversed; the numbers are in the CSV.)", ""]
            continue
        robust = is_robustness_target(name)
        lines += [f"MAE of predicting the mean: {fmt(rows['mae_mean'].iloc[0], '.4f')}; of all collapse metrics that "
                  f"read no test label together (ridge on their standardised logs): "
                  f"{fmt(rows['mae_all_collapse'].iloc[0], '.4f')}.", ""]
        labels = rows["reads_test_labels"].map(lambda v: yes_no(v) == "yes")
        for fam in (*FAMILIES, None):
            if fam is None:
                part, title = rows[~rows["family"].isin([f.name for f in FAMILIES])], "other columns"
            else:
                part, title = rows[rows["family"] == fam.name], f"{fam.name}: {fam.title}"
            if part.empty:
                continue
            lines += [f"### {title}", "", *_table(part, axes, robust, ranked_table=not labels[part.index].all()), ""]
        notes = [f"- `{r['predictor']}`: {r['note']}" for _, r in rows.iterrows() if r["note"]]
        if notes:
            lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


def render_measures_board(board_dir) -> list[Path]:
    """Re-render ``board_dir/README.md`` from ``measures.csv``, ``board.json`` and, when present,
    ``attack-gap.csv`` (the target against full AutoAttack); the same bytes every time.

    Returns
    -------
    list of Path
        ``[board_dir / "README.md"]``.

    Raises
    ------
    InputError
        A missing or malformed ``measures.csv`` or ``board.json``.
    """
    board_dir = Path(board_dir)
    meta, board = _read(board_dir)
    text = render_board_readme(meta, board, read_attack_gap(board_dir))
    return [write_replace(board_dir / README_NAME, text.encode())]
