"""Is a target worth ranking? Its sampling noise (binomial, at the number of points behind it), its spread over
configurations, and for the generalization gap whether training accuracy varies at all.

Old frames lack the point counts (``n_test``, ``robust_n_points``, ``n_train``): the counts then come from the
dataset's default split, and a warning says so (docs/statistics.md, "Targets inside their noise").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._frame import Grid, attack_prefix, is_complete, is_conditional, is_robustness_target, numeric_column
from ._stats import NOISE_RATIO, binomial_se, varies_above_noise

#: Test-set sizes of each dataset's default split (ncbench.data), used when the frame has no ``n_test``.
DEFAULT_TEST_POINTS = {"mnist1d": 1000, "digits": 450, "gaussian": 1000, "mnist": 10000, "fashion_mnist": 10000,
                       "kmnist": 10000, "cifar10": 10000, "cifar100": 10000, "svhn": 26032, "stl10": 8000}
#: Training-set sizes of each dataset's default split, used when the frame has no ``n_train``.
DEFAULT_TRAIN_POINTS = {"mnist1d": 4000, "digits": 1347, "gaussian": 2000, "mnist": 60000, "fashion_mnist": 60000,
                        "kmnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "stl10": 5000}
#: The generalization gap is ranked only when training accuracy's spread is at least this share of test
#: accuracy's (below it, train accuracy adds at most 1/16 of the gap's variance and the gap's ranking is
#: test accuracy's, reversed), besides varying above its own binomial noise.
GAP_TRAIN_SHARE = 0.25


@dataclass
class TargetCheck:
    """What the checks found for one target.

    ``ok`` is False when the target cannot be ranked (``reasons`` say why); ``notes`` hold fallbacks (where a
    point count came from). ``n_points`` is the mean number of points behind one run's value (NaN: no noise
    model), ``noise_se`` the RMS binomial standard error of a configuration mean, ``spread`` the standard
    deviation of the configuration means, ``snr`` = spread / noise_se.
    """

    target: str
    n_points: float = float("nan")
    points_source: str = ""
    noise_se: float = float("nan")
    spread: float = float("nan")
    snr: float = float("nan")
    ok: bool = True
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _dataset_points(frame: pd.DataFrame, table: dict, what: str) -> tuple[np.ndarray | None, str]:
    if "dataset" not in frame.columns:
        return None, ""
    names = frame["dataset"].astype(str)
    unknown = sorted(set(names) - set(table))
    if unknown:
        return None, ""
    sizes = {d: table[d] for d in sorted(set(names))}
    shown = ", ".join(f"{d}: {n}" for d, n in sizes.items())
    return names.map(table).to_numpy(np.float64), f"{what} of each dataset's default split ({shown})"


def points(frame: pd.DataFrame, kind: str) -> tuple[np.ndarray | None, str, str]:
    """Points behind each row's value: ``(array (n_rows,) or None, source, warning or "")``.

    ``kind``: "test" (``n_test``), "robust" (``robust_n_points``, else the test set), "train" (``n_train``,
    else the ``dataset_args.n_train`` axis), "val" (``n_val``). Without the column, each dataset's default
    split size, and a warning that says so.
    """
    column = {"test": "n_test", "robust": "robust_n_points", "train": "n_train", "val": "n_val"}[kind]
    if is_complete(frame, column):
        return numeric_column(frame, column), column, ""
    if kind == "robust":
        n, source, warn = points(frame, "test")
        if n is None:
            return None, "", ""
        return n, source, (f"the frame has no {column} column: robustness targets are taken to rest on every test "
                           f"point ({source})")
    if kind == "train" and is_complete(frame, "dataset_args.n_train"):
        return numeric_column(frame, "dataset_args.n_train"), "dataset_args.n_train", ""
    if kind == "val":
        return None, "", ""
    table = DEFAULT_TEST_POINTS if kind == "test" else DEFAULT_TRAIN_POINTS
    n, source = _dataset_points(frame, table, f"the {kind} set size")
    if n is None:
        return None, "", ""
    return n, source, (f"the frame has no {column} column: took {source}; a sweep that changed the split "
                       "(num_samples, train_split, test_fraction) makes this wrong: re-export the frame")


def _cell_mean(values: np.ndarray, grid: Grid) -> np.ndarray:
    return np.bincount(grid.row_cells, weights=values, minlength=len(grid.n_rows)) / grid.n_rows


def target_points(frame: pd.DataFrame, target: str) -> tuple[np.ndarray | None, str, str]:
    """Points behind each row's value of ``target``, as :func:`points`; None where no binomial model applies.

    Conditional robust accuracy rests on the attacked points the model classified correctly:
    ``robust_n_points x attack_clean_accuracy`` (``test_accuracy`` standing in for the latter when absent).
    """
    if target in ("test_accuracy", "generalization_gap"):
        return points(frame, "test")
    if target == "train_accuracy":
        return points(frame, "train")
    if target == "val_accuracy":
        return points(frame, "val")
    if is_robustness_target(target):
        prefix = attack_prefix(target)
        own = f"{prefix}_n_points"  # each attack's own point count (the main attack's: robust_n_points)
        if is_complete(frame, own):
            n, source, warn = numeric_column(frame, own), own, ""
        else:
            n, source, warn = points(frame, "robust")
        if n is None:
            return None, "", ""
        if not is_conditional(target):
            return n, source, warn
        clean = next((c for c in (f"{prefix}_clean_accuracy", "attack_clean_accuracy", "test_accuracy")
                      if is_complete(frame, c)), None)
        if clean is None:
            return None, "", ""
        return n * numeric_column(frame, clean), f"{source} x {clean}", warn
    return None, "", ""


def check_target(frame: pd.DataFrame, grid: Grid, target: str) -> TargetCheck:
    """Noise, spread and (for the generalization gap) the training-accuracy rule for one target of ``grid``.

    A target is not ranked when the standard deviation of its configuration means is below
    :data:`NOISE_RATIO` times its binomial standard error (then sampling noise is over a quarter of its
    variance across configurations). The generalization gap is also not ranked unless training accuracy
    varies above its own binomial noise at n_train *and* by at least :data:`GAP_TRAIN_SHARE` of test
    accuracy's spread. A target without a binomial model (``fab_margin``, a custom column) is not checked.
    """
    out = TargetCheck(target)
    y = grid.values[target].to_numpy(np.float64)
    n, source, warn = target_points(frame, target)
    if warn:
        out.notes.append(warn)
    if target == "generalization_gap":
        p_test = (grid.values["test_accuracy"].to_numpy(np.float64) if "test_accuracy" in grid.values.columns
                  else 1.0 - y)
        _gap_rule(frame, grid, out)
    else:
        p_test = y
    if n is None or np.any(p_test < 0) or np.any(p_test > 1):
        out.notes.append(f"{target}: no binomial noise model (not an accuracy, or its point count is unknown): "
                         "its spread is not checked against sampling noise")
        out.spread = float(np.std(y, ddof=1)) if len(y) > 1 else 0.0
        return out
    n_cell = _cell_mean(n, grid)
    out.n_points, out.points_source = float(np.mean(n_cell)), source
    out.noise_se = binomial_se(p_test, n_cell, grid.n_rows)
    ok, out.spread, out.snr = varies_above_noise(y, out.noise_se)
    if not ok:
        out.ok = False
        out.reasons.append(f"{target} sits inside its sampling noise: the standard deviation of its configuration "
                           f"means, {out.spread:.4f}, is {out.snr:.2f} times the binomial standard error of one "
                           f"({out.noise_se:.4f} at {out.n_points:.0f} points and {_runs(grid)}), below "
                           f"{NOISE_RATIO:g}")
    return out


def _runs(grid: Grid) -> str:
    lo, hi = int(grid.n_rows.min()), int(grid.n_rows.max())
    return f"{lo} run(s) per configuration" if lo == hi else f"{lo} to {hi} runs per configuration"


def _gap_rule(frame: pd.DataFrame, grid: Grid, out: TargetCheck) -> None:
    if "train_accuracy" not in grid.values.columns or "test_accuracy" not in grid.values.columns:
        out.ok = False
        out.reasons.append("generalization_gap: the frame lacks train_accuracy or test_accuracy, so whether "
                           "training accuracy varies cannot be checked; not ranked")
        return
    train = grid.values["train_accuracy"].to_numpy(np.float64)
    test_sd = float(np.std(grid.values["test_accuracy"].to_numpy(np.float64), ddof=1))
    n, source, warn = points(frame, "train")
    if warn:
        out.notes.append(warn)
    train_sd = float(np.std(train, ddof=1))
    if n is None:
        se, above = float("nan"), train_sd > 0
        noise = "its binomial noise unknown (no n_train)"
    else:
        se = binomial_se(train, _cell_mean(n, grid), grid.n_rows)
        above = varies_above_noise(train, se)[0]
        noise = f"{NOISE_RATIO:g} x its binomial standard error {se:.5f} at n_train ({source})"
    share = train_sd / test_sd if test_sd > 0 else float("inf")
    if not above or share < GAP_TRAIN_SHARE:
        out.ok = False
        out.reasons.append(
            f"generalization_gap is not ranked: training accuracy varies too little (standard deviation "
            f"{train_sd:.5f} over configurations, range {train.min():.4f} to {train.max():.4f}; needed: above "
            f"{noise} and at least {GAP_TRAIN_SHARE:g} x test accuracy's {test_sd:.4f}, got {share:.3f} x), so the "
            "gap orders the configurations as test accuracy does, reversed")
