"""Boards: a dataset, a threat model and a protocol, fixed in ``leaderboards/<dataset>/<norm>/board.yaml``.

A board file holds every number of the protocol (the code holds none): the headline budget, the attack and
its batch size, how many test points and which, the PGD curve's grid and settings, how collapse is measured,
and the command that regenerates the board. :func:`load_board` reads and checks one, refusing unknown keys.

>>> board = load_board("mnist1d/Linf")  # doctest: +SKIP
>>> board.eps, board.eps_label, board.n_points  # doctest: +SKIP
(0.01, '0.01', 500)
"""

from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .._budget import canonical_eps, eps_label
from .._errors import InputError, UnknownNameError
from ..data import LOCATION_ARGS
from ..train import PRECISIONS

BOARD_FILE = "board.yaml"
NORMS = ("Linf", "L2")
ATTACKS = {"autoattack": ("standard",)}  # the headline attack and the versions a board may name
CURVE_ATTACKS = ("pgd",)
POINT_ORDERS = ("first",)
COLLAPSE_SPLITS = ("train", "test")
GLOBAL_MEANS = ("classes",)  # what ncbench evaluate measures with; "samples" would need its own jobs
#: Loader arguments that say where files live, not which data: never part of a board.

_TOP = {"title": True, "dataset": True, "dataset_args": False, "norm": True, "eps": True, "attack": True,
        "precision": True,
        "n_points": True, "point_order": True, "curve": True, "collapse": True, "regenerate": True,
        "notes": False}  # key: required
_ATTACK = {"name": True, "version": True, "batch_size": True}
_CURVE = {"attack": True, "eps": True, "steps": True, "alpha_factor": True, "random_start": True, "restarts": True}
_COLLAPSE = {"splits": True, "global_mean": True}


@dataclass(frozen=True)
class Board:
    """One leaderboard's protocol, as read from its ``board.yaml`` (see the module docstring).

    Attributes
    ----------
    id : ``"<dataset>/<norm>"``, e.g. ``"mnist1d/Linf"``; the board's folder is ``<leaderboards>/<id>``.
    path : the board's folder.
    title : a human name, e.g. ``"MNIST-1D"``.
    dataset, dataset_args : the registered dataset and its loader arguments (read-only mapping). They fix the
        test split; training-set options (``n_train``, ``label_noise``, ...) belong to entries, not boards.
    norm : ``"Linf"`` or ``"L2"``; eps : the headline budget, canonical (:func:`ncbench._budget.canonical_eps`),
        in the [0, 1] input scale.
    attack, attack_version, attack_batch_size : the headline attack (AutoAttack ``"standard"``) and its batch
        size (AutoAttack's components seed each batch, so the batch size is part of the protocol).
    precision : the forward precision of both attacks (``"fp32"``; ``"bf16"`` is a different computation).
    n_points, point_order : the attacked points: ``"first"`` means the first ``n_points`` points of the
        dataset's fixed test split, in the split's stored order (clean and robust accuracy both use them).
    curve_attack, curve_eps, curve_steps, curve_alpha_factor, curve_random_start, curve_restarts : the
        robustness curve (PGD) over an ascending grid of canonical budgets, on the same points.
    collapse_splits, global_mean : collapse is measured on these splits (``("train", "test")``), centring
        with the mean of the class means (``"classes"``, the only centring evaluate records today).
    regenerate : the shell command that rebuilds this board's entries and tables.
    notes : free text shown under the protocol in the README ("" for none).
    """

    id: str
    path: Path
    title: str
    dataset: str
    dataset_args: Mapping[str, Any]
    norm: str
    eps: float
    attack: str
    attack_version: str
    attack_batch_size: int
    precision: str
    n_points: int
    point_order: str
    curve_attack: str
    curve_eps: tuple[float, ...]
    curve_steps: int
    curve_alpha_factor: float
    curve_random_start: bool
    curve_restarts: int
    collapse_splits: tuple[str, ...]
    global_mean: str
    regenerate: str
    notes: str = ""

    @property
    def eps_label(self) -> str:
        """The headline budget as people write it (``"0.01"``, ``"8/255"``)."""
        return eps_label(self.eps)

    @property
    def curve_eps_labels(self) -> tuple[str, ...]:
        return tuple(eps_label(e) for e in self.curve_eps)

    def headline_attack(self) -> dict:
        """Keyword arguments of :class:`ncbench.attacks.AttackConfig` for the headline attack."""
        return {"name": self.attack, "norm": self.norm, "eps": (self.eps,), "n_points": self.n_points,
                "batch_size": self.attack_batch_size, "precision": self.precision}

    def curve_attack_args(self) -> dict:
        """Keyword arguments of :class:`ncbench.attacks.AttackConfig` for the robustness curve."""
        return {"name": self.curve_attack, "norm": self.norm, "eps": self.curve_eps, "steps": self.curve_steps,
                "alpha_factor": self.curve_alpha_factor, "random_start": self.curve_random_start,
                "restarts": self.curve_restarts, "n_points": self.n_points, "precision": self.precision}


def _where(path: Path, key: str) -> str:
    return f"{path}: {key}"


def _mapping(value, path: Path, key: str, spec: dict[str, bool]) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{_where(path, key)} must be a mapping with keys {sorted(spec)}; got {value!r}")
    unknown = sorted(set(value) - set(spec))
    if unknown:
        raise InputError(f"{_where(path, key)}: unknown key(s) {unknown} (known: {sorted(spec)})")
    missing = sorted(k for k, req in spec.items() if req and k not in value)
    if missing:
        raise InputError(f"{_where(path, key)}: missing key(s) {missing}")
    return value


def _int(value, path: Path, key: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{_where(path, key)} must be an integer >= {minimum}; got {value!r}")
    return value


def _str(value, path: Path, key: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{_where(path, key)} must be a non-empty string; got {value!r}")
    if choices is not None and value not in choices:
        raise InputError(f"{_where(path, key)} must be one of {list(choices)}; got {value!r}")
    return value


def _eps(value, path: Path, key: str, norm: str) -> float:
    try:
        e = canonical_eps(value)
    except InputError as err:
        raise InputError(f"{_where(path, key)}: {err}") from None
    if norm == "Linf" and e > 1:
        raise InputError(f"{_where(path, key)}: a Linf budget must be in [0, 1] (inputs are scaled to [0, 1]); "
                         f"got {value!r}")
    return e


def loader_arguments(dataset: str) -> dict[str, Any]:
    """The registered loader's arguments with their defaults, without those that only say where files live.

    Raises :class:`~ncbench._errors.UnknownNameError` (listing the datasets) for an unknown name.
    """
    from ..data import DATASETS  # torch comes with it: only when a board is checked

    params = inspect.signature(DATASETS.get(dataset)).parameters
    return {k: p.default for k, p in params.items()
            if k not in LOCATION_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def effective_dataset_args(dataset: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` restricted to the loader's own arguments, with the loader's defaults filled in: two spellings
    of one test split (an argument given or left at its default) compare equal."""
    known = loader_arguments(dataset)
    return {**known, **{k: v for k, v in args.items() if k in known}}


def _board_from_dict(raw, path: Path) -> Board:
    """Check the YAML content of ``path/board.yaml`` and build the :class:`Board` (``path`` is the folder)."""
    file = path / BOARD_FILE
    raw = _mapping(raw, file, "(top level)", _TOP)
    title = _str(raw["title"], file, "title")
    dataset = _str(raw["dataset"], file, "dataset")
    norm = _str(raw["norm"], file, "norm", NORMS)
    args = raw.get("dataset_args") or {}
    if not isinstance(args, dict):
        raise InputError(f"{file}: dataset_args must be a mapping; got {args!r}")
    try:
        known = loader_arguments(dataset)
    except UnknownNameError as err:
        raise InputError(f"{file}: {err}") from None
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise InputError(f"{file}: dataset_args {unknown} are not arguments of dataset {dataset!r}'s loader "
                         f"(its arguments: {sorted(known)}; where files live and training-set options such as "
                         "n_train do not belong in a board)")
    where = path.resolve()
    if where.name != norm or where.parent.name != dataset:
        raise InputError(f"{file} declares {dataset}/{norm} but lies in {where.parent.name}/{where.name}: a board "
                         "lives in <leaderboards>/<dataset>/<norm>/")
    eps = _eps(raw["eps"], file, "eps", norm)
    if eps <= 0:
        raise InputError(f"{file}: the headline eps must be > 0; got {raw['eps']!r}")
    attack = _mapping(raw["attack"], file, "attack", _ATTACK)
    name = _str(attack["name"], file, "attack.name", tuple(ATTACKS))
    version = _str(attack["version"], file, "attack.version", ATTACKS[name])
    curve = _mapping(raw["curve"], file, "curve", _CURVE)
    grid = curve["eps"]
    if not isinstance(grid, list) or not grid:
        raise InputError(f"{file}: curve.eps must be a non-empty list of budgets; got {grid!r}")
    grid = tuple(_eps(e, file, f"curve.eps[{i}]", norm) for i, e in enumerate(grid))
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise InputError(f"{file}: curve.eps must be strictly ascending; got {list(curve['eps'])}")
    alpha = curve["alpha_factor"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise InputError(f"{file}: curve.alpha_factor must be a number > 0; got {alpha!r}")
    if not isinstance(curve["random_start"], bool):
        raise InputError(f"{file}: curve.random_start must be true or false; got {curve['random_start']!r}")
    collapse = _mapping(raw["collapse"], file, "collapse", _COLLAPSE)
    if collapse["splits"] != list(COLLAPSE_SPLITS):
        raise InputError(f"{file}: collapse.splits must be {list(COLLAPSE_SPLITS)} (the table shows both); "
                         f"got {collapse['splits']!r}")
    notes = raw.get("notes") or ""
    if not isinstance(notes, str):
        raise InputError(f"{file}: notes must be a string; got {notes!r}")
    return Board(
        id=f"{dataset}/{norm}", path=path, title=title, dataset=dataset,
        dataset_args=MappingProxyType(dict(args)), norm=norm, eps=eps,
        attack=name, attack_version=version, attack_batch_size=_int(attack["batch_size"], file, "attack.batch_size"),
        precision=_str(raw["precision"], file, "precision", PRECISIONS),
        n_points=_int(raw["n_points"], file, "n_points"),
        point_order=_str(raw["point_order"], file, "point_order", POINT_ORDERS),
        curve_attack=_str(curve["attack"], file, "curve.attack", CURVE_ATTACKS), curve_eps=grid,
        curve_steps=_int(curve["steps"], file, "curve.steps"), curve_alpha_factor=float(alpha),
        curve_random_start=curve["random_start"], curve_restarts=_int(curve["restarts"], file, "curve.restarts"),
        collapse_splits=tuple(collapse["splits"]),
        global_mean=_str(collapse["global_mean"], file, "collapse.global_mean", GLOBAL_MEANS),
        regenerate=_str(raw["regenerate"], file, "regenerate"), notes=notes.strip(),
    )


def list_boards(leaderboards_dir: str | os.PathLike = "leaderboards") -> list[str]:
    """Ids (``"dataset/norm"``) of the boards under ``leaderboards_dir``: every ``*/*/board.yaml``, sorted."""
    root = Path(leaderboards_dir)
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob(f"*/*/{BOARD_FILE}"))


def load_board(board: str | os.PathLike, leaderboards_dir: str | os.PathLike = "leaderboards") -> Board:
    """Read and check one board.

    Parameters
    ----------
    board : a board id ``"dataset/norm"`` (looked up under ``leaderboards_dir``), or the path of a board's
        folder or of its ``board.yaml``.
    leaderboards_dir : the folder that holds the boards (default ``./leaderboards``).

    Raises
    ------
    UnknownNameError : no such board (the message lists the known ones and the close matches).
    InputError : the file is not a valid board (unknown or missing keys, bad values; the message names the key).
    """
    import yaml

    given = Path(board)
    if given.name == BOARD_FILE and given.is_file():
        folder = given.parent
    elif (given / BOARD_FILE).is_file():
        folder = given
    else:
        folder = Path(leaderboards_dir) / str(board)
        if not (folder / BOARD_FILE).is_file():
            known = list_boards(leaderboards_dir)
            close = difflib.get_close_matches(str(board), known, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(f"unknown board {str(board)!r}{hint} (boards under {leaderboards_dir}: "
                                   f"{', '.join(known) or 'none'})")
    file = folder / BOARD_FILE
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{file} is not valid YAML: {err}") from None
    return _board_from_dict(raw, folder)
