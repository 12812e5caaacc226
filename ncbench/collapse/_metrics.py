"""Statistics -> metric values, exactly as spec/nc-metrics.md defines them (float64 throughout)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .._errors import InputError
from ._stats import SplitStats

EPS64 = float(np.finfo(np.float64).eps)

#: Keys of one split's result, in display order. Metrics that need W (or the train means) may be absent.
TRAIN_KEYS = (
    "nc1", "nc1_quotient", "cdnv",
    "nc2_equinorm_means", "nc2_equinorm_classifier",
    "nc2_equiangle_means", "nc2_equiangle_classifier",
    "nc2_maxangle_means", "nc2_maxangle_classifier",
    "nc2_etf_error_means", "nc3_duality", "nc4_ncc_mismatch", "ncc_accuracy", "ls_gap",
)
TEST_KEYS = tuple(k for k in TRAIN_KEYS if k != "ls_gap") + ("nc1_test_on_train_means",)
#: Lower is more collapsed for every key except ncc_accuracy.
HIGHER_IS_BETTER = frozenset({"ncc_accuracy"})


class CollapseWarning(UserWarning):
    """The class means are degenerate, or no simplex ETF fits in the feature dimension."""


_noted_small_dim: set[tuple[int, int]] = set()


@dataclass
class Between:
    """The between-class geometry of one split: centred means and the truncated SVD of M~ (C x D)."""

    centred: torch.Tensor  # (C, D) rows mu_c - mu_G
    s: torch.Tensor  # (r,) kept singular values
    v: torch.Tensor  # (D, r) right singular vectors


def between(stats: SplitStats, global_mean: str) -> Between:
    """Centre the class means and cut the SVD of M~ at s_k > s_1 * max(C, D) * eps (spec, 'pseudo-inverse')."""
    means, counts = stats.means, stats.counts
    c, d = means.shape
    if global_mean == "classes":
        mu_g = means.mean(0)
    elif global_mean == "samples":
        mu_g = (counts[:, None] * means).sum(0) / counts.sum()
    else:
        raise InputError(f"global_mean must be 'classes' or 'samples'; got {global_mean!r}")
    centred = means - mu_g
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        raise InputError(
            "all class means coincide: the between-class covariance is zero and the collapse metrics are "
            "undefined (are the features constant?)"
        )
    keep = s > s[0] * max(c, d) * EPS64
    expected = min(c - 1, d)
    if d < c - 1 and (c, d) not in _noted_small_dim:
        _noted_small_dim.add((c, d))
        warnings.warn(
            f"D = {d} < C - 1 = {c - 1}: no simplex ETF fits in R^{d}; the NC2 metrics cannot reach 0",
            CollapseWarning, stacklevel=4,
        )
    if int(keep.sum()) < expected:
        warnings.warn(
            f"the class means are degenerate: Sigma_B has rank {int(keep.sum())} < min(C-1, D) = {expected}",
            CollapseWarning, stacklevel=4,
        )
    return Between(centred, s[keep], vh[keep].T)


def _norms(rows: torch.Tensor, what: str) -> torch.Tensor:
    n = rows.norm(dim=1)
    zero = (n == 0).nonzero().flatten().tolist()
    if zero:
        raise InputError(f"{what} of class(es) {zero[:10]} have zero norm; their angles are undefined")
    return n


def _pair_cosines(rows: torch.Tensor, what: str) -> torch.Tensor:
    """cos of every unordered pair c < c' of rows, as a flat (C(C-1)/2,) tensor."""
    unit = rows / _norms(rows, what)[:, None]
    cos = unit @ unit.T
    iu = torch.triu_indices(rows.shape[0], rows.shape[0], offset=1, device=rows.device)
    return cos[iu[0], iu[1]]


def equinorm(rows: torch.Tensor, what: str) -> float:
    """std_c ||r_c|| / mean_c ||r_c||, std with Bessel's correction."""
    n = _norms(rows, what)
    return float(n.std(correction=1) / n.mean())


def equiangle(rows: torch.Tensor, what: str) -> float:
    """std over pairs c < c' of cos(r_c, r_c'), with Bessel's correction; 0 for C = 2 (one angle)."""
    cos = _pair_cosines(rows, what)
    return 0.0 if cos.numel() < 2 else float(cos.std(correction=1))


def maxangle(rows: torch.Tensor, what: str) -> float:
    """mean over pairs of |cos(r_c, r_c') + 1/(C-1)|."""
    c = rows.shape[0]
    return float((_pair_cosines(rows, what) + 1.0 / (c - 1)).abs().mean())


def etf_error(rows: torch.Tensor) -> float:
    """||G/||G||_F - (I - 11^T/C)/sqrt(C-1)||_F with G = rows rows^T."""
    c = rows.shape[0]
    g = rows @ rows.T
    target = (torch.eye(c, dtype=rows.dtype, device=rows.device) - 1.0 / c) / math.sqrt(c - 1)
    return float((g / g.norm() - target).norm())


def nc1_from(stats: SplitStats, geom: Between, extra: torch.Tensor | None = None) -> float:
    """(1/N) sum_k ||Z v_k||^2 / s_k^2 = (1/C) Tr(Sigma_W Sigma_B^+), without a D x D inverse."""
    q = stats.quad(geom.v)
    if extra is not None:
        q = q + extra
    return float((q / geom.s**2).sum() / stats.n)


def split_metrics(stats: SplitStats, geom: Between, weight, bias) -> dict[str, float]:
    """Every metric of one split that its own statistics (and W) determine."""
    c = stats.means.shape[0]
    n = stats.n
    out: dict[str, float] = {}
    out["nc1"] = nc1_from(stats, geom)
    tr_w = float(stats.class_sq.sum()) / n
    tr_b = float((geom.centred**2).sum()) / c
    out["nc1_quotient"] = tr_w / tr_b
    sigma2 = stats.class_sq / stats.counts
    diff = stats.means[:, None, :] - stats.means[None, :, :]
    dist2 = (diff**2).sum(-1)
    iu = torch.triu_indices(c, c, offset=1, device=dist2.device)
    pair_d2 = dist2[iu[0], iu[1]]
    if bool((pair_d2 == 0).any()):
        raise InputError("two class means coincide: the CDNV is undefined")
    out["cdnv"] = float(((sigma2[iu[0]] + sigma2[iu[1]]) / (2 * pair_d2)).mean())
    m = geom.centred
    out["nc2_equinorm_means"] = equinorm(m, "centred means")
    out["nc2_equiangle_means"] = equiangle(m, "centred means")
    out["nc2_maxangle_means"] = maxangle(m, "centred means")
    out["nc2_etf_error_means"] = etf_error(m)
    if weight is not None:
        out["nc2_equinorm_classifier"] = equinorm(weight, "classifier rows")
        out["nc2_equiangle_classifier"] = equiangle(weight, "classifier rows")
        out["nc2_maxangle_classifier"] = maxangle(weight, "classifier rows")
        out["nc3_duality"] = float((weight / weight.norm() - m / m.norm()).norm() ** 2)
        if stats.ncc_mismatch is not None:
            out["nc4_ncc_mismatch"] = stats.ncc_mismatch / n
    if stats.ncc_correct is not None:
        out["ncc_accuracy"] = stats.ncc_correct / n
    return out


def nc1_test_on_train_means(test: SplitStats, train: SplitStats, train_geom: Between) -> float:
    """(1/C) Tr(Sigma_W^{test|train} Sigma_B^{train,+}): test features around the *train* class means.

    sum_{i in c} ((h_i - mu_c^tr) . v)^2 = sum_{i in c} ((h_i - mu_c^te) . v)^2 + n_c ((mu_c^te - mu_c^tr) . v)^2.
    """
    shift = (test.means - train.means) @ train_geom.v  # (C, r)
    extra = (test.counts[:, None] * shift**2).sum(0)
    return nc1_from(test, train_geom, extra)


def ls_gap(theta_ls: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """||[W b] - [W_LS b_LS]||_F / ||[W_LS b_LS]||_F."""
    theta = torch.cat([weight, bias[:, None]], dim=1)
    return float((theta - theta_ls).norm() / theta_ls.norm())


def ridge_from_gram(hh, h_sum, class_sums, counts, weight_decay: float) -> torch.Tensor:
    """[W_LS b_LS] (C, D+1) from sufficient statistics of the augmented features [h 1].

    Minimises (1/2N) sum ||W h + b - e_y||^2 + (lambda/2)(||W||^2 + ||b||^2): the normal equations are
    Theta (X^T X / N + lambda I) = Y^T X / N. With lambda = 0 the minimum-norm solution uses the
    pseudo-inverse of X^T X (eigenvalues cut at max(D+1) * eps of the largest).
    """
    n = float(counts.sum())
    d = hh.shape[0]
    xtx = torch.empty(d + 1, d + 1, dtype=torch.float64, device=hh.device)
    xtx[:d, :d] = hh
    xtx[:d, d] = h_sum
    xtx[d, :d] = h_sum
    xtx[d, d] = n
    yx = torch.cat([class_sums, counts[:, None]], dim=1)  # (C, D+1) = Y^T X
    if weight_decay > 0:
        a = xtx / n + weight_decay * torch.eye(d + 1, dtype=torch.float64, device=hh.device)
        return torch.linalg.solve(a, (yx / n).T).T
    pinv = torch.linalg.pinv(xtx, hermitian=True, rtol=(d + 1) * EPS64)
    return yx @ pinv


def ridge_oneshot(h: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float) -> torch.Tensor:
    """[W_LS b_LS] from features in memory; lambda = 0 solves min-norm least squares on X itself (gelsd)."""
    h = h.to(torch.float64)
    if weight_decay > 0:
        counts = torch.bincount(y, minlength=num_classes).to(torch.float64)
        class_sums = torch.zeros(num_classes, h.shape[1], dtype=torch.float64, device=h.device).index_add_(0, y, h)
        return ridge_from_gram(h.T @ h, h.sum(0), class_sums, counts, weight_decay)
    x = torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], dim=1).cpu().numpy()
    target = np.zeros((h.shape[0], num_classes))
    target[np.arange(h.shape[0]), y.cpu().numpy()] = 1.0
    sol, *_ = np.linalg.lstsq(x, target, rcond=None)
    return torch.from_numpy(sol.T.copy()).to(h.device)
