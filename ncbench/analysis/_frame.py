"""Checking a results frame once, at the boundary, and averaging it onto a full grid of configurations.

Every statistic of :mod:`ncbench.analysis` works on a :class:`Grid`: one row per cell of the product of the
axes' values (rows that share every axis value, typically seeds when ``seed`` is not an axis, are averaged),
in C order of the axes' sorted values, so ``values.reshape(grid.shape)`` is the grid as an array.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._errors import InputError

#: Baselines beside the ``measures.*`` columns (docs/records.md, "the frame"): the measures every
#: generalization-measure study includes, and the accuracies a predictor must beat to be worth computing: training
#: accuracy, validation accuracy (held-out accuracy predicts test accuracy; val.ncc_accuracy is close to it) and
#: the accuracy on the adversarial training examples behind ``train_adv.*`` (robust training accuracy, what
#: ``train_adv.ncc_accuracy`` must beat to say more than it).
BASELINES = ("num_parameters", "final_train_loss", "sum_squared_weights", "train_margin_p10", "train_accuracy",
             "val_accuracy", "train_robust_accuracy")
#: Words that mark an axis as the capacity axis (the default groups of the grouped K-fold).
CAPACITY_WORDS = ("channels", "width", "depth")
#: Largest grid (product of the axes' numbers of values) that is checked cell by cell.
MAX_CELLS = 10_000_000


@dataclass(frozen=True)
class Grid:
    """A full grid of configurations: ``codes[r, a]`` indexes ``levels[a]``; ``values`` holds the averaged columns.

    Attributes
    ----------
    axes : tuple of str
        Axis column names, in the order given.
    levels : tuple of tuple
        The distinct values of each axis, sorted (numbers by value, then anything else by type and repr).
    codes : ndarray of int, shape (n_cells, n_axes)
        Each cell's index into ``levels``; rows are in C order, so cell r is ``np.unravel_index(r, shape)``.
    values : DataFrame, shape (n_cells, n_columns)
        The requested columns, averaged over the rows of each cell (float64).
    n_rows : ndarray of int, shape (n_cells,)
        How many frame rows were averaged into each cell.
    row_cells : ndarray of int, shape (n_frame_rows,)
        The cell of each frame row, in frame order (for statistics over runs, such as the sign-error).
    """

    axes: tuple[str, ...]
    levels: tuple[tuple, ...]
    codes: np.ndarray
    values: pd.DataFrame
    n_rows: np.ndarray
    row_cells: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(lv) for lv in self.levels)

    def array(self, column: str) -> np.ndarray:
        """The column as a float64 array of shape :attr:`shape`."""
        return self.values[column].to_numpy(np.float64).reshape(self.shape)

    def cell_label(self, r: int) -> str:
        return "(" + ", ".join(f"{a}={self.levels[i][self.codes[r, i]]!r}" for i, a in enumerate(self.axes)) + ")"


def check_frame(frame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame (ncbench.store.load_frame); got {type(frame).__name__}")
    if len(frame) == 0:
        raise InputError("the frame has no rows: no finished jobs to analyse")


def names_arg(value, what: str) -> list[str]:
    """A list of column names from a name or an iterable of names, duplicates dropped (first kept)."""
    if isinstance(value, str):
        value = [value]
    try:
        out = list(dict.fromkeys(value))
    except TypeError:
        raise InputError(f"{what} must be a column name or a list of column names; got {value!r}") from None
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise InputError(f"{what} must be column names (strings); got {bad[0]!r}")
    if not out:
        raise InputError(f"{what} is empty: name at least one column")
    return out


def check_columns(frame: pd.DataFrame, names, what: str = "column") -> None:
    """Refuse names that are not columns of ``frame``, listing the close matches."""
    columns = [str(c) for c in frame.columns]
    for name in names:
        if name in frame.columns:
            continue
        close = difflib.get_close_matches(name, columns, n=4, cutoff=0.6)
        if close:
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?"
        else:
            shown = ", ".join(columns[:25]) + (", ..." if len(columns) > 25 else "")
            hint = f"; no close match among the frame's columns ({shown})"
        raise InputError(f"unknown {what} {name!r}{hint}")


def row_names(frame: pd.DataFrame, mask, limit: int = 3) -> str:
    """The job_ids (or row labels) of the rows where ``mask`` is true, the first ``limit`` and a count."""
    rows = frame.loc[np.asarray(mask)]
    ids = [str(v) for v in rows["job_id"]] if "job_id" in frame.columns else [f"row {i!r}" for i in rows.index]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def numeric_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The column as finite float64 values; NaN, infinite, missing or non-numeric values are refused by job."""
    col = frame[name]
    if isinstance(col, pd.DataFrame):
        raise InputError(f"the frame has several columns named {name!r}; expected one")
    if not (pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)):
        as_num = pd.to_numeric(col, errors="coerce")
        bad = as_num.isna() & col.notna()
        if bad.any():
            first = col[bad].iloc[0]
            raise InputError(f"column {name!r} must hold numbers; got {first!r} in {row_names(frame, bad)}")
        col = as_num
    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"column {name!r} has {int(bad.sum())} missing, NaN or infinite value(s) "
                         f"(jobs: {row_names(frame, bad)}); re-run or drop those jobs, or leave the column out")
    return values


def is_complete(frame: pd.DataFrame, name: str) -> bool:
    """True when the column exists and holds a finite number in every row."""
    if name not in frame.columns:
        return False
    try:
        numeric_column(frame, name)
    except InputError:
        return False
    return True


def has_values(frame: pd.DataFrame, name: str) -> bool:
    """True when the column is numeric (or numbers stored as objects) and holds at least one finite value."""
    col = pd.to_numeric(frame[name], errors="coerce")
    return bool(np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan)).any())


def _sort_key(value):
    if isinstance(value, (bool, np.bool_)):
        return (1, "bool", repr(bool(value)))
    if isinstance(value, (int, float, np.integer, np.floating)) and not math.isnan(float(value)):
        return (0, float(value), "")
    return (1, type(value).__name__, repr(value))


def _levels(frame: pd.DataFrame, axis: str) -> tuple[np.ndarray, tuple]:
    values = frame[axis]
    if values.map(lambda v: isinstance(v, list)).any():  # e.g. a list-valued model argument: lists -> tuples
        values = values.map(lambda v: tuple(v) if isinstance(v, list) else v)
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError:
        raise InputError(f"axis {axis!r} holds values that are not hashable (e.g. dicts); "
                         "axes must hold numbers, strings or lists") from None
    uniques = list(uniques)
    order = sorted(range(len(uniques)), key=lambda i: _sort_key(uniques[i]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], tuple(uniques[i] for i in order)


def build_grid(frame: pd.DataFrame, axes, columns, *, min_levels: int = 2) -> Grid:
    """Check ``frame`` and average ``columns`` onto the full grid of ``axes``.

    Parameters
    ----------
    frame : DataFrame
        One row per job (docs/records.md, "the frame").
    axes : list of str
        Grid axis columns. Rows sharing every axis value are averaged (seeds, when ``seed`` is not an axis).
    columns : list of str
        Numeric columns to average; every value must be finite (the message names the jobs otherwise).
    min_levels : int
        Each axis must take at least this many values (an axis with one value is no axis).

    Raises
    ------
    InputError
        Unknown columns, non-finite values, an axis with too few values, or cells of the grid with no row
        (the message names them).
    """
    check_frame(frame)
    axes = names_arg(axes, "axes")
    columns = list(dict.fromkeys(columns))
    check_columns(frame, axes, "axis")
    check_columns(frame, columns)
    overlap = [c for c in columns if c in axes]
    if overlap:
        raise InputError(f"{overlap[0]!r} is both an axis and a measure or target; a grid axis cannot be ranked")
    data = {c: numeric_column(frame, c) for c in columns}
    codes, levels = [], []
    for axis in axes:
        c, lv = _levels(frame, axis)
        if len(lv) < min_levels:
            raise InputError(f"axis {axis!r} takes {len(lv)} value(s) {list(lv)!r} in the frame; a grid axis needs "
                             f"at least {min_levels}: leave it out of the axes")
        codes.append(c)
        levels.append(lv)
    shape = tuple(len(lv) for lv in levels)
    n_cells = math.prod(shape)
    if n_cells > MAX_CELLS:
        raise InputError(f"axes {axes} span {n_cells} cells ({' x '.join(map(str, shape))}); that is not a grid of "
                         "finished jobs: check that no metric or free-form column was passed as an axis")
    flat = np.ravel_multi_index(tuple(codes), shape)
    n_rows = np.bincount(flat, minlength=n_cells)
    missing = np.flatnonzero(n_rows == 0)
    all_codes = np.stack(np.unravel_index(np.arange(n_cells), shape), axis=1)
    grid = Grid(tuple(axes), tuple(levels), all_codes, pd.DataFrame(index=range(n_cells)), n_rows)
    if missing.size:
        shown = ", ".join(grid.cell_label(r) for r in missing[:5])
        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
        raise InputError(f"incomplete grid over axes {list(axes)}: {missing.size} of {n_cells} cells have no finished "
                         f"job: {shown}{more}; finish those jobs, or pass axes (or rows) that form a full grid")
    means = {}
    for c, v in data.items():
        means[c] = np.bincount(flat, weights=v, minlength=n_cells) / n_rows
    return Grid(tuple(axes), tuple(levels), all_codes, pd.DataFrame(means, index=range(n_cells)), n_rows, flat)


def resolve_axes(frame: pd.DataFrame, axes) -> list[str]:
    """``axes`` as given, else ``frame.attrs["axes"]`` (set by the store to the sweep's axes), else refuse."""
    if axes is None:
        axes = frame.attrs.get("axes")
        if not axes:
            raise InputError("no grid axes: the frame does not say its sweep's axes (frame.attrs['axes']); pass "
                             "axes=[...] (on the command line, --axes)")
    return names_arg(axes, "axes")


CONDITIONAL_PREFIX = "conditional_"


def is_robustness_target(name: str) -> bool:
    """An accuracy under attack at a budget: ``robust_accuracy@*``, ``<attack>_<norm>_accuracy@*`` and their
    ``conditional_*`` versions."""
    return "_accuracy@" in name


def is_conditional(name: str) -> bool:
    """Robust over clean accuracy on the attacked points: ``conditional_robust_accuracy@*``,
    ``conditional_<attack>_<norm>_accuracy@*``."""
    return name.startswith(CONDITIONAL_PREFIX) and "_accuracy@" in name


def attack_prefix(name: str) -> str:
    """The attack's prefix of a robustness column, which names its point count and clean accuracy
    (``<prefix>_n_points``, ``<prefix>_clean_accuracy``): ``robust`` for the main attack, else
    ``<attack>_<norm>``."""
    return name.removeprefix(CONDITIONAL_PREFIX).partition("_accuracy@")[0]


def default_targets(frame: pd.DataFrame) -> list[str]:
    """``test_accuracy``, ``generalization_gap``, each ``robust_accuracy@*``, each other attack's
    ``*_accuracy@*``, each ``conditional_robust_accuracy@*`` (robust / clean on the attacked points),
    ``fab_margin``: those the frame has with at least one value, in that order."""
    cols = [str(c) for c in frame.columns]
    robust = [c for c in cols if c.startswith("robust_accuracy@")]
    conditional = [c for c in cols if is_conditional(c)]
    extra = [c for c in cols if "_accuracy@" in c and c not in robust and c not in conditional]
    out = [c for c in ("test_accuracy", "generalization_gap") if c in cols] + robust + extra + conditional
    out += [c for c in ("fab_margin",) if c in cols]
    return [c for c in out if has_values(frame, c)]


@dataclass(frozen=True)
class Family:
    """A family of predictors: the columns it holds (by prefix or exact name) and whether it is ranked."""

    name: str
    prefixes: tuple[str, ...]
    names: tuple[str, ...]
    ranked: bool
    title: str

    def holds(self, column: str) -> bool:
        return column in self.names or column.startswith(self.prefixes)


#: Predictor families, in the order boards show them. ``ranked``: a predictor of test performance that reads
#: no test label; the test-label family is descriptive (its metrics use the labels of the very points whose
#: accuracy is the target) and is shown in a table of its own.
FAMILIES = (
    Family("train", ("train.",), (), True, "collapse on the training set"),
    Family("val", ("val.",), (), True, "held-out collapse, labelled (the validation split)"),
    Family("label-free", ("val_pred.", "test_pred."), (), True,
           "held-out collapse, label-free (grouped by the predicted class)"),
    Family("under-attack", ("train_adv.",), (), True, "collapse under attack (training points)"),
    Family("estimators", ("estimators.",), (), True, "label-free accuracy estimators"),
    Family("measures", ("measures.",), BASELINES, True,
           "generalization measures and the training, validation and robust training accuracies (the baselines)"),
    Family("test-labels", ("test.", "test_adv."), (), False, "reads the test labels (descriptive, not ranked)"),
)
OTHER = "other"
#: Families of collapse metrics that read no test label; the held-out ones among them; the baselines.
COLLAPSE_FAMILIES = ("train", "val", "label-free", "under-attack")
HELD_OUT_FAMILIES = ("val", "label-free")
BASELINE_FAMILY = "measures"
#: Columns under a family prefix that are not predictors (a fitted threshold, not an estimate).
NOT_PREDICTORS = ("estimators.atc_threshold",)


def family_of(name: str) -> str:
    """The family of a predictor column, by prefix (:data:`FAMILIES`); "other" for any other column."""
    for fam in FAMILIES:
        if fam.holds(name):
            return fam.name
    return OTHER


def reads_test_labels(name: str) -> bool:
    """True for ``test.*`` and ``test_adv.*``: computed with the labels of the test points."""
    return family_of(name) == "test-labels"


def is_collapse_column(name: str) -> bool:
    """A collapse metric of any split (train, val, label-free, under attack, or the test-label ones)."""
    return family_of(name) in (*COLLAPSE_FAMILIES, "test-labels")


def _family_columns(frame: pd.DataFrame, axes) -> list[str]:
    cols = [str(c) for c in frame.columns]
    out = [c for c in cols if family_of(c) != OTHER and c not in axes and c not in BASELINES
           and c not in NOT_PREDICTORS and not (c.endswith("_classifier") and not c.startswith("train."))]
    return out + [c for c in BASELINES if c in cols and c not in axes]


def default_predictors(frame: pd.DataFrame, axes) -> list[str]:
    """Every column of a predictor family (:data:`FAMILIES`: ``train.*``, ``val.*``, ``val_pred.*``,
    ``test_pred.*``, ``train_adv.*``, ``test.*``, ``test_adv.*``, ``measures.*``, ``estimators.*``; axes
    excluded: ``train.weight_decay`` is a recipe setting) in frame order, then the baselines of
    :data:`BASELINES`; those with a finite number in every row (see :func:`incomplete_predictors`).

    The classifier-only metrics (``nc2_*_classifier``) depend on W alone, so every other split repeats
    ``train.``'s value: only the ``train.`` one is a predictor."""
    return [c for c in _family_columns(frame, axes) if is_complete(frame, c)]


def incomplete_predictors(frame: pd.DataFrame, axes) -> list[tuple[str, int, str]]:
    """Family columns with some values but not all: ``(column, number of rows without a value, jobs)``.

    :func:`default_predictors` leaves them out (an old frame's jobs lack the new columns); naming one
    explicitly as a predictor refuses it, naming the jobs."""
    out = []
    for c in _family_columns(frame, axes):
        if has_values(frame, c) and not is_complete(frame, c):
            values = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isfinite(values)
            out.append((c, int(bad.sum()), row_names(frame, bad)))
    return out


def capacity_axis(axes) -> str:
    """The first axis whose name contains "channels", "width" or "depth"; else the first axis."""
    for a in axes:
        if any(w in a for w in CAPACITY_WORDS):
            return a
    return axes[0]


#: collapse keys where higher means more collapsed / better (every other collapse key: lower is more collapsed)
_HIGHER_IS_COLLAPSED = ("ncc_accuracy",)
#: measures whose larger value predicts better generalization (every other measure is a complexity)
_HIGHER_IS_BETTER_MEASURES = ("train_margin_p10", "train_accuracy", "val_accuracy", "train_robust_accuracy")


def a_priori_sign(predictor: str, target: str) -> int:
    """The sign of the association each predictor's hypothesis states, fixed before looking at the data (as
    Dziugaite et al. orient every measure): +1 when a larger value should go with a larger target, -1 the
    reverse, 0 when none is stated.

    More collapse goes with better accuracy (collapse metrics: lower is more collapsed, ``ncc_accuracy``
    higher); a larger complexity measure with worse generalization (``measures.*``, the parameter count, the sum
    of squared weights, the final training loss; the margin and the baseline accuracies the other way); an
    estimator of accuracy with higher accuracy. For the generalization gap, where larger is worse, every sign flips,
    except training accuracy's, which is part of the gap (train - test): no direction is stated for it.
    """
    name = predictor.rsplit(".", 1)[-1]
    if is_collapse_column(predictor) or predictor.startswith(("val.", "val_pred.", "test_pred.", "train_adv.",
                                                               "test_adv.")):
        sign = 1 if name in _HIGHER_IS_COLLAPSED else -1
    elif predictor.startswith("estimators."):
        sign = 1
    elif predictor == "train_accuracy" and target == "generalization_gap":
        return 0  # part of the target (train - test): no hypothesis, its tau orients it
    elif predictor.startswith("measures.") or predictor in BASELINES:
        sign = 1 if name in _HIGHER_IS_BETTER_MEASURES else -1
    else:
        return 0
    return -sign if target == "generalization_gap" else sign

