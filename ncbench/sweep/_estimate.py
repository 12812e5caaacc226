"""How long the jobs of a sweep will take, for ``--dry-run``: stored wall times first, else a short measurement.

Each job to run is estimated by, in this order,

1. the median wall time of this sweep's stored jobs with the same dataset and model;
2. the median wall time of any stored jobs with the same dataset and model;
3. a measurement: a few training steps of its model config (its batch size, on random inputs of the
   dataset's shape, with the job's thread count, on the device it would use), extrapolated to
   ``epochs x ceil(n_train / batch_size)`` steps, plus loading the data (timed here once), forward passes
   for the collapse measurements (about a third of a training step per sample) and the attack's gradient
   steps on its points at every budget > 0. The attack part is an upper bound: points fooled at a budget
   stop being attacked.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

#: standard sizes of the torchvision datasets: (input shape, n_train, n_test, classes), used when the files
#: are not here (a dry run on a laptop of a GPU grid)
STANDARD_SIZES = {
    "mnist": ((1, 28, 28), 60000, 10000, 10), "fashion_mnist": ((1, 28, 28), 60000, 10000, 10),
    "kmnist": ((1, 28, 28), 60000, 10000, 10), "cifar10": ((3, 32, 32), 50000, 10000, 10),
    "cifar100": ((3, 32, 32), 50000, 10000, 100), "svhn": ((3, 32, 32), 73257, 26032, 10),
    "stl10": ((3, 96, 96), 5000, 8000, 10),
}


@dataclass
class Estimate:
    """seconds : the jobs' total run time, one after another. method : how it was estimated, in words."""

    seconds: float
    method: str
    counts: dict = field(default_factory=dict)


def _median(values):
    return statistics.median(values) if values else None


def attack_gradient_steps(acfg, num_classes: int) -> tuple[float, bool]:
    """Gradient evaluations per attacked point: (count, whether it repeats at every budget > 0)."""
    name = getattr(acfg, "name", "pgd")
    if name == "pgd":
        return float(acfg.steps * acfg.restarts), True
    if name == "fgsm":
        return 1.0, True
    if name == "cw":
        return float(getattr(acfg, "cw_steps", 100) * getattr(acfg, "cw_search_steps", 5)), False
    if name == "deepfool":
        return float(getattr(acfg, "deepfool_steps", 50) * num_classes), False
    if name == "autoattack":  # APGD-CE 100, APGD-T and FAB-T 9 targets x 100, Square (forward-only queries)
        return 100.0 + 900.0 + 900.0 + getattr(acfg, "square_queries", 5000) / 3.0, True
    if name == "apgd":  # APGD-CE, then APGD-T per target (on the points APGD-CE left robust: an upper bound)
        steps = getattr(acfg, "apgd_steps", 100)
        return float(steps * (1 + min(getattr(acfg, "apgd_targets", 9), num_classes - 1))), True
    return float(getattr(acfg, "steps", 20)), True


def _data_shape(cfg, cache: dict) -> tuple[tuple, int, int, int, float]:
    """(input shape, n_train, n_test, classes, seconds to load it here; 0 when its files are not here and the
    standard sizes stand in)."""
    key = (cfg.dataset, repr(sorted(cfg.dataset_args.items())))
    if key in cache:
        return cache[key]
    from .._errors import NcbenchError
    from ..data import load_dataset

    args = cfg.loader_args() if hasattr(cfg, "loader_args") else dict(cfg.dataset_args)
    if "download" in args:
        args["download"] = False  # a dry run reads what is here; it never fetches a dataset
    try:
        t = time.perf_counter()
        ds = load_dataset(cfg.dataset, **args)
        out = (tuple(ds.input_shape), int(ds.x_train.shape[0]), int(ds.x_test.shape[0]), ds.num_classes,
               time.perf_counter() - t)
    except (NcbenchError, OSError, RuntimeError):
        if cfg.dataset not in STANDARD_SIZES:
            raise
        shape, n_train, n_test, classes = STANDARD_SIZES[cfg.dataset]
        args = cfg.dataset_args
        if args.get("n_per_class"):
            n_train = min(n_train, int(args["n_per_class"]) * classes)
        if args.get("n_train"):
            n_train = min(n_train, int(args["n_train"]))
        out = (shape, n_train, n_test, classes, 0.0)
    cache[key] = out
    return out


#: a model whose training step at its batch size is estimated above this many seconds from a small batch is
#: timed on that small batch only and scaled by the batch size (compute-bound: linear in the batch)
_HEAVY_STEP_S = 0.5
_SMALL_BATCH = 16


def _time_steps(cfg, shape, classes, threads, cache: dict) -> tuple[float, str]:
    """Seconds per training step of ``cfg``'s model at its batch size, and the device type.

    A light model is timed at its batch size (median of up to 5 steps after a warm-up, about a second); a
    heavy one on a batch of 16, scaled linearly, so that a dry run of a GPU grid on a laptop stays short.
    """
    import torch

    from ..evaluate import resolve_device
    from ..models import create_model

    device = resolve_device(cfg.device)
    key = (cfg.model, repr(sorted(cfg.model_args.items())), tuple(shape), classes, device.type)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        if key not in cache:
            torch.manual_seed(0)
            model = create_model(cfg.model, input_shape=shape, num_classes=classes, **cfg.model_args)
            cache[key] = {"model": model.to(device).train(), "small": None}
        entry = cache[key]
        model = entry["model"]
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(batch: int) -> float:
            x = torch.rand(batch, *shape, device=device)
            y = torch.randint(0, classes, (batch,), device=device)
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t

        bs = cfg.train.batch_size
        small = min(bs, _SMALL_BATCH)
        if entry["small"] is None:
            step(small)  # warm-up: allocation, kernel selection
            entry["small"] = statistics.median([step(small), step(small)])
        scaled = entry["small"] * bs / small
        if scaled > _HEAVY_STEP_S:
            return scaled, device.type
        times = [step(bs)]
        budget = time.perf_counter() + 1.0
        while len(times) < 6 and time.perf_counter() < budget:
            times.append(step(bs))
        return statistics.median(times[1:] if len(times) > 1 else times), device.type
    finally:
        torch.set_num_threads(old)


def _measured_seconds(cfg, step_s: float, shape, n_train: int, n_test: int, classes: int) -> float:
    from ..evaluate import log_epochs

    bs = cfg.train.batch_size
    per_sample = step_s / bs
    forward = per_sample / 3.0
    train = cfg.train.epochs * math.ceil(n_train / bs) * step_s
    measurements = len(log_epochs(cfg.train.epochs, cfg.collapse_epochs)) + 2  # + first zero error, + final
    passes = measurements * (n_train + n_test) * forward
    attack = 0.0
    for acfg in (cfg.attack, *getattr(cfg, "extra_attacks", ())):
        points = min(acfg.n_points or n_test, n_test)
        steps, per_eps = attack_gradient_steps(acfg, classes)
        budgets = sum(1 for e in acfg.eps if float(e) > 0)
        attack += points * steps * (budgets if per_eps else 1) * per_sample
    return train + passes + attack


def estimate(planned, store, sweep: str, *, threads: int | None = None, measure: bool = True) -> Estimate:
    """Estimate the run time of ``planned`` = ``[(JobSpec, EvaluateConfig)]`` (the jobs still to run)."""
    if not planned:
        return Estimate(0.0, "nothing to run", {})
    walls = store.wall_times() if store.exists() else []
    by_sweep_model: dict = {}
    by_model: dict = {}
    for w in walls:
        key = (w["dataset"], w["model"])
        by_model.setdefault(key, []).append(w["wall_time_s"])
        if sweep in w["sweeps"]:
            by_sweep_model.setdefault(key, []).append(w["wall_time_s"])
    total = 0.0
    counts = {"sweep": 0, "store": 0, "measured": 0, "unknown": 0}
    n_used = {"sweep": set(), "store": set()}
    shapes: dict = {}
    steps: dict = {}
    models: dict = {}
    devices = set()
    for _spec, cfg in planned:
        key = (cfg.dataset, cfg.model)
        if key in by_sweep_model:
            total += _median(by_sweep_model[key])
            counts["sweep"] += 1
            n_used["sweep"].add(key)
            continue
        if key in by_model:
            total += _median(by_model[key])
            counts["store"] += 1
            n_used["store"].add(key)
            continue
        if not measure:
            counts["unknown"] += 1
            continue
        shape, n_train, n_test, classes, load_s = _data_shape(cfg, shapes)
        mkey = (cfg.model, repr(sorted(cfg.model_args.items())), tuple(shape), classes, cfg.train.batch_size,
                cfg.device)
        if mkey not in steps:
            steps[mkey] = _time_steps(cfg, shape, classes, threads, models)
        step_s, device = steps[mkey]
        devices.add(device)
        total += load_s + _measured_seconds(cfg, step_s, shape, n_train, n_test, classes)
        counts["measured"] += 1
    parts = []
    if counts["sweep"]:
        n = sum(len(by_sweep_model[k]) for k in n_used["sweep"])
        parts.append(f"{counts['sweep']} job(s) from the median wall time of {n} stored job(s) of this sweep with "
                     "the same dataset and model")
    if counts["store"]:
        n = sum(len(by_model[k]) for k in n_used["store"])
        parts.append(f"{counts['store']} job(s) from the median wall time of {n} stored job(s) with the same dataset "
                     "and model")
    if counts["measured"]:
        thread_text = f", {threads} thread(s)" if threads is not None else ""
        parts.append(f"{counts['measured']} job(s) measured: a few training steps of each of {len(models)} model "
                     f"config(s) on random inputs ({'/'.join(sorted(devices))}{thread_text}; heavy models on a batch "
                     f"of {_SMALL_BATCH}, scaled), extrapolated to epochs x samples, plus loading the data, the "
                     "collapse passes and the attack's gradient steps (an upper bound)")
    if counts["unknown"]:
        parts.append(f"{counts['unknown']} job(s) not estimated (no stored job like them; measuring was turned off)")
    return Estimate(total, "; ".join(parts), counts)
