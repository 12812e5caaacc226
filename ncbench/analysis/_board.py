"""The measures board, ``leaderboards/measures/<sweep>/``: which measures predict each target, ranked by Psi.

``measures.csv`` holds the numbers, ``board.json`` the metadata (sweep, command, number of models, source), and
``README.md`` is rendered from those two alone, byte for byte the same every time (no timestamps, fixed float
formats, a stable order with tie-breakers), so a renderer can rebuild every board from the committed files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .._errors import InputError
from .._io import dumps
from ._regress import COMPARED, beats_column
from .._io import write_replace
from ._tables import check_table, fmt, fmt_ci, psi_axes, ranked, yes_no

CSV_NAME, META_NAME, README_NAME = "measures.csv", "board.json", "README.md"
BOARD_FORMAT = 1
#: Significant digits of the numbers in measures.csv (a committed file: machine-level float noise stays out).
CSV_FLOAT = "%.6g"
_META_KEYS = ("command", "format", "n_models", "source_note", "sweep")
_BASELINE_WORDS = {"num_parameters": "parameter count", "train_margin_p10": "the train margin (p10)"}


def board_columns(axes) -> list[str]:
    return ["target", "rank", "predictor", "role", "psi", *(f"psi[{a}]" for a in axes),
            "tau", "tau_lo", "tau_hi", "rho", "rho_lo", "rho_hi", "partial_rho", "pgdl", "pgdl_no_self",
            "mae", "mae_mean", "mae_all_collapse",
            *(beats_column(b, by) for b in COMPARED for by in ("psi", "mae")),
            "n_configs", "direction", "note"]


def _board_frame(table: pd.DataFrame) -> pd.DataFrame:
    axes = psi_axes(table)
    cols = board_columns(axes)
    check_table(table, [c for c in cols if c != "rank"])
    parts = []
    for _, rows in ranked(table):
        rows = rows.copy()
        rows.insert(1, "rank", range(1, len(rows) + 1))
        parts.append(rows[cols])
    return pd.concat(parts, ignore_index=True)


def write_measures_board(table: pd.DataFrame, board_dir, *, sweep: str, command: str, n_models: int,
                         source_note: str) -> list[Path]:
    """Write ``measures.csv``, ``board.json`` and ``README.md`` into ``board_dir`` (replacing them).

    Parameters
    ----------
    table : DataFrame
        What :func:`regress` returns.
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
                        "format": BOARD_FORMAT})
    board = _board_frame(table)
    board_dir = Path(board_dir)
    csv = board.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT).encode()
    paths = [write_replace(board_dir / CSV_NAME, csv), write_replace(board_dir / META_NAME, dumps(meta))]
    return paths + render_measures_board(board_dir)


def _check_meta(meta) -> dict:
    if not isinstance(meta, dict) or sorted(meta) != sorted(_META_KEYS):
        got = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise InputError(f"board metadata must have exactly the keys {list(_META_KEYS)}; got {got}")
    for key in ("sweep", "command", "source_note"):
        if not isinstance(meta[key], str) or (key != "source_note" and not meta[key].strip()):
            raise InputError(f"board {key} must be a non-empty string; got {meta[key]!r}")
    n = meta["n_models"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"n_models must be a whole number >= 0; got {n!r}")
    if meta["format"] != BOARD_FORMAT:
        raise InputError(f"board format {meta['format']!r} is not the one this ncbench writes ({BOARD_FORMAT}); "
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
    board = pd.read_csv(csv_path, dtype={"target": str, "predictor": str, "role": str, "direction": str,
                                         "note": str}, keep_default_na=False, na_values=[""])
    check_table(board, ["target", "rank", "predictor", "psi", "tau", "n_configs"])
    return meta, board


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _is_yes(v) -> bool:
    return yes_no(v) == "yes"


def _best_sentence(label: str, target: str, best) -> str:
    parts = []
    for b in COMPARED:
        by_psi, by_mae = best[beats_column(b, "psi")], best[beats_column(b, "mae")]
        if yes_no(by_psi) == "n/a":
            parts.append(f"{_BASELINE_WORDS[b]} is not in the results")
        else:
            parts.append(f"{'beats' if _is_yes(by_psi) else 'does not beat'} {_BASELINE_WORDS[b]} by |Ψ| and "
                         f"{'beats' if _is_yes(by_mae) else 'does not beat'} it by MAE")
    return (f"{label} for `{target}`: `{best['predictor']}`, Ψ = {fmt(best['psi'])}, "
            f"τ = {fmt_ci(best['tau'], best['tau_lo'], best['tau_hi'])}, PGDL {fmt(best['pgdl'], '.1f')} "
            f"({best['direction']}); it " + "; it ".join(parts) + ".")


def _verdict(target: str, rows: pd.DataFrame) -> str:
    """The best collapse metric by |Psi| from the training data alone (``train.*``: the honest predictor, as in
    Jiang et al. and PGDL), then the best on held-out data (``test.*``, which uses the test labels), whether
    they beat both baselines, and the best baseline when one ranks above every training-data metric."""
    collapse = rows[(rows["role"] == "collapse") & rows["psi"].notna()]
    if collapse.empty:
        return f"No collapse metric has a defined Ψ for `{target}`."
    train = collapse[collapse["predictor"].str.startswith("train.")]
    held_out = collapse[collapse["predictor"].str.startswith("test.")]
    sentences = []
    if not train.empty:
        sentences.append(_best_sentence("Best collapse metric from the training data", target, train.iloc[0]))
    if not held_out.empty:
        sentences.append(_best_sentence("Best on held-out data (uses the test labels)", target, held_out.iloc[0]))
    baselines = rows[(rows["role"] == "baseline") & rows["psi"].notna()]
    if not train.empty and not baselines.empty and abs(baselines.iloc[0]["psi"]) > abs(train.iloc[0]["psi"]):
        top = baselines.iloc[0]
        sentences.append(f"A baseline ranks above every training-data collapse metric: `{top['predictor']}`, "
                         f"Ψ = {fmt(top['psi'])}.")
    text = " ".join(sentences)
    if all(yes_no(collapse.iloc[0][beats_column(b, "psi")]) != "n/a" for b in COMPARED):
        winners = [f"`{r['predictor']}`" for _, r in collapse.iterrows()
                   if all(_is_yes(r[beats_column(b, "psi")]) for b in COMPARED)]
        text += (f" Collapse metrics that beat both baselines by |Ψ|: {', '.join(winners)}." if winners else
                 " No collapse metric beats both baselines by |Ψ|.")
    return text


def render_board_readme(meta: dict, board: pd.DataFrame) -> str:
    axes = psi_axes(board)
    n_configs = int(board["n_configs"].iloc[0]) if len(board) else 0
    lines = [f"# Measures board: {meta['sweep']}", "",
             f"Which measures predict accuracy and robustness across the {meta['n_models']} models "
             f"({n_configs} configurations, seeds averaged) of sweep `{meta['sweep']}`? Every predictor is "
             "ranked by |Ψ|, Jiang et al.'s granulated Kendall coefficient over the grid axes "
             f"({', '.join(axes)}), then by |τ|.", ""]
    if meta["source_note"].strip():
        lines += [meta["source_note"].strip(), ""]
    lines += ["Regenerate with:", "", "```", meta["command"], "```", "",
              f"The numbers are in [`{CSV_NAME}`]({CSV_NAME}); this page is rendered from it and "
              f"[`{META_NAME}`]({META_NAME}).", "",
              "How to read it: `train.*` metrics and the baselines are computed from the training data alone, "
              "like the measures of Jiang et al. and PGDL. `test.*` metrics measure collapse *on held-out data* "
              "(Papyan et al.'s second question) and use the test labels: they say how collapse on test data goes "
              "with accuracy, not how well training data predicts it; `test.ncc_accuracy` is itself an accuracy "
              "on the test set (the nearest-class-centre rule's). Ψ and τ are signed (lower nc1 goes with higher "
              "accuracy: negative); the PGDL score ignores the sign. Each statistic is described in the "
              "README (`ncbench regress`); the metrics in docs/metrics.md.", ""]
    head = ["rank", "predictor", "Ψ", *(f"ψ {a}" for a in axes), "τ [95 % CI]", "ρ [95 % CI]", "partial ρ",
            "PGDL", "PGDL (no self)", "MAE", "beats #params (Ψ, MAE)", "beats margin (Ψ, MAE)"]
    order = {t: k for k, t in enumerate(dict.fromkeys(board["target"]))}
    board = board.assign(_t=board["target"].map(order)).sort_values(["_t", "rank", "predictor"], kind="mergesort")
    for _, rows in board.groupby("_t", sort=True):
        rows = rows.reset_index(drop=True)
        name = str(rows["target"].iloc[0])
        lines += [f"## {name}", "", _verdict(name, rows), ""]
        mae_mean = rows["mae_mean"].iloc[0]
        lines += [f"MAE of predicting the mean: {fmt(mae_mean, '.4f')}; of all collapse metrics together (ridge on "
                  f"their standardised logs): "
                  f"{fmt(rows['mae_all_collapse'].iloc[0], '.4f')}.", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in rows.iterrows():
            cells = [str(int(r["rank"])), f"`{r['predictor']}`", fmt(r["psi"]),
                     *(fmt(r[f"psi[{a}]"]) for a in axes), fmt_ci(r["tau"], r["tau_lo"], r["tau_hi"]),
                     fmt_ci(r["rho"], r["rho_lo"], r["rho_hi"]), fmt(r["partial_rho"]), fmt(r["pgdl"], ".1f"),
                     fmt(r["pgdl_no_self"], ".1f"), fmt(r["mae"], ".4f"),
                     f"{yes_no(r['beats_num_parameters_psi'])}, {yes_no(r['beats_num_parameters_mae'])}",
                     f"{yes_no(r['beats_train_margin_p10_psi'])}, {yes_no(r['beats_train_margin_p10_mae'])}"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        notes = [f"- `{r['predictor']}`: {r['note']}" for _, r in rows.iterrows()
                 if isinstance(r["note"], str) and r["note"]]
        lines += [""] + (["Notes:", "", *notes, ""] if notes else [])
    lines += ["## Columns", "",
              "- **Ψ**, **ψ axis**: granulated Kendall (Jiang et al., ICLR 2020): for each axis, the Kendall "
              "coefficient over models that differ only in that axis, averaged over the cells of the other axes; "
              "Ψ is the mean over axes. Sign form: a tie counts 0.",
              "- **τ**, **ρ**: Kendall tau-b and Spearman over configurations, with 95 % percentile bootstrap "
              "intervals resampling configurations.",
              "- **partial ρ**: Spearman with the ranks of log(parameter count) and final training loss regressed "
              "out.",
              "- **PGDL**: the PGDL competition's conditional-mutual-information score, 0-100 (100: the measure "
              "orders every pair of models as the target does, given any two axes); with and without the pairs "
              "i = j.",
              "- **MAE**: grouped K-fold mean absolute error (groups: a grid axis, by default the capacity axis) of "
              "an isotonic fit on the measure alone; compare with predicting the training folds' mean.",
              "- **beats**: larger |Ψ| / smaller MAE than parameter count and than the train margin.", ""]
    return "\n".join(lines)


def render_measures_board(board_dir) -> list[Path]:
    """Re-render ``board_dir/README.md`` from ``measures.csv`` and ``board.json``; the same bytes every time.

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
    text = render_board_readme(meta, board)
    return [write_replace(board_dir / README_NAME, text.encode())]
