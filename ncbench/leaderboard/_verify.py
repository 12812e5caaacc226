"""``ncbench leaderboard verify``: re-evaluate an entry's committed weights under its board's protocol and
compare with the entry.

Training does not repeat across CPUs, but evaluating fixed weights does, within tolerances
(``tests/test_fixed_reference.py`` states them for evaluation and the README repeats them):

- ``clean_accuracy``: within one sample of the board's ``n_points`` (a point on a decision boundary can flip
  when float32 features round differently);
- collapse: the nearest-class-centre counts (``nc4_ncc_mismatch``, ``ncc_accuracy``) within one sample of their
  split; every other metric within relative 1e-4 (float32 features, float64 metrics);
- the PGD curve: within 0.01 at each eps (a point near the boundary of the eps-ball can go either way);
- AutoAttack's robust accuracy: within 0.01, for the same reason: its components are seeded by the job, so on
  one machine it repeats exactly, and across machines only points whose adversarial margin is within rounding
  of zero can change (0.01 is 2 of a board's 200 points);
- exactly: the weights' checksum, the parameter count, the number of attacked points, the protocol job's id
  (the same weights under the same protocol and seed: a board.yaml edited after the entry was written fails
  here) and ``reliable``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .._errors import InputError

#: tolerances of :func:`compare` (see the module docstring for why)
ROBUST_TOLERANCE = 0.01
PGD_TOLERANCE = 0.01
COLLAPSE_RTOL = 1e-4
COLLAPSE_ATOL = 1e-9
COUNT_METRICS = ("nc4_ncc_mismatch", "ncc_accuracy")


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else repr(x)


def compare(committed: dict, fresh: dict, *, n_split: dict[str, int]) -> list[str]:
    """Differences beyond the tolerances between an entry and the same entry re-measured, one line each:
    ``field: committed A, re-evaluated B (tolerance T)``. Empty when they agree.

    ``n_split``: the number of points of each collapse split (``{"train": n, "test": n}``), for the count
    metrics' one-sample tolerance.
    """
    out = []

    def differ(field: str, a, b, tol: str | None = None) -> None:
        out.append(f"{field}: committed {_fmt(a)}, re-evaluated {_fmt(b)}" + (f" (tolerance {tol})" if tol else ""))

    for field in ("weights_sha256", "num_parameters", "reliable"):
        if committed[field] != fresh[field]:
            differ(field, committed[field], fresh[field])
    if committed["evaluation"]["job_id"] != fresh["evaluation"]["job_id"]:
        differ("evaluation.job_id", committed["evaluation"]["job_id"], fresh["evaluation"]["job_id"],
               "exact: the same weights, protocol and seed")
    n = committed["robust_accuracy"]["n_points"]
    if fresh["robust_accuracy"]["n_points"] != n:
        differ("robust_accuracy.n_points", n, fresh["robust_accuracy"]["n_points"])
    if abs(committed["clean_accuracy"] - fresh["clean_accuracy"]) > 1 / n + 1e-12:
        differ("clean_accuracy", committed["clean_accuracy"], fresh["clean_accuracy"], f"1/{n}")
    a, b = committed["robust_accuracy"]["value"], fresh["robust_accuracy"]["value"]
    if abs(a - b) > ROBUST_TOLERANCE + 1e-12:
        differ("robust_accuracy.value", a, b, str(ROBUST_TOLERANCE))
    mine = {r["eps_label"]: r["robust_accuracy"] for r in committed["pgd_curve"]}
    theirs = {r["eps_label"]: r["robust_accuracy"] for r in fresh["pgd_curve"]}
    for label in mine | theirs:
        if label not in mine or label not in theirs:
            differ(f"pgd_curve@{label}", mine.get(label), theirs.get(label))
        elif abs(mine[label] - theirs[label]) > PGD_TOLERANCE + 1e-12:
            differ(f"pgd_curve@{label}", mine[label], theirs[label], str(PGD_TOLERANCE))
    for split in sorted(set(committed["collapse"]) | set(fresh["collapse"])):
        mine, theirs = committed["collapse"].get(split, {}), fresh["collapse"].get(split, {})
        for key in sorted(set(mine) | set(theirs)):
            field = f"collapse.{split}.{key}"
            if key not in mine or key not in theirs:
                differ(field, mine.get(key), theirs.get(key))
            elif key in COUNT_METRICS:
                count = n_split.get(split)
                if count and abs(mine[key] - theirs[key]) > 1 / count + 1e-12:
                    differ(field, mine[key], theirs[key], f"1/{count}")
            elif not math.isclose(mine[key], theirs[key], rel_tol=COLLAPSE_RTOL, abs_tol=COLLAPSE_ATOL):
                differ(field, mine[key], theirs[key], f"relative {COLLAPSE_RTOL:g}")
    return out


def protocol_config(board, checkpoint: str | Path, *, seed: int = 0, data_dir: str | None = None,
                    device: str = "auto", trust: bool = False):
    """(config, model) of running ``board``'s protocol on the weights in ``checkpoint``.

    An ncbench checkpoint says which training set it saw (``n_train``, label noise): collapse on ``train`` is
    measured there; a foreign checkpoint is measured on the dataset's whole train split.
    """
    from ..environment import resolve_device
    from ..models import load_checkpoint
    from ._submit import board_config

    model = load_checkpoint(checkpoint, map_location=resolve_device(device), trust=trust)
    trained_on = (getattr(model, "trained_by", None) or {}).get("dataset") or {}
    training_set = trained_on.get("args") if trained_on.get("name") == board.dataset else None
    cfg = board_config(board, seed=seed, data_dir=data_dir, device=device, training_set=training_set,
                       checkpoint=str(checkpoint), trust=trust)
    return cfg, model


def remeasure(board, entry: dict, checkpoint: str | Path, *, data_dir: str | None = None, device: str = "auto",
              trust: bool = False, progress: bool = False) -> tuple[dict, list[str]]:
    """Run ``board``'s protocol on ``checkpoint`` with the entry's seed; return the re-measured entry and its
    differences from ``entry`` (:func:`compare`)."""
    from ..evaluate import run_evaluate
    from ._entry import entry_from_records

    cfg, model = protocol_config(board, checkpoint, seed=entry["evaluation"]["seed"], data_dir=data_dir,
                                 device=device, trust=trust)
    del model
    record = run_evaluate(cfg, progress=progress)
    fresh = entry_from_records(board, record, entry_id=entry["id"], name=entry["name"], source=entry["source"],
                               paper=entry["paper"], reported=entry["reported"], external=entry["external"],
                               weights_file=entry["weights_file"])
    ds = record["provenance"]["dataset"]
    return fresh, compare(entry, fresh, n_split={"train": ds.get("n_train"), "test": ds.get("n_test")})


def select(selector: str | None, leaderboards: str | Path) -> list[tuple[object, dict]]:
    """``(board, entry)`` pairs for ``BOARD``, ``BOARD/ENTRY`` or None (every entry of every board)."""
    from ._boards import list_boards, load_board
    from ._entry import load_entries

    root = Path(leaderboards)
    if selector is None:
        ids = list_boards(root)
        entry_id = None
    else:
        parts = str(selector).strip("/").split("/")
        if len(parts) not in (2, 3):
            raise InputError(f"expected BOARD (dataset/norm, e.g. mnist1d/Linf) or BOARD/ENTRY; got {selector!r}")
        ids, entry_id = ["/".join(parts[:2])], (parts[2] if len(parts) == 3 else None)
    out = []
    for board_id in ids:
        board = load_board(board_id, root)
        entries = load_entries(board.path, board=board)
        if entry_id is not None:
            entries = [e for e in entries if e["id"] == entry_id]
            if not entries:
                import difflib

                known = [e["id"] for e in load_entries(board.path, board=board)]
                close = difflib.get_close_matches(entry_id, known, n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise InputError(f"board {board.id} has no entry {entry_id!r}{hint} ({len(known)} entries in "
                                 f"{board.path})")
        out += [(board, e) for e in entries]
    return out


def verify(selector: str | None = None, *, leaderboards: str | Path = "leaderboards", data_dir: str | None = None,
           device: str = "auto", progress: bool = False, log=lambda line: None) -> list[tuple[str, list[str]]]:
    """Re-evaluate the committed weights of the selected entries; ``[(board/entry, differences)]``.

    An entry without committed weights, or whose committed file is not its model, is a difference too (it
    cannot be verified). ``log`` gets one line per entry as it is done.
    """
    from ._weights import check_weights, weights_path

    results = []
    for board, entry in select(selector, leaderboards):
        label = f"{board.id}/{entry['id']}"
        t0 = time.perf_counter()
        path = weights_path(entry, leaderboards)
        if path is None:
            diffs = ["weights_file: null, no committed weights to re-evaluate"]
        else:
            diffs = check_weights(entry, leaderboards)
            if not diffs:
                _, diffs = remeasure(board, entry, path, data_dir=data_dir, device=device, progress=progress)
        results.append((label, diffs))
        took = time.perf_counter() - t0
        if diffs:
            log(f"DIFFERS {label} ({took:.0f} s)")
            for line in diffs:
                log(f"  {line}")
        else:
            log(f"ok      {label}: clean {100 * entry['clean_accuracy']:.2f} %, robust "
                f"{100 * entry['robust_accuracy']['value']:.2f} % within the tolerances ({took:.0f} s)")
    return results
