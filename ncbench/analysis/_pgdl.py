"""The conditional-mutual-information score of the PGDL competition (Jiang et al., NeurIPS 2020 competition;
Jiang et al., ICLR 2020, section 6).

Over ordered pairs of models (i, j), V_g = 1[g_i > g_j] and V_mu = 1[mu_i > mu_j]. For every ordered pair of
distinct axes (h1, h2) the pairs are binned by U = (theta_i^h1, theta_j^h1, theta_i^h2, theta_j^h2) and

    score(h1, h2) = I(V_mu; V_g | U) / H(V_g | U)      (plug-in estimates in bits, bins weighted by their share)

The score is 100 x the minimum over axis pairs. The measure is first oriented by the sign of its Kendall tau
with the target over configurations (mu -> -mu when tau < 0): the competition's estimator counts the pairs
i = i, whose V_mu = V_g = 0 a reversed measure contradicts, so without orienting a measure and its negation
score differently (issue 16: negating ``test.ncc_accuracy`` moved it from 80.4 to 45.0). Oriented, the score
measures how much the measure's order tells about the target's, in whichever direction.

Bins are keyed by the four values' level indices combined in mixed radix (``np.ravel_multi_index``), a
one-to-one image of the tuple of values: the competition joined values as strings, so e.g. (1, 11) and (11, 1)
could share a bin; here they cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np
import scipy.stats

from .._errors import InputError
from ._frame import build_grid, names_arg


@dataclass(frozen=True)
class PairBins:
    """The ordered pairs of models and, for each ordered pair of axes, every pair's bin."""

    i: np.ndarray  # (n_pairs,) first model of each pair
    j: np.ndarray  # (n_pairs,)
    bins: tuple[tuple[tuple[str, str], np.ndarray, int], ...]  # ((h1, h2), bin id per pair, number of bins)


def pair_bins(codes: np.ndarray, shape: tuple[int, ...], axes, *, self_pairs: bool) -> PairBins:
    """Bins of every ordered pair of models for every ordered pair of distinct axes.

    ``codes`` (n_models, n_axes) holds each model's level index on each axis (a full grid, one model per cell).
    """
    n = codes.shape[0]
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    i, j = i.ravel(), j.ravel()
    if not self_pairs:
        keep = i != j
        i, j = i[keep], j[keep]
    bins = []
    for h1, h2 in permutations(range(len(axes)), 2):
        dims = (shape[h1], shape[h1], shape[h2], shape[h2])
        key = np.ravel_multi_index((codes[i, h1], codes[j, h1], codes[i, h2], codes[j, h2]), dims)
        uniq, inverse = np.unique(key, return_inverse=True)
        bins.append(((axes[h1], axes[h2]), inverse.ravel(), len(uniq)))
    return PairBins(i, j, tuple(bins))


def _entropy_bits(p: np.ndarray, axis) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=axis)


def cmi_ratios(mu: np.ndarray, g: np.ndarray, pb: PairBins) -> list[tuple[tuple[str, str], float, float]]:
    """For every ordered axis pair: (axes, I(V_mu; V_g | U), H(V_g | U)) in bits."""
    vg = (g[pb.i] > g[pb.j]).astype(np.int64)
    vm = (mu[pb.i] > mu[pb.j]).astype(np.int64)
    out = []
    for names, b, nb in pb.bins:
        joint = np.bincount(b * 4 + vm * 2 + vg, minlength=nb * 4).reshape(nb, 2, 2).astype(np.float64)
        n_u = joint.sum(axis=(1, 2))
        weight = n_u / n_u.sum()
        p = joint / n_u[:, None, None]  # p(v_mu, v_g | u)
        h_g = _entropy_bits(p.sum(axis=1), axis=1)  # H(V_g | U = u)
        h_m = _entropy_bits(p.sum(axis=2), axis=1)
        h_joint = _entropy_bits(p.reshape(nb, 4), axis=1)
        cmi = float(weight @ np.maximum(h_g + h_m - h_joint, 0.0))
        out.append((names, cmi, float(weight @ h_g)))
    return out


#: H(V_g | U) below this (bits) counts as 0: the target is then determined by the two conditioning axes.
H_TINY = 1e-12


def score_from_ratios(ratios) -> tuple[float, str]:
    """100 x min over axis pairs of I/H, and "" or the reason it is undefined."""
    for names, _, h in ratios:
        if h <= H_TINY:
            return float("nan"), (f"H(V_g | U) = 0 for axes {names[0]!r}, {names[1]!r}: the target is fixed by those "
                                  "two axes alone, so the ratio is 0/0")
    return 100.0 * min(min(cmi / h, 1.0) for _, cmi, h in ratios), ""


def orientation(mu: np.ndarray, g: np.ndarray) -> float:
    """-1.0 when Kendall's tau-b of ``mu`` with ``g`` is negative, else +1.0 (a constant or tie-only: +1)."""
    if np.ptp(mu) == 0 or np.ptp(g) == 0:
        return 1.0
    tau = scipy.stats.kendalltau(mu, g).statistic
    return -1.0 if np.isfinite(tau) and tau < 0 else 1.0


def pgdl_score(frame, measure: str, target: str, axes, *, self_pairs: bool = True, orient: bool = True) -> float:
    """PGDL's conditional-mutual-information score of ``measure`` as a predictor of ``target``, 0..100.

    ``100 * min over ordered pairs of distinct axes (h1, h2) of I(V_mu; V_g | U) / H(V_g | U)``, where over
    ordered pairs of models (i, j) (i = j included when ``self_pairs``), V_g = 1[g_i > g_j],
    V_mu = 1[mu_i > mu_j], U = (theta_i^h1, theta_j^h1, theta_i^h2, theta_j^h2), entropies in bits, each bin of
    U weighted by its share of pairs. 100: the measure's order decides the target's order in every bin.
    With ``orient`` (default) the measure is first multiplied by the sign of its Kendall tau with the target
    over configurations, so the score does not depend on the measure's sign; without it, the pairs i = j
    (V_mu = V_g = 0) make a reversed measure score below 100 with ``self_pairs``.

    Parameters
    ----------
    frame : DataFrame
        One row per job; rows that share every axis value (seeds) are averaged first.
    measure, target : str
        Numeric columns.
    axes : list of str
        At least 3 grid axes (with 2, U fixes both models and the ratio is 0/0); the grid must be full.
    self_pairs : bool
        Count the pairs (i, i), as the competition's estimator did (default); False gives the estimator over
        distinct models only.
    orient : bool
        Orient the measure by the sign of its tau first (default). False scores the measure as given, the
        competition's convention (a submitted measure was meant to rise with the generalization gap).

    Raises
    ------
    InputError
        Fewer than 3 axes, an incomplete grid (cells named), an unknown column, NaN values (jobs named), a
        constant target, or a target fixed by two of the axes (the ratio is 0/0 there).
    """
    axes = names_arg(axes, "axes")
    if len(axes) < 3:
        raise InputError(f"the PGDL score needs at least 3 axes; got {len(axes)} ({axes}): with 2, conditioning on "
                         "both axes of both models fixes the pair and the score is 0/0")
    measure, target = names_arg(measure, "measure")[0], names_arg(target, "target")[0]
    grid = build_grid(frame, axes, [measure, target])
    g = grid.values[target].to_numpy()
    if np.ptp(g) == 0:
        raise InputError(f"target {target!r} is constant ({float(g[0]):g}) over the {g.size} cells of the grid: "
                         "the PGDL score is undefined; choose a target that varies")
    pb = pair_bins(grid.codes, grid.shape, grid.axes, self_pairs=bool(self_pairs))
    mu = grid.values[measure].to_numpy()
    if orient:
        mu = orientation(mu, g) * mu
    score, why = score_from_ratios(cmi_ratios(mu, g, pb))
    if why:
        raise InputError(f"PGDL score of {measure!r} for {target!r} is undefined: {why}")
    return score
