"""``generalization_measures``: the measures that did best in Jiang et al. (ICLR 2020) and Dziugaite et al.
(NeurIPS 2020), for one trained model. Definitions, sources and conventions: docs/measures.md."""

from __future__ import annotations

import math
import time
from typing import Iterable

import torch

from .._errors import InputError
from ..features import extract, model_device, output_margin
from ._fold import FoldedNetwork, Unsupported, fold_network
from ._norms import layer_spectral_norm, path_norm
from ._perturb import (StackedRunner, accuracy_drop_fn, derive_seed, error_rise_fn, log_bisection,
                       reference_bisection)

#: the value names, in the order records list them
MEASURE_NAMES = ("pacbayes_flatness", "pacbayes_mag_flatness", "pacbayes_bound", "pacbayes_mag_bound",
                 "mag_sharpness", "path_norm", "path_norm_over_margin", "dist_from_init",
                 "log_prod_spec_over_margin", "log_sum_frob_over_margin", "inverse_margin")
#: measures that compare with the weights at initialisation: None without ``init_state``
INIT_MEASURES = ("pacbayes_bound", "pacbayes_mag_bound", "dist_from_init")
#: measures that divide by the squared margin: None when the margin is not positive
MARGIN_MEASURES = ("path_norm_over_margin", "log_prod_spec_over_margin", "log_sum_frob_over_margin",
                   "inverse_margin")
#: which family (timed together in ``info["seconds"]``) computes each measure
FAMILIES = {"pacbayes": ("pacbayes_flatness", "pacbayes_bound"),
            "pacbayes_mag": ("pacbayes_mag_flatness", "pacbayes_mag_bound"),
            "sharpness": ("mag_sharpness",),
            "norms": ("path_norm", "path_norm_over_margin", "log_prod_spec_over_margin", "log_sum_frob_over_margin",
                      "dist_from_init"),
            "margin": ("inverse_margin",)}

# Settings, with units and the reason for each (docs/measures.md has the measurements behind them).
#: training points the perturbation searches evaluate on: a fixed seeded subset (all points when fewer); the
#: benchmark shows the values on it move less than their own Monte Carlo error from the full-set values
N_POINTS = 400
#: Monte Carlo draws of the weight noise per step of the sigma' searches (the reference uses 10); a step whose
#: side of the target is already clear after a chunk of draws skips the rest (never a step within tolerance)
MC_DRAWS = 24
DRAW_CHUNK = 4
#: random starts of the sharpness ascent, and ascent steps per start (Jiang et al.'s pseudo-code: a few
#: restarts of a few steps each, keeping the worst; 2 rather than 3 keeps an MLP's measures within its training
#: time, benchmarks/bench_measures.py)
SHARPNESS_RESTARTS = 2
ASCENT_STEPS = 5
#: points per ascent step (a minibatch of the subset)
ASCENT_BATCH = 128
#: the accuracy change the searches aim at and its tolerance (Jiang et al.: 0.1; the reference: +-0.01)
TARGET = 0.1
TOLERANCE = 0.01
#: epsilon of the magnitude-aware noise, variance sigma^2 w^2 + eps^2 (Jiang et al. and the reference: 1e-3)
MAG_EPS = 1e-3
#: where the log-bisections start (then x/÷ 8 until bracketed): typical sigma' of absolute noise, sigma'_m of
#: relative noise and alpha' of the box, on the models measured
START = {"sigma": 1e-2, "mag_sigma": 1e-1, "alpha": 1e-2}
BRACKET_FACTOR = 8.0


def _check(model, x_train, y_train, *, n_points, mc_draws, sharpness_restarts, ascent_steps, ascent_batch, target,
           tolerance, mag_eps, only):
    fc = getattr(model, "fc", None)
    if not isinstance(fc, torch.nn.Linear):
        raise InputError(f"model must be an ncbench Classifier (with an nn.Linear `fc`); got {type(model).__name__}")
    x = torch.as_tensor(x_train)
    y = torch.as_tensor(y_train)
    if not x.is_floating_point() or x.ndim < 2:
        raise InputError(f"x_train must be a float tensor (N, ...); got dtype {x.dtype}, shape {tuple(x.shape)}")
    if y.ndim != 1 or y.dtype != torch.int64 or y.shape[0] != x.shape[0]:
        raise InputError(f"y_train must be int64 of shape (N,) = ({x.shape[0]},); got dtype {y.dtype}, shape "
                         f"{tuple(y.shape)}")
    if x.shape[0] < 2:
        raise InputError(f"x_train needs at least 2 points; got {x.shape[0]}")
    c = fc.out_features
    if int(y.min()) < 0 or int(y.max()) >= c:
        raise InputError(f"y_train labels must be in 0..{c - 1} (the model has {c} classes); got "
                         f"{int(y.min())}..{int(y.max())}")
    for name, v, low in (("n_points", n_points, 1), ("mc_draws", mc_draws, 2),
                         ("sharpness_restarts", sharpness_restarts, 1), ("ascent_steps", ascent_steps, 1),
                         ("ascent_batch", ascent_batch, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise InputError(f"{name} must be an integer >= {low}; got {v!r}")
    if not 0 < tolerance < target < 1:
        raise InputError(f"need 0 < tolerance < target < 1 (accuracy changes); got target={target}, "
                         f"tolerance={tolerance}")
    if not mag_eps >= 0:
        raise InputError(f"mag_eps must be >= 0; got {mag_eps}")
    names = MEASURE_NAMES if only is None else tuple(only)
    unknown = sorted(set(names) - set(MEASURE_NAMES))
    if unknown:
        raise InputError(f"unknown measure(s) {unknown}; the measures are {list(MEASURE_NAMES)}")
    return x.to(torch.float32), y, [n for n in MEASURE_NAMES if n in set(names)]


def _load_init(model, init_state, x_shape) -> FoldedNetwork:
    try:
        return fold_network(model, init_state, input_shape=x_shape)
    except KeyError as err:
        raise InputError(f"init_state lacks {err.args[0]!r}: pass the model's state dict at initialisation "
                         "(model.state_dict() before training)") from None


def generalization_measures(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, *,
                            init_state: dict | None = None, seed: int = 0, n_points: int = N_POINTS,
                            mc_draws: int = MC_DRAWS, sharpness_restarts: int = SHARPNESS_RESTARTS,
                            ascent_steps: int = ASCENT_STEPS, ascent_batch: int = ASCENT_BATCH,
                            target: float = TARGET, tolerance: float = TOLERANCE, mag_eps: float = MAG_EPS,
                            reference_sigma: bool = False, only: Iterable[str] | None = None) -> dict:
    """Generalization measures of a trained classifier (Jiang et al. 2020; Dziugaite et al. 2020).

    Every measure is a complexity: **higher predicts a larger generalization gap** (worse generalization).
    Formulas, sources and the reference code's conventions: docs/measures.md.

    Parameters
    ----------
    model : Classifier
        In eval mode; left exactly as found (mode, weights, ``requires_grad``). The measures act on its
        eval-mode function with batch norm folded into the preceding layer and the input normalisation
        treated as preprocessing.
    x_train : Tensor, float32 (N, ...)
        The training inputs in [0, 1] (all of them: the margin and m = N use every point).
    y_train : Tensor, int64 (N,)
        The training labels (as trained on, label noise included).
    init_state : dict, optional
        The model's state dict at initialisation; without it ``pacbayes_bound``, ``pacbayes_mag_bound`` and
        ``dist_from_init`` are None.
    seed : int
        Seeds the subset of points, the Monte Carlo draws and the sharpness starts (local generators only).
    n_points : int
        Training points the perturbation searches evaluate on (a fixed seeded subset; all when N <= n_points).
    mc_draws : int
        Noise draws per step of the sigma' searches.
    sharpness_restarts, ascent_steps, ascent_batch : int
        Random starts of the sharpness ascent, signed-gradient steps per start, and points per step.
    target, tolerance : float
        The searches look for an accuracy drop (sharpness: an error rise) of ``target`` +- ``tolerance``.
    mag_eps : float
        eps of the magnitude-aware noise (variance sigma^2 w_i^2 + eps^2) and of its bound.
    reference_sigma : bool
        Reproduce the reference code (``nitarshan/robust-generalization-measures``): noise of standard
        deviation sigma^2 (magnitude-aware: sigma^2 w^2 + eps^2), its bisection of [0, 2] in 15 steps, the
        absolute accuracy change, and the flatness and bounds computed from that sigma. For regression tests.
    only : iterable of str, optional
        Compute only these measures (names as in :data:`MEASURE_NAMES`); the result lists only them.

    Returns
    -------
    dict
        ``{"values": {name: float | None}, "info": {...}}``. ``info`` holds sigma', sigma'_m and alpha' with the
        accuracy change each reached, its Monte Carlo error and every step of the search, the margin, the number
        of points and draws, per-layer spectral and Frobenius norms, the folding check, seconds per family, and
        ``reasons``: why each None value is None.

    Examples
    --------
    >>> from ncbench.models import create_model
    >>> m = create_model("mlp", input_shape=(1, 8), num_classes=3, width=8, depth=1).eval()
    >>> x = torch.rand(64, 1, 8); y = m(x).argmax(1)
    >>> out = generalization_measures(m, x, y, only=["path_norm", "inverse_margin"])
    >>> sorted(out["values"])
    ['inverse_margin', 'path_norm']
    """
    x, y, names = _check(model, x_train, y_train, n_points=n_points, mc_draws=mc_draws,
                         sharpness_restarts=sharpness_restarts, ascent_steps=ascent_steps, ascent_batch=ascent_batch,
                         target=target, tolerance=tolerance, mag_eps=mag_eps, only=only)
    run = _Run(names, x.shape[0], seed)
    run.info.update({"target": target, "tolerance": tolerance, "reference_sigma": bool(reference_sigma),
                     "noise_std": "sigma^2 (reference)" if reference_sigma else "sigma",
                     "normalize": "preprocessing (the measures act on normalised inputs)",
                     "batch_norm": "folded into the preceding layer (eval-mode running statistics)"})

    t = time.perf_counter()
    logits, gamma = _margin(model, x, y, run)
    run.seconds["margin"] = time.perf_counter() - t
    if not run.wanted - {"inverse_margin"}:
        return run.result()

    try:
        folded, xn = _checked_fold(model, x, logits, run)
    except Unsupported as err:
        run.fail(run.wanted - {"inverse_margin"}, f"unsupported architecture: {err}")
        return run.result()
    init = None
    if init_state is None:
        run.fail(INIT_MEASURES, "no initial weights (init_state is None): the measure compares with the weights at "
                                "initialisation")
    elif run.wanted & set(INIT_MEASURES):
        init = _load_init(model, init_state, tuple(x.shape[1:]))

    t = time.perf_counter()
    diffs = _norm_measures(folded, init, gamma, run)
    run.seconds["norms"] = time.perf_counter() - t

    searches = [f for f in ("pacbayes", "pacbayes_mag", "sharpness") if run.wanted & set(FAMILIES[f])]
    if not searches:
        return run.result()
    m = int(x.shape[0])
    g = torch.Generator(device="cpu").manual_seed(derive_seed(seed, 1))
    idx = torch.arange(m) if n_points >= m else torch.randperm(m, generator=g)[:n_points].sort().values
    dev = xn.device
    runner = StackedRunner(folded, xn[idx.to(dev)], y[idx].to(dev), folded.act_per_point)
    run.info.update({"n_points": int(idx.numel()), "mc_draws": mc_draws, "sharpness_restarts": sharpness_restarts,
                     "ascent_steps": ascent_steps, "ascent_batch": ascent_batch, "mag_eps": mag_eps,
                     "base_accuracy": 1.0 - runner.base_errors(),
                     "perturbed_parameters": "every weight and bias of the folded chain"})
    d_vec = None if diffs is None else torch.cat([diffs[n].reshape(-1) for n in folded.weight_names()])
    for family in searches:
        t = time.perf_counter()
        if family == "sharpness":
            _sharpness(runner, run, restarts=sharpness_restarts, steps=ascent_steps, batch=ascent_batch,
                       target=target, tol=tolerance)
        else:
            _flatness(runner, run, d_vec, magnitude=family == "pacbayes_mag", draws=mc_draws, eps=mag_eps,
                      reference=reference_sigma, target=target, tol=tolerance)
        run.seconds[family] = time.perf_counter() - t
    return run.result()


class _Run:
    """Values, reasons, info and timings of one call."""

    def __init__(self, names, m, seed) -> None:
        self.wanted = set(names)
        self.values: dict[str, float | None] = {n: None for n in names}
        self.reasons: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.info: dict = {"n_train": int(m), "seed": int(seed)}
        self.seed = int(seed)

    def set(self, name: str, value: float) -> None:
        if name in self.wanted:
            if value is not None and math.isfinite(value):
                self.values[name] = float(value)
            else:
                self.fail([name], f"not finite ({value})")

    def fail(self, names, reason: str) -> None:
        for n in names:
            if n in self.wanted and self.values.get(n) is None and n not in self.reasons:
                self.reasons[n] = reason

    def result(self) -> dict:
        self.info["reasons"] = {n: self.reasons.get(n, "not computed") for n in self.values if self.values[n] is None}
        self.info["seconds"] = self.seconds
        return {"values": self.values, "info": _json_safe(self.info)}


def _json_safe(obj):
    """``obj`` with every non-finite float (e.g. the spread of a single restart) replaced by None: records are
    strict JSON (``ncbench._io.dumps`` refuses NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _margin(model, x, y, run: _Run) -> tuple[torch.Tensor, float]:
    """Logits of every training point (eval mode) and their margin: ``train_margin_p10`` of evaluate.measures."""
    _, logits = extract(model, x)
    gamma = float(torch.quantile(output_margin(logits.double(), y.to(logits.device)), 0.1))
    run.info["margin"] = gamma
    run.info["margin_definition"] = ("10th percentile over all training points of the true logit minus the largest "
                                     "other logit (train_margin_p10), from the model's eval-mode logits")
    if gamma <= 0:
        run.fail(MARGIN_MEASURES, f"the margin (10th percentile of true minus largest other logit) is {gamma:.4g} "
                                  "<= 0: more than 10% of training points are misclassified or on the boundary, and "
                                  "the measure divides by the squared margin")
    else:
        run.set("inverse_margin", 1.0 / gamma ** 2)
    return logits, gamma


def _checked_fold(model, x, logits, run: _Run) -> tuple[FoldedNetwork, torch.Tensor]:
    """The folded chain and the normalised inputs; Unsupported unless the chain reproduces the model's logits."""
    dev = model_device(model)
    folded = fold_network(model, input_shape=tuple(x.shape[1:]))
    k = min(x.shape[0], 256)
    with torch.no_grad():
        xn = model.normalize(x.to(dev)).to(torch.float32)
        z = torch.func.functional_call(folded.net, {n: p.to(dev) for n, p in folded.net.named_parameters()},
                                       (xn[:k].double(),))
        diff = float((z - logits[:k].to(dev).double()).abs().max())
    scale = max(1.0, float(logits[:k].abs().max()))
    run.info["fold"] = {"max_abs_logit_diff": diff, "checked_points": k}
    if not diff <= 1e-3 * scale:
        raise Unsupported(f"the folded chain's logits differ from the model's by {diff:.3g} (more than "
                          f"{1e-3 * scale:.3g}): the model is not the chain of its modules")
    return folded, xn


def _norm_measures(folded: FoldedNetwork, init: FoldedNetwork | None, gamma: float,
                   run: _Run) -> dict[str, torch.Tensor] | None:
    """Path norm, spectral and Frobenius norms over the margin, distance from initialisation (float64).

    Returns the weight differences from initialisation by name (None without initial weights)."""
    params = folded.params()
    names = folded.weight_names()
    layers = []
    for layer, name in zip(folded.layers, names):
        entry = {"sources": layer.sources, "kind": layer.kind, "input_shape": list(layer.input_shape),
                 "frobenius_norm": float(params[name].norm())}
        if "log_prod_spec_over_margin" in run.wanted:
            entry["spectral_norm"] = layer_spectral_norm(folded.net[layer.index], layer.input_shape)
        layers.append(entry)
    run.info["layers"] = layers
    diffs = None
    if init is not None:
        w0 = init.params()
        diffs = {n: params[n] - w0[n] for n in names}
        for entry, n in zip(layers, names):
            entry["dist_from_init"] = float((diffs[n] ** 2).sum())
        run.info["dist_from_init"] = sum(e["dist_from_init"] for e in layers)
        run.set("dist_from_init", run.info["dist_from_init"])
    if run.wanted & {"path_norm", "path_norm_over_margin"}:
        run.info["path_norm"] = path_norm(folded)
        run.set("path_norm", run.info["path_norm"])
    if gamma <= 0:
        return diffs
    run.set("path_norm_over_margin", run.info.get("path_norm", math.nan) / gamma ** 2)
    d = len(layers)
    if "log_prod_spec_over_margin" in run.wanted:
        specs = [e["spectral_norm"] for e in layers]
        if min(specs) > 0:
            run.set("log_prod_spec_over_margin", sum(2 * math.log(v) for v in specs) - 2 * math.log(gamma))
        else:
            run.fail(["log_prod_spec_over_margin"], "a layer's spectral norm is 0 (an all-zero layer)")
    frobs = [e["frobenius_norm"] for e in layers]
    if min(frobs) > 0:
        run.set("log_sum_frob_over_margin",
                math.log(d) + (sum(2 * math.log(v) for v in frobs) - 2 * math.log(gamma)) / d)
    else:
        run.fail(["log_sum_frob_over_margin"], "a layer's Frobenius norm is 0 (an all-zero layer)")
    return diffs


def _flatness(runner: StackedRunner, run: _Run, d_vec: torch.Tensor | None, *, magnitude: bool, draws: int,
              eps: float, reference: bool, target: float, tol: float) -> None:
    """sigma' (or sigma'_m), its flatness 1/sigma'^2 and its PAC-Bayes bound from the initial weights."""
    key, flat, bound = (("mag_sigma", "pacbayes_mag_flatness", "pacbayes_mag_bound") if magnitude else
                        ("sigma", "pacbayes_flatness", "pacbayes_bound"))
    f = accuracy_drop_fn(runner, draws=draws, seed=derive_seed(run.seed, 3 if magnitude else 2), magnitude=magnitude,
                         eps=eps, reference=reference, target=target, tol=tol, chunk=None if reference else DRAW_CHUNK)
    if reference:
        res = reference_bisection(f, target=target, tol=tol)
    else:
        res = log_bisection(f, target=target, tol=tol, start=START[key], factor=BRACKET_FACTOR)
    run.info[key] = {**res.as_info(), "draws_used": list(f.draws_used)}
    if not res.converged or not res.scale > 0:
        run.fail([flat, bound], _not_converged(key.replace("_", " ") + "'", res, target, tol, "accuracy drop"))
        return
    s, m = res.scale, run.info["n_train"]
    run.set(flat, 1.0 / s ** 2)
    if d_vec is None or bound not in run.wanted:
        return
    if magnitude:  # Jiang et al. eq. 56 (the reference's _pacbayes_mag_bound(dist_w_vec))
        omega = d_vec.numel()
        num = eps ** 2 + (s ** 2 + 1) * float((d_vec ** 2).sum()) / omega
        run.set(bound, 0.25 * float(torch.log(num / (eps ** 2 + s ** 2 * d_vec ** 2)).sum()) + math.log(m / s) + 10)
    else:  # Jiang et al. eq. 48
        run.set(bound, float((d_vec ** 2).sum()) / (4 * s ** 2) + math.log(m / s) + 10)


def _sharpness(runner: StackedRunner, run: _Run, *, restarts: int, steps: int, batch: int, target: float,
               tol: float) -> None:
    """alpha' of the magnitude-aware box and the sharpness 1/alpha'^2."""
    f = error_rise_fn(runner, restarts=restarts, steps=steps, batch=batch, seed=derive_seed(run.seed, 4),
                      target=target, tol=tol)
    res = log_bisection(f, target=target, tol=tol, start=START["alpha"], factor=BRACKET_FACTOR)
    run.info["alpha"] = {**res.as_info(), "restarts_used": list(f.restarts_used)}
    if res.converged:
        run.set("mag_sharpness", 1.0 / res.scale ** 2)
    else:
        run.fail(["mag_sharpness"], _not_converged("alpha'", res, target, tol, "error rise"))


def _not_converged(what, res, target, tol, change) -> str:
    return (f"the {what} search did not reach an {change} of {target} +- {tol} in {len(res.history)} evaluations "
            f"(last scale {res.scale:.4g}: {change} {res.achieved:.4f}): training accuracy too close to chance, or the "
            f"{change} jumps across the window between two nearby scales (the search's history is in info)")
