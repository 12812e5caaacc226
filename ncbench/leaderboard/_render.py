"""Tables from entries: README.md, table.tex, table.csv and entries.bib per board; byte for byte reproducible.

Every output is a pure function of the board's ``board.yaml`` and its entries (no dates, no paths, fixed
number formats, rows in a total order), so rendering twice gives identical bytes and CI can re-render the
committed boards and compare (:func:`check_rendered`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from pathlib import Path

from .._errors import InputError
from .._io import write_replace
from ._boards import Board, list_boards, load_board
from ._entry import best_known, load_entries
from ._schema import schema_bytes

OUTPUTS = ("README.md", "table.tex", "table.csv", "entries.bib")
SCHEMA_PATH = Path("schema") / "entry.schema.json"
MEASURES_DIR = "measures"
MEASURES_FILE = "measures.csv"
CSV_COLUMNS = ("rank", "id", "name", "clean_accuracy", "robust_accuracy", "best_known_robust_accuracy",
               "reliable", "unreliable_reasons", "train_nc1", "test_nc1", "test_nc4_ncc_mismatch", "architecture",
               "num_parameters", "source", "external_robust_accuracy", "reported_clean_accuracy",
               "reported_robust_accuracy", "bibtex_key", "weights_sha256", "date")


def sort_entries(entries: list[dict]) -> list[dict]:
    """Rows in rank order: best-known robust accuracy (higher first, compared as numbers), then clean
    accuracy (higher first), then id (alphabetical) so that ties have one order."""
    return sorted(entries, key=lambda e: (-best_known(e), -e["clean_accuracy"], e["id"]))


def _pct(x: float) -> str:
    """A fraction as a percentage with two decimals: 0.0950 -> "9.50"."""
    return f"{100 * x:.2f}"


def _num(x: float) -> str:
    """A collapse metric: three significant digits."""
    return f"{x:.3g}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _notes(entry: dict) -> dict[str, str]:
    """The footnotes of one row, keyed by the column they attach to, in column order (plain text, one line
    each)."""
    notes = {}
    rep = entry["reported"]
    if rep is not None:
        claimed = [f"{what} {_pct(rep[key])} %" for what, key in (("clean", "clean_accuracy"),
                                                                   ("robust", "robust_accuracy"))
                   if rep[key] is not None]
        notes["robust"] = (f"Reported by the submitter: {', '.join(claimed) or 'no numbers'}; ncbench measures clean "
                           f"{_pct(entry['clean_accuracy'])} %, robust {_pct(entry['robust_accuracy']['value'])} %.")
    ext = entry["external"]
    if ext is not None:
        url = f" {ext['url']}" if ext.get("url") else ""
        notes["best"] = (f"{_one_line(ext['attack'])} (external): robust {_pct(ext['robust_accuracy'])} % at eps "
                         f"{entry['robust_accuracy']['eps_label']}. {_one_line(ext['footnote'])}{url}")
    if not entry["reliable"]:
        notes["reliable"] = "Unreliable: " + "; ".join(_one_line(r) for r in entry["unreliable_reasons"]) + "."
    return notes


def _footnoted(entries: list[dict]) -> list[tuple[dict, dict[str, int], list[str]]]:
    """Per row: the entry, the footnote number of each marked column, and the footnote texts in order."""
    out, n = [], 0
    for e in entries:
        marks, texts = {}, []
        for column, text in _notes(e).items():
            n += 1
            marks[column] = n
            texts.append(text)
        out.append((e, marks, texts))
    return out


# ------------------------------------------------------------------------------------------------ README.md

def _md_cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _md_name(e: dict) -> str:
    name = _md_cell(e["name"]).replace("[", "\\[").replace("]", "\\]")
    paper = e.get("paper")
    return f"[{name}]({paper['url']})" if paper and paper.get("url") else name


def _protocol(board: Board) -> list[str]:
    args = ", ".join(f"{k}={v}" for k, v in board.dataset_args.items())
    split = f"dataset `{board.dataset}`" + (f" ({args})" if args else "")
    centre = {"classes": "the mean of the class means", "samples": "the mean of all samples"}[board.global_mean]
    pgd = (f"PGD with {board.curve_steps} steps of size {board.curve_alpha_factor:g}·eps/{board.curve_steps}, "
           f"{'a uniform random start' if board.curve_random_start else 'no random start'}, "
           f"{board.curve_restarts} restart{'s' if board.curve_restarts != 1 else ''}")
    return [
        f"- **Points**: the first {board.n_points} points of the fixed test split of {split}, in the split's "
        "stored order. Clean and robust accuracy are both measured on these points.",
        f"- **Threat model**: {board.norm}, eps = {board.eps_label} (inputs scaled to [0, 1]).",
        f"- **Robust accuracy**: AutoAttack \"{board.attack_version}\" (Croce & Hein, 2020: APGD-CE, APGD-T, "
        "FAB-T, Square), each component on the points still robust, every random start drawn per point from the "
        "entry's seed, so the numbers do not depend on the batch size ([docs/attacks.md](../../../docs/attacks.md)).",
        f"- **PGD curve** (in each entry's JSON): {pgd}, at eps {', '.join(board.curve_eps_labels)}.",
        "- **Collapse**: measured on the train and on the test features, centred on "
        f"{centre}. nc1 = (1/C) Tr(Σ_W Σ_B⁺); nc4 = the fraction of test points whose nearest train class mean "
        "disagrees with the classifier; lower is more collapsed "
        "([docs/metrics.md](../../../docs/metrics.md)).",
        "- **Best known**: the lower of ncbench's robust accuracy and a stronger attack's result reported "
        "elsewhere (footnoted). Rows are ranked by it, then by clean accuracy.",
        "- **Reliable**: every check of both attacks passed; an unreliable entry keeps its place and its "
        "reasons are footnoted.",
    ]


def render_readme(board: Board, entries: list[dict]) -> str:
    """The board's README.md (Markdown; GitHub footnotes)."""
    lines = [
        f"# {board.title}, {board.norm}, eps = {board.eps_label}: robustness and neural collapse",
        "",
        "<!-- Generated by `ncbench leaderboard render` from this folder's board.yaml and entries (*.json): "
        "edit those, not this file. -->",
        "",
        f"Board `{board.id}`. Accuracies are percentages of the {board.n_points} attacked test points." +
        (f" {_one_line(board.notes)}" if board.notes else ""),
        "",
        "## Protocol",
        "",
        *_protocol(board),
        "",
        f"Number of points: **{board.n_points}**.",
        "",
        "Regenerate this board:",
        "",
        "```sh",
        board.regenerate,
        "```",
        "",
        "Verify it: every entry names its weights, committed under `leaderboards/weights/` (safetensors, named by "
        "their sha256). `ncbench leaderboard check` checks each entry against the entry schema, those weights and "
        "the data exports it was built from; `ncbench leaderboard verify "
        f"{board.id}[/ENTRY]` re-evaluates the weights under this protocol and compares within stated tolerances "
        "(clean accuracy within one test point, collapse within relative 1e-4, AutoAttack and PGD robust accuracy "
        "within 0.01).",
        "",
        "## Results",
        "",
    ]
    if not entries:
        lines += [f"No entries yet. Add one with `ncbench submit CHECKPOINT --board {board.id}`.", ""]
        return "\n".join(lines)
    lines += [
        "| rank | name | clean | robust | best known | reliable | train nc1 | test nc1 | test nc4 | architecture "
        "| parameters | source |",
        "|---:|:---|---:|---:|---:|:---:|---:|---:|---:|:---|---:|:---|",
    ]
    footnotes = []
    for rank, (e, marks, texts) in enumerate(_footnoted(sort_entries(entries)), start=1):
        mark = {col: f"[^{n}]" for col, n in marks.items()}
        col = e["collapse"]
        cells = [str(rank), _md_name(e), _pct(e["clean_accuracy"]),
                 _pct(e["robust_accuracy"]["value"]) + mark.get("robust", ""),
                 _pct(best_known(e)) + mark.get("best", ""),
                 ("yes" if e["reliable"] else "**no**") + mark.get("reliable", ""),
                 _num(col["train"]["nc1"]), _num(col["test"]["nc1"]), _num(col["test"]["nc4_ncc_mismatch"]),
                 _md_cell(e["architecture"]), f"{e['num_parameters']:,}", e["source"]]
        lines.append("| " + " | ".join(cells) + " |")
        footnotes += [f"[^{marks[c]}]: {t}" for c, t in zip(marks, texts)]
    if footnotes:
        lines += ["", *footnotes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ table.tex

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX_SPECIAL[m.group(0)], _one_line(text))


def _tex_num(x: float) -> str:
    s = _num(x)
    if "e" in s:
        mantissa, exponent = s.split("e")
        return f"${mantissa}\\times10^{{{int(exponent)}}}$"
    return s


def render_tex(board: Board, entries: list[dict]) -> str:
    """The board's table as a LaTeX ``tabular`` (booktabs; ``\\citet`` from natbib where there is a paper)."""
    header = ["Rank", "Model", r"Clean (\%)", r"Robust (\%)", r"Best known (\%)", "Reliable", "Train NC1",
              "Test NC1", "Test NC4", "Architecture", "Parameters", "Source"]
    lines = [
        f"% Generated by `ncbench leaderboard render` from leaderboards/{board.id}: edit the entries, not this file.",
        f"% {board.title}, {board.norm}, eps = {board.eps_label}: AutoAttack {board.attack_version} on the first "
        f"{board.n_points} test points. Needs \\usepackage{{booktabs}} and natbib (\\citet).",
        r"\begin{tabular}{rlrrrcrrrlrl}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    notes = []
    rows = _footnoted(sort_entries(entries))
    for rank, (e, marks, texts) in enumerate(rows, start=1):
        mark = {col: f"\\textsuperscript{{{n}}}" for col, n in marks.items()}
        name = _tex(e["name"])
        if e.get("paper"):
            name += f" \\citet{{{e['paper']['bibtex_key']}}}"
        col = e["collapse"]
        cells = [str(rank), name, _pct(e["clean_accuracy"]),
                 _pct(e["robust_accuracy"]["value"]) + mark.get("robust", ""),
                 _pct(best_known(e)) + mark.get("best", ""),
                 ("yes" if e["reliable"] else "no") + mark.get("reliable", ""),
                 _tex_num(col["train"]["nc1"]), _tex_num(col["test"]["nc1"]),
                 _tex_num(col["test"]["nc4_ncc_mismatch"]), _tex(e["architecture"]), f"{e['num_parameters']:,}",
                 e["source"]]
        lines.append(" & ".join(cells) + r" \\")
        notes += [f"\\textsuperscript{{{marks[c]}}}~{_tex(t)}\\par" for c, t in zip(marks, texts)]
    if not rows:
        lines.append(rf"\multicolumn{{{len(header)}}}{{c}}{{no entries yet}} \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"{\footnotesize", *notes, "}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ table.csv

def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # the shortest string that reads back as the same float
    return v


def render_csv(board: Board, entries: list[dict]) -> str:
    """One row per entry in rank order; accuracies as fractions, numbers as plain numbers, empty = none."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, e in enumerate(sort_entries(entries), start=1):
        rep, ext, paper = e["reported"] or {}, e["external"] or {}, e.get("paper") or {}
        row = {"rank": rank, "id": e["id"], "name": e["name"], "clean_accuracy": e["clean_accuracy"],
               "robust_accuracy": e["robust_accuracy"]["value"], "best_known_robust_accuracy": best_known(e),
               "reliable": e["reliable"], "unreliable_reasons": "; ".join(map(_one_line, e["unreliable_reasons"])),
               "train_nc1": e["collapse"]["train"]["nc1"], "test_nc1": e["collapse"]["test"]["nc1"],
               "test_nc4_ncc_mismatch": e["collapse"]["test"]["nc4_ncc_mismatch"],
               "architecture": e["architecture"], "num_parameters": e["num_parameters"], "source": e["source"],
               "external_robust_accuracy": ext.get("robust_accuracy"),
               "reported_clean_accuracy": rep.get("clean_accuracy"),
               "reported_robust_accuracy": rep.get("robust_accuracy"), "bibtex_key": paper.get("bibtex_key"),
               "weights_sha256": e["weights_sha256"], "date": e["date"]}
        writer.writerow([_csv_value(row[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- entries.bib

def render_bib(board: Board, entries: list[dict]) -> str:
    """The BibTeX of every entry with a paper, one per key, sorted by key ("" when none)."""
    by_key: dict[str, tuple[str, str]] = {}
    for e in entries:
        paper = e.get("paper")
        if not paper:
            continue
        key, text = paper["bibtex_key"], paper["bibtex"].strip()
        if key in by_key and by_key[key][1] != text:
            raise InputError(f"board {board.id}: entries {by_key[key][0]!r} and {e['id']!r} give different BibTeX "
                             f"for key {key!r}; make them agree")
        by_key.setdefault(key, (e["id"], text))
    return "\n\n".join(by_key[k][1] for k in sorted(by_key)) + ("\n" if by_key else "")


# ------------------------------------------------------------------------------------------------ writing

def _write(path: Path, text: str | bytes) -> Path:
    """Write ``path`` atomically, and only when its content changes (so mtimes and git stay quiet)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path.is_file() and path.read_bytes() == data:
        return path
    return write_replace(path, data)


def render_board(board_dir: str | os.PathLike) -> list[Path]:
    """Render one board's README.md, table.tex, table.csv and entries.bib from its board.yaml and entries.

    Returns the four paths (written only where their content changed). Raises InputError for an invalid
    board or entry (naming the file).
    """
    folder = Path(board_dir)
    board = load_board(folder)
    entries = load_entries(folder, board=board)
    texts = {"README.md": render_readme(board, entries), "table.tex": render_tex(board, entries),
             "table.csv": render_csv(board, entries), "entries.bib": render_bib(board, entries)}
    return [_write(folder / name, texts[name]) for name in OUTPUTS]


def _render_measures(folder: Path) -> list[Path]:
    try:
        from ..analysis import render_measures_board
    except ImportError as err:
        raise InputError(f"{folder} holds a {MEASURES_FILE} but this ncbench cannot render measures boards "
                         f"({err})") from None
    return [Path(p) for p in (render_measures_board(folder) or [])]


def _has_output(folder: Path) -> bool:
    return any(folder.glob("*.json")) or (folder / "README.md").is_file()


def render_all(leaderboards_dir: str | os.PathLike = "leaderboards", boards: list[str] | None = None) -> list[Path]:
    """Render boards and measures boards under ``leaderboards_dir``; return the paths rendered.

    Parameters
    ----------
    leaderboards_dir : the leaderboards folder (``./leaderboards`` by default).
    boards : names to render: board ids (``"mnist1d/Linf"``) or measures boards (``"measures/<sweep>"``).
        None renders everything: the entry schema (``schema/entry.schema.json``), every board that has entries
        or was rendered before (has a README.md, so a board whose last entry was removed is re-rendered too),
        and every ``measures/<sweep>/`` folder with a ``measures.csv`` (through
        ``ncbench.analysis.render_measures_board``). A named board is rendered even without entries.
    """
    root = Path(leaderboards_dir)
    if not root.is_dir():
        raise InputError(f"no leaderboards folder {root}; pass --leaderboards DIR (the folder that holds "
                         "<dataset>/<norm>/board.yaml)")
    paths: list[Path] = []
    if boards is None:
        paths.append(_write(root / SCHEMA_PATH, schema_bytes()))
        for board_id in list_boards(root):
            if _has_output(root / board_id):
                paths += render_board(root / board_id)
        for folder in sorted(p.parent for p in (root / MEASURES_DIR).glob(f"*/{MEASURES_FILE}")):
            paths += _render_measures(folder)
        return paths
    for name in boards:
        name = str(name).strip("/")
        if name.startswith(MEASURES_DIR + "/"):
            folder = root / name
            if not (folder / MEASURES_FILE).is_file():
                raise InputError(f"{folder} has no {MEASURES_FILE}: not a measures board")
            paths += _render_measures(folder)
        else:
            paths += render_board(load_board(name, root).path)
    return paths


def check_rendered(leaderboards_dir: str | os.PathLike = "leaderboards") -> list[str]:
    """Re-render everything into a temporary copy of ``leaderboards_dir`` and list the files that differ.

    Returns paths relative to ``leaderboards_dir`` (``"mnist1d/Linf/README.md"``), sorted: files whose bytes
    differ from the committed ones, and files that rendering would create. Empty when everything is up to date.
    The folder itself is not touched.
    """
    root = Path(leaderboards_dir)
    if not root.is_dir():
        raise InputError(f"no leaderboards folder {root}")
    with tempfile.TemporaryDirectory(prefix="ncbench-check-") as tmp:
        copy = Path(tmp) / "leaderboards"
        shutil.copytree(root, copy)
        render_all(copy)
        differ = []
        for path in sorted(copy.rglob("*")):
            if path.is_file():
                rel = path.relative_to(copy)
                committed = root / rel
                if not committed.is_file() or committed.read_bytes() != path.read_bytes():
                    differ.append(rel.as_posix())
    return differ
