"""``ncbench leaderboard render|check|verify|build`` and ``ncbench submit``: parse, call the package, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._errors import InputError, NcbenchError
from ..store import DEFAULT_STORE


def _whole(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {value}")
    return value


def _leaderboards_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leaderboards", metavar="DIR", default="leaderboards",
                   help="the folder that holds <dataset>/<norm>/board.yaml (default ./leaderboards)")


def register(subparsers) -> argparse._SubParsersAction:
    """Add ``leaderboard`` with ``render`` and ``check`` to the ``ncbench`` subparsers.

    Returns the ``leaderboard`` command's own subparsers, so that further subcommands (``build``) can be added
    beside these.
    """
    lb = subparsers.add_parser("leaderboard", help="render the leaderboard tables, or check that they are current")
    sub = lb.add_subparsers(dest="leaderboard_command", required=True)
    render = sub.add_parser("render", help="write README.md, table.tex, table.csv and entries.bib of boards "
                                           "(and the measures boards) from their entries")
    render.add_argument("boards", nargs="*", metavar="BOARD",
                        help="boards to render, e.g. mnist1d/Linf or measures/<sweep> (default: all)")
    _leaderboards_option(render)
    render.set_defaults(func=cmd_render)
    check = sub.add_parser("check", help="check every entry against the entry schema, its committed weights and the "
                                         "committed data exports it was built from, and that the rendered tables "
                                         "are current (exit 1 naming each problem)")
    _leaderboards_option(check)
    check.set_defaults(func=cmd_check)
    verify = sub.add_parser("verify", help="re-evaluate the committed weights of entries under their board's "
                                           "protocol and compare with the entries within the stated tolerances "
                                           "(exit 1 on a difference)")
    verify.add_argument("target", nargs="?", metavar="BOARD[/ENTRY]", help="e.g. mnist1d/Linf or "
                        "mnist1d/Linf/<entry id> (default: every entry of every board)")
    verify.add_argument("--data-dir", metavar="DIR", help="where torchvision datasets live (image boards)")
    verify.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    verify.add_argument("--progress", action="store_true", help="progress bars of each evaluation")
    _leaderboards_option(verify)
    verify.set_defaults(func=cmd_verify)
    build = sub.add_parser("build", help="from a grid to its boards: run the sweep, export its data, run each "
                                         "board's protocol on one model per configuration, write the entries, "
                                         "the measures board, and render")
    build.add_argument("grid", metavar="GRID.yaml", help="a sweep grid (configs/sweeps/*.yaml)")
    build.add_argument("--boards", nargs="+", metavar="BOARD", help="boards to fill (default: every board on the "
                                                                    "grid's dataset)")
    build.add_argument("--store", default=DEFAULT_STORE, metavar="PATH",
                       help=f"the results store (default {DEFAULT_STORE})")
    build.add_argument("--executor", default="process", choices=("local", "process", "ray", "slurm"))
    build.add_argument("--workers", type=_whole, help="processes (default: the cores)")
    build.add_argument("--threads-per-job", type=_whole, help="torch threads per job (default: cores / workers)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.add_argument("--no-boards", dest="no_boards", action="store_true", help="only the sweep, its data export "
                       "and its measures board: no board jobs, entries or weights (for grids of a thousand models)")
    build.add_argument("--export-every", dest="export_every", type=_whole, metavar="N", help="also rewrite "
                       "leaderboards/data/<sweep>/ after every N finished jobs, so that a long build can be "
                       "committed as it goes (each file atomically)")
    _leaderboards_option(build)
    build.set_defaults(func=cmd_build)
    return sub


def cmd_build(args) -> int:
    from ._build import build

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    paths = build(args.grid, store=args.store, leaderboards=args.leaderboards, boards=args.boards,
                  executor=args.executor, workers=args.workers, threads_per_job=args.threads_per_job,
                  progress=not args.quiet, log=log, no_boards=args.no_boards, export_every=args.export_every)
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_render(args) -> int:
    from ._render import render_all

    paths = render_all(args.leaderboards, boards=args.boards or None)
    for path in paths:
        print(f"rendered {path}")
    return 0


def cmd_check(args) -> int:
    from ._check import check_entries
    from ._render import check_rendered

    problems = check_entries(args.leaderboards)
    if problems:
        print(f"{len(problems)} problem(s) with the entries under {args.leaderboards}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
    try:
        differ = check_rendered(args.leaderboards)
    except NcbenchError as err:  # an invalid entry stops rendering; it is listed above
        if not problems:
            raise
        print(f"(the tables were not re-rendered: {err})", file=sys.stderr)
        return 1
    if differ:
        print(f"{len(differ)} file(s) under {args.leaderboards} differ from a fresh render "
              "(run `ncbench leaderboard render` and commit the result):", file=sys.stderr)
        for rel in differ:
            print(f"  {rel}", file=sys.stderr)
    if problems or differ:
        return 1
    print(f"{args.leaderboards}: every entry is valid, holds its committed weights and agrees with the committed "
          "data exports; every rendered file is up to date")
    return 0


def cmd_verify(args) -> int:
    from ._verify import verify

    results = verify(args.target, leaderboards=args.leaderboards, data_dir=args.data_dir, device=args.device,
                     progress=args.progress, log=print)
    bad = [label for label, diffs in results if diffs]
    print(f"{len(results) - len(bad)} of {len(results)} entr{'y' if len(results) == 1 else 'ies'} reproduced within "
          "the tolerances" + (f"; {len(bad)} differ" if bad else ""))
    return 1 if bad else 0


def register_submit(subparsers) -> None:
    """Add ``ncbench submit CHECKPOINT --board DATASET/NORM``."""
    sp = subparsers.add_parser("submit", help="re-evaluate a checkpoint under a board's protocol and add it to the "
                                              "board (entry, tables)")
    sp.add_argument("checkpoint", metavar="CHECKPOINT", help=".safetensors (spec in its metadata), a weights_only "
                                                             ".pt, or a torch.export .pt2 with --trust-checkpoint")
    sp.add_argument("--board", required=True, metavar="DATASET/NORM", help="e.g. mnist1d/Linf")
    sp.add_argument("--name", help="the name shown in the tables (default: the file's name)")
    sp.add_argument("--id", dest="entry_id", help="the entry's id (default: made from --name)")
    sp.add_argument("--claim-clean", type=float, metavar="PCT", help="the clean accuracy you claim, in percent "
                    "(98.6); must match ncbench's on the whole test set within 0.1 points")
    sp.add_argument("--claim-robust", type=float, metavar="PCT", help="the robust accuracy you claim at the board's "
                    "budget, in percent; kept under 'reported' (footnoted if ncbench's attack beats it by more than "
                    "1 point)")
    sp.add_argument("--paper-bib", metavar="FILE", help="one BibTeX entry of the paper (title, authors, venue, year)")
    sp.add_argument("--trust-checkpoint", action="store_true", help="allow a .pt2 archive, which unpickles: only "
                                                                    "for files you made yourself")
    sp.add_argument("--replace", action="store_true", help="update an existing entry with the same weights")
    sp.add_argument("--check", action="store_true", help="for maintainers: re-evaluate the existing entry from this "
                    "checkpoint and compare within the tolerances of `ncbench leaderboard verify` (exit 1 on a "
                    "difference); writes nothing")
    sp.add_argument("--data-dir", metavar="DIR", help="where torchvision datasets live (image boards)")
    sp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    _leaderboards_option(sp)
    sp.set_defaults(func=cmd_submit)


def cmd_submit(args) -> int:
    from ._submit import check_submission, submit

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    if args.check:
        given = [flag for flag, v in (("--replace", args.replace), ("--claim-clean", args.claim_clean),
                                      ("--claim-robust", args.claim_robust), ("--paper-bib", args.paper_bib)) if v]
        if given:
            raise InputError(f"--check re-evaluates the committed entry and writes nothing: leave out "
                             f"{', '.join(given)}")
        entry, diffs = check_submission(args.checkpoint, args.board, name=args.name, entry_id=args.entry_id,
                                        trust=args.trust_checkpoint, leaderboards=args.leaderboards,
                                        data_dir=args.data_dir, device=args.device, progress=not args.quiet, log=log)
        label = f"{entry['board']}/{entry['id']}"
        if diffs:
            print(f"DIFFERS {label}:")
            for line in diffs:
                print(f"  {line}")
            return 1
        print(f"ok {label}: the checkpoint is the entry's model and reproduces its numbers within the tolerances")
        return 0

    entry, path = submit(args.checkpoint, args.board, name=args.name, entry_id=args.entry_id,
                         claim_clean=args.claim_clean, claim_robust=args.claim_robust, paper_bib=args.paper_bib,
                         trust=args.trust_checkpoint, replace=args.replace, leaderboards=args.leaderboards,
                         data_dir=args.data_dir, device=args.device, progress=not args.quiet, log=log)
    rob = entry["robust_accuracy"]
    flag = "reliable" if entry["reliable"] else "UNRELIABLE: " + "; ".join(entry["unreliable_reasons"])
    print(f"{entry['board']} · {entry['name']}: clean {100 * entry['clean_accuracy']:.2f}%, robust "
          f"{100 * rob['value']:.2f}% ({rob['label']} at eps {rob['eps_label']}, {rob['n_points']} points) · {flag}")
    print(f"wrote {path} and re-rendered {Path(path).parent / 'README.md'}")
    return 0
