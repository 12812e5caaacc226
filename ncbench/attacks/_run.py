"""Robustness curve: clean accuracy, robust accuracy per eps, per-point flags, checks, margin."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from .._budget import eps_label
from .._errors import InputError
from ..features import InModelFormat
from ..features import predict as _predict
from . import _checks as C
from ._adapters import DECISION_RTOL, Autocast, StableArgmax, as_inputs
from ._adapters import perturbation_size as _size
from ._config import ATTACKS, AttackConfig, JobContext
from ._library import min_perturbation_fab
from ._seeding import chunks_of, preserved_global_rng


def check_model_output(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Return C; refuse a model whose output is not (N, C) with C > max label."""
    with torch.no_grad():
        out = model(x[:2])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != min(2, x.shape[0]):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"the model must return logits of shape (N, C); for 2 inputs it returned {shape}")
    if y.numel() and int(y.max()) >= out.shape[1]:
        raise InputError(f"labels go up to {int(y.max())} but the model has {out.shape[1]} outputs")
    return int(out.shape[1])


class _Progress:
    """A bar over points: each eps attacks up to every clean-correct point once (a minimal-norm attack searches
    once in all), so it moves with every batch (every component of a composite attack), and tqdm's rate gives
    the time left."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="pt", disable=not enabled, leave=False)
        self.done = 0.0

    def advance(self, n: float) -> None:
        before, self.done = self.done, self.done + n
        self.bar.update(int(self.done) - int(before))

    def settle(self, target: float) -> None:
        """Top up to ``target`` points done (a batch counts its size, whatever its attack reported)."""
        if target > self.done:
            self.advance(target - self.done)


def _batches(idx: torch.Tensor, cfg: AttackConfig):
    """The batches an attack sees: ``batch_size`` points at a time, or one fixed chunk of positions at a time
    for an attack whose randomness is shared by its batch (``chunked``)."""
    if getattr(ATTACKS.get(cfg.name), "chunked", False):
        for _, positions in chunks_of(idx):
            yield positions
    else:
        for i in range(0, idx.numel(), cfg.batch_size):
            yield idx[i:i + cfg.batch_size]


def _smallest_examples(model, x, y, idx, cfg: AttackConfig, num_classes: int, job: JobContext,
                       progress: _Progress) -> tuple:
    """A minimal-norm attack (CW, DeepFool) run once on the points ``idx``: per point its smallest fooling
    example and that example's size (inf where none was found). It does not depend on eps, so the curve
    thresholds these instead of searching again at every budget."""
    attack = ATTACKS.get(cfg.name)(model, float("inf"), cfg, num_classes, job, x)
    adv = x.clone()
    size = torch.full((x.shape[0],), float("inf"), dtype=torch.float64, device=x.device)
    for b in _batches(idx, cfg):
        mark = progress.done
        a, _ = attack(x[b], y[b], b)
        a = a.detach()
        fooled = _predict(model, a, cfg.batch_size) != y[b]
        adv[b] = a
        size[b[fooled]] = _size(a[fooled] - x[b[fooled]], cfg.norm).double()
        progress.settle(mark + b.numel())
    return adv, size


def _thresholded(minimal: tuple, eps: float):
    """``attack(x, y, idx)`` for one eps: each point's smallest example where it is within eps, else x."""
    adv_all, size = minimal

    def attack(x, y, idx):
        within = size[idx] <= eps
        adv = x.clone()
        adv[within] = adv_all[idx[within]]
        return adv, {}

    return attack


def robustness_curve(model: nn.Module, x, y, cfg: AttackConfig, *, seed: int = 0, progress: bool = True) -> dict:
    """Attack ``model`` on inputs ``x`` (N, ...) in [0, 1] with labels ``y`` (N,) at every eps of ``cfg``.

    ``x``: a float tensor or array of any precision (cast to the model's dtype); ``y``: integer class indices
    of any width (cast to int64). Only correctly classified points are attacked, and at each eps only the points
    still robust at the smaller one (a point fooled at a smaller eps is fooled at every larger eps: the smaller
    ball lies inside the larger). So the number at one eps depends on the grid below it; ``first_fooled_eps``
    (per point, the smallest eps of the grid at which it was fooled; 0 = misclassified clean; None = robust
    throughout) lets any grid eps's number be recomputed.

    One job, one result (docs/attacks.md): every random number is derived from ``seed``, the attack, its
    settings, the budget and each point's position (``_seeding``), and torch's global random state is restored
    after; every correct/fooled decision goes through one rule (``_adapters.StableArgmax``), so what ran
    earlier never changes a point's result, and the batch size only through float rounding of an attack's
    trajectory (docs/attacks.md, "The decision rule").

    Returns a dict with ``name``, ``norm``, ``label`` (what ran, in words), ``params`` (the attack's own
    settings), ``eps``/``eps_labels``, ``clean_accuracy``, ``curve`` (per eps: ``robust_accuracy``,
    ``n_attacked``, ``wall_time_s``), ``first_fooled_eps``, ``checks``, ``reliable`` and
    ``unreliable_reasons``, and ``margin`` (if asked for).
    """
    t_start = time.perf_counter()
    x, y = as_inputs(model, x, y, who="robustness_curve")
    if x.shape[0] == 0:
        raise InputError("robustness_curve: no points to attack (x has 0 samples)")
    if cfg.n_points is not None:
        x, y = x[:cfg.n_points], y[:cfg.n_points]
    if not (float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
        raise InputError(f"robustness_curve: inputs must lie in [0, 1]; got values in [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}]")
    from ..features import model_device

    device = model_device(model)
    x, y = x.to(device), y.to(device)
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with preserved_global_rng(device):
            out = _curve(model, x, y, cfg, seed, progress)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    out["wall_time_s"] = time.perf_counter() - t_start
    return out


def _curve(model, x, y, cfg: AttackConfig, seed: int, progress: bool) -> dict:
    num_classes = check_model_output(model, x, y)
    sample = slice(0, min(cfg.check_points, x.shape[0]))
    checks = [C.check_eval_mode(model), C.check_deterministic(model, x[sample]), C.check_logits(model, x[sample])]
    fmt = InModelFormat(model).eval()
    # the one decision rule: every argmax below (clean, attacks' early stops, each eps, the recount) is stable
    target = StableArgmax(Autocast(fmt) if cfg.precision == "bf16" else fmt, DECISION_RTOL[cfg.precision]).eval()
    bs = cfg.batch_size
    bf16_disagreement = None
    if cfg.precision == "bf16":
        bf16_disagreement = float((_predict(Autocast(fmt), x[sample], bs) != _predict(fmt, x[sample], bs))
                                  .float().mean())
    correct = _predict(target, x, bs) == y
    if bool(correct[sample].any()):
        checks.append(C.check_gradients(model, x[sample][correct[sample]], y[sample][correct[sample]]))
    n = x.shape[0]
    robust = correct.clone()
    clean = int(correct.sum()) / n
    best_adv = x.clone()
    eps_found = torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)  # float64: the exact eps
    grid = sorted(set(float(e) for e in cfg.eps))
    factory = ATTACKS.get(cfg.name)
    minimal_norm = getattr(factory, "minimal_norm", False)
    n_correct = int(correct.sum())
    positive = [e for e in grid if e > 0]
    bar = _Progress(n_correct * (1 if minimal_norm else len(positive)), f"attack {cfg.name}-{cfg.norm}", progress)
    job = JobContext(seed=int(seed), advance=bar.advance)
    curve, claimed = [], []
    minimal = None  # a minimal-norm attack's smallest examples, found once and thresholded at each eps
    for eps in grid:
        t0 = time.perf_counter()
        idx = robust.nonzero().flatten()
        row = {"eps": eps, "eps_label": eps_label(eps), "n_attacked": int(idx.numel()) if eps > 0 else 0}
        if eps > 0 and idx.numel():
            bar.bar.set_description(f"attack {cfg.name}-{cfg.norm} eps {eps_label(eps)}")
            if minimal_norm:
                if minimal is None:
                    minimal = _smallest_examples(target, x, y, idx, cfg, num_classes, job, bar)
                attack = _thresholded(minimal, eps)
            else:
                bar.settle(bar.done + n_correct - idx.numel())  # points fooled at a smaller eps: nothing to do
                attack = factory(target, eps, cfg, num_classes, job, x)
            max_size, lo, hi, n_nan, fooled_by = 0.0, 1.0, 0.0, 0, {}
            for b in _batches(idx, cfg):
                mark = bar.done
                adv, info = attack(x[b], y[b], b)
                adv = adv.detach()
                n_nan += int(torch.isnan(adv).flatten(1).any(1).sum())
                max_size = max(max_size, float(_size(adv - x[b], cfg.norm).max()))
                lo, hi = min(lo, float(adv.min())), max(hi, float(adv.max()))
                fooled = _predict(target, adv, bs) != y[b]
                best_adv[b[fooled]] = adv[fooled]
                eps_found[b[fooled]] = eps
                robust[b[fooled]] = False
                for k, v in info.get("fooled_by", {}).items():
                    fooled_by[k] = fooled_by.get(k, 0) + v
                if not minimal_norm:
                    bar.settle(mark + b.numel())
            checks.append(C.check_bounds(eps, cfg.norm, max_size, lo, hi, n_nan))
            sq = C.check_square(eps, fooled_by, n) if fooled_by else None
            if sq:
                checks.append(sq)
            if fooled_by:
                row["fooled_by"] = fooled_by
        elif eps > 0 and not minimal_norm:
            bar.settle(bar.done + n_correct)
        claimed.append(int(robust.sum()))
        row["robust_accuracy"] = claimed[-1] / n
        row["wall_time_s"] = time.perf_counter() - t0
        curve.append(row)
        bar.bar.set_postfix(robust=f"{row['robust_accuracy']:.3f}")
    bar.bar.close()
    # the adversarial inputs, forwarded again in one differently batched pass, through the same decision rule
    other = max(1, bs // 2 + 1)
    found = torch.isfinite(eps_found).nonzero().flatten()
    still_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    if found.numel():
        still_fooled[found] = _predict(target, best_adv[found], other) != y[found]
    recomputed_correct = _predict(target, x, other) == y
    for row, c in zip(curve, claimed):
        r = int((recomputed_correct & ~(still_fooled & (eps_found <= row["eps"]))).sum())
        checks.append(C.check_recomputed(row["eps"], c, r, n))
    margin = None
    if cfg.margin == "fab":
        pts = correct.nonzero().flatten()[:cfg.margin_points]
        sizes = min_perturbation_fab(target, x[pts], y[pts], cfg.norm, num_classes, seed=seed)
        ok = torch.isfinite(sizes)
        margin = {"method": "fab", "norm": cfg.norm, "n_points": int(pts.numel()),
                  "n_found": int(ok.sum()),
                  "mean_min_perturbation": float(sizes[ok].mean()) if bool(ok.any()) else None,
                  "median_min_perturbation": float(sizes[ok].median()) if bool(ok.any()) else None}
    checks.append(C.check_eval_mode(model))  # nothing switched it back on during the attack
    failed = [c for c in checks if not c["passed"]]
    first = torch.where(correct, eps_found, torch.zeros_like(eps_found)).tolist()
    return {"name": cfg.name, "norm": cfg.norm, "label": cfg.label(), "params": cfg.own_params(),
            "eps": grid, "eps_labels": [eps_label(e) for e in grid], "n_points": n, "precision": cfg.precision,
            "seed": int(seed), "batch_size": cfg.batch_size, "check_points": cfg.check_points,
            "clean_accuracy": clean, "curve": curve,
            "first_fooled_eps": [None if math.isinf(v) else v for v in first],
            "checks": checks, "reliable": not failed,
            "unreliable_reasons": [f"{c['check']}: {c['detail']}" for c in failed],
            "margin": margin, "bf16_disagreement": bf16_disagreement, "wall_time_s": 0.0}


def robust_at(result: dict, eps: float) -> list[bool]:
    """Per point, whether it is still robust at budget ``eps`` of the result's grid (from ``first_fooled_eps``)."""
    return [f is None or f > eps for f in result["first_fooled_eps"]]


def adversarial_examples(model: nn.Module, x, y, cfg: AttackConfig, eps: float, *, seed: int = 0) -> torch.Tensor:
    """The adversarial example of every point of ``x`` from ``cfg``'s attack at one budget ``eps``.

    What the attack returns for each point, every point attacked (also those misclassified clean): a gradient
    attack's first iterate that fools the model, or its last iterate where none does; a minimal-norm attack's
    smallest example where it is within ``eps``, else the point itself. Seeded as the robustness curve is (the
    job's ``seed``, the attack and its settings, the budget, each point's position in ``x``), eval mode, with
    torch's global random state restored after. Used for collapse under attack (``train_adv``, ``test_adv``).

    Returns a tensor shaped like ``x`` on the model's device.
    """
    from ..features import model_device

    x, y = as_inputs(model, x, y, who="adversarial_examples")
    if not (float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
        raise InputError(f"adversarial_examples: inputs must lie in [0, 1]; got values in [{float(x.min()):.3g}, "
                         f"{float(x.max()):.3g}]")
    if not eps > 0:
        return x.to(model_device(model)).clone()
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with preserved_global_rng(device):
            num_classes = check_model_output(model, x, y)
            fmt = InModelFormat(model).eval()
            target = StableArgmax(Autocast(fmt) if cfg.precision == "bf16" else fmt,
                                  DECISION_RTOL[cfg.precision]).eval()
            job = JobContext(seed=int(seed))
            idx = torch.arange(x.shape[0], device=device)
            factory = ATTACKS.get(cfg.name)
            if getattr(factory, "minimal_norm", False):
                quiet = _Progress(0, "", False)
                return _thresholded(_smallest_examples(target, x, y, idx, cfg, num_classes, job, quiet),
                                    float(eps))(x, y, idx)[0]
            attack = factory(target, float(eps), cfg, num_classes, job, x)
            adv = x.clone()
            for b in _batches(idx, cfg):
                adv[b] = attack(x[b], y[b], b)[0].detach()
            return adv
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
