"""Sufficient statistics of one split: batch -> statistics (one-shot or streaming).

Both routes produce a :class:`SplitStats`; :mod:`._metrics` turns statistics into values. The one-shot route
keeps the centred features ``Z`` and projects them exactly; the streaming route keeps a per-class *shifted*
scatter matrix (D x D), which avoids the cancellation of the textbook ``E[hh^T] - mu mu^T`` formula when the
features are nearly collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._errors import InputError
from ._validate import check_features, check_finite, check_labels


@dataclass
class SplitStats:
    """Per-split statistics, all float64.

    counts : (C,) samples per class.  means : (C, D) class means.
    class_sq : (C,) sum over class c of ||h_i - mu_c||^2.
    quad : V (D, r) -> (r,) with entries sum_i ((h_i - mu_{y_i}) . v_k)^2.
    ncc_mismatch, ncc_correct : sample counts against the reference (train) means, or None when unknown.
    within : (D, D) within-class scatter sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T, when it was accumulated
        (the ridge fit behind ls_gap needs it).
    """

    counts: torch.Tensor
    means: torch.Tensor
    class_sq: torch.Tensor
    quad: Callable[[torch.Tensor], torch.Tensor]
    ncc_mismatch: int | None = None
    ncc_correct: int | None = None
    within: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def _ncc_counts(h, y, ref_means, weight, bias):
    """(mismatch, correct) of the nearest-class-centre rule against ``ref_means`` for one batch.

    argmin_c ||h - m_c||^2 = argmin_c (||m_c||^2 - 2 h.m_c); one (N, D) x (D, 2C) product serves both the
    distances and the logits.
    """
    c = ref_means.shape[0]
    cols = ref_means if weight is None else torch.cat([ref_means, weight], dim=0)
    prod = h @ cols.T
    ncc = ((ref_means * ref_means).sum(1) - 2 * prod[:, :c]).argmin(1)
    correct = int((ncc == y).sum())
    mismatch = None
    if weight is not None:
        pred = (prod[:, c:] + bias).argmax(1)
        mismatch = int((ncc != pred).sum())
    return mismatch, correct


BLOCK_ELEMENTS = 1 << 20  # one block of the one-shot pass: 8 MB of float64, small enough to stay in cache


def _blocks(h, y):
    """(float64 block of h, block of y) over rows, blocks of about BLOCK_ELEMENTS values."""
    rows = max(16, BLOCK_ELEMENTS // h.shape[1])
    for i in range(0, h.shape[0], rows):
        yield i, h[i:i + rows].to(torch.float64), y[i:i + rows]


def oneshot_stats(h, y, num_classes, *, ref_means=None, weight=None, bias=None, name="features",
                  scatter: bool = False) -> SplitStats:
    """Statistics of features ``h`` (N, D) and labels ``y`` held in memory (validated tensors, any float dtype).

    ``ref_means=None`` uses the split's own means for the nearest-class-centre counts (the train split).
    One blocked pass for the class sums, then one blocked pass that forms the centred features ``Z`` block
    by block (never all of it) and keeps only their projections onto the span of the class means (and of
    ``ref_means``): every ``quad(V)`` that the metrics ask for has V in that span. Blocks are converted to
    float64 as they are read. ``scatter=True`` also sums the full within-class scatter Z^T Z (O(N D^2)).
    """
    c = num_classes
    counts = torch.bincount(y, minlength=c).to(torch.float64)
    sums = torch.zeros(c, h.shape[1], dtype=torch.float64, device=h.device)
    for _, hb, yb in _blocks(h, y):
        sums.index_add_(0, yb, hb)
    check_finite(h, name, sums)
    means = sums / counts[:, None]
    ref = means if ref_means is None else ref_means
    span = means if ref_means is None else torch.cat([means, ref_means])
    basis = torch.linalg.svd(span, full_matrices=False)[2].T  # (D, k) orthonormal, k <= 2C
    k = basis.shape[1]
    # h.mu = (h Q).(Q^T mu) for every mu in the span of Q: one product h @ [Q | W^T] gives the projections of
    # the centred features, the distances to the reference means and the logits
    cols = basis if weight is None else torch.cat([basis, weight.T], dim=1)
    means_q, ref_q = means @ basis, ref @ basis
    ref_sq = (ref * ref).sum(1)
    class_sq = torch.zeros(c, dtype=torch.float64, device=h.device)
    zq = torch.empty(h.shape[0], k, dtype=torch.float64, device=h.device)
    correct, mismatch = 0, 0
    within = torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64, device=h.device) if scatter else None
    for i, hb, yb in _blocks(h, y):
        z = hb - means.index_select(0, yb)
        class_sq.index_add_(0, yb, torch.einsum("ij,ij->i", z, z))
        if within is not None:
            within.addmm_(z.T, z)
        prod = hb @ cols
        hq = prod[:, :k]
        zq[i:i + hb.shape[0]] = hq - means_q.index_select(0, yb)
        ncc = (ref_sq - 2 * hq @ ref_q.T).argmin(1)
        correct += int((ncc == yb).sum())
        if weight is not None:
            mismatch += int((ncc != (prod[:, k:] + bias).argmax(1)).sum())

    def quad(v: torch.Tensor) -> torch.Tensor:
        return ((zq @ (basis.T @ v)) ** 2).sum(0)

    return SplitStats(counts, means, class_sq, quad, mismatch if weight is not None else None, correct, within)


class CollapseAccumulator:
    """Streaming statistics of one split: ``update(features, labels)`` per batch, then ``compute()``.

    Memory is O(D^2 + C*D) beyond one batch. The nearest-class-centre metrics (``nc4_ncc_mismatch``,
    ``ncc_accuracy``) need the train class means *while* the batches stream: pass ``reference_means`` (for
    the train split itself that means a first pass; see :func:`ncbench.collapse.collapse_metrics_streaming`).

    Parameters
    ----------
    num_classes : int
        C.
    weight, bias : array (C, D) and (C,), optional
        The final linear layer; needed for ``nc4_ncc_mismatch`` together with ``reference_means``.
    reference_means : array (C, D), optional
        Class means the nearest-class-centre rule uses (always the train means, spec/nc-metrics.md).

    Examples
    --------
    >>> import torch
    >>> acc = CollapseAccumulator(3)
    >>> for _ in range(4):
    ...     acc.update(torch.randn(30, 8), torch.arange(30) % 3)
    >>> stats = acc.stats()
    >>> int(stats.counts.sum())
    120
    """

    def __init__(self, num_classes: int, *, weight=None, bias=None, reference_means=None) -> None:
        if int(num_classes) < 2:
            raise InputError(f"num_classes must be at least 2; got {num_classes}")
        self.num_classes = int(num_classes)
        self.weight = weight
        self.bias = bias
        self.reference_means = reference_means
        self._dim: int | None = None

    def _init(self, dim: int, device: torch.device) -> None:
        from ._validate import check_classifier

        c = self.num_classes
        self._dim = dim
        self._device = device
        self._w, self._b = check_classifier(self.weight, self.bias, dim, device)
        if self._w is not None and self._w.shape[0] != c:
            raise InputError(f"weight has {self._w.shape[0]} rows but num_classes is {c}")
        self._ref = None
        if self.reference_means is not None:
            self._ref = check_features(self.reference_means, "reference_means", device)
            if self._ref.shape != (c, dim):
                raise InputError(f"reference_means has shape {tuple(self._ref.shape)}; expected ({c}, {dim})")
        kw = dict(dtype=torch.float64, device=device)
        self._n = torch.zeros(c, **kw)
        self._shift = torch.zeros(c, dim, **kw)
        self._seen = torch.zeros(c, dtype=torch.bool, device=device)
        self._sum = torch.zeros(c, dim, **kw)  # sum of (h - shift_y)
        self._sq = torch.zeros(c, **kw)  # sum of ||h - shift_y||^2
        self._scatter = torch.zeros(dim, dim, **kw)  # sum of (h - shift_y)(h - shift_y)^T
        self._mismatch = 0
        self._correct = 0

    def update(self, features, labels) -> None:
        """Add one batch: features (B, D), labels (B,) in 0..C-1."""
        h = check_features(features, "features", None if self._dim is None else self._device)
        if self._dim is None:
            self._init(h.shape[1], h.device)
        elif h.shape[1] != self._dim:
            raise InputError(f"features have D = {h.shape[1]} but earlier batches had D = {self._dim}")
        y = check_labels(labels, h.shape[0], self.num_classes, "labels", h.device)
        new = torch.unique(y[~self._seen[y]])
        if new.numel():  # shift each class by its mean in the first batch that holds it
            for c in new.tolist():
                self._shift[c] = h[y == c].mean(0)
            self._seen[new] = True
        z = h - self._shift[y]
        self._n += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        self._sum.index_add_(0, y, z)
        self._sq.index_add_(0, y, (z * z).sum(1))
        self._scatter.addmm_(z.T, z)
        if self._ref is not None:
            mismatch, correct = _ncc_counts(h, y, self._ref, self._w, self._b)
            self._correct += correct
            if mismatch is not None:
                self._mismatch += mismatch

    def stats(self) -> SplitStats:
        """The statistics so far, as the one-shot route would give them."""
        if self._dim is None:
            raise InputError("no batch was added: call update(features, labels) first")
        missing = (self._n == 0).nonzero().flatten().tolist()
        if missing:
            raise InputError(f"{len(missing)} class(es) have no sample: {missing[:10]}")
        d = self._sum / self._n[:, None]  # class mean minus shift
        means = self._shift + d
        class_sq = self._sq - self._n * (d * d).sum(1)
        within = self._scatter - (d.T * self._n) @ d

        def quad(v: torch.Tensor) -> torch.Tensor:
            return ((within @ v) * v).sum(0)

        has_ref = self._ref is not None
        return SplitStats(
            self._n.clone(), means, class_sq.clamp_min(0), quad,
            self._mismatch if has_ref and self._w is not None else None,
            self._correct if has_ref else None, within,
        )

    @property
    def classifier(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The validated float64 (W, b), known after the first ``update``."""
        if self._dim is None:
            raise InputError("no batch was added: call update(features, labels) first")
        return self._w, self._b
