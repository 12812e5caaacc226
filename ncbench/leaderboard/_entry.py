"""Entries: built from a result record, written once under their id, read back validated."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from .._budget import canonical_eps, eps_label
from .._errors import InputError
from .._io import dumps, write_exclusive, write_replace
from ._boards import Board, effective_dataset_args, load_board
from ._schema import SCHEMA_VERSION, validate_entry

SOURCES = ("sweep", "submit")


def _get(record: dict, dotted: str):
    """``record["a"]["b"]`` for ``"a.b"``, or an InputError that names the missing field."""
    obj = record
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise InputError(f"the record has no {dotted} (expected a schema v2 record, docs/records.md)")
        obj = obj[part]
    return obj


def _check_attack(board: Board, identity: dict, where: str, settings: dict) -> None:
    """The attack that ran (its part of the record's job identity) is exactly the board's: the same attack,
    norm, budgets, points, precision, check sample and every parameter of its own (AutoAttack's Square queries
    and batch size, PGD's steps and step size): one comparison, nothing left out."""
    from ..attacks import AttackConfig

    want = AttackConfig(**settings).identity(identity.get("seed", 0))
    differ = sorted(k for k in set(want) | set(identity) if want.get(k) != identity.get(k))
    if differ:
        shown = "; ".join(f"{k}: {identity.get(k)!r} (board: {want.get(k)!r})" for k in differ)
        raise InputError(f"{where} did not follow board {board.id}'s protocol: {shown}")


def _training(prov: dict) -> dict:
    """``training`` of an entry: how an ncbench-trained model was trained, else ``{"source": "external"}``.

    The same shape for a model trained in this job (from ``provenance.identity``) and for an ncbench checkpoint
    (from its ``trained_by`` metadata): ``recipe`` (the effective training recipe), ``seed``, ``dataset`` (the
    training data: name and effective arguments, e.g. ``n_train`` or ``label_noise``) and the ``job_id`` that
    trained it. A checkpoint from elsewhere is ``external``.
    """
    model = _get(prov, "model")
    if model["source"] == "trained":
        ident = _get(prov, "identity.model")
        return {"source": "recipe", "recipe": _get(ident, "recipe"), "seed": _get(ident, "seed"),
                "dataset": _get(prov, "identity.dataset"), "job_id": _get(prov, "job_id")}
    trained_by = model.get("trained_by")
    if trained_by:
        return {"source": "recipe", **{k: _get(trained_by, k) for k in ("recipe", "seed", "dataset", "job_id")}}
    return {"source": "external"}


def _date(created: str) -> str:
    try:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        raise InputError(f"record field created must be an ISO 8601 time; got {created!r}") from None


def _checks(*attacks) -> list[dict]:
    """Every check of the attacks, each name prefixed with its attack, once: an attack that runs a check twice
    with the same outcome (``eval_mode`` before and after) lists it once; a check whose outcome changed is
    kept both times."""
    out, seen = [], set()
    for att in attacks:
        for c in _get(att, "checks"):
            item = {"check": f"{att['name']}:{c['check']}", "passed": bool(c["passed"]), "detail": str(c["detail"])}
            key = (item["check"], item["passed"], item["detail"])
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def entry_from_records(board: Board, record: dict, *, entry_id: str, name: str, source: str,
                       paper: dict | None = None, reported: dict | None = None,
                       external: dict | None = None, weights_file: dict | None = None) -> dict:
    """Build (and validate) a leaderboard entry from one result record.

    Parameters
    ----------
    board : the board (:func:`load_board`).
    record : a result record, schema v2 (docs/records.md), made with the board's protocol: ``robustness`` is
        the board's attack (AutoAttack standard) at the headline budget on the board's ``n_points`` points, and
        ``extra_robustness[0]`` is the PGD curve over the board's grid on the same points. Anything else is
        refused with the field that differs.
    entry_id : the slug (lower-case letters, digits, ``.``, ``_``, ``-``); the file will be ``<entry_id>.json``.
    name : the name shown in the tables.
    source : ``"sweep"`` or ``"submit"``.
    paper : the paper object (:func:`read_bibtex`), or None.
    reported : the claimed numbers ``{"clean_accuracy", "robust_accuracy"}`` (fractions; a missing one is
        null), or None.
    external : a stronger attack's result ``{"attack", "eps", "robust_accuracy", "footnote", "url"?}``, or None.
    weights_file : the committed weights ``{"path", "sha256", "bytes"}``
        (:func:`ncbench.leaderboard._weights.commit_weights`), or None when they cannot be committed.

    Returns
    -------
    dict : the entry. ``clean_accuracy`` is ``robustness.clean_accuracy``: clean top-1 on the board's
    ``n_points`` attacked points (the same points as the robust accuracy; for a board that attacks the whole
    test split it is the test accuracy). ``collapse`` is the record's (every metric, train and test). ``checks``
    are both attacks' checks, each name prefixed with its attack (``autoattack:bounds@0.01``, ``pgd:...``),
    each once; ``reliable`` is true exactly when all of them passed, and ``unreliable_reasons`` lists the
    failed ones. ``evaluation`` names the record's job and seed (what ``ncbench leaderboard verify`` reruns).
    Versions come from the provenance, ``date`` from ``created`` (UTC).
    """
    from ..record import upgrade_record

    if source not in SOURCES:
        raise InputError(f"source must be one of {SOURCES}; got {source!r}")
    record = upgrade_record(record)
    prov = _get(record, "provenance")
    dataset = _get(prov, "dataset.name")
    if dataset != board.dataset:
        raise InputError(f"the record is on dataset {dataset!r}; board {board.id} is on {board.dataset!r}")
    config_args = (prov.get("config") or {}).get("dataset_args")
    if config_args is not None:
        have = effective_dataset_args(dataset, config_args)
        want = effective_dataset_args(dataset, board.dataset_args)
        if have != want:
            raise InputError(f"the record's {dataset} split {have} is not board {board.id}'s {want}: its test "
                             "points differ")

    headline = _get(record, "robustness")
    _check_attack(board, _get(prov, "identity.attack"), "robustness (the headline attack)", board.headline_attack())
    rows = [r for r in _get(headline, "curve") if canonical_eps(r["eps"]) == board.eps]
    if not rows:
        raise InputError(f"robustness has no result at board {board.id}'s headline eps {board.eps_label} "
                         f"(it has {[eps_label(r['eps']) for r in headline['curve']]})")
    extra = record.get("extra_robustness") or []
    if not extra:
        raise InputError(f"the record has no extra_robustness; board {board.id} needs its PGD curve there")
    pgd = extra[0]
    extra_ids = _get(prov, "identity.extra_attacks")
    if len(extra) != 1 or len(extra_ids) != 1:
        raise InputError(f"the record has {len(extra)} extra attacks; board {board.id}'s protocol has one, its PGD "
                         "curve")
    _check_attack(board, extra_ids[0], "extra_robustness[0] (the curve)", board.curve_attack_args())
    grid = [canonical_eps(r["eps"]) for r in pgd["curve"]]
    if grid != list(board.curve_eps):
        raise InputError(f"the record's curve is at eps {[eps_label(e) for e in grid]}; board {board.id}'s grid is "
                         f"{list(board.curve_eps_labels)}")

    checks = _checks(headline, pgd)
    model = _get(prov, "model")
    entry = {
        "schema_version": SCHEMA_VERSION,
        "id": entry_id,
        "board": board.id,
        "name": name,
        "architecture": _get(model, "arch"),
        "architecture_args": _get(model, "args"),
        "num_parameters": _get(model, "num_parameters"),
        "weights_sha256": _get(model, "checksum"),
        "weights_file": None if weights_file is None else dict(weights_file),
        "evaluation": {"job_id": _get(prov, "job_id"), "seed": _get(prov, "seed")},
        "training": _training(prov),
        "clean_accuracy": _get(headline, "clean_accuracy"),
        "robust_accuracy": {"value": rows[0]["robust_accuracy"], "attack": headline["name"],
                            "label": _get(headline, "label"), "eps": board.eps, "eps_label": board.eps_label,
                            "n_points": headline["n_points"]},
        "pgd_curve": [{"eps": canonical_eps(r["eps"]), "eps_label": eps_label(r["eps"]),
                       "robust_accuracy": r["robust_accuracy"]} for r in pgd["curve"]],
        "collapse": {split: dict(_get(record, f"collapse.{split}")) for split in board.collapse_splits},
        "checks": checks,
        "reliable": all(c["passed"] for c in checks),
        "unreliable_reasons": [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]],
        "reported": None if reported is None else {"clean_accuracy": None, "robust_accuracy": None, **reported},
        "external": external,
        "source": source,
        "paper": paper,
        "ncbench_version": _get(prov, "ncbench_version"),
        "torch_version": _get(prov, "versions.torch"),
        "date": _date(_get(record, "created")),
    }
    entry = json.loads(json.dumps(entry))  # plain JSON types (tuples become lists); NaN kept for the check
    return validate_entry(entry, board=board)


def best_known(entry: dict) -> float:
    """The lowest robust accuracy known at the headline budget: ncbench's, or a stronger external attack's."""
    ext = entry.get("external")
    value = entry["robust_accuracy"]["value"]
    return min(value, ext["robust_accuracy"]) if ext else value


def entry_path(board_dir: str | os.PathLike, entry_id: str) -> Path:
    return Path(board_dir) / f"{entry_id}.json"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read entry {path}: {err}") from None


def load_entries(board_dir: str | os.PathLike, *, board: Board | None = None) -> list[dict]:
    """Every entry (``*.json``) of a board's folder, validated against the schema and the board, sorted by id.

    Raises InputError naming the file for an invalid entry or one whose id is not its file name.
    """
    board = board if board is not None else load_board(board_dir)
    out = []
    for path in sorted(Path(board_dir).glob("*.json")):
        entry = _read_json(path)
        try:
            validate_entry(entry, board=board)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None
        if entry["id"] != path.stem:
            raise InputError(f"{path}: id {entry['id']!r} is not the file's name; an entry lives in <id>.json")
        out.append(entry)
    return out


def write_entry(entry: dict, board_dir: str | os.PathLike, *, replace: bool = False,
                rebuild: bool = False) -> Path:
    """Validate ``entry`` against the schema and the board in ``board_dir``, then write ``<id>.json`` there.

    The file appears whole or not at all (a temporary file, then a link or rename). An existing id is never
    overwritten, except with ``replace=True`` and an existing entry of the same ``weights_sha256`` (the same
    model re-evaluated), or with ``rebuild=True`` over an entry that a sweep made (``source: sweep``;
    ``ncbench leaderboard build`` rebuilding its own entries, whose weights change from machine to machine);
    otherwise InputError says which case it is and what to do.
    """
    board = load_board(board_dir)
    validate_entry(entry, board=board)
    folder = Path(board_dir)
    path = entry_path(folder, entry["id"])
    data = dumps(entry)
    exists = f"entry {entry['id']!r} already exists in board {board.id} ({path})"
    if path.exists():
        existing = _read_json(path)
        if rebuild and existing.get("source") == "sweep" and entry["source"] == "sweep":
            return write_replace(path, data)
        if not replace:
            raise InputError(f"{exists}; choose another id, or pass --replace to re-evaluate the same weights")
        old = existing.get("weights_sha256")
        if old != entry["weights_sha256"]:
            raise InputError(f"{exists} with other weights (sha256 {str(old)[:12]}..., new "
                             f"{entry['weights_sha256'][:12]}...); --replace only replaces the same weights: choose "
                             "another id")
        return write_replace(path, data)
    try:
        return write_exclusive(path, data)  # fails instead of overwriting an entry written in the meantime
    except FileExistsError:
        raise InputError(f"{exists}; choose another id") from None
