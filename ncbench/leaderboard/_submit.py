"""``ncbench submit``: re-verify a model under a board's protocol and add it to the board.

Nothing is written unless every check before the (expensive) evaluation passes: the board exists, the
checkpoint loads safely and fits the board's dataset, the model is deterministic and returns logits, the id is
free (or ``replace`` with the same weights), and a claimed clean accuracy matches ncbench's within 0.1 points on
the board's whole test set. Then the board's protocol runs (AutoAttack at the headline budget and the PGD curve
on the board's points, collapse on train and test, every reliability check), the weights are committed under
``leaderboards/weights/`` (safetensors; :mod:`ncbench.leaderboard._weights`), the entry is written atomically,
validated, and the board re-rendered. An unreliable result is written with ``reliable: false`` and its reasons,
never dropped.

``check=True`` is the maintainer's side: the entry must exist; the checkpoint must be its model and the
committed weights file too; the protocol runs again and the result is compared with the entry within the
tolerances of ``ncbench leaderboard verify``. Nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from .._errors import InputError
from ._boards import Board, load_board
from ._entry import entry_from_records, entry_path, write_entry

CLAIM_TOLERANCE = 0.001  # 0.1 points, as a fraction
ROBUST_FOOTNOTE = 0.01  # a claimed robust accuracy more than 1 point above ncbench's is footnoted


def slug(text: str) -> str:
    """A lower-case entry id: letters, digits, '.', '_' and '-'."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    if not s:
        raise InputError(f"cannot make an entry id from {text!r}; pass --id")
    return s


def as_fraction(claim: float | None, what: str) -> float | None:
    """A claimed accuracy, given in percent as papers write it (98.6, or 0.8 for 0.8 %) -> a fraction."""
    if claim is None:
        return None
    value = float(claim)
    if not 0 <= value <= 100:
        raise InputError(f"{what} is a percentage in [0, 100] (e.g. 98.6); got {claim}")
    return value / 100


def board_config(board: Board, *, seed: int = 0, data_dir: str | None = None, device: str = "auto",
                 training_set: dict | None = None, checkpoint: str | None = None, trust: bool = False):
    """The evaluate config of a board's protocol: AutoAttack at the headline budget, the PGD curve as an extra
    attack, both on the board's points, on the board's dataset split.

    ``training_set``: the model's training-set options (``n_train``, ``label_noise``, ...; see
    ``ncbench.data.TRAINING_SET_ARGS``), so that collapse on the train split is measured on the data the model
    trained on. They never change the test split, so the protocol's points stay the board's.
    """
    from ..config import build_config
    from ..data import TRAINING_SET_ARGS

    extra = {k: v for k, v in (training_set or {}).items() if k in TRAINING_SET_ARGS}
    # an entry shows accuracy, collapse and robustness: the board job computes no generalization measures and no
    # collapse under attack (AutoAttack on 1,000 training points would cost more than the protocol itself)
    # no validation split unless the model's own training set had one (a dataset's default, e.g. mnist1d's 500,
    # describes how ncbench trains, not what a submitted model trained on)
    raw = {"dataset": board.dataset, "dataset_args": {**board.dataset_args, "val_size": None, **extra}, "seed": seed,
           "attack": board.headline_attack(), "extra_attacks": [board.curve_attack_args()], "device": device,
           "checkpoint": checkpoint, "trust_checkpoint": trust, "measures": False, "adv_collapse_points": 0}
    if data_dir is not None:
        raw["data_dir"] = data_dir
    return build_config(raw)


def _refuse_unfit(model, board: Board, ds, path: str) -> None:
    """Wrong classes or input shape, a randomised model, probabilities instead of logits: refused."""
    from ..attacks import _checks as C
    from ..features import model_device

    from ..evaluate import check_fits

    check_fits(model, ds, path, f"board {board.id} ({ds.name})")
    x = ds.x_test[:64].to(model_device(model))
    model.eval()
    for check in (C.check_deterministic(model, x), C.check_logits(model, x)):
        if not check["passed"]:
            raise InputError(f"{path}: refused: {check['detail']}")


def check_submission(checkpoint: str, board_id: str, *, name: str | None = None, entry_id: str | None = None,
                     trust: bool = False, leaderboards: str = "leaderboards", data_dir: str | None = None,
                     device: str = "auto", progress: bool = True, log=lambda message: None) -> tuple[dict, list[str]]:
    """Re-evaluate a submitted entry from the submitter's checkpoint; return (entry, differences). Writes nothing.

    The entry (``--id``, or made from ``--name`` / the file's name, as ``submit`` makes it) must exist on the
    board; the checkpoint must hold its weights (``weights_sha256``), and so must the committed weights file.
    """
    from ..environment import resolve_device
    from ..models import load_checkpoint, model_checksum
    from ._entry import load_entries
    from ._verify import remeasure
    from ._weights import check_weights

    board = load_board(board_id, leaderboards)
    entry_id = slug(entry_id or name or Path(checkpoint).stem)
    entry = {e["id"]: e for e in load_entries(board.path, board=board)}.get(entry_id)
    if entry is None:
        raise InputError(f"--check: board {board.id} has no entry {entry_id!r} ({entry_path(board.path, entry_id)}); "
                         "pass the submission's --id or --name")
    model = load_checkpoint(checkpoint, map_location=resolve_device(device), trust=trust)
    checksum = model_checksum(model)
    del model
    if checksum != entry["weights_sha256"]:
        return entry, [f"weights_sha256: the entry holds {entry['weights_sha256']}, {checkpoint} is {checksum}: not "
                       "the submitted model"]
    diffs = check_weights(entry, leaderboards)
    if entry["weights_file"] is None:
        log("the entry has no committed weights (a torch.export archive): checking the checkpoint alone")
    log(f"running board {board.id}'s protocol again: {board.attack} at eps {board.eps_label} and the PGD curve on "
        f"{board.n_points} points ...")
    _, more = remeasure(board, entry, checkpoint, data_dir=data_dir, device=device, trust=trust, progress=progress)
    return entry, diffs + more


def submit(checkpoint: str, board_id: str, *, name: str | None = None, entry_id: str | None = None,
           claim_clean: float | None = None, claim_robust: float | None = None, paper_bib: str | None = None,
           trust: bool = False, replace: bool = False, leaderboards: str = "leaderboards",
           data_dir: str | None = None, device: str = "auto", progress: bool = True,
           log=lambda message: None) -> tuple[dict, Path]:
    """Evaluate ``checkpoint`` under board ``board_id``'s protocol, commit its weights and write its entry.
    Returns (entry, path)."""
    from ..data import load_dataset
    from ..evaluate import run_evaluate
    from ..features import model_device, predict
    from ..models import model_checksum
    from ._bibtex import read_bibtex
    from ._entry import load_entries
    from ._render import render_board
    from ._verify import protocol_config
    from ._weights import prepare_weights, stray_weights, write_weights

    board = load_board(board_id, leaderboards)
    paper = read_bibtex(paper_bib) if paper_bib else None
    clean_claim = as_fraction(claim_clean, "--claim-clean")
    robust_claim = as_fraction(claim_robust, "--claim-robust")
    name = name or Path(checkpoint).stem
    entry_id = slug(entry_id or name)
    cfg, model = protocol_config(board, checkpoint, data_dir=data_dir, device=device, trust=trust)
    ds = load_dataset(cfg.dataset, **cfg.loader_args())
    _refuse_unfit(model, board, ds, checkpoint)
    existing = entry_path(board.path, entry_id)
    old_weights = None
    if existing.exists():
        if not replace:
            raise InputError(f"entry {entry_id!r} exists on board {board.id} ({existing}); choose another --id, "
                             "--replace to update it with the same weights, or --check to re-evaluate it against "
                             "the entry (a maintainer's check: writes nothing)")
        old = {e["id"]: e for e in load_entries(board.path)}.get(entry_id)
        if old is not None and old["weights_file"] is not None:
            old_weights = old["weights_file"]["path"]
        checksum = model_checksum(model)
        if old is not None and old["weights_sha256"] != checksum:
            raise InputError(f"--replace refused: entry {entry_id!r} holds weights {old['weights_sha256'][:16]}, this "
                             f"checkpoint is {checksum[:16]}; a different model needs a new --id")
    if clean_claim is not None:
        correct = predict(model.eval(), ds.x_test) == ds.y_test.to(model_device(model))
        measured = float(correct.double().mean())
        if abs(measured - clean_claim) > CLAIM_TOLERANCE + 1e-9:  # "within 0.1 points" includes 0.1
            raise InputError(f"claimed clean accuracy {100 * clean_claim:.2f}% does not match ncbench's "
                             f"{100 * measured:.2f}% on the {ds.name} test set ({len(ds.y_test)} points); they must "
                             "agree within 0.1 points")
        log(f"clean accuracy on the whole test set: {100 * measured:.2f}% (claimed {100 * clean_claim:.2f}%)")
    del model
    log(f"running board {board.id}'s protocol: {board.attack} at eps {board.eps_label} and the PGD curve on "
        f"{board.n_points} points ...")
    record = run_evaluate(cfg, progress=progress)
    reported = None
    if clean_claim is not None or robust_claim is not None:
        reported = {"clean_accuracy": clean_claim, "robust_accuracy": robust_claim}
    weights, weights_bytes = prepare_weights(checkpoint, trust=trust)
    entry = entry_from_records(board, record, entry_id=entry_id, name=name, source="submit", paper=paper,
                               reported=reported, weights_file=weights)
    if robust_claim is not None and robust_claim - entry["robust_accuracy"]["value"] > ROBUST_FOOTNOTE:
        log(f"the claimed robust accuracy {100 * robust_claim:.2f}% is more than 1 point above ncbench's "
            f"{100 * entry['robust_accuracy']['value']:.2f}%: kept under 'reported' and footnoted")
    wrote = weights is not None and write_weights(weights, weights_bytes, leaderboards)
    try:
        path = write_entry(entry, board.path, replace=replace)
    except InputError:
        if wrote and Path(leaderboards) / weights["path"] in stray_weights(leaderboards):
            (Path(leaderboards) / weights["path"]).unlink()  # the entry was refused: leave no file behind
        raise
    for stray in stray_weights(leaderboards):
        if old_weights and stray == Path(leaderboards) / old_weights:
            stray.unlink()  # --replace with a re-saved file of the same weights: the old file is no entry's now
    if weights is None:
        log("the weights are a torch.export archive, which safetensors cannot hold: they are not committed, so "
            "`ncbench leaderboard verify` cannot re-evaluate this entry")
    render_board(board.path)
    return entry, path
