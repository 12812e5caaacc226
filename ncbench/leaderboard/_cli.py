"""``ncbench leaderboard render`` and ``ncbench leaderboard check``: parse, call the package, print."""

from __future__ import annotations

import argparse
import sys


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
    return sub


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
