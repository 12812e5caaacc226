"""``ncbench regress``: rank, regress and draw a sweep's results; optionally write its measures board."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from .._errors import InputError

from ..store import DEFAULT_STORE


def register(subparsers) -> None:
    """Add ``regress`` to the ``ncbench`` subcommands (``func``: :func:`cmd_regress`)."""
    p = subparsers.add_parser(
        "regress", help="does collapse predict accuracy and robustness? rank correlations, Jiang's Ψ, PGDL's "
                        "score, regressions with intervals, figures; optionally the measures board")
    p.add_argument("--store", default=DEFAULT_STORE, metavar="PATH", help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--sweep", required=True, metavar="NAME", help="the sweep whose jobs to analyse")
    p.add_argument("--targets", nargs="+", metavar="COLUMN", help="default: test_accuracy, generalization_gap, "
                   "every robust_accuracy@*, other attacks' *_accuracy@*, conditional_robust_accuracy@*, "
                   "fab_margin (those present)")
    p.add_argument("--predictors", nargs="+", metavar="COLUMN", help="default: every column of a predictor family "
                   "(train.*, val.*, val_pred.*, test_pred.*, train_adv.*, test.*, test_adv.*, measures.*, "
                   "estimators.*) and the baselines num_parameters, final_train_loss, sum_squared_weights, "
                   "train_margin_p10, train_accuracy, val_accuracy, train_robust_accuracy; test.* and test_adv.* read the test labels and are described, not ranked")
    p.add_argument("--axes", nargs="+", metavar="KEY", help="grid axes (dotted keys; default: the sweep's axes)")
    p.add_argument("--group-axis", dest="group_axis", metavar="KEY", help="groups of the grouped K-fold (default: "
                   "the capacity axis: the first whose name has channels, width or depth)")
    p.add_argument("--out", metavar="DIR", help="output folder (default ncbench-results/regress/<sweep>)")
    p.add_argument("--board", metavar="DIR", help="also write the measures board there "
                   "(e.g. leaderboards/measures/<sweep>)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples of configurations "
                   "for the intervals on tau, rho and partial rho (default 1000); Psi's intervals need none")
    p.add_argument("--correction", choices=("holm", "fdr_bh"), default="holm", help="multiple-comparison "
                   "correction over every predictor x target (statsmodels multipletests; default holm, the "
                   "family-wise error rate; fdr_bh: Benjamini-Hochberg, the false discovery rate)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the figures")
    p.set_defaults(func=cmd_regress)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (for the board), options in a fixed order."""
    parts = ["ncbench", "regress", "--store", str(args.store), "--sweep", args.sweep]
    for flag, value in (("--targets", args.targets), ("--predictors", args.predictors), ("--axes", args.axes)):
        if value:
            parts += [flag, *value]
    if args.group_axis:
        parts += ["--group-axis", args.group_axis]
    if args.bootstrap != 1000:
        parts += ["--bootstrap", str(args.bootstrap)]
    if getattr(args, "correction", "holm") != "holm":
        parts += ["--correction", args.correction]
    if args.board:
        parts += ["--board", str(args.board)]
    return shlex.join(parts)


def run_regress(frame, args: argparse.Namespace) -> tuple[str, list[Path]]:
    """Everything ``ncbench regress`` does after loading ``frame``: returns the ranking text and the files written."""
    from ._board import write_measures_board
    from ._figures import draw_figures
    from ._regress import regress
    from ._tables import format_ranking, write_regression

    axes = args.axes or frame.attrs.get("axes")
    if not axes:
        raise InputError(f"the store does not say the axes of sweep {args.sweep!r}; pass --axes KEY [KEY ...]")
    table = regress(frame, args.targets, args.predictors, axes, group_axis=args.group_axis, n_boot=args.bootstrap,
                    correction=getattr(args, "correction", "holm"))
    out = Path(args.out) if args.out else Path("ncbench-results") / "regress" / args.sweep
    paths = write_regression(table, out)
    if args.figures:
        paths += draw_figures(frame, table, out / "figures", axes=axes)
    if args.board:
        note = (f"Results of sweep `{args.sweep}` from the ncbench results store; every statistic is computed over "
                "configurations (seeds averaged) by `ncbench regress`.")
        paths += write_measures_board(table, args.board, sweep=args.sweep, command=_command(args),
                                      n_models=int(table["n_models"].iloc[0]), source_note=note)
    return format_ranking(table), paths


def cmd_regress(args: argparse.Namespace) -> int:
    from ..store import load_frame

    frame = load_frame(args.store, sweep=args.sweep)
    text, paths = run_regress(frame, args)
    print(text)
    folders = sorted({str(p.parent) for p in paths})
    print(f"wrote {len(paths)} files to {', '.join(folders)}")
    return 0
