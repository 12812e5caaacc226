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
    """std (Bessel's correction) over the C(C-1) off-diagonal entries c != c' of the cosine matrix, each
    unordered pair counted twice, as in the authors' code behind PNAS Fig. 3. 0 for C = 2 (one angle)."""
    cos = _pair_cosines(rows, what)
    both = torch.cat([cos, cos])  # the (c, c') and (c', c) entries
    return float(both.std(correction=1))


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


def ridge_from_stats(counts: torch.Tensor, means: torch.Tensor, within: torch.Tensor,
                     weight_decay: float) -> torch.Tensor:
    """[W_LS b_LS] (C, D+1) from the class counts, class means and within-class scatter of the train features.

    Minimises (1/2N) sum_i ||W h_i + b - e_{y_i}||^2 + (lambda/2)(||W||^2 + ||b||^2); with lambda = 0, the
    minimum-norm solution. One algorithm for the in-memory and the streaming route (both pass the same
    statistics), stable near collapse:

    With x = [h; 1], the normal equations are Theta (G + N lambda I) = R, G = sum_i x_i x_i^T = A + B,
    A = [S_W 0; 0 0] (S_W = sum_i (h_i - mu_y)(h_i - mu_y)^T, small near collapse), B = sum_c n_c xbar_c
    xbar_c^T (xbar_c = [mu_c; 1], large), and R = sum_c n_c e_c xbar_c^T. Forming G would bury A under B's
    rounding (relative error eps * |B| / |A|, 1e-4 at a within-class spread of 1e-6). Instead, in the
    orthonormal basis [U P] with U spanning the xbar_c, B lives in the U block only, R P = 0, and
        Theta_P = -Theta_U A_UP (A_PP + N lambda I)^+,
        Theta_U (B_UU + A_UU + N lambda I - A_UP (A_PP + N lambda I)^+ A_PU) = R_U,
    where every small block comes from S_W directly. The pseudo-inverse keeps the eigenvalues of the
    symmetric P block above (D + 1) * eps times its largest (the rank rule of numpy's pinv), so dead or
    constant features get a zero coefficient: the minimum-norm solution. The U block's Schur complement is at
    least B_UU, positive definite for distinct classes.
    """
    c, d = means.shape
    n = counts.sum()
    xbar = torch.cat([means, torch.ones(c, 1, dtype=means.dtype, device=means.device)], dim=1)  # (C, D+1)
    u_full, s, _ = torch.linalg.svd(xbar.T, full_matrices=True)  # (D+1, D+1)
    r = int((s > s[0] * max(c, d + 1) * EPS64).sum())
    u, p = u_full[:, :r], u_full[:, r:]
    a = torch.zeros(d + 1, d + 1, dtype=within.dtype, device=within.device)
    a[:d, :d] = within
    a_uu, a_up, a_pp = u.T @ a @ u, u.T @ a @ p, p.T @ a @ p
    xu = xbar @ u  # (C, r)
    b_uu = (xu.T * counts) @ xu
    ridge = float(n) * weight_decay
    r_u = counts[:, None] * xu  # R U = sum_c n_c e_c (xbar_c U)^T, one row per class
    if p.shape[1]:
        evals, evecs = torch.linalg.eigh(a_pp + ridge * torch.eye(p.shape[1], dtype=a.dtype, device=a.device))
        top = float(evals.max()) if evals.numel() else 0.0
        keep = evals > max(top, 0.0) * (d + 1) * EPS64
        inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), torch.zeros_like(evals))
        k = (a_up @ evecs) * inv  # A_UP (A_PP + N lambda I)^+ = A_UP V diag(1/e) V^T
        coupling = k @ evecs.T  # (r, D+1-r)
        schur = b_uu + a_uu + ridge * torch.eye(r, dtype=a.dtype, device=a.device) - coupling @ a_up.T
    else:
        coupling = torch.zeros(r, 0, dtype=a.dtype, device=a.device)
        schur = b_uu + a_uu + ridge * torch.eye(r, dtype=a.dtype, device=a.device)
    theta_u = torch.linalg.solve(schur, r_u.T).T  # (C, r), schur symmetric
    theta_p = -theta_u @ coupling
    return theta_u @ u.T + theta_p @ p.T
