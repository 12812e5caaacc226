"""``ncbench leaderboard render`` and ``ncbench leaderboard check``: parse, call the package, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..store import DEFAULT_STORE


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
    check = sub.add_parser("check", help="re-render into a temporary copy and list the files that differ from "
                                         "the committed ones (exit 1 if any)")
    _leaderboards_option(check)
    check.set_defaults(func=cmd_check)
    build = sub.add_parser("build", help="from a grid to its boards: run the sweep, export its data, run each "
                                         "board's protocol on one model per configuration, write the entries, "
                                         "the measures board, and render")
    build.add_argument("grid", metavar="GRID.yaml", help="a sweep grid (configs/sweeps/*.yaml)")
    build.add_argument("--boards", nargs="+", metavar="BOARD", help="boards to fill (default: every board on the "
                                                                    "grid's dataset)")
    build.add_argument("--store", default=DEFAULT_STORE, metavar="PATH",
                       help=f"the results store (default {DEFAULT_STORE})")
    build.add_argument("--executor", default="process", choices=("local", "process", "ray", "slurm"))
    build.add_argument("--workers", type=int, help="processes (default: the cores)")
    build.add_argument("--threads-per-job", type=int, help="torch threads per job (default: cores / workers)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    _leaderboards_option(build)
    build.set_defaults(func=cmd_build)
    return sub


def cmd_build(args) -> int:
    from ._build import build

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    paths = build(args.grid, store=args.store, leaderboards=args.leaderboards, boards=args.boards,
                  executor=args.executor, workers=args.workers, threads_per_job=args.threads_per_job,
                  progress=not args.quiet, log=log)
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
    from ._render import check_rendered

    differ = check_rendered(args.leaderboards)
    if differ:
        print(f"{len(differ)} file(s) under {args.leaderboards} differ from a fresh render "
              "(run `ncbench leaderboard render` and commit the result):", file=sys.stderr)
        for rel in differ:
            print(f"  {rel}", file=sys.stderr)
        return 1
    print(f"{args.leaderboards}: every rendered file is up to date")
    return 0


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
    sp.add_argument("--data-dir", metavar="DIR", help="where torchvision datasets live (image boards)")
    sp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    _leaderboards_option(sp)
    sp.set_defaults(func=cmd_submit)


def cmd_submit(args) -> int:
    from ._submit import submit

    def log(message: str) -> None:
        print(message, file=sys.stderr)

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
