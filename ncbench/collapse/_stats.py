"""Sufficient statistics of one split: batches -> statistics (in memory, streamed, or per layer of a model).

:mod:`._metrics` turns statistics into values. Two implementations, for two access patterns:

- :class:`SpanStats`, two passes over the batches (class means first, then projections): the class means,
  the per-class squared distances and the within-class scatter *restricted to the span of the class means*
  (a k x k matrix, k <= 2C), which is all that nc1, the quotient, the CDNV and the nearest-class-centre rule
  need. O(N C D) time, O(C D) memory at any width D. The in-memory route (:func:`oneshot_stats`) and per-layer
  collapse (:mod:`._layers`) both use it.
- :class:`CollapseAccumulator`, one pass (``update`` per batch): a per-class *shifted* D x D scatter, for
  callers that can read their batches once, and for the ridge fit behind ``ls_gap``, which needs the whole
  within-class scatter.

Both work relative to an **origin**, a point near the features (the mean of the first batch): every
feature is shifted by it before any sum or product, so a large offset shared by all features (1e3, 1e9
times the spread of the class means) costs no precision. ``SplitStats.local_means`` (the class means minus
the origin) keep the digits that ``means`` (the absolute class means) lose at such offsets; the metrics use
``local_means``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._errors import InputError
from ._validate import check_classifier, check_features, check_labels


@dataclass
class SplitStats:
    """Per-split statistics, all float64.

    counts : (C,) samples per class.  means : (C, D) class means.
    class_sq : (C,) sum over class c of ||h_i - mu_c||^2.
    quad : V (D, r) -> (r,) with entries sum_i ((h_i - mu_{y_i}) . v_k)^2, for V in the span of the class means
        (and of the reference means).
    ncc_mismatch, ncc_correct : sample counts against the reference (train) means, or None when unknown.
    within : (D, D) within-class scatter sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T, when it was accumulated
        (the ridge fit behind ls_gap needs it).
    origin : (D,) the point the statistics were accumulated around (zeros when not given).
    local_means : (C, D) ``means - origin``, computed from the shifted features, so accurate to the spread of
        the features rather than to their offset (``means`` itself rounds at the scale of the origin).
    """

    counts: torch.Tensor
    means: torch.Tensor
    class_sq: torch.Tensor
    quad: Callable[[torch.Tensor], torch.Tensor]
    ncc_mismatch: int | None = None
    ncc_correct: int | None = None
    within: torch.Tensor | None = None
    origin: torch.Tensor | None = None
    local_means: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.origin is None:
            self.origin = torch.zeros(self.means.shape[1], dtype=self.means.dtype, device=self.means.device)
        if self.local_means is None:
            self.local_means = self.means - self.origin

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def _first_origin(h: torch.Tensor) -> torch.Tensor:
    """The origin taken from the first batch: the float64 mean of its finite rows (zeros if it has none)."""
    h = h.to(torch.float64)
    finite = torch.isfinite(h).all(1)
    if not bool(finite.any()):
        return torch.zeros(h.shape[1], dtype=torch.float64, device=h.device)
    return h[finite].mean(0)


def _ncc(dots: torch.Tensor, ref_sq: torch.Tensor) -> torch.Tensor:
    """argmin_c ||h - r_c||^2 = argmin_c (||r_c||^2 - 2 h.r_c), from the products ``dots`` = h r^T (B, C)
    (or h (r - r_bar)^T: a term that is the same for every class does not move the argmin).

    h and r are both relative to the same origin: at a large shared offset, ||r_c||^2 would otherwise be
    ~offset^2 and swamp the differences between classes in rounding.
    """
    return (ref_sq - 2 * dots).argmin(1)


def _ncc_counts(h_local, y, ref_local, weight, bias_local):
    """(mismatch, correct) of the nearest-class-centre rule for one batch, everything relative to one origin.

    ``h_local`` = h - origin (B, D), ``ref_local`` = reference means - origin (C, D), ``bias_local`` = b + W
    origin, so that ``W h_local + bias_local`` are the logits. One (B, D) x (D, 2C) product serves both.
    """
    c = ref_local.shape[0]
    cols = ref_local if weight is None else torch.cat([ref_local, weight], dim=0)
    prod = h_local @ cols.T
    ncc = _ncc(prod[:, :c], (ref_local * ref_local).sum(1))
    correct = int((ncc == y).sum())
    mismatch = None
    if weight is not None:
        mismatch = int((ncc != (prod[:, c:] + bias_local).argmax(1)).sum())
    return mismatch, correct


def _local_bias(weight, bias, origin):
    """b + W origin: the bias of the same classifier applied to features measured from ``origin``."""
    return None if weight is None else bias + weight @ origin


class SpanStats:
    """Exact statistics of one split in two passes over its batches, in O(C D) memory at any width D.

    Pass 1 (``add_means``, every batch): class counts and sums of h - origin. Pass 2 (``add_projections``,
    the same batches again): with the class means known, the centred features z_i = h_i - mu_{y_i} give
    sum_i ||z_i||^2 per class and their within-class scatter *projected onto an orthonormal basis Q of the
    span of the centred class means* (Q^T S_W Q, k x k), plus the nearest-class-centre counts against the
    reference means and, with W, the mismatch with argmax(W h + b). Every direction that nc1 asks about
    (the right singular vectors of M~, spec 'pseudo-inverse') lies in that span, so ``quad(V)`` is exact:
    ((Q^T V)^T (Q^T S_W Q) (Q^T V)) on the diagonal. Cost O(N C D); no D x D matrix unless ``scatter``.

    Parameters
    ----------
    num_classes : int
        C.
    reference : SplitStats, optional
        The train split's statistics, for a test split: the nearest-class-centre rule uses its class means
        (spec: always the train means), the basis also spans its centred means (for
        ``nc1_test_on_train_means``), and its origin is reused. None: the split's own means.
    weight, bias : (C, D), (C,) float64 tensors, optional
        The validated final layer (for ``nc4_ncc_mismatch``).
    scatter : bool
        Also sum the full within-class scatter Z^T Z (D x D, O(N D^2)), for the ridge fit behind ls_gap.
    name : str
        What the features are, for error messages.
    """

    def __init__(self, num_classes: int, *, reference: SplitStats | None = None, weight=None, bias=None,
                 scatter: bool = False, name: str = "features") -> None:
        self.num_classes = int(num_classes)
        self.reference = reference
        self.weight, self.bias = weight, bias
        self.scatter = scatter
        self.name = name
        self.origin = None if reference is None else reference.origin
        self._sums = None
        self._counts = None
        self._n_bad = 0
        self._n_seen = 0
        self._second = None  # state of the second pass, set up by _start_second_pass

    # ------------------------------------------------------------------------------------------- pass 1
    def add_means(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Pass 1: one batch of features (B, D), any float dtype, and int64 labels (B,) in 0..C-1."""
        if self._second is not None:
            raise RuntimeError("add_means after add_projections: pass 1 is over")
        hb = h.to(torch.float64)
        if self._sums is None:
            if self.origin is None:
                self.origin = _first_origin(hb)
            kw = dict(dtype=torch.float64, device=hb.device)
            self._sums = torch.zeros(self.num_classes, hb.shape[1], **kw)
            self._counts = torch.zeros(self.num_classes, **kw)
        elif hb.shape[1] != self._sums.shape[1]:
            raise InputError(f"{self.name} have D = {hb.shape[1]} but earlier batches had D = {self._sums.shape[1]}")
        self._sums.index_add_(0, y, hb - self.origin)
        self._counts += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        self._n_seen += hb.shape[0]
        # NaN and inf reach the class sums; count the samples that hold them only then (a finite overflow
        # of the sums passes here and is caught by the finiteness of the metrics' inputs later)
        if self._n_bad or not bool(torch.isfinite(self._sums).all()):
            self._n_bad += int((~torch.isfinite(hb)).any(dim=1).sum())

    def _start_second_pass(self) -> None:
        if self._sums is None:
            raise InputError(f"no batch of {self.name} was added")
        if self._n_bad:
            raise InputError(
                f"{self.name} contain NaN or infinite values in {self._n_bad} of {self._n_seen} samples "
                "(check the model's forward pass or the input scaling)"
            )
        missing = (self._counts == 0).nonzero().flatten().tolist()
        if missing:
            raise InputError(f"{len(missing)} class(es) have no sample among the {self.name}: {missing[:10]}")
        local = self._sums / self._counts[:, None]
        ref = local if self.reference is None else self.reference.local_means
        # Q: orthonormal basis of the span of the centred class means (and the reference's centred means).
        # Centring makes it independent of the origin; every right singular vector of M~ lies in it, for
        # either choice of global mean (both are affine combinations of the class means).
        span = local - local.mean(0)
        if self.reference is not None:
            span = torch.cat([span, ref - ref.mean(0)])
        q = torch.linalg.svd(span, full_matrices=False)[2].T  # (D, k), k <= min(C or 2C, D)
        k = q.shape[1]
        cols = q if self.weight is None else torch.cat([q, self.weight.T], dim=1)
        d = local.shape[1]
        # nearest centre: argmin_c ||h - r_c||^2 = argmin_c (||r_c||^2 - 2 h.(r_c - r_bar)), and r_c - r_bar lies
        # in the span of q, so h.(r_c - r_bar) = (h q).(q^T (r_c - r_bar)): the projections serve the rule too
        self._second = dict(
            local=local, q=q, k=k, cols=cols, local_q=local @ q, ref_q=(ref - ref.mean(0)) @ q,
            ref_sq=(ref * ref).sum(1), bias=_local_bias(self.weight, self.bias, self.origin),
            gram=torch.zeros(k, k, dtype=torch.float64, device=local.device),
            class_sq=torch.zeros(self.num_classes, dtype=torch.float64, device=local.device),
            within=torch.zeros(d, d, dtype=torch.float64, device=local.device) if self.scatter else None,
            correct=0, mismatch=0, n=0,
        )

    # ------------------------------------------------------------------------------------------- pass 2
    def add_projections(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """Pass 2: the same batches as pass 1 (any order, any batching)."""
        if self._second is None:
            self._start_second_pass()
        s = self._second
        k = s["k"]
        hl = h.to(torch.float64) - self.origin
        z = hl - s["local"].index_select(0, y)
        s["class_sq"].index_add_(0, y, torch.einsum("ij,ij->i", z, z))
        if s["within"] is not None:
            s["within"].addmm_(z.T, z)
        # one product gives the projections (for the scatter and the nearest centre) and the logits
        prod = hl @ s["cols"]
        hq = prod[:, :k]
        zq = hq - s["local_q"].index_select(0, y)
        s["gram"].addmm_(zq.T, zq)
        ncc = _ncc(hq @ s["ref_q"].T, s["ref_sq"])
        s["correct"] += int((ncc == y).sum())
        if self.weight is not None:
            s["mismatch"] += int((ncc != (prod[:, k:] + s["bias"]).argmax(1)).sum())
        s["n"] += h.shape[0]

    def stats(self) -> SplitStats:
        """The statistics, once both passes are over."""
        s = self._second
        if s is None or s["n"] != self._n_seen:
            raise RuntimeError(f"pass 2 saw {0 if s is None else s['n']} of the {self._n_seen} samples of pass 1")
        q, gram = s["q"], s["gram"]

        def quad(v: torch.Tensor) -> torch.Tensor:
            a = q.T @ v  # v lies in the span of q
            return ((gram @ a) * a).sum(0)

        return SplitStats(
            self._counts, self.origin + s["local"], s["class_sq"], quad,
            s["mismatch"] if self.weight is not None else None, s["correct"], s["within"],
            origin=self.origin, local_means=s["local"],
        )


BLOCK_ELEMENTS = 1 << 20  # one block of the in-memory route: 8 MB of float64, small enough to stay in cache


def _blocks(h, y):
    """(block of h, block of y) over rows, blocks of about BLOCK_ELEMENTS values."""
    rows = max(16, BLOCK_ELEMENTS // h.shape[1])
    for i in range(0, h.shape[0], rows):
        yield h[i:i + rows], y[i:i + rows]


def oneshot_stats(h, y, num_classes, *, reference: SplitStats | None = None, weight=None, bias=None,
                  name="features", scatter: bool = False) -> SplitStats:
    """Statistics of features ``h`` (N, D) and labels ``y`` held in memory (validated tensors, any float dtype).

    :class:`SpanStats` over blocks of rows (each converted to float64 as it is read, never the whole
    matrix). ``reference=None`` uses the split's own means for the nearest-class-centre counts (the train
    split). ``scatter=True`` also sums the full within-class scatter Z^T Z (O(N D^2)).
    """
    acc = SpanStats(num_classes, reference=reference, weight=weight, bias=bias, scatter=scatter, name=name)
    for hb, yb in _blocks(h, y):
        acc.add_means(hb, yb)
    for hb, yb in _blocks(h, y):
        acc.add_projections(hb, yb)
    return acc.stats()


class CollapseAccumulator:
    """Streaming statistics of one split: ``update(features, labels)`` per batch, then ``stats()``.

    One pass; memory O(D^2 + C*D) beyond one batch. Features are shifted by an origin (the mean of the first
    batch) and then by a per-class shift (the class's mean in the first batch that holds it) before any sum,
    so neither a large common offset nor near-collapse costs precision (the textbook ``E[hh^T] - mu mu^T``
    would). The nearest-class-centre metrics (``nc4_ncc_mismatch``, ``ncc_accuracy``) need the train class
    means *while* the batches stream: pass ``reference_means`` (for the train split itself that means a first
    pass; see :func:`ncbench.collapse.collapse_metrics_streaming`).

    Parameters
    ----------
    num_classes : int
        C.
    weight, bias : array (C, D) and (C,), optional
        The final linear layer; needed for ``nc4_ncc_mismatch`` together with ``reference_means``.
    reference_means : array (C, D) or SplitStats, optional
        Class means the nearest-class-centre rule uses (always the train means, spec/nc-metrics.md). Given as
        the train split's :class:`SplitStats`, its origin is reused and its ``local_means`` are used, which
        keeps the rule exact at any common offset of the features.

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

    def _init(self, h: torch.Tensor) -> None:
        c, dim, device = self.num_classes, h.shape[1], h.device
        self._dim = dim
        self._device = device
        self._w, self._b = check_classifier(self.weight, self.bias, dim, device)
        if self._w is not None and self._w.shape[0] != c:
            raise InputError(f"weight has {self._w.shape[0]} rows but num_classes is {c}")
        ref = self.reference_means
        self._ref_local = None
        if isinstance(ref, SplitStats):
            if ref.local_means.shape != (c, dim):
                raise InputError(f"reference_means has shape {tuple(ref.local_means.shape)}; expected ({c}, {dim})")
            self._origin = ref.origin.to(device)
            self._ref_local = ref.local_means.to(device)
        else:
            self._origin = _first_origin(h)
            if ref is not None:
                r = check_features(ref, "reference_means", device)
                if r.shape != (c, dim):
                    raise InputError(f"reference_means has shape {tuple(r.shape)}; expected ({c}, {dim})")
                self._ref_local = r - self._origin
        self._b_local = _local_bias(self._w, self._b, self._origin)
        kw = dict(dtype=torch.float64, device=device)
        self._n = torch.zeros(c, **kw)
        self._shift = torch.zeros(c, dim, **kw)  # per-class shift, relative to the origin
        self._seen = torch.zeros(c, dtype=torch.bool, device=device)
        self._sum = torch.zeros(c, dim, **kw)  # sum of (h - origin - shift_y)
        self._sq = torch.zeros(c, **kw)  # sum of ||h - origin - shift_y||^2
        self._scatter = torch.zeros(dim, dim, **kw)  # sum of (h - origin - shift_y)(...)^T
        self._mismatch = 0
        self._correct = 0

    def update(self, features, labels) -> None:
        """Add one batch: features (B, D), labels (B,) in 0..C-1."""
        h = check_features(features, "features", None if self._dim is None else self._device)
        if self._dim is None:
            self._init(h)
        elif h.shape[1] != self._dim:
            raise InputError(f"features have D = {h.shape[1]} but earlier batches had D = {self._dim}")
        y = check_labels(labels, h.shape[0], self.num_classes, "labels", h.device)
        hl = h - self._origin
        new = torch.unique(y[~self._seen[y]])
        if new.numel():  # shift each class by its mean in the first batch that holds it
            for c in new.tolist():
                self._shift[c] = hl[y == c].mean(0)
            self._seen[new] = True
        z = hl - self._shift[y]
        self._n += torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        self._sum.index_add_(0, y, z)
        self._sq.index_add_(0, y, (z * z).sum(1))
        self._scatter.addmm_(z.T, z)
        if self._ref_local is not None:
            mismatch, correct = _ncc_counts(hl, y, self._ref_local, self._w, self._b_local)
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
        d = self._sum / self._n[:, None]  # class mean minus origin minus shift
        local = self._shift + d
        class_sq = self._sq - self._n * (d * d).sum(1)
        within = self._scatter - (d.T * self._n) @ d

        def quad(v: torch.Tensor) -> torch.Tensor:
            return ((within @ v) * v).sum(0)

        has_ref = self._ref_local is not None
        return SplitStats(
            self._n.clone(), self._origin + local, class_sq.clamp_min(0), quad,
            self._mismatch if has_ref and self._w is not None else None,
            self._correct if has_ref else None, within, origin=self._origin, local_means=local,
        )

    @property
    def classifier(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The validated float64 (W, b), known after the first ``update``."""
        if self._dim is None:
            raise InputError("no batch was added: call update(features, labels) first")
        return self._w, self._b

    @property
    def origin(self) -> torch.Tensor:
        """(D,) the point the statistics are accumulated around, known after the first ``update``."""
        if self._dim is None:
            raise InputError("no batch was added: call update(features, labels) first")
        return self._origin
