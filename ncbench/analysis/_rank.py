"""Rank correlations: Kendall's tau, Jiang et al.'s granulated Kendall (psi) and their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import scipy.stats

from .._errors import InputError
from ._frame import build_grid, check_columns, check_frame, names_arg, numeric_column

#: Sign matrices of one bootstrap chunk hold at most this many float32 entries (predictors + targets) x c x n^2.
_CHUNK_ENTRIES = 1 << 23


def _require_varies(values: np.ndarray, name: str, role: str, where: str) -> None:
    if np.ptp(values) == 0:
        raise InputError(f"{role} {name!r} is constant ({float(values[0]):g}) over {where}: a rank correlation "
                         "with it is undefined; choose a column that varies")


def kendall(frame, measure: str, target: str) -> float:
    """Kendall's tau-b between ``frame[measure]`` and ``frame[target]`` over the rows (scipy.stats.kendalltau).

    Every row counts as one model; to rank configurations rather than runs, average the seeds first
    (:func:`regress` does). Ties are handled as tau-b: ``(n_c - n_d) / sqrt((n_0 - n_x)(n_0 - n_y))``.

    Returns
    -------
    float
        In [-1, 1]; positive when larger measure goes with larger target.

    Raises
    ------
    InputError
        An unknown column, a missing or NaN value (the jobs are named), fewer than 2 rows, or a constant column.

    Examples
    --------
    >>> import pandas as pd
    >>> round(kendall(pd.DataFrame({"m": [1, 2, 3], "acc": [0.5, 0.7, 0.6]}), "m", "acc"), 3)
    0.333
    """
    check_frame(frame)
    measure, target = names_arg(measure, "measure")[0], names_arg(target, "target")[0]
    check_columns(frame, [measure, target])
    x, y = numeric_column(frame, measure), numeric_column(frame, target)
    if len(x) < 2:
        raise InputError(f"Kendall's tau needs at least 2 rows; the frame has {len(x)}")
    _require_varies(y, target, "target", f"the {len(y)} rows")
    _require_varies(x, measure, "measure", f"the {len(x)} rows")
    return float(scipy.stats.kendalltau(x, y).statistic)


def psi_per_axis(m: np.ndarray, g: np.ndarray) -> np.ndarray:
    """psi_i for every axis of two grids of equal shape (n_1, ..., n_k): shape (k,).

    psi_i is the mean over the cells of the other axes of the Kendall coefficient along axis i, in Jiang et
    al.'s form (ICLR 2020, eq. 1): the mean over ordered pairs a != b of sign(m_a - m_b) sign(g_a - g_b). A
    tie counts 0, so a measure that is constant along an axis scores 0 there (as parameter count does along a
    weight-decay axis in their tables); without ties it equals tau-b.
    """
    out = np.empty(m.ndim)
    for i in range(m.ndim):
        n = m.shape[i]
        mm = np.moveaxis(m, i, -1).reshape(-1, n)
        gg = np.moveaxis(g, i, -1).reshape(-1, n)
        sm = np.sign(mm[:, :, None] - mm[:, None, :])
        sg = np.sign(gg[:, :, None] - gg[:, None, :])
        out[i] = float(((sm * sg).sum(axis=(1, 2)) / (n * (n - 1))).mean())
    return out


def granulated_kendall(frame, measure: str, target: str, axes) -> dict:
    """Jiang et al.'s granulated Kendall coefficient (Fantastic Generalization Measures, ICLR 2020, eq. 4).

    For axis i, psi_i is the Kendall coefficient over the models that differ only in axis i, averaged over
    every cell of the other axes; ``psi`` is the mean of the psi_i. Positive when larger measure goes with
    larger target. The coefficient is Jiang et al.'s sign form (tau-a: a tie counts 0, so a measure constant
    along an axis gets psi_i = 0 rather than undefined); without ties it equals tau-b.

    Parameters
    ----------
    frame : DataFrame
        One row per job. Rows that share every value of ``axes`` are averaged first (the seeds, when ``seed``
        is not one of the axes; with ``seed`` an axis, psi_seed measures agreement across seeds).
    measure, target : str
        Numeric columns.
    axes : list of str
        The grid axes; every combination of their values must have at least one row.

    Returns
    -------
    dict
        ``{"psi": float, "per_axis": {axis: float}}``, each in [-1, 1].

    Raises
    ------
    InputError
        An incomplete grid (the missing cells are named), an axis with one value, an unknown column, a missing
        or NaN value (the jobs are named), or a constant target.
    """
    measure, target = names_arg(measure, "measure")[0], names_arg(target, "target")[0]
    grid = build_grid(frame, axes, [measure, target])
    g = grid.array(target)
    _require_varies(g.ravel(), target, "target", f"the {g.size} cells of the grid")
    per = psi_per_axis(grid.array(measure), g)
    return {"psi": float(per.mean()), "per_axis": {a: float(v) for a, v in zip(grid.axes, per)}}


def _sign_matrices(v: np.ndarray) -> np.ndarray:
    """(m, n) -> (m, n, n) float32 sign(v[:, a] - v[:, b])."""
    return np.sign(v[:, :, None] - v[:, None, :]).astype(np.float32)


def _standardised(v: np.ndarray) -> np.ndarray:
    """Centred along the last axis and scaled to unit norm; NaN rows where the values are constant."""
    v = v - v.mean(-1, keepdims=True)
    norm = np.sqrt((v * v).sum(-1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, v / np.where(norm > 0, norm, 1.0), np.nan)


def bootstrap_rank_correlations(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall tau-b and Spearman rho of every (target, predictor) on every bootstrap resample, vectorised.

    Parameters
    ----------
    x : ndarray, shape (P, n)
        Predictors over n configurations.
    y : ndarray, shape (T, n)
        Targets over the same configurations.
    idx : ndarray of int, shape (B, n)
        Resampled configuration indices (with replacement), shared by every pair so intervals are paired.

    Returns
    -------
    tau, rho : ndarray, shape (T, P, B)
        NaN where a resample is constant in x or y (the statistic is undefined there).

    Notes
    -----
    tau-b of a resample is ``sum_ab sx_ab sy_ab / sqrt(#{sx != 0} #{sy != 0})`` over ordered pairs, with
    ``s_ab = sign(v_a - v_b)`` gathered from the full-sample sign matrix (duplicated configurations tie).
    Spearman is the Pearson correlation of average ranks (scipy.stats.rankdata along the resample).
    """
    P, n = x.shape
    T = y.shape[0]
    B = idx.shape[0]
    tau = np.full((T, P, B), np.nan)
    sx0, sy0 = _sign_matrices(x), _sign_matrices(y)
    chunk = max(1, min(B, _CHUNK_ENTRIES // ((P + T) * n * n)))
    for start in range(0, B, chunk):
        ib = idx[start:start + chunk]
        rows, cols = ib[:, :, None], ib[:, None, :]
        sy = sy0[:, rows, cols].reshape(T, len(ib), n * n).transpose(1, 0, 2)  # (c, T, n^2)
        sx = sx0[:, rows, cols].reshape(P, len(ib), n * n).transpose(1, 2, 0)  # (c, n^2, P)
        num = np.matmul(sy, sx).astype(np.float64)  # (c, T, P)
        dy = np.count_nonzero(sy, axis=2).astype(np.float64)  # (c, T)
        dx = np.count_nonzero(sx, axis=1).astype(np.float64)  # (c, P)
        den = np.sqrt(dy[:, :, None] * dx[:, None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            tau[:, :, start:start + len(ib)] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan).transpose(
                1, 2, 0)
    zx = _standardised(scipy.stats.rankdata(x[:, idx], axis=-1))  # (P, B, n)
    zy = _standardised(scipy.stats.rankdata(y[:, idx], axis=-1))  # (T, B, n)
    rho = np.einsum("tbn,pbn->tpb", zy, zx)  # Pearson of the ranks, NaN where a resample is constant
    return tau, rho
