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
    """Centre the class means and keep the singular values of M~ (C x D) with s_k > s_1 * max(C, D) * eps,
    at most min(C - 1, D) of them (spec, 'pseudo-inverse').

    The centring uses ``stats.local_means`` (the means relative to the statistics' origin), so a large
    offset shared by all features does not enter the rounding. Sigma_B has rank at most C - 1 by
    construction (the centred means sum to zero, with weights n_c for ``global_mean="samples"``): the C-th
    singular value of the computed M~ is rounding, never a direction, and is never kept, however large the
    features' offset makes it. Without the cap, an offset of 1e3 left a C-th value of about 1e-13 that
    passed the relative cut and divided its term of nc1 by about 1e-26.
    """
    means, counts = stats.local_means, stats.counts
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
    expected = min(c - 1, d)
    keep = s > s[0] * max(c, d) * EPS64
    keep[expected:] = False  # rank(Sigma_B) <= C - 1: a C-th value is rounding
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
    # ||mu_a - mu_b||^2 for a < b from the differences themselves (no ||a||^2 + ||b||^2 - 2 a.b cancellation),
    # of the local means (the origin cancels, and so does its rounding), one class at a time: O(C D) memory
    local = stats.local_means
    pair_d2 = torch.cat([((local[a + 1:] - local[a]) ** 2).sum(1) for a in range(c - 1)])
    iu = torch.triu_indices(c, c, offset=1, device=local.device)  # the same (a, b) order
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
    The difference of the means is taken between the local means (the origins cancel exactly when the test
    statistics reuse the train origin, as both routes do).
    """
    diff = (test.local_means - train.local_means) + (test.origin - train.origin)
    shift = diff @ train_geom.v  # (C, r)
    extra = (test.counts[:, None] * shift**2).sum(0)
    return nc1_from(test, train_geom, extra)


def ls_gap(theta_ls: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """||[W b] - [W_LS b_LS]||_F / ||[W_LS b_LS]||_F."""
    theta = torch.cat([weight, bias[:, None]], dim=1)
    return float((theta - theta_ls).norm() / theta_ls.norm())


def ridge_from_stats(stats: SplitStats, weight_decay: float) -> torch.Tensor:
    """[W_LS b_LS] (C, D+1) from the class counts, class means and within-class scatter of the train features.

    Minimises (1/2N) sum_i ||W h_i + b - e_{y_i}||^2 + (lambda/2)(||W||^2 + ||b||^2); with lambda = 0, the
    minimum-norm solution. One algorithm for the in-memory and the streaming route (both pass the same
    statistics), stable near collapse *and* at any offset of the features:

    1. The bias is eliminated in closed form. Setting the gradient in b to zero gives
       b = (e_bar - W h_bar) / (1 + lambda) (h_bar the sample mean, e_bar = n / N the class frequencies), and
       W then minimises (1/2N) sum_i ||W (h_i - h_bar) - (e_{y_i} - e_bar)||^2 + (lambda/2)||W||^2
       + (kappa/2)||e_bar - W h_bar||^2, kappa = lambda / (1 + lambda): normal equations
       W (M0 + N kappa h_bar h_bar^T) = R + N kappa e_bar h_bar^T, M0 = S_T + N lambda I, where the total
       scatter S_T = S_W + sum_c n_c (mu_c - h_bar)(mu_c - h_bar)^T and R = sum_c n_c e_c (mu_c - h_bar)^T do
       not depend on the offset. Sherman-Morrison with u = M0^+ h_bar, gamma = h_bar . u and W0 = R M0^+:
           W = W0 + (e_bar - W0 h_bar) alpha^T / (1 + beta),  b = (e_bar - W0 h_bar) / ((1 + lambda)(1 + beta)),
       alpha = N kappa u, beta = N kappa gamma. Every term is a product or a quotient: an offset of 1e9 costs
       no digits (forming [h 1]^T [h 1] would square its condition number, ~(offset / spread)^2).
    2. M0 is applied as in the 0.2 fit, so that near collapse the small S_W is never added to the large
       between-class part: in the orthonormal basis [U P], U spanning the centred class means, the
       between-class scatter B lives in the U block only, and
           x_P = (r_P - x_U A_UP)(A_PP + N lambda I)^+,
           x_U (B_UU + A_UU + N lambda I - A_UP (A_PP + N lambda I)^+ A_PU) = r_U - r_P (A_PP + N lambda I)^+ A_PU
       solve x M0 = r, with every small block straight from S_W (A = S_W). The pseudo-inverse keeps the
       eigenvalues of the symmetric P block above (D + 1) * eps times its largest (numpy's pinv rule).
    3. Directions it drops (features that are constant over the train set) carry the lambda -> 0 limit of
       the ridge solution: alpha and beta gain h_n / (1 + lambda) and ||h_n||^2 / (1 + lambda), h_n the part
       of h_bar along them. So a feature that is 0 everywhere (a dead ReLU) gets a zero coefficient, and a
       constant non-zero feature shares the bias's role with b: the minimum-norm solution.
    """
    counts, local, within = stats.counts, stats.local_means, stats.within
    c, d = local.shape
    n = counts.sum()
    lam = float(weight_decay)
    kappa_n = float(n) * lam / (1.0 + lam)  # N kappa
    ridge = float(n) * lam
    dd = dict(dtype=local.dtype, device=local.device)
    hbar_local = (counts @ local) / n
    hbar = stats.origin + hbar_local  # the only quantity at the offset's scale
    ebar = counts / n
    centred = local - hbar_local  # (C, D), sum_c n_c centred_c = 0: rank <= C - 1
    u_full, s, _ = torch.linalg.svd(centred.T, full_matrices=True)  # (D, D)
    r = min(int((s > s[0] * max(c, d) * EPS64).sum()), c - 1)
    u, p = u_full[:, :r], u_full[:, r:]
    a_uu, a_up, a_pp = u.T @ within @ u, u.T @ within @ p, p.T @ within @ p
    cu = centred @ u  # (C, r)
    b_uu = (cu.T * counts) @ cu
    evals, evecs = torch.linalg.eigh(a_pp + ridge * torch.eye(d - r, **dd))
    top = float(evals.max()) if evals.numel() else 0.0
    keep = evals > max(top, 0.0) * (d + 1) * EPS64
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), torch.zeros_like(evals))
    pinv_pp = (evecs * inv) @ evecs.T  # (A_PP + N lambda I)^+
    coupling = a_up @ pinv_pp  # (r, D - r)
    schur = b_uu + a_uu + ridge * torch.eye(r, **dd) - coupling @ a_up.T  # >= B_UU, positive definite

    def solve(rhs_u, rhs_p):
        """x M0 = [rhs_u rhs_p] in the [U P] basis (rows of rhs), returned in the feature basis."""
        x_u = torch.linalg.solve(schur, (rhs_u - rhs_p @ coupling.T).T).T
        x_p = (rhs_p - x_u @ a_up) @ pinv_pp
        return x_u @ u.T + x_p @ p.T

    w0 = solve(counts[:, None] * cu, torch.zeros(c, d - r, **dd))  # R M0^+, R = sum_c n_c e_c centred_c^T
    m0_hbar = solve((hbar @ u)[None], (hbar @ p)[None])[0]  # M0^+ h_bar
    dropped = p @ evecs[:, ~keep]  # (D, k) orthonormal: the directions the pseudo-inverse drops
    h_null = hbar @ dropped  # the part of h_bar along them
    alpha = kappa_n * m0_hbar + (dropped @ h_null) / (1.0 + lam)
    beta = kappa_n * float(hbar @ m0_hbar) + float((h_null**2).sum()) / (1.0 + lam)
    resid = ebar - w0 @ hbar  # e_bar - W0 h_bar, (C,)
    w = w0 + resid[:, None] * alpha[None, :] / (1.0 + beta)
    b = resid / ((1.0 + lam) * (1.0 + beta))
    return torch.cat([w, b[:, None]], dim=1)
