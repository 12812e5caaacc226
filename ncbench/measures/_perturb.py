"""Flatness and sharpness: how far the folded chain's weights can move before training accuracy falls by 0.1.

Every Monte Carlo draw and every sharpness restart is one copy of the parameters; the copies are stacked
along a leading dimension and run together with ``torch.func.vmap`` over ``functional_call`` (the chain has
no batch norm left, so nothing depends on the batch). Draws are *common random numbers*: the standard
normal (or uniform) directions are drawn once per search from a local generator and only their scale changes
from one step of the search to the next, so the accuracy drop is a deterministic, nearly monotone function of
the scale and the bisection is well posed. The global RNG is never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ._fold import FoldedNetwork

#: floats of parameter copies or activations held at once (x 4 bytes): 256 MiB
MEMORY_FLOATS = 1 << 26


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for stream ``keys`` of ``seed`` (numpy's SeedSequence): independent streams per search."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *keys]).generate_state(2, dtype=np.uint64)[0]
               >> np.uint64(1))


@dataclass
class SearchResult:
    """Outcome of a search for the scale that changes training accuracy by ``target``.

    ``bisection``: the last scale evaluated (sigma or alpha); ``achieved``: its accuracy change; ``se``: the
    Monte Carlo standard error of that change (std over draws / sqrt(draws)); ``converged``: whether
    |achieved - target| is within the tolerance; ``history``: every (scale, change) evaluated, in order;
    ``scale``: the value reported (:func:`crossing`, or ``bisection`` where the search does not interpolate).
    """

    bisection: float
    achieved: float
    se: float
    converged: bool
    history: list[tuple[float, float]] = field(default_factory=list)
    scale: float = float("nan")

    def __post_init__(self) -> None:
        if math.isnan(self.scale):
            self.scale = self.bisection

    def as_info(self) -> dict:
        return {"value": self.scale, "bisection_value": self.bisection, "achieved": self.achieved, "se": self.se,
                "converged": self.converged, "evaluations": len(self.history),
                "history": [[s, d] for s, d in self.history]}


def crossing(history: list[tuple[float, float]], target: float, accepted: float) -> float:
    """Where the change crosses ``target``: log-linear interpolation between the largest scale evaluated below
    the target and the smallest above it (one of them is the accepted bisection point, within the tolerance).

    The bisection alone reports whichever point of its grid first lands in the window, so nearby models get the
    same value or values a grid step apart (a few percent in sigma, more than the Monte Carlo error); the
    crossing is continuous in the weights. Falls back to ``accepted`` when the target is not bracketed or the
    evaluated changes are not monotone around it.
    """
    below = [(s, d) for s, d in history if d < target]
    above = [(s, d) for s, d in history if d > target]
    if any(d == target for _, d in history) or not below or not above:
        return accepted
    (lo, d_lo), (hi, d_hi) = max(below), min(above)
    if not lo < hi or not d_lo < d_hi:
        return accepted
    t = (target - d_lo) / (d_hi - d_lo)
    return math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))


def log_bisection(f: Callable[..., tuple[float, float, bool]], *, target: float, tol: float, start: float,
                  factor: float = 8.0, limits: tuple[float, float] = (1e-7, 1e3), max_evals: int = 30,
                  min_ratio: float = 1e-3) -> SearchResult:
    """Bisection in log scale for ``f(x) = target ± tol``, ``f`` non-decreasing in ``x > 0``.

    ``f(x, full=False) -> (change, its standard error, complete)``; ``complete`` is False when ``f`` decided the
    side of the target from part of its draws (a value within ``tol`` is always complete). From ``start``,
    multiply or divide by ``factor`` until the target is bracketed, then evaluate the geometric mean of the
    bracket until one value lands within ``tol``; the result's ``scale`` is then where the evaluated changes
    cross the target (:func:`crossing`; a partial mean is an unbiased estimate from fewer draws), its
    ``bisection`` the point that landed. When the bracket narrows below a
    ratio of ``1 + min_ratio`` at an endpoint decided from part of the draws, that endpoint is evaluated again
    with every draw (a partial decision may have been wrong) and so is every later point, the other partial
    points leaving the bracket: with common random numbers the same first draws decide at every scale, so one
    misleading subset would mislead again. Not
    converged: after ``max_evals`` evaluations, when the bracket leaves ``limits``, or when it narrows at
    complete endpoints (``f`` jumps across the whole window there, e.g. one weight's noise flips many points).
    """
    pts: dict[float, tuple[float, float, bool]] = {}
    hist: list[tuple[float, float]] = []

    def ev(x: float, full: bool = False) -> float:
        d, se, complete = f(x, full=full)
        pts[x] = (float(d), float(se), bool(complete))
        hist.append((float(x), float(d)))
        return d

    def result(x: float, ok: bool) -> SearchResult:
        d, se, _ = pts[x]
        latest = sorted((p, v[0]) for p, v in pts.items())
        return SearchResult(x, d, se, ok, hist, scale=crossing(latest, target, x) if ok else x)

    x = start
    d = ev(x)
    full = False
    while abs(d - target) > tol:
        if len(hist) >= max_evals:
            return result(x, False)
        below = [p for p, v in pts.items() if v[0] < target]
        above = [p for p, v in pts.items() if v[0] > target]
        lo, hi = (max(below) if below else None), (min(above) if above else None)
        if lo is not None and hi is not None and hi / lo < 1 + min_ratio:
            partial = [p for p in (lo, hi) if not pts[p][2]]
            if not partial:
                return result(x, False)
            full = True  # from now on every draw, and no partial point bounds the bracket
            for p in [p for p, v in pts.items() if not v[2]]:
                del pts[p]
            x = partial[0]
            d = ev(x, full=True)
            continue
        x = lo * factor if hi is None else hi / factor if lo is None else math.sqrt(lo * hi)
        if not limits[0] <= x <= limits[1]:
            return result(hist[-1][0], False)
        d = ev(x, full=full)
    return result(x, True)


def reference_bisection(f: Callable[..., tuple[float, float, bool]], *, target: float, tol: float,
                        upper: float = 2.0, depth: int = 15) -> SearchResult:
    """The reference's search (``_pacbayes_sigma``): plain bisection of [0, ``upper``] for ``depth`` steps,
    stopping when |f - target| < tol, returning the last midpoint whether or not it converged."""
    lo, hi = 0.0, upper
    hist: list[tuple[float, float]] = []
    x, d, se = upper / 2, float("nan"), float("nan")
    for _ in range(depth):
        x = (lo + hi) / 2
        d, se, _ = f(x, full=True)
        hist.append((float(x), float(d)))
        if abs(d - target) < tol:
            break
        if d > target:
            hi = x
        else:
            lo = x
    return SearchResult(x, d, se, abs(d - target) < tol, hist)


class StackedRunner:
    """Runs many parameter copies of a folded chain on fixed points.

    Parameters
    ----------
    folded : FoldedNetwork
    x : Tensor (n, ...)
        Normalised inputs (the chain's input scale), on the device to compute on.
    y : Tensor (n,)
        Labels.
    """

    def __init__(self, folded: FoldedNetwork, x: torch.Tensor, y: torch.Tensor, act_per_point: int) -> None:
        self.net = folded.net
        self.x, self.y = x, y
        dev, dtype = x.device, x.dtype
        self.params = {k: v.to(device=dev, dtype=dtype) for k, v in folded.params().items()}
        self.numel = sum(v.numel() for v in self.params.values())
        self.act = max(1, int(act_per_point))

        def logits(p, xb):
            return functional_call(self.net, p, (xb,))

        def loss(p, xb, yb):
            z = logits(p, xb)
            return F.cross_entropy(z, yb, reduction="sum"), (z.argmax(1) != yb).sum()

        self._logits = vmap(logits, in_dims=(0, None))
        self._grad = vmap(grad(loss, has_aux=True), in_dims=(0, None, None))

    def point_chunk(self, copies: int, factor: int = 1) -> int:
        """Points per pass so that ``copies`` x points x activations (x ``factor`` for autograd) fits."""
        return max(1, min(self.x.shape[0], MEMORY_FLOATS // (copies * self.act * factor)))

    def copy_chunk(self) -> int:
        return max(1, MEMORY_FLOATS // max(1, self.numel))

    @torch.no_grad()
    def base_errors(self) -> float:
        """Error rate of the unperturbed chain on the points."""
        wrong = 0
        b = self.point_chunk(1)
        for i in range(0, self.x.shape[0], b):
            z = functional_call(self.net, self.params, (self.x[i:i + b],))
            wrong += int((z.argmax(1) != self.y[i:i + b]).sum())
        return wrong / self.x.shape[0]

    @torch.no_grad()
    def errors(self, stacked: dict[str, torch.Tensor]) -> torch.Tensor:
        """Error rate (float64, shape (copies,)) of each stacked parameter copy on the points."""
        copies = next(iter(stacked.values())).shape[0]
        wrong = torch.zeros(copies, dtype=torch.float64, device=self.x.device)
        b = self.point_chunk(copies)
        for i in range(0, self.x.shape[0], b):
            z = self._logits(stacked, self.x[i:i + b])
            wrong += (z.argmax(-1) != self.y[i:i + b]).sum(-1).to(torch.float64)
        return wrong / self.x.shape[0]

    def grads(self, stacked: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradient of the mean cross-entropy on points ``idx`` of each stacked copy."""
        copies = next(iter(stacked.values())).shape[0]
        b = self.point_chunk(copies, factor=3)
        total = None
        for i in range(0, idx.numel(), b):
            j = idx[i:i + b]
            g, _ = self._grad(stacked, self.x[j], self.y[j])
            total = g if total is None else {k: total[k] + g[k] for k in total}
        return {k: v / idx.numel() for k, v in total.items()}


def _draws(params: dict[str, torch.Tensor], draws: int, seed: int, kind: str) -> dict[str, torch.Tensor]:
    """Standard normal (``kind="normal"``) or uniform in [-1, 1] directions, (draws, *shape) per parameter, from
    a local CPU generator (the same numbers on every device), in name order."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = {}
    for k in sorted(params):
        shape = (draws, *params[k].shape)
        t = torch.randn(shape, generator=g) if kind == "normal" else 2 * torch.rand(shape, generator=g) - 1
        out[k] = t.to(device=params[k].device, dtype=params[k].dtype)
    return out


def noise_std(w: torch.Tensor, sigma: float, *, magnitude: bool, eps: float, reference: bool) -> torch.Tensor | float:
    """Standard deviation of the Gaussian noise on weights ``w`` at scale ``sigma``.

    Ours (sigma is the standard deviation): ``sigma`` (plain) or ``sqrt(sigma^2 w^2 + eps^2)`` (magnitude-aware,
    Jiang et al.'s variance sigma'^2 |w_i|^2 + eps^2). Reference (``reference=True``, as
    ``torch.normal(0, sigma**2, ...)`` and ``torch.normal(0, sigma**2 * |w|**2 + eps**2)`` in
    ``_perturbed_model``): ``sigma^2`` and ``sigma^2 w^2 + eps^2``, i.e. those expressions used as the standard
    deviation.
    """
    if magnitude:
        var_like = sigma ** 2 * w ** 2 + eps ** 2
        return var_like if reference else torch.sqrt(var_like)
    return sigma ** 2 if reference else sigma


def accuracy_drop_fn(runner: StackedRunner, *, draws: int, seed: int, magnitude: bool, eps: float,
                     reference: bool, target: float, tol: float, chunk: int | None = None,
                     z: float = 3.0, sd_floor: float = 0.05) -> Callable[..., tuple[float, float, bool]]:
    """``f(sigma, full=False) -> (mean accuracy drop, its Monte Carlo standard error, complete)`` over ``draws``
    noisy copies.

    The drop is the unperturbed chain's accuracy on the points minus each copy's (the reference takes the
    absolute difference). Directions are common random numbers: the same ``draws`` standard normal vectors at
    every sigma.

    Sequential decision: the copies run in chunks of ``chunk``; after a chunk, when the mean so far is further
    from ``target`` than ``tol + z * SE`` (SE from the draws so far, their standard deviation floored at
    ``sd_floor``: four draws can agree by chance), the remaining draws are skipped and ``complete`` is False:
    the search only needs to know on which side of the target that sigma lies, and re-evaluates with
    ``full=True`` where such a decision leads it into a dead end. A value within ``tol`` of the target
    therefore always uses every draw. ``chunk=None`` evaluates every draw at every sigma (as the reference
    does). ``f.draws_used`` lists the draws each call used.
    """
    base_err = runner.base_errors()
    w = runner.params
    chunk = min(chunk or draws, draws, runner.copy_chunk())
    keep = draws * runner.numel <= MEMORY_FLOATS  # else drawn again at every step: the same numbers
    cache: dict[int, dict[str, torch.Tensor]] = {}
    used: list[int] = []

    def directions(c0: int, c: int) -> dict[str, torch.Tensor]:
        z = cache.get(c0) or _draws(w, c, derive_seed(seed, c0), "normal")  # draws c0 .. c0+c-1
        if keep:
            cache[c0] = z
        return z

    def f(sigma: float, full: bool = False) -> tuple[float, float, bool]:
        drops = torch.empty(0, dtype=torch.float64, device=next(iter(w.values())).device)
        for c0 in range(0, draws, chunk):
            c = min(chunk, draws - c0)
            zc = directions(c0, c)
            stacked = {k: w[k] + noise_std(w[k], sigma, magnitude=magnitude, eps=eps, reference=reference) * zc[k]
                       for k in w}
            d = runner.errors(stacked) - base_err  # accuracy drop = error rise
            drops = torch.cat([drops, d])
            n = drops.numel()
            if n < draws and not full:
                sd = max(float(drops.std(unbiased=True)) if n > 1 else 0.0, sd_floor)
                if abs(_mean_drop(drops, reference) - target) > tol + z * sd / math.sqrt(n):
                    break
        n = drops.numel()
        used.append(n)
        se = float(drops.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
        return _mean_drop(drops, reference), se, n == draws

    f.base_error = base_err
    f.draws_used = used
    return f


def _mean_drop(drops: torch.Tensor, reference: bool) -> float:
    """The mean accuracy drop over the draws; the reference takes the absolute value of the mean displacement
    (``abs(np.mean(accuracy_samples) - accuracy)``), which differs from the mean when a draw raises accuracy."""
    mean = float(drops.mean())
    return abs(mean) if reference else mean


def error_rise_fn(runner: StackedRunner, *, restarts: int, steps: int, batch: int, seed: int,
                  target: float, tol: float, step_scale: float = 2.5) -> Callable[..., tuple[float, float, bool]]:
    """``f(alpha, full=False) -> (largest error rise found, its spread, True)`` in the box |dw_i| <= alpha |w_i|.

    Each of ``restarts`` copies starts at a uniform random point of the box (common random numbers across
    alphas) and takes ``steps`` signed-gradient *ascent* steps on the mean cross-entropy of a minibatch of
    ``batch`` points (consecutive slices of a fixed seeded permutation of the points, as Jiang et al.'s
    minibatch ascent), each of ``step_scale / steps`` of the box's half-width per coordinate, projected back
    onto the box (projected gradient ascent, as PGD in input space). The result is the largest error rate on
    all the points over the restarts' final iterates, minus the unperturbed error rate. The spread is the
    standard deviation over restarts / sqrt(restarts) (information only: the value is a worst case, not a mean).

    Sequential decision: the first restart runs alone; when it already raises the error by more than
    ``target + tol``, the largest rise is above the window whatever the others find, and they are skipped
    (``f.restarts_used`` lists how many ran): an exact decision, so the result is always complete. A value
    within the window always uses every restart.
    """
    base_err = runner.base_errors()
    w = runner.params
    u = _draws(w, restarts, seed, "uniform")
    absw = {k: v.abs() for k, v in w.items()}
    n = runner.x.shape[0]
    g = torch.Generator(device="cpu").manual_seed(derive_seed(seed, 1))
    order = torch.randperm(n, generator=g).to(runner.x.device)
    batch = min(batch, n)
    batches = [order[(k * batch + torch.arange(batch, device=order.device)) % n] for k in range(steps)]
    used: list[int] = []

    def ascend(r: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> torch.Tensor:
        delta = {k: r[k] * start[k] for k in w}
        for idx in batches:
            grads = runner.grads({k: w[k] + delta[k] for k in w}, idx)
            delta = {k: torch.clamp(delta[k] + (step_scale / steps) * r[k] * grads[k].sign(), -r[k], r[k])
                     for k in w}
        return runner.errors({k: w[k] + delta[k] for k in w}) - base_err

    def f(alpha: float, full: bool = False) -> tuple[float, float, bool]:
        r = {k: alpha * absw[k] for k in w}
        rise = ascend(r, {k: v[:1] for k, v in u.items()})
        if restarts > 1 and (full or float(rise.max()) <= target + tol):
            rise = torch.cat([rise, ascend(r, {k: v[1:] for k, v in u.items()})])
        used.append(rise.numel())
        spread = float(rise.std(unbiased=True)) / math.sqrt(rise.numel()) if rise.numel() > 1 else float("nan")
        return float(rise.max()), spread, True

    f.base_error = base_err
    f.restarts_used = used
    return f
